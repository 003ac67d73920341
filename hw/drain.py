"""The drain: a tile's sums -> spikes, raw bit-planes or logits, through a write-back pipeline.

`Drain(config)` starts when a tile's last step leaves the PE array (`start`) and reads the
tile's sums from the PE array's `shadow`. It issues one row (all columns) per cycle, or one
bit-plane of a row per cycle for raw integer outputs (`OUT_RAW`); the row's bias and threshold
come from the parameter memory (`param_addr` -> `param_data` a cycle later) and are registered
with the row's write command; then the row passes the `pe_cols` LIF units' pipeline stages
(`ArrayConfig.lif_stage_lanes`) and is written as one run of `pe_cols` words (`write`). The
head (`OUT_HEAD`) sums each row over columns and lanes through a registered adder tree into
its running logit (the bias on the first column tile) and, after the last column tile, emits
the logits as little-endian int32 bytes on `emit_*` once the last row's sum is in.

`busy` covers the issuing (and the head's emission); the shadow must stay put until one cycle
after `done`. `pipe_busy` is high while issued rows are still on their way to memory.

Its reference is `pysim.hwref.Executor.drain` (and `pysim.hwref.lif_unit`).

Latency: the first row is issued 2 cycles after `start` (a cycle for the parameter read); a
row issued in cycle i is registered in i + 1 (stage D1: its command and parameters), its
shadow row reaches the LIF units in i + 1 + drain_row_latency (with
`ArrayConfig.drain_registers` a register holds it: the row select and LIF stage 0 are two
paths), and it is written in i + 1 + drain_write_latency (the LIF stages and, with
`drain_registers`, a register before the banks); a head row's sum reaches its logit in
i + 1 + drain_row_latency + head_latency. Busy cycles per tile: `pysim.cycles.drain_cycles`.
Throughput: one row (or bit-plane) per cycle.
Cost: `pe_cols` LIF units, the shadow row's `pe_rows`:1 mux (and its register with
`drain_registers`), `pe_cols * lanes` bits per LIF
stage of raw planes in flight, the head's adder tree over `pe_cols * lanes` sums, `pe_rows`
32-bit logits; no multipliers.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, enum, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil, or_all, sum_tree
from .config import ArrayConfig
from .lif import LifUnit
from .pe import acc_layout


def tile_layout(config: ArrayConfig) -> data.StructLayout:
    """What the drain needs of a tile, latched as its last step leaves stage 1: the valid
    columns, the parameter and output addresses, the rows still to write, where the tile is."""
    AW = log2_ceil(config.act_depth * config.pe_cols)
    return data.StructLayout({
        "mask": config.pe_cols, "par_t": log2_ceil(config.param_depth), "out_t": AW,
        "rows_left": signed(AW + 2), "first_ct": 1, "last_ct": 1, "final": 1})


def desc_layout(config: ArrayConfig) -> data.StructLayout:
    """The pass's output fields the drain reads (`isa.DESC_FIELDS`)."""
    bits = isa.field_bits(config)
    return data.StructLayout({name: bits[name] for name in
                              ("out_mode", "out_planes", "out_row", "out_plane")})


class DrainPhase(enum.Enum, shape=3):
    """What the drain does this cycle."""
    IDLE = 0
    PARAM = 1  #: the first cycle: the first row's parameters are read
    ROWS = 2  #: one row (or bit-plane) issued per cycle
    EMIT = 3  #: the head's logits go out byte by byte
    SETTLE = 4  #: the head's last row sum passes the adder tree's registers


