"""The accelerator core: load parser, token input, sequencer, PE array, drain, max-pool OR.

`Accelerator(config)` runs a program compiled by `hw/compiler.py` (instruction set in
`hw/isa.py`) on each input arriving on `tokens` and sends its results on `results`.

Data path of an array pass (one reduction step per cycle, two pipeline stages and a drain):

    stage 1  the loop state of one step (group > row group > column tile > step > tap counters,
             the tile's stream addresses, the tap offsets) and its word from the step memory
             -> activation run-read addresses (port A: columns, port B: rows, or a paired
             step's second operand run), weight address; column masks (grid end, 3x3 zero
             padding) and edge reads (a 3x3 window crossing into the next lane group's band
             reads the word `band` away). The next step's word is read as this one moves on,
             so no pipeline register copies the loop state.
    stage 2  bank rotation, edge lane shifts (both runs), row-operand lane-group rotation
             (attention across bands), lane masks; the PE array registers the operands and
             each row's shifted, negated weight terms
    stage 3  PE array accumulate (a select and an adder per lane); a tile's last step loads
             the shadow (or, single-buffered, leaves the sums for the drain)
    drain    issues one row (all columns) per cycle, or one bit-plane per cycle for raw integer
             outputs, or a row's sum for the head; the row's parameters are registered, the
             row passes the `pe_cols` LIF units' pipeline stages (`lif_stage_lanes`) and is
             written as one run of `pe_cols` words, while the next tile accumulates; the
             head's row sums pass a registered adder tree into the running logits

A max-pool pass runs the same loops and reads; stage 2 ORs the 3x3/2 windows instead of
accumulating and writes each chunk's outputs as one run (`isa.OP_MAXPOOL`).

Activation memory: `pe_cols` banks of `lanes`-bit words interleaved by address; a run of
`pe_cols` consecutive words at any address is read or written in one cycle. A word holds
`pack = lanes / T` lane groups (other positions of the same channel) when T < lanes, so the
spare lanes do useful work; the LIF units restart the membrane at each group's first lane.
Without `ArrayConfig.lane_packing` a word holds one group and the edge-read and rotation logic
is not built; without `ArrayConfig.paired_steps` the second operand path is not built; without
`ArrayConfig.double_buffer` the drain reads the working accumulators and a tile's first step
waits for it.

Loading: every record is checked as it arrives: malformed -> BAD_RECORD; an address beyond a
memory, or a global/descriptor field outside `isa.field_limits` (T above the lanes, a base
beyond a memory, ...), or a paired step on an array without paired steps -> DOES_NOT_FIT; the
commit of such a program is refused. A descriptor is `isa.desc_words()` program words of
`isa.FIELDS_PER_WORD` fields, read one word per cycle when its pass starts.

The weight, parameter and step memories have one address each, shared by the loader's writes
and the passes' reads (which never overlap), so an iCE40 can hold them in single-port SPRAM.

Latency: `pysim.cycles.cycle_report` gives the cycles of an inference exactly (busy cycles).
Throughput: `pe_rows * pe_cols * lanes` AND/accumulate lane operations per cycle on conv and
linear layers; max-pool: `(pe_cols - 1) // 2` output words per 3 cycles (a run read per
input row of the 3x3/2 windows).
Cost: the PE array (see `hw/pe.py`), `pe_cols` LIF units, `pe_cols` activation banks with two
read ports each, weight/parameter/step/program/input memories; no multipliers. Measured
figures per board and configuration are in the README (`make synth`, `make explore`).
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil
from .config import ArrayConfig
from .drain import Drain, tile_layout
from .load import LoadParser, step_layout
from .operands import MaxPoolOr, OperandFetch, stage2_layout
from .pe import PeArray
from .streams import BYTE_STREAM
from .tokens import TokenInput

#: The core's status output (also read by the host link).
STATUS_LAYOUT = data.StructLayout({"ready": 1, "busy": 1, "error": 8})


class Accelerator(wiring.Component):
    """The accelerator core.

    Ports: `load` (load image: whole records per chunk, `last` on a chunk's final byte),
    `tokens` (per input: flags byte, bit 0 = trace, then C*H*W pixel bytes, `last` on the final
    byte), `results` (per input: with trace every layer's output words, then the logits as
    little-endian int32; `last` on the final byte), `status` and `clear` (a pulse: clears the
    error, forgets the program, aborts the current input).

    Errors: a malformed record -> BAD_RECORD, an address beyond a memory -> DOES_NOT_FIT (the
    rest of the chunk is dropped; a later commit is refused); an input of the wrong length ->
    BAD_INPUT; an input before a committed program -> NOT_LOADED (the input is dropped).
    """

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "load": In(BYTE_STREAM),
            "tokens": In(BYTE_STREAM),
            "results": Out(BYTE_STREAM),
            "status": Out(STATUS_LAYOUT),
            "clear": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        core = self._core = _Core(self.config)
        m.submodules.core = ResetInserter({"sync": self.clear})(core)
        wiring.connect(m, wiring.flipped(self.load), core.load)
        wiring.connect(m, wiring.flipped(self.tokens), core.tokens)
        wiring.connect(m, core.results, wiring.flipped(self.results))
        m.d.comb += self.status.eq(core.status)
        return m


class _Core(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "load": In(BYTE_STREAM),
            "tokens": In(BYTE_STREAM),
            "results": Out(BYTE_STREAM),
            "status": Out(STATUS_LAYOUT),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        WB, A, M = cfg.weight_bits, cfg.acc_bits, cfg.membrane_bits
        PAIRED, PACKING = cfg.paired_steps, cfg.lane_packing
        LC = log2_ceil(C) if C > 1 else 0
        AW = log2_ceil(cfg.act_depth * C)
        CW = AW + 1  # counts of tiles, rows, positions and words
        WAW, PAW = log2_ceil(cfg.weight_depth), log2_ceil(cfg.param_depth)
        SAW = log2_ceil(cfg.step_depth)
        IAW = log2_ceil(cfg.input_depth)
        FPW, NW, FW = isa.FIELDS_PER_WORD, isa.desc_words(), isa.field_width(cfg)
        BITS = isa.field_bits(cfg)

        error = Signal(8)
        m.submodules.loader = loader = LoadParser(cfg)
        ready = loader.ready  # a committed program
        busy = Signal()
        m.d.comb += [self.status.error.eq(error), self.status.ready.eq(ready),
                     self.status.busy.eq(busy)]

        # ---- memories ---------------------------------------------------------------------
        banks = []
        self._bank_mems = []
        for b in range(C):
            mem = Memory(shape=unsigned(L), depth=cfg.act_depth, init=[])
            m.submodules[f"bank{b}"] = mem
            self._bank_mems.append(mem)
            banks.append((mem.read_port(), mem.read_port(), mem.write_port()))
        wmem = Memory(shape=unsigned(R * WB), depth=cfg.weight_depth, init=[])
        pmem = Memory(shape=unsigned(A + M), depth=cfg.param_depth, init=[])
        # The step memory holds each field of `isa.STEP_LAYOUT` at the width this array uses.
        smem = Memory(shape=step_layout(cfg), depth=cfg.step_depth, init=[])
        # A descriptor is NW program words of FPW fields each, read one word per cycle.
        prog = Memory(shape=unsigned(FW * FPW), depth=cfg.program_depth * NW, init=[])
        m.submodules.wmem, m.submodules.pmem, m.submodules.smem = wmem, pmem, smem
        m.submodules.prog = prog
        # The weight, parameter and step memories have one address for their read and write
        # port (loads and passes never overlap) and no read while writing: single-port RAMs,
        # which an iCE40 can hold in SPRAM.
        w_rd, w_wr = wmem.read_port(), wmem.write_port()
        w_addr, w_load_addr = Signal(WAW), Signal(WAW)
        m.d.comb += [w_rd.addr.eq(w_addr), w_wr.addr.eq(w_addr), w_rd.en.eq(~w_wr.en)]
        p_rd, p_wr = pmem.read_port(), pmem.write_port()
        p_addr, p_load_addr, p_drain_addr = Signal(PAW), Signal(PAW), Signal(PAW)
        m.d.comb += [p_addr.eq(Mux(p_wr.en, p_load_addr, p_drain_addr)), p_rd.addr.eq(p_addr),
                     p_wr.addr.eq(p_addr), p_rd.en.eq(~p_wr.en)]
        s_rd, s_wr = smem.read_port(), smem.write_port()
        s_addr, s_load_addr, s_step_addr = Signal(SAW), Signal(SAW), Signal(SAW)
        s_step_en = Signal()
        m.d.comb += [s_addr.eq(Mux(s_wr.en, s_load_addr, s_step_addr)), s_rd.addr.eq(s_addr),
                     s_wr.addr.eq(s_addr), s_rd.en.eq(~s_wr.en & s_step_en)]
        g_rd, g_wr = prog.read_port(), prog.write_port(granularity=FW)

        # Run access helpers: a run of C words at flat address `addr`.
        def wraps(b, lo):
            """Bank b's word of a run starting at bank `lo` lies one bank row further on when
            b < lo (never for the last bank: no constant comparison is emitted)."""
            return Const(b, LC + 1) < lo if b < C - 1 else 0

        def run_read(port_index, addr, adjust=None):
            """Read the run of C words at `addr`; `adjust[c]` (signed, in bank words) moves
            column c's word by whole bank rows (edge reads `band` words away)."""
            lo, hi = addr[:LC], addr[LC:]
            stmts = []
            for b in range(C):
                extra = 0
                if adjust is not None:
                    extra = Signal(signed(AW + 1), name=f"adj{port_index}_{b}")
                    with m.Switch((b - lo)[:LC] if LC else 0):
                        for c in range(C):
                            with m.Case(c):
                                m.d.comb += extra.eq(adjust[c])
                stmts.append(banks[b][port_index].addr.eq(hi + wraps(b, lo) + extra))
            return stmts

        def rotate(port_index, lo):
            """Words of the run whose address low bits were `lo` (registered): column c."""
            datas = [banks[b][port_index].data for b in range(C)]
            words = []
            for c in range(C):
                sel = Signal(LC, name=f"rot{port_index}_{c}") if LC else Const(0, 1)
                word = Signal(L, name=f"word{port_index}_{c}")
                if LC:
                    m.d.comb += sel.eq(lo + c)
                # Only the program's lanes (below pack * T): the lanes above may hold what a
                # previous program left, which an edge read's shift down or a lane rotation
                # would otherwise bring in.
                with m.Switch(sel):
                    for b in range(C):
                        with m.Case(b):
                            m.d.comb += word.eq(datas[b] & lane_valid)
                words.append(word)
            return words

        wr_addr = Signal(AW)
        wr_words = Signal(data.ArrayLayout(L, C))
        wr_en = Signal(C)
        wr_lo, wr_hi = wr_addr[:LC], wr_addr[LC:]
        for b in range(C):
            col = Signal(LC, name=f"wcol{b}") if LC else Const(0, 1)
            if LC:
                m.d.comb += col.eq(b - wr_lo)
            port = banks[b][2]
            m.d.comb += port.addr.eq(wr_hi + wraps(b, wr_lo))
            with m.Switch(col):
                for c in range(C):
                    with m.Case(c):
                        m.d.comb += [port.data.eq(wr_words[c]), port.en.eq(wr_en[c])]

        # ---- load parser -------------------------------------------------------------------
        # The program's globals, as the load parser holds them.
        glob = loader.globals
        g_n_pixels, g_bits, g_T = glob.n_pixels, glob.pixel_bits, glob.T
        g_in_base, g_in_plane, g_pack = glob.in_base, glob.in_plane, glob.pack
        n_passes = loader.n_passes

        # Lane masks of the loaded program: `valid` = lanes below pack * T, `group` = the T lanes
        # of lane group 0, `start` = the first lane of every group (where a LIF restarts).
        # Registered: they change only while a program loads, and they fan out to every
        # operand, LIF unit and write (a decode from T and pack on each use would sit on
        # those paths).
        lane_valid = Signal(L)
        lane_group = Signal(L)
        lane_start = Signal(L)
        all_ones = Const((1 << L) - 1, L)
        m.d.sync += lane_group.eq(~(all_ones << g_T))
        if PACKING:
            # pack * T by shift-and-add (both at most `lanes`): no multiplier.
            used = Signal(range(L * L + 1))
            m.d.sync += used.eq(sum(Mux(g_pack[i], g_T << i, 0) for i in range(len(g_pack))))
            m.d.sync += lane_valid.eq(~(all_ones << used))
            with m.Switch(g_T):
                for t in range(1, L + 1):
                    with m.Case(t):
                        m.d.sync += lane_start.eq(sum(1 << i for i in range(0, L, t)))
        else:
            m.d.comb += [lane_valid.eq(lane_group), lane_start.eq(1)]

        wiring.connect(m, wiring.flipped(self.load), loader.load)
        m.d.comb += [loader.busy.eq(busy),
                     w_load_addr.eq(loader.weight.addr), w_wr.en.eq(loader.weight.en),
                     w_wr.data.eq(loader.weight.data),
                     p_load_addr.eq(loader.param.addr), p_wr.en.eq(loader.param.en),
                     p_wr.data.eq(loader.param.data),
                     s_load_addr.eq(loader.step.addr), s_wr.en.eq(loader.step.en),
                     s_wr.data.eq(loader.step.data),
                     g_wr.addr.eq(loader.program.addr), g_wr.en.eq(loader.program.en),
                     g_wr.data.eq(loader.program.data)]
        with m.If(loader.error_set):
            m.d.sync += error.eq(loader.error)

        # ---- token input (two slots) ---------------------------------------------------------
        m.submodules.tokens = tin = TokenInput(cfg)
        wiring.connect(m, wiring.flipped(self.tokens), tin.tokens)
        m.d.comb += [tin.loaded.eq(ready), tin.n_pixels.eq(g_n_pixels)]
        with m.If(tin.error_set):  # after the loader's: an input's error wins
            m.d.sync += error.eq(tin.error)

        # ---- descriptor registers --------------------------------------------------------------
        d = {name: Signal(BITS[name], name="d_" + name) for name in isa.DESC_FIELDS}

        # ---- PE array and pipeline -----------------------------------------------------------
        m.submodules.pe = pe = PeArray(cfg)
        trace_on = Signal()
        DOUBLE = cfg.double_buffer

        # Stage 1 is the loop state of one step: counters group > row group > column tile >
        # step > tap, the tile's addresses and the tap offsets, with the step's word from the
        # step memory (read as the previous step moved on; held while this one waits). So no
        # stage copies these registers: they change when the step moves on to stage 2. Each
        # counter compares its incremented value with the count: one adder for both.
        s1_valid = Signal()
        s1_start = Signal()  # the START state: first step of the pass, read its word
        g_i, rg_i, ct_i = Signal(CW), Signal(CW), Signal(CW)
        st_i = Signal(SAW + 1)
        ky, kx = Signal(2), Signal(2)
        tap_off = Signal(AW)
        tap_i = Signal(4)
        col_gb, col_rb, col_t = Signal(AW), Signal(AW), Signal(AW)
        row_gb, row_rb, row_t = Signal(AW), Signal(AW), Signal(AW)
        w_gb, w_t = Signal(WAW), Signal(WAW)
        par_gb, par_t = Signal(PAW), Signal(PAW)
        out_gb, out_rb, out_t = Signal(AW), Signal(AW), Signal(AW)
        p0 = Signal(AW + 1)
        rows_left = Signal(signed(CW + 1))

        st_n = st_i + 1
        # Whether each counter is at its last value, registered as the counter moves (the
        # compare looks one value ahead), so the loop's decisions start from flip-flops rather
        # than from an adder and a comparator per level.
        tap_last, st_last, ct_last, rg_last, g_last = (
            Signal(name=f"{n}_last") for n in ("tap", "st", "ct", "rg", "g"))
        first_step = Signal()  # st_i == 0 and tap_i == 0
        last_step = st_last & tap_last

        def count(last, index, count_field, to_zero):
            """The statements that move `index` on (or back to 0) with its `last` flag."""
            if to_zero:
                return [index.eq(0), last.eq(d[count_field] == 1)]
            return [index.eq(index + 1), last.eq(index + 2 == d[count_field])]

        MP_K, _ = isa.maxpool_chunk(C)
        maxpool = d["op"] == isa.OP_MAXPOOL
        drain_busy = Signal()
        drain_done = Signal()  # the drain's last cycle
        # A tile's drain parameters (and a max-pool chunk's output address).
        dr = Signal(tile_layout(cfg))
        s2 = Signal(stage2_layout(cfg))
        # A tile's last step waits in stage 1 while a drain runs or is about to start (a last
        # step in stage 2): the shadow then holds the previous tile's sums until drained. With
        # single-buffered accumulators the tile's first step waits instead: the drain reads
        # the working accumulators and clears them when done.
        wait = (last_step if DOUBLE else first_step) & ~maxpool
        stall = Signal()
        m.d.comb += stall.eq(wait & (drain_busy | (s2.valid & s2.last) | pe.last_out))
        advance = Signal()
        m.d.comb += advance.eq(s1_valid & ~stall)
        st_next = Mux(tap_last, Mux(st_last, 0, st_n), st_i)
        m.d.comb += [s_step_addr.eq(d["step_base"] + Mux(s1_start, 0, st_next)),
                     s_step_en.eq(s1_start | advance)]

        three = d["taps"] == 9
        tap_reset = count(tap_last, tap_i, "taps", True) + [
            kx.eq(Mux(three, 0, 1)), ky.eq(Mux(three, 0, 1)),
            tap_off.eq(Mux(three, -d["width"] - 1, 0))]
        with m.If(s1_start):
            # The tile addresses start at the descriptor's bases (loaded with it).
            m.d.sync += tap_reset + [s1_valid.eq(1), p0.eq(0), rows_left.eq(d["rows"]),
                                     first_step.eq(1)]
            m.d.sync += (count(g_last, g_i, "groups", True) + count(rg_last, rg_i, "rgs", True)
                         + count(ct_last, ct_i, "cts", True) + count(st_last, st_i, "steps", True))
        with m.Elif(advance):
            # advance taps, steps, tiles
            m.d.sync += first_step.eq(tap_last & st_last)
            with m.If(~tap_last):
                m.d.sync += count(tap_last, tap_i, "taps", False)
                with m.If(kx == 2):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), tap_off.eq(tap_off + d["width"] - 2)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), tap_off.eq(tap_off + 1)]
            with m.Else():
                m.d.sync += tap_reset
                with m.If(~st_last):
                    m.d.sync += count(st_last, st_i, "steps", False)
                with m.Else():
                    m.d.sync += count(st_last, st_i, "steps", True)
                    with m.If(~ct_last):
                        m.d.sync += count(ct_last, ct_i, "cts", False)
                        m.d.sync += [col_t.eq(col_t + d["col_ct"]),
                                     row_t.eq(row_t + d["row_ct"]), out_t.eq(out_t + d["out_ct"]),
                                     p0.eq(p0 + C)]
                    with m.Else():
                        m.d.sync += count(ct_last, ct_i, "cts", True) + [p0.eq(0)]
                        with m.If(~rg_last):
                            nc, nr = col_rb + d["col_rg"], row_rb + d["row_rg"]
                            nw, npar = w_t + d["w_rg"], par_t + d["par_rg"]
                            no = out_rb + d["out_rg"]
                            m.d.sync += count(rg_last, rg_i, "rgs", False)
                            m.d.sync += [col_rb.eq(nc), col_t.eq(nc),
                                         row_rb.eq(nr), row_t.eq(nr), w_t.eq(nw),
                                         par_t.eq(npar), out_rb.eq(no), out_t.eq(no),
                                         rows_left.eq(rows_left - R)]
                        with m.Else():
                            m.d.sync += count(rg_last, rg_i, "rgs", True)
                            with m.If(~g_last):
                                nc, nr = col_gb + d["col_g"], row_gb + d["row_g"]
                                nw, npar = w_gb + d["w_g"], par_gb + d["par_g"]
                                no = out_gb + d["out_g"]
                                m.d.sync += count(g_last, g_i, "groups", False)
                                m.d.sync += [col_gb.eq(nc), col_rb.eq(nc),
                                             col_t.eq(nc), row_gb.eq(nr), row_rb.eq(nr),
                                             row_t.eq(nr), w_gb.eq(nw), w_t.eq(nw),
                                             par_gb.eq(npar), par_t.eq(npar), out_gb.eq(no),
                                             out_rb.eq(no), out_t.eq(no),
                                             rows_left.eq(d["rows"])]
                            with m.Else():
                                m.d.sync += s1_valid.eq(0)

        # stage 1: addresses and masks
        step = s_rd.data
        col_addr = Signal(AW)
        row_addr = Signal(AW)
        pair = step.pair if PAIRED else Const(0, 1)
        # A paired step's second run follows the column run through the taps.
        m.d.comb += [col_addr.eq(col_t + step.col + tap_off),
                     row_addr.eq(row_t + step.row + Mux(pair, tap_off, 0)),
                     w_addr.eq(Mux(w_wr.en, w_load_addr, w_t + step.w + tap_i))]
        dump_addr = Signal(AW)
        dump_active = Signal()
        up = Signal(C)
        dn = Signal(C)
        adjust = None
        if PACKING:
            # Edge reads of a 3x3 window: at a band's first row the row above is the previous
            # band's last row (`band` words on, lane groups shifted up a group); at its last row
            # the row below is the next band's first row (`band` words back, shifted down).
            band_words = d["band"][LC:]
            adjust = [Mux(up[c], band_words, Mux(dn[c], -band_words, 0)) for c in range(C)]
        m.d.comb += run_read(0, col_addr, adjust)
        with m.If(dump_active):
            m.d.comb += run_read(1, dump_addr)
        with m.Else():
            m.d.comb += run_read(1, row_addr, adjust)
        mask = Signal(C)
        valid_cols = Signal(C)
        wmask = d["width"] - 1
        for c in range(C):
            pos = Signal(AW + 1, name=f"pos{c}")
            m.d.comb += pos.eq(p0 + c)
            x = pos & wmask
            ok = pos < d["cols"]
            pad_ok = ~(((kx == 0) & (x == 0)) | ((kx == 2) & (x == wmask)))
            # The row above a band's first row and below its last: edge reads with lane
            # packing (which shift a one-band word's lanes out: zero padding), else padding.
            above = d["pad"] & (ky == 0) & (pos < d["width"])
            below = d["pad"] & (ky == 2) & (pos >= d["lastrow"])
            if PACKING:
                m.d.comb += [up[c].eq(above), dn[c].eq(below)]
            else:
                pad_ok = pad_ok & ~above & ~below
            m.d.comb += [mask[c].eq(ok & (pad_ok | ~d["pad"])), valid_cols[c].eq(ok)]
        # A max-pool pass runs the same loops: a tile is a chunk of MP_K outputs of one output
        # row (group = channel, row group = output row, column tile = chunk), its steps the
        # run reads of the 3x3/2 windows (step shift = window row ky | run segment << 2, step
        # column = ky * W + segment * C from the chunk's input row 2 oy - 1, column
        # 2 ox0 - 1). The window's padding follows from where the chunk is.
        mp_ky, mp_seg = step.shift[:2], step.shift[2:4]
        # Input row -1 above the first output row: padding (with lane packing, the previous
        # band's last row: an edge read); row H below the last one when H is odd: padding.
        mp_top = (rg_i == 0) & (mp_ky == 0)
        mp_rowok = ~(rg_last & (mp_ky == 2) & d["mp_odd"][0])
        if not PACKING:
            mp_rowok = mp_rowok & ~mp_top
        mp_mask = Signal(C)
        for c in range(C):
            # Run word j = seg * C + c is input column 2 ox0 - 1 + j: column -1 in a row's first
            # chunk, column W in its last one when W is odd (j = 2 * outputs in the chunk).
            j = (mp_seg << LC) + c
            m.d.comb += mp_mask[c].eq(mp_rowok & ~((ct_i == 0) & (j == 0)) & ~(
                ct_last & d["mp_odd"][1] & (j == (d["mp_last"] << 1))))
        with m.If(maxpool):
            m.d.comb += mask.eq(mp_mask)
            if PACKING:
                m.d.comb += [up.eq(Mux(mp_top, (1 << C) - 1, 0)), dn.eq(0)]
        m.d.sync += s2.valid.eq(advance)
        with m.If(advance):
            m.d.sync += [
                s2.first.eq(first_step), s2.last.eq(last_step), s2.shift.eq(step.shift),
                s2.neg.eq(step.neg), s2.seg.eq(mp_seg),
                s2.col_lo.eq(col_addr[:LC] if LC else 0),
                s2.row_lo.eq(row_addr[:LC] if LC else 0), s2.onehot.eq(step.col[:max(LC, 1)]),
                s2.mask.eq(mask),
            ]
            if PAIRED:
                m.d.sync += [s2.pair.eq(step.pair & (d["row_mode"] == isa.ROW_ONES)),
                             s2.shift2.eq(step.shift2), s2.neg2.eq(step.neg2)]
            if PACKING:
                m.d.sync += [s2.up.eq(up), s2.dn.eq(dn), s2.rot.eq(step.rot)]

        # stage 2: operands into the PE array (or the max-pool OR). The dump reads port B when
        # the array is idle, so it shares that port's bank rotation.
        lo1 = Mux(dump_active, dump_addr[:max(LC, 1)], s2.row_lo)
        colw = rotate(0, s2.col_lo)
        roww = rotate(1, lo1)
        m.submodules.operands = ops = OperandFetch(cfg)
        m.d.comb += [ops.col_words.eq(Cat(*colw)), ops.row_words.eq(Cat(*roww)), ops.step.eq(s2),
                     ops.col_mode.eq(d["col_mode"]), ops.row_mode.eq(d["row_mode"]),
                     ops.T.eq(g_T), ops.lane_valid.eq(lane_valid),
                     pe.colop.eq(ops.colop), pe.rowop.eq(ops.rowop)]
        if PACKING:
            m.d.comb += ops.used.eq(used)
        if PAIRED:
            m.d.comb += [pe.colop2.eq(ops.colop2), pe.shift2.eq(s2.shift2), pe.neg2.eq(s2.neg2)]
        for r in range(R):
            m.d.comb += pe.weight[r].eq(w_rd.data[r * WB:(r + 1) * WB])
        m.d.comb += [pe.valid.eq(s2.valid & ~maxpool), pe.last.eq(s2.last),
                     pe.shift.eq(s2.shift), pe.neg.eq(s2.neg)]
        if not DOUBLE:
            # The last row is read from the working accumulators a cycle after its issue.
            clear = Signal()
            m.d.sync += clear.eq(drain_done)
            m.d.comb += pe.clear.eq(clear)

        # Max-pool: the chunk's last step writes its outputs as one run (fewer in a row's last
        # chunk).
        m.submodules.maxpool = mp = MaxPoolOr(cfg)
        m.d.comb += [mp.words.eq(ops.colop), mp.valid.eq(s2.valid), mp.first.eq(s2.first),
                     mp.seg.eq(s2.seg)]
        # The chunk's outputs are registered with their write (address, column mask) and
        # written a cycle later: the OR of the run words is not on a read-to-write path.
        mp_write = Signal()
        mp_words = Signal(data.ArrayLayout(L, MP_K))
        mp_addr, mp_wmask = Signal(AW), Signal(C)
        m.d.sync += [mp_write.eq(s2.valid & s2.last & maxpool), mp_words.eq(mp.result),
                     mp_addr.eq(dr.out_t),
                     mp_wmask.eq(Mux(dr.last_ct, ~(Const(-1, C) << d["mp_last"]),
                                     (1 << MP_K) - 1))]

        # ---- drain -----------------------------------------------------------------------------
        m.submodules.drain = drain = Drain(cfg)
        # The tile's drain parameters, taken from stage 1 as its last step moves on (the
        # previous drain is over by then); the drain starts when that step leaves the array.
        with m.If(advance & last_step):
            m.d.sync += [dr.mask.eq(valid_cols), dr.par_t.eq(par_t), dr.out_t.eq(out_t),
                         dr.rows_left.eq(rows_left), dr.first_ct.eq(ct_i == 0),
                         dr.last_ct.eq(ct_last), dr.final.eq(ct_last & rg_last & g_last)]
        m.d.comb += [drain.start.eq(pe.last_out), drain.tile.eq(dr),
                     drain.desc.out_mode.eq(d["out_mode"]),
                     drain.desc.out_planes.eq(d["out_planes"]),
                     drain.desc.out_row.eq(d["out_row"]), drain.desc.out_plane.eq(d["out_plane"]),
                     drain.lane_start.eq(lane_start), drain.lane_valid.eq(lane_valid),
                     drain.shadow.eq(pe.shadow), p_drain_addr.eq(drain.param_addr),
                     drain.param_data.eq(p_rd.data), drain.emit_ready.eq(self.results.ready),
                     drain_busy.eq(drain.busy), drain_done.eq(drain.done)]
        with m.If(drain.write.valid):
            m.d.comb += [wr_addr.eq(drain.write.addr), wr_words.eq(drain.write.words),
                         wr_en.eq(drain.write.en)]

        # ---- sequencer ---------------------------------------------------------------------------
        pass_i = Signal(range(cfg.program_depth))
        prog_rd = Signal(range(cfg.program_depth * NW + 1))  # next program word to read
        desc_word = Signal(range(NW))
        up_i = Signal(IAW + 1)
        up_b = Signal(4)
        up_g = Signal(range(L + 1))
        up_gmask = Signal(L)
        up_addr = Signal(AW)
        up_plane_addr = Signal(AW)
        up_planes = Signal(data.ArrayLayout(L, 8))
        dump_i = Signal(CW)
        dump_word = Signal(L)
        dump_byte = Signal(2)
        emit_data = Signal(8)
        emit_valid = Signal()
        emit_last = Signal()
        WBY = isa.word_bytes(L)
        pass_last = pass_i + 1 == n_passes

        bases = {"col_base": [col_gb, col_rb, col_t], "row_base": [row_gb, row_rb, row_t],
                 "w_base": [w_gb, w_t], "par_base": [par_gb, par_t],
                 "out_base": [out_gb, out_rb, out_t]}
        with m.FSM():
            with m.State("IDLE"):
                with m.If(ready & tin.available):
                    m.d.sync += [busy.eq(1), trace_on.eq(tin.trace),
                                 up_i.eq(0), up_b.eq(0), up_addr.eq(g_in_base)]
                    m.next = "UNPACK_READ"
            # Unpack: a word's `pack` pixels (consecutive bytes) are gathered into its
            # bit-plane words, one pixel per cycle, then the planes are written, one per cycle.
            with m.State("UNPACK_READ"):
                m.d.comb += tin.rd_index.eq(up_i + 1)
                m.d.sync += [up_g.eq(0), up_gmask.eq(lane_group)]
                m.next = "UNPACK_GATHER"
            with m.State("UNPACK_GATHER"):
                if PACKING:
                    m.d.comb += tin.rd_index.eq(up_i + 2)
                    for b in range(8):
                        bit = Mux(tin.rd_data[b], up_gmask, 0)
                        m.d.sync += up_planes[b].eq(Mux(up_g == 0, bit, up_planes[b] | bit))
                else:
                    # One pixel per word: its planes come straight from the pixel memory,
                    # which holds the pixel through the write cycles.
                    m.d.comb += tin.rd_index.eq(up_i + 1)
                m.d.sync += [up_i.eq(up_i + 1), up_g.eq(up_g + 1), up_gmask.eq(up_gmask << g_T)]
                with m.If(up_g == g_pack - 1):
                    m.d.sync += [up_b.eq(0), up_plane_addr.eq(up_addr)]
                    m.next = "UNPACK_WRITE"
            with m.State("UNPACK_WRITE"):
                m.d.comb += [wr_addr.eq(up_plane_addr), wr_en.eq(1)]
                if PACKING:
                    m.d.comb += tin.rd_index.eq(up_i + 1)
                    with m.Switch(up_b[:3]):
                        for b in range(8):
                            with m.Case(b):
                                m.d.comb += wr_words[0].eq(up_planes[b])
                else:
                    m.d.comb += [tin.rd_index.eq(up_i),
                                 wr_words[0].eq(Mux(tin.rd_data.bit_select(up_b[:3], 1),
                                                    lane_group, 0))]
                m.d.sync += [up_b.eq(up_b + 1), up_plane_addr.eq(up_plane_addr + g_in_plane)]
                with m.If(up_b == g_bits - 1):
                    m.d.sync += [up_addr.eq(up_addr + 1), up_g.eq(0), up_gmask.eq(lane_group)]
                    with m.If(up_i == g_n_pixels):
                        m.d.comb += tin.release.eq(1)
                        m.d.sync += [pass_i.eq(0), prog_rd.eq(0)]
                        m.next = "DESC"
                    with m.Else():
                        m.next = "UNPACK_GATHER"
            # A descriptor: NW words, one per cycle; prog_rd ends on the next one's first word.
            with m.State("DESC"):
                m.d.comb += g_rd.addr.eq(prog_rd)
                m.d.sync += [prog_rd.eq(prog_rd + 1), desc_word.eq(0)]
                m.next = "DESC_LATCH"
            with m.State("DESC_LATCH"):
                m.d.comb += g_rd.addr.eq(prog_rd)
                for i, name in enumerate(isa.DESC_FIELDS):
                    with m.If(desc_word == i // FPW):
                        lane = FW * (i % FPW)
                        value = g_rd.data[lane:lane + len(d[name])]
                        # A stream's base goes straight into its address registers.
                        m.d.sync += [reg.eq(value) for reg in bases.get(name, [d[name]])]
                m.d.sync += desc_word.eq(desc_word + 1)
                with m.If(desc_word == NW - 1):
                    m.next = "START"
                with m.Else():
                    m.d.sync += prog_rd.eq(prog_rd + 1)
            with m.State("START"):
                m.d.comb += s1_start.eq(1)
                m.next = "ARRAY"
            with m.State("ARRAY"):
                with m.If(mp_write):
                    m.d.comb += [wr_addr.eq(mp_addr), wr_en.eq(mp_wmask)]
                    m.d.comb += [wr_words[k].eq(mp_words[k]) for k in range(MP_K)]
                with m.If(~s1_valid & ~s2.valid & ~pe.last_out & ~drain_busy
                          & ~drain.pipe_busy & ~mp_write):
                    m.next = "PASS_END"
            with m.State("PASS_END"):
                m.d.sync += dump_i.eq(0)
                with m.If(trace_on & (d["dump_words"] != 0)):
                    m.next = "DUMP_READ"
                with m.Elif(pass_last):
                    m.next = "FINISH"
                with m.Else():
                    m.d.sync += pass_i.eq(pass_i + 1)
                    m.next = "DESC"
            with m.State("DUMP_READ"):
                m.d.comb += [dump_active.eq(1), dump_addr.eq(d["dump_base"] + dump_i)]
                m.d.sync += dump_byte.eq(0)
                m.next = "DUMP_LATCH"
            with m.State("DUMP_LATCH"):
                m.d.comb += [dump_active.eq(1), dump_addr.eq(d["dump_base"] + dump_i)]
                m.d.sync += dump_word.eq(roww[0])
                m.next = "DUMP_EMIT"
            with m.State("DUMP_EMIT"):
                m.d.comb += [emit_valid.eq(1),
                             emit_data.eq(dump_word >> Cat(Const(0, 3), dump_byte))]
                with m.If(self.results.ready):
                    m.d.sync += dump_byte.eq(dump_byte + 1)
                    with m.If(dump_byte == WBY - 1):
                        m.d.sync += dump_i.eq(dump_i + 1)
                        with m.If(dump_i + 1 == d["dump_words"]):
                            with m.If(pass_last):
                                m.next = "FINISH"
                            with m.Else():
                                m.d.sync += pass_i.eq(pass_i + 1)
                                m.next = "DESC"
                        with m.Else():
                            m.next = "DUMP_READ"
            with m.State("FINISH"):
                m.d.sync += busy.eq(0)
                m.next = "IDLE"

        # results: the drain's logits or the dump's words
        res = self.results
        with m.If(drain.emit_valid):
            m.d.comb += [res.valid.eq(1),
                         res.payload.data.eq(drain.emit_data),
                         res.payload.last.eq(drain.emit_last)]
        with m.Else():
            m.d.comb += [res.valid.eq(emit_valid), res.payload.data.eq(emit_data),
                         res.payload.last.eq(emit_last)]
        return m
