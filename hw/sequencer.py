"""The pass sequencer: a descriptor's loops (`LoopSequencer`) and stage 1 of the array
pipeline (`StepIssue`).

A pass (`isa.DESC_FIELDS`) runs the loops group > row group > column tile > step > tap, one
reduction step per cycle. `LoopSequencer` latches the descriptor (one program word per cycle)
and holds the loop state: the counters, each counter's "at its last value" flag (registered as
the counter moves, so the loop decisions start from flip-flops), the tile's stream addresses
(each a running sum of the descriptor's strides: no multiplier) and the 3x3 tap offset. It reads
the step memory one step ahead: the step's word is there when the step is in stage 1, and held
while it waits, so no pipeline register copies the loop state.

`StepIssue` is stage 1: from the loop state and the step's word it computes the two run-read
addresses (column run on port A; on port B the row run or a paired step's second operand run),
the weight address, the column masks (grid end, 3x3 zero padding, max-pool window edges) and the
edge reads of a 3x3 window that crosses into the next lane group's band; it decides whether the
step may move on (a tile's last step waits while the previous tile drains) and registers the
step into stage 2 (`stage2_layout`) and a tile's drain parameters (`tile_layout`).

Their reference is the loop nest of `pysim.hwref.Executor.array` / `.maxpool` (what is read and
masked per step) and `pysim.cycles` (when steps issue and wait).

Latency: the first step is in stage 1 the cycle after `start`; a step reaches stage 2 the cycle
after it moves on. Throughput: one step per cycle while no drain holds a tile's last step.
Cost: the descriptor registers, five stream-address accumulators, counters with registered
last-value flags (and each loop's count less 2, registered, for their compares); per column an
adder and comparators for the masks; three address adders.
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .actmem import run_read_signature
from .arith import log2_ceil
from .config import ArrayConfig
from .drain import tile_layout
from .load import step_layout
from .operands import stage2_layout

#: Descriptor fields that are stream bases: they go straight into the sequencer's address
#: accumulators and have no register of their own.
BASE_FIELDS = ("col_base", "row_base", "w_base", "par_base", "out_base")


def pass_layout(config: ArrayConfig) -> data.StructLayout:
    """The descriptor's registers (every field of `isa.DESC_FIELDS` but the stream bases)."""
    bits = isa.field_bits(config)
    return data.StructLayout({name: bits[name] for name in isa.DESC_FIELDS
                              if name not in BASE_FIELDS})


def desc_word_layout(config: ArrayConfig) -> data.StructLayout:
    """One program word of a descriptor on its way into the registers."""
    return data.StructLayout({"valid": 1, "index": range(isa.desc_words()),
                              "data": isa.field_width(config) * isa.FIELDS_PER_WORD})


def loop_state_layout(config: ArrayConfig) -> data.StructLayout:
    """The loop state of the step in stage 1."""
    AW = log2_ceil(config.act_depth * config.pe_cols)
    return data.StructLayout({
        "valid": 1, "first_step": 1, "last_step": 1, "tap": 4, "kx": 2, "ky": 2,
        "tap_off": AW, "p0": AW + 1, "rows_left": signed(AW + 2),
        "col_t": AW, "row_t": AW, "out_t": AW,
        "w_t": log2_ceil(config.weight_depth), "par_t": log2_ceil(config.param_depth),
        "first_rg": 1, "first_ct": 1, "ct_last": 1, "rg_last": 1, "g_last": 1})