class Drain(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        C, L = config.pe_cols, config.lanes
        AW = log2_ceil(config.act_depth * C)
        super().__init__({
            "start": In(1),
            "tile": In(tile_layout(config)),
            "desc": In(desc_layout(config)),
            "lane_start": In(L),
            "lane_valid": In(L),
            "shadow": In(acc_layout(config)),
            "param_addr": Out(log2_ceil(config.param_depth)),
            "param_data": In(config.acc_bits + config.membrane_bits),
            "write": Out(data.StructLayout({
                "valid": 1, "addr": AW, "words": data.ArrayLayout(L, C), "en": C})),
            "emit_valid": Out(1),
            "emit_data": Out(8),
            "emit_last": Out(1),
            "emit_ready": In(1),
            "busy": Out(1),
            "done": Out(1),
            "pipe_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        A, M = cfg.acc_bits, cfg.membrane_bits
        AW = log2_ceil(cfg.act_depth * C)
        BITS = isa.field_bits(cfg)
        dr, desc = self.tile, self.desc
        dr_phase = Signal(DrainPhase)
        dr_row = Signal(range(R + 1))
        dr_plane = Signal(BITS["out_planes"])
        dr_addr = Signal(AW)
        dr_row_addr = Signal(AW)
        last_plane_c = Signal()
        dr_byte = Signal(2)
        dr_wait = Signal(range(cfg.head_latency + cfg.drain_row_latency + 2))
        logits = [Signal(32, name=f"logit{r}") for r in range(R)]
        m.d.comb += self.busy.eq(dr_phase != DrainPhase.IDLE)
        with m.If(self.start):
            m.d.sync += [dr_phase.eq(DrainPhase.PARAM), dr_row.eq(0), dr_plane.eq(0)]
        rows = dr_phase == DrainPhase.ROWS
        m.d.comb += self.param_addr.eq(dr.par_t + dr_row + (rows & last_plane_c))
        with m.If(dr_phase == DrainPhase.PARAM):
            m.d.comb += self.param_addr.eq(dr.par_t)
        head = desc.out_mode == isa.OUT_HEAD
        raw = desc.out_mode == isa.OUT_RAW
        row_valid = dr_row < dr.rows_left
        last_plane = dr_plane == desc.out_planes - 1
        m.d.comb += last_plane_c.eq(last_plane)
        issue = Signal()  # a row (plane) is issued this cycle
        m.d.comb += issue.eq(rows)

        # Stage D1: the issued row's command and its parameters, registered.
        d1 = Signal(data.StructLayout({
            "valid": 1, "write": 1, "row": range(R + 1), "plane": BITS["out_planes"],
            "addr": AW, "en": C, "first_ct": 1}))
        d1_bias = Signal(signed(A), reset_less=True)  # (data: read under d1.valid)
        d1_thr = Signal(signed(M), reset_less=True)
        m.d.sync += [d1.valid.eq(issue), d1.write.eq(issue & ~head), d1.row.eq(dr_row),
                     d1.plane.eq(dr_plane), d1.addr.eq(dr_addr),
                     d1.en.eq(Mux(row_valid, dr.mask, 0)), d1.first_ct.eq(dr.first_ct),
                     d1_bias.eq(self.param_data[:A].as_signed()),
                     d1_thr.eq(self.param_data[A:].as_signed())]
        # The drained row of the shadow accumulators: an explicit R-way mux (indexing the
        # array by a signal would build one all-to-all part-select, slow to elaborate).
        shadow_row = Signal(self.shadow.shape().elem_shape, name="shadow_row")
        if R == 1:  # (no select: the one row's sums go straight to the LIF units)
            m.d.comb += shadow_row.eq(self.shadow[0])
        else:
            with m.Switch(d1.row):
                for r in range(R):
                    with m.Case(r):
                        m.d.comb += shadow_row.eq(self.shadow[r])

        def delayed(value, cycles, name, reset_less=False):
            """`value` `cycles` cycles later (a chain of registers; `reset_less` for data that
            is only used under a flag that has its reset)."""
            for i in range(cycles):
                q = Signal.like(value, name=f"{name}_d{i + 1}", reset_less=reset_less)
                m.d.sync += q.eq(value)
                value = q
            return value

        # Stage D2 (`drain_registers`): the selected row and its command, registered. Only the
        # command (its valid and write flags) takes the reset: the row's sums, bias and
        # threshold are read under those flags, and a reset on `pe_cols x lanes x acc_bits`
        # flip-flops is a net of that fanout (on the ULX3S the power-on reset into this row
        # register was the worst routed path).
        ROW_LAT = cfg.drain_row_latency
        row = delayed(shadow_row, ROW_LAT, "row", reset_less=True)
        d2 = delayed(d1, ROW_LAT, "d2")
        d2_bias = delayed(d1_bias, ROW_LAT, "d2_bias", reset_less=True)
        d2_thr = delayed(d1_thr, ROW_LAT, "d2_thr", reset_less=True)

        LIF_LAT = cfg.lif_latency
        spikes = Signal(data.ArrayLayout(L, C))
        planes = Signal(data.ArrayLayout(L, C))
        terms = []
        for c in range(C):
            m.submodules[f"lif{c}"] = lif = LifUnit(cfg)
            m.d.comb += [lif.x.eq(row[c]), lif.bias.eq(d2_bias),
                         lif.threshold.eq(d2_thr), lif.start.eq(self.lane_start),
                         lif.valid.eq(self.lane_valid), lif.step.eq(desc.out_mode == isa.OUT_STEP),
                         spikes[c].eq(lif.spikes)]
            # Raw outputs: bit-plane `plane` of x + bias, from the LIF unit's bias adders.
            m.d.comb += planes[c].eq(Cat(*[
                lif.biased[lane].bit_select(d2.plane[:log2_ceil(A + 1)], 1)
                for lane in range(L)]) & self.lane_valid)
            terms += [row[c][lane] for lane in range(L)]
        # Write-back: the command and the raw planes wait for the LIF units' stages.
        wb = delayed(d2, LIF_LAT, "wb")
        wb_planes = delayed(planes, LIF_LAT, "wb_planes", reset_less=True)
        write = Signal(self.write.shape(), name="write_q")
        m.d.comb += [write.valid.eq(wb.write), write.addr.eq(wb.addr),
                     write.words.eq(Mux(raw, wb_planes, spikes)), write.en.eq(wb.en)]
        if cfg.drain_registers:
            # The write register: the last LIF lanes' membrane arithmetic and the route to
            # the banks' write ports (spread over the device on a wide array) are two paths.
            m.d.sync += self.write.eq(write)
        else:
            m.d.comb += self.write.eq(write)
        in_flight = [d1.valid] + [delayed(d1.valid, i, "in_flight")
                                  for i in range(1, cfg.drain_write_latency + 1)]
        m.d.comb += self.pipe_busy.eq(or_all(in_flight, 1))

        # The head: the row's sum over columns and lanes through a pipelined adder tree,
        # added to its running logit at the end (the bias on the first column tile).
        row_sum = sum_tree(m, terms, "row_sum", register_every=2)
        HEAD_LAT = cfg.head_latency
        hd = delayed(d2, HEAD_LAT, "head")
        hd_bias = delayed(d2_bias, HEAD_LAT, "head_bias", reset_less=True)
        logit_row = Signal(32)
        with m.Switch(hd.row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += logit_row.eq(logits[r])
        logit = Signal(32)
        m.d.comb += logit.eq(Mux(hd.first_ct, hd_bias, logit_row) + row_sum)
        with m.If(hd.valid & head):
            with m.Switch(hd.row):
                for r in range(R):
                    with m.Case(r):
                        m.d.sync += logits[r].eq(logit)

        with m.Switch(dr_phase):
            with m.Case(DrainPhase.PARAM):
                m.d.sync += [dr_phase.eq(DrainPhase.ROWS), dr_addr.eq(dr.out_t),
                             dr_row_addr.eq(dr.out_t)]
            with m.Case(DrainPhase.ROWS):
                with m.If(head):
                    with m.If(dr_row == R - 1):
                        with m.If(dr.last_ct):
                            # Emit the tile's logits once the last row's sum is in.
                            m.d.sync += [dr_phase.eq(DrainPhase.SETTLE), dr_wait.eq(0)]
                        with m.Else():
                            m.d.sync += dr_phase.eq(DrainPhase.IDLE)
                            m.d.comb += self.done.eq(1)
                    m.d.sync += dr_row.eq(dr_row + 1)
                with m.Else():
                    with m.If(last_plane):
                        nxt = dr_row_addr + desc.out_row
                        m.d.sync += [dr_plane.eq(0), dr_row.eq(dr_row + 1), dr_row_addr.eq(nxt),
                                     dr_addr.eq(nxt)]
                        with m.If(dr_row == R - 1):
                            m.d.sync += dr_phase.eq(DrainPhase.IDLE)
                            m.d.comb += self.done.eq(1)
                    with m.Else():
                        m.d.sync += [dr_plane.eq(dr_plane + 1),
                                     dr_addr.eq(dr_addr + desc.out_plane)]
            with m.Case(DrainPhase.SETTLE):
                m.d.sync += dr_wait.eq(dr_wait + 1)
                with m.If(dr_wait == HEAD_LAT + ROW_LAT):
                    m.d.sync += [dr_phase.eq(DrainPhase.EMIT), dr_row.eq(0), dr_byte.eq(0)]
            with m.Case(DrainPhase.EMIT):
                with m.If(self.emit_ready):
                    m.d.sync += dr_byte.eq(dr_byte + 1)
                    with m.If(dr_byte == 3):
                        m.d.sync += dr_row.eq(dr_row + 1)
                        with m.If((dr_row == R - 1) | (dr_row + 1 == dr.rows_left)):
                            m.d.sync += [dr_phase.eq(DrainPhase.IDLE), dr_row.eq(0)]
                            m.d.comb += self.done.eq(1)
        # The logit being emitted, byte by byte (explicit muxes: a variable part-select
        # would be a multiply by 8).
        emit_logit = Signal(32)
        with m.Switch(dr_row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += emit_logit.eq(logits[r])
        emit_byte = Signal(8)
        with m.Switch(dr_byte):
            for i in range(4):
                with m.Case(i):
                    m.d.comb += emit_byte.eq(emit_logit[8 * i:8 * i + 8])
        m.d.comb += [self.emit_valid.eq(dr_phase == DrainPhase.EMIT), self.emit_data.eq(emit_byte),
                     self.emit_last.eq((dr_phase == DrainPhase.EMIT) & dr.final & (dr_byte == 3) & (
                         (dr_row == R - 1) | (dr_row + 1 == dr.rows_left)))]

        return m