class LoopSequencer(wiring.Component):
    """See the module docstring. `start` (one cycle, the descriptor latched) begins the pass;
    `advance` moves the step in stage 1 on; `state.valid` falls after the pass's last step."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "desc_word": In(desc_word_layout(config)),
            "desc": Out(pass_layout(config)),
            "start": In(1),
            "advance": In(1),
            "state": Out(loop_state_layout(config)),
            "step_addr": Out(log2_ceil(config.step_depth)),
            "step_en": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        C, R = cfg.pe_cols, cfg.pe_rows
        AW = log2_ceil(cfg.act_depth * C)
        CW = AW + 1
        FPW, FW, BITS = isa.FIELDS_PER_WORD, isa.field_width(cfg), isa.field_bits(cfg)
        WAW, PAW = log2_ceil(cfg.weight_depth), log2_ceil(cfg.param_depth)
        s = self.state
        d = {name: self.desc[name] for name in isa.DESC_FIELDS if name not in BASE_FIELDS}

        g_i, rg_i, ct_i = Signal(CW), Signal(CW), Signal(CW)
        st_i = Signal(log2_ceil(cfg.step_depth) + 1)
        col_gb, col_rb, row_gb, row_rb = (Signal(AW, name=n)
                                          for n in ("col_gb", "col_rb", "row_gb", "row_rb"))
        out_gb, out_rb = Signal(AW), Signal(AW)
        w_gb, par_gb = Signal(WAW), Signal(PAW)
        tap_last, st_last = Signal(), Signal()
        m.d.comb += [s.last_step.eq(st_last & tap_last), s.first_rg.eq(rg_i == 0),
                     s.first_ct.eq(ct_i == 0)]

        # The descriptor, one program word per cycle; a stream's base goes straight into its
        # address accumulators.
        bases = {"col_base": [col_gb, col_rb, s.col_t], "row_base": [row_gb, row_rb, s.row_t],
                 "w_base": [w_gb, s.w_t], "par_base": [par_gb, s.par_t],
                 "out_base": [out_gb, out_rb, s.out_t]}
        word = self.desc_word
        with m.If(word.valid):
            for i, name in enumerate(isa.DESC_FIELDS):
                with m.If(word.index == i // FPW):
                    value = word.data[FW * (i % FPW):][:BITS[name]]
                    m.d.sync += [reg.eq(value) for reg in bases.get(name, [d.get(name)])]

        # Each loop's count less 2, registered from the descriptor (which holds still through
        # the pass; START is a cycle after the latch, the first advance a cycle after START):
        # a counter's last flag looks one value ahead, `index + 2 == count`, and as
        # `index == count - 2` that compare is an equality of two registers, without the
        # adder's carry chain on the path from `advance` into the flag.
        ahead = {}
        for name in ("taps", "steps", "cts", "rgs", "groups"):
            ahead[name] = Signal(signed(len(d[name]) + 1), name=f"{name}_less2")
            m.d.sync += ahead[name].eq(d[name] - 2)

        def count(last, index, count_field, to_zero):
            """The statements that move `index` on (or back to 0) with its `last` flag."""
            if to_zero:
                return [index.eq(0), last.eq(d[count_field] == 1)]
            return [index.eq(index + 1), last.eq(index == ahead[count_field])]

        st_next = Mux(tap_last, Mux(st_last, 0, st_i + 1), st_i)
        m.d.comb += [self.step_addr.eq(d["step_base"] + Mux(self.start, 0, st_next)),
                     self.step_en.eq(self.start | self.advance)]

        three = d["taps"] == 9
        tap_reset = count(tap_last, s.tap, "taps", True) + [
            s.kx.eq(Mux(three, 0, 1)), s.ky.eq(Mux(three, 0, 1)),
            s.tap_off.eq(Mux(three, -d["width"] - 1, 0))]
        with m.If(self.start):
            m.d.sync += tap_reset + [s.valid.eq(1), s.p0.eq(0), s.rows_left.eq(d["rows"]),
                                     s.first_step.eq(1)]
            m.d.sync += (count(s.g_last, g_i, "groups", True)
                         + count(s.rg_last, rg_i, "rgs", True)
                         + count(s.ct_last, ct_i, "cts", True)
                         + count(st_last, st_i, "steps", True))
        with m.Elif(self.advance):
            m.d.sync += s.first_step.eq(tap_last & st_last)
            with m.If(~tap_last):
                m.d.sync += count(tap_last, s.tap, "taps", False)
                with m.If(s.kx == 2):
                    m.d.sync += [s.kx.eq(0), s.ky.eq(s.ky + 1),
                                 s.tap_off.eq(s.tap_off + d["width"] - 2)]
                with m.Else():
                    m.d.sync += [s.kx.eq(s.kx + 1), s.tap_off.eq(s.tap_off + 1)]
            with m.Elif(~st_last):
                m.d.sync += tap_reset + count(st_last, st_i, "steps", False)
            with m.Elif(~s.ct_last):
                m.d.sync += tap_reset + count(st_last, st_i, "steps", True)
                m.d.sync += count(s.ct_last, ct_i, "cts", False)
                m.d.sync += [s.col_t.eq(s.col_t + d["col_ct"]), s.row_t.eq(s.row_t + d["row_ct"]),
                             s.out_t.eq(s.out_t + d["out_ct"]), s.p0.eq(s.p0 + C)]
            with m.Elif(~s.rg_last):
                m.d.sync += tap_reset + count(st_last, st_i, "steps", True)
                m.d.sync += count(s.ct_last, ct_i, "cts", True) + [s.p0.eq(0)]
                m.d.sync += count(s.rg_last, rg_i, "rgs", False)
                nc, nr, no = col_rb + d["col_rg"], row_rb + d["row_rg"], out_rb + d["out_rg"]
                m.d.sync += [col_rb.eq(nc), s.col_t.eq(nc), row_rb.eq(nr), s.row_t.eq(nr),
                             out_rb.eq(no), s.out_t.eq(no), s.w_t.eq(s.w_t + d["w_rg"]),
                             s.par_t.eq(s.par_t + d["par_rg"]), s.rows_left.eq(s.rows_left - R)]
            with m.Elif(~s.g_last):
                m.d.sync += tap_reset + count(st_last, st_i, "steps", True)
                m.d.sync += count(s.ct_last, ct_i, "cts", True) + [s.p0.eq(0)]
                m.d.sync += count(s.rg_last, rg_i, "rgs", True)
                m.d.sync += count(s.g_last, g_i, "groups", False)
                nc, nr, no = col_gb + d["col_g"], row_gb + d["row_g"], out_gb + d["out_g"]
                nw, npar = w_gb + d["w_g"], par_gb + d["par_g"]
                m.d.sync += [col_gb.eq(nc), col_rb.eq(nc), s.col_t.eq(nc),
                             row_gb.eq(nr), row_rb.eq(nr), s.row_t.eq(nr),
                             out_gb.eq(no), out_rb.eq(no), s.out_t.eq(no),
                             w_gb.eq(nw), s.w_t.eq(nw), par_gb.eq(npar), s.par_t.eq(npar),
                             s.rows_left.eq(d["rows"])]
            with m.Else():
                m.d.sync += tap_reset + count(st_last, st_i, "steps", True)
                m.d.sync += count(s.ct_last, ct_i, "cts", True) + [s.p0.eq(0)]
                m.d.sync += count(s.rg_last, rg_i, "rgs", True)
                m.d.sync += s.valid.eq(0)
        return m


class StepIssue(wiring.Component):
    """See the module docstring. `drain_pending`: a drain runs or is about to start (a tile's
    last step is leaving the array); `advance` moves the step in stage 1 on."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "desc": In(pass_layout(config)),
            "state": In(loop_state_layout(config)),
            "step": In(step_layout(config)),
            "drain_pending": In(1),
            "advance": Out(1),
            "col": Out(run_read_signature(config)),
            "row": Out(run_read_signature(config)),
            "weight_addr": Out(log2_ceil(config.weight_depth)),
            "op": Out(stage2_layout(config)),
            "tile": Out(tile_layout(config)),
            "chunk": Out(data.StructLayout({"out_t": log2_ceil(config.act_depth
                                                               * config.pe_cols),
                                            "last_ct": 1})),
            "pending": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        C = cfg.pe_cols
        AW = log2_ceil(cfg.act_depth * C)
        LC = log2_ceil(C) if C > 1 else 0
        PAIRED, PACKING = cfg.paired_steps, cfg.lane_packing
        d, s, step, s2 = self.desc, self.state, self.step, self.op
        maxpool = d.op == isa.OP_MAXPOOL
        # With the issue stage, a step's stage-2 fields and run addresses are registered in
        # `s1b` as it moves on, and copied into stage 2 a cycle later.
        STAGE = cfg.issue_stage
        s1b = Signal(data.StructLayout({"op": stage2_layout(cfg), "col": AW, "row": AW}))
        s1 = Signal(stage2_layout(cfg))  # stage 1's fields for stage 2 (combinational)
        col_addr, row_addr = Signal(AW), Signal(AW)
        last_ahead = (s2.valid & s2.last) | (s1b.op.valid & s1b.op.last if STAGE else 0)
        m.d.comb += self.pending.eq(s2.valid | (s1b.op.valid if STAGE else 0))

        # A tile's last step waits here while a drain runs or is about to start (a last step
        # in stage 2): the shadow then holds the previous tile's sums until drained. With
        # single-buffered accumulators the tile's first step waits instead: the drain reads
        # the working accumulators and clears them when done.
        wait = (s.last_step if cfg.double_buffer else s.first_step) & ~maxpool
        stall = wait & (self.drain_pending | last_ahead)
        if cfg.double_buffer:
            # The cycle after a tile's last step: a gap, the PE array's capture cycle
            # (`hw.pe.PeArray`: no step accumulates while the sums move to the shadow).
            gap = Signal()
            m.d.sync += gap.eq(self.advance & s.last_step & ~maxpool)
            stall = stall | gap
        m.d.comb += self.advance.eq(s.valid & ~stall)

        # A paired step's second run follows the column run through the taps.
        pair = step.pair if PAIRED else Const(0, 1)
        m.d.comb += [col_addr.eq(s.col_t + step.col + s.tap_off),
                     row_addr.eq(s.row_t + step.row + Mux(pair, s.tap_off, 0)),
                     self.weight_addr.eq(s.w_t + step.w + s.tap)]

        # Column masks: the grid's end, the 3x3 window's zero padding left and right, and
        # above/below the grid (with lane packing: edge reads of the neighbouring band, whose
        # shift moves a one-band word's lanes out, which is zero padding too).
        mask, valid_cols, up, dn = Signal(C), Signal(C), Signal(C), Signal(C)
        wmask = d.width - 1
        for c in range(C):
            pos = Signal(len(s.p0), name=f"pos{c}")
            m.d.comb += pos.eq(s.p0 + c)
            x = pos & wmask
            pad_ok = ~(((s.kx == 0) & (x == 0)) | ((s.kx == 2) & (x == wmask)))
            above = d.pad & (s.ky == 0) & (pos < d.width)
            below = d.pad & (s.ky == 2) & (pos >= d.lastrow)
            if PACKING:
                m.d.comb += [up[c].eq(above), dn[c].eq(below)]
            else:
                pad_ok = pad_ok & ~above & ~below
            ok = pos < d.cols
            m.d.comb += [mask[c].eq(ok & (pad_ok | ~d.pad)), valid_cols[c].eq(ok)]

        # A max-pool pass runs the same loops: a tile is a chunk of MP_K outputs of one output
        # row (group = channel, row group = output row, column tile = chunk), its steps the
        # run reads of the 3x3/2 windows (step shift = window row ky | run segment << 2, step
        # column = ky * W + segment * C from the chunk's input row 2 oy - 1, column
        # 2 ox0 - 1). The window's padding follows from where the chunk is.
        mp_ky, mp_seg = step.shift[:2], step.shift[2:4]
        # Input row -1 above the first output row: padding (with lane packing, the previous
        # band's last row: an edge read); row H below the last one when H is odd: padding.
        mp_top = s.first_rg & (mp_ky == 0)
        mp_rowok = ~(s.rg_last & (mp_ky == 2) & d.mp_odd[0])
        if not PACKING:
            mp_rowok = mp_rowok & ~mp_top
        mp_mask = Signal(C)
        for c in range(C):
            # Run word j = seg * C + c is input column 2 ox0 - 1 + j: column -1 in a row's first
            # chunk, column W in its last one when W is odd (j = 2 * outputs in the chunk).
            j = (mp_seg << LC) + c
            m.d.comb += mp_mask[c].eq(mp_rowok & ~(s.first_ct & (j == 0)) & ~(
                s.ct_last & d.mp_odd[1] & (j == (d.mp_last << 1))))
        with m.If(maxpool):
            m.d.comb += mask.eq(mp_mask)
            if PACKING:
                m.d.comb += [up.eq(Mux(mp_top, (1 << C) - 1, 0)), dn.eq(0)]

        m.d.comb += [s1.valid.eq(self.advance), s1.first.eq(s.first_step),
                     s1.last.eq(s.last_step), s1.shift.eq(step.shift), s1.neg.eq(step.neg),
                     s1.seg.eq(mp_seg), s1.onehot.eq(step.col[:max(LC, 1)]), s1.mask.eq(mask)]
        if PAIRED:
            m.d.comb += [s1.pair.eq(step.pair & (d.row_mode == isa.ROW_ONES)),
                         s1.shift2.eq(step.shift2), s1.neg2.eq(step.neg2)]
        if PACKING:
            m.d.comb += [s1.up.eq(up), s1.dn.eq(dn), s1.rot.eq(step.rot)]

        # The run reads: from stage 1's sums, or from their registers in the issue stage.
        # Only `valid` needs a reset: the other fields are read only with it.
        read = s1b.op if STAGE else s1
        m.d.comb += [self.col.addr.eq(s1b.col if STAGE else col_addr),
                     self.row.addr.eq(s1b.row if STAGE else row_addr)]
        if PACKING:
            # The row above a band's first row is the previous band's last row (`band` words
            # on, lane groups shifted up a group); below its last row, the next band's first
            # row (`band` words back, shifted down).
            band_words = d.band[LC:]
            for c in range(C):
                adjust = Mux(read.up[c], band_words, Mux(read.dn[c], -band_words, 0))
                m.d.comb += [self.col.adjust[c].eq(adjust), self.row.adjust[c].eq(adjust)]
        if STAGE:
            m.d.sync += s1b.op.valid.eq(self.advance)
            with m.If(self.advance):
                m.d.sync += [s1b.op.eq(s1), s1b.col.eq(col_addr), s1b.row.eq(row_addr)]
            m.d.sync += s2.eq(s1b.op)
        else:
            m.d.sync += s2.valid.eq(self.advance)
            with m.If(self.advance):
                m.d.sync += s2.eq(s1)

        # The tile's drain parameters, taken as its last step moves on (the previous drain is
        # over by then); the drain starts when that step leaves the array.
        with m.If(self.advance & s.last_step):
            m.d.sync += [self.tile.mask.eq(valid_cols), self.tile.par_t.eq(s.par_t),
                         self.tile.out_t.eq(s.out_t), self.tile.rows_left.eq(s.rows_left),
                         self.tile.first_ct.eq(s.first_ct), self.tile.last_ct.eq(s.ct_last),
                         self.tile.final.eq(s.ct_last & s.rg_last & s.g_last)]
        # The max-pool chunk of the step in stage 2: without the issue stage the tile
        # registers; with it, they are copied as the chunk's last step passes the issue stage
        # (a chunk of one step may follow, whose last step moves the tile registers on).
        if STAGE:
            with m.If(s1b.op.valid & s1b.op.last):
                m.d.sync += [self.chunk.out_t.eq(self.tile.out_t),
                             self.chunk.last_ct.eq(self.tile.last_ct)]
        else:
            m.d.comb += [self.chunk.out_t.eq(self.tile.out_t),
                         self.chunk.last_ct.eq(self.tile.last_ct)]
        return m
