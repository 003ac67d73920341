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
from .config import ArrayConfig
from .lif import LifUnit
from .load import LoadParser, step_layout
from .pe import PeArray
from .status import Status
from .streams import BYTE_STREAM

#: The core's status output (also read by the host link).
STATUS_LAYOUT = data.StructLayout({"ready": 1, "busy": 1, "error": 8})


def _log2(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _kept_sum(m, a, b, name: str):
    """`a + b` in a signal Yosys keeps: an adder chain of its own. Without the barrier, Yosys
    merges chains of additions into one multi-operand `$macc`, which it maps to carry-save
    full adders: about twice the LUTs of carry-chain adders on iCE40 and ECP5."""
    total = Signal(signed(max(len(a), len(b)) + 1) if a.shape().signed or b.shape().signed
                   else max(len(a), len(b)) + 1, name=name, attrs={"keep": 1})
    m.d.comb += total.eq(a + b)
    return total


def _sum_tree(m, terms, name: str, register_every: int = 0):
    """The sum of `terms` as a balanced tree of kept two-input adders (see `_kept_sum`); with
    `register_every` = k, a register after every k levels but the last, so the sum arrives
    `(levels - 1) // k` cycles later."""
    level = 0
    levels = max(0, (len(terms) - 1).bit_length())
    while len(terms) > 1:
        terms = [_kept_sum(m, terms[i], terms[i + 1], f"{name}_{level}_{i // 2}")
                 if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        level += 1
        if register_every and level % register_every == 0 and level < levels:
            regs = [Signal.like(t, name=f"{name}_q{level}_{i}") for i, t in enumerate(terms)]
            m.d.sync += [q.eq(t) for q, t in zip(regs, terms, strict=True)]
            terms = regs
    return terms[0]


def _or_all(words, width: int):
    """Bitwise OR of `width`-bit values (0 when there are none)."""
    out = Const(0, width)
    for word in words:
        out = out | word
    return out


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
        LC = _log2(C) if C > 1 else 0
        AW = _log2(cfg.act_depth * C)
        CW = AW + 1  # counts of tiles, rows, positions and words
        WAW, PAW, SAW = _log2(cfg.weight_depth), _log2(cfg.param_depth), _log2(cfg.step_depth)
        IAW = _log2(cfg.input_depth)
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
        LR = max(1, (L - 1).bit_length())  # bits of a lane rotation amount
        # The step memory holds each field of `isa.STEP_LAYOUT` at the width this array uses.
        smem = Memory(shape=step_layout(cfg), depth=cfg.step_depth, init=[])
        # A descriptor is NW program words of FPW fields each, read one word per cycle.
        prog = Memory(shape=unsigned(FW * FPW), depth=cfg.program_depth * NW, init=[])
        pix = Memory(shape=unsigned(8), depth=2 * cfg.input_depth, init=[])
        m.submodules.wmem, m.submodules.pmem, m.submodules.smem = wmem, pmem, smem
        m.submodules.prog, m.submodules.pix = prog, pix
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
        x_rd, x_wr = pix.read_port(), pix.write_port()

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
        tk = self.tokens
        full = Signal(2)
        trace_flag = Signal(2)
        wslot = Signal()
        rslot = Signal()
        tcount = Signal(IAW + 1)
        tdrop = Signal()
        m.d.comb += tk.ready.eq(~full.bit_select(wslot, 1))
        with m.If(tk.valid & tk.ready):
            m.d.sync += tcount.eq(tcount + 1)
            m.d.comb += [x_wr.addr.eq(Cat(tcount[:IAW], wslot)), x_wr.data.eq(tk.payload.data),
                         x_wr.en.eq(~tdrop & (tcount <= g_n_pixels))]
            with m.If(tcount == 0):
                m.d.sync += trace_flag.bit_select(wslot, 1).eq(tk.payload.data[0])
            with m.If(tk.payload.last):
                m.d.sync += [tcount.eq(0), tdrop.eq(0)]
                with m.If(~ready):
                    m.d.sync += error.eq(Status.NOT_LOADED)
                with m.Elif(~tdrop & (tcount == g_n_pixels)):
                    m.d.sync += [full.bit_select(wslot, 1).eq(1), wslot.eq(~wslot)]
                with m.Elif(~tdrop):
                    m.d.sync += error.eq(Status.BAD_INPUT)
            with m.Elif(~tdrop & (tcount >= g_n_pixels)):
                m.d.sync += [tdrop.eq(1), error.eq(Status.BAD_INPUT)]

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

        tap_n, st_n = tap_i + 1, st_i + 1
        ct_n, rg_n, g_n = ct_i + 1, rg_i + 1, g_i + 1
        tap_last = tap_n == d["taps"]
        st_last = st_n == d["steps"]
        first_step = (st_i == 0) & (tap_i == 0)
        last_step = st_last & tap_last
        ct_last = ct_n == d["cts"]
        rg_last = rg_n == d["rgs"]
        g_last = g_n == d["groups"]

        MP_K, MP_S = isa.maxpool_chunk(C)
        maxpool = d["op"] == isa.OP_MAXPOOL
        drain_busy = Signal()
        drain_done = Signal()  # the drain's last cycle
        # A tile's drain parameters (and a max-pool chunk's output address).
        dr = Signal(data.StructLayout({
            "mask": C, "par_t": PAW, "out_t": AW, "rows_left": signed(CW + 1), "first_ct": 1,
            "last_ct": 1, "final": 1}))
        s2 = Signal(data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "shift": isa.SHIFT_BITS, "neg": 1, "pair": 1,
            "shift2": isa.SHIFT_BITS,
            "neg2": 1, "col_lo": max(LC, 1),
            "row_lo": max(LC, 1), "onehot": max(LC, 1), "mask": C,
            "up": C, "dn": C, "rot": LR, "seg": 2}))
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
        tap_reset = [tap_i.eq(0), kx.eq(Mux(three, 0, 1)), ky.eq(Mux(three, 0, 1)),
                     tap_off.eq(Mux(three, -d["width"] - 1, 0))]
        with m.If(s1_start):
            # The tile addresses start at the descriptor's bases (loaded with it).
            m.d.sync += tap_reset + [
                s1_valid.eq(1), g_i.eq(0), rg_i.eq(0), ct_i.eq(0), st_i.eq(0), p0.eq(0),
                rows_left.eq(d["rows"])]
        with m.Elif(advance):
            # advance taps, steps, tiles
            with m.If(~tap_last):
                m.d.sync += tap_i.eq(tap_n)
                with m.If(kx == 2):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), tap_off.eq(tap_off + d["width"] - 2)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), tap_off.eq(tap_off + 1)]
            with m.Else():
                m.d.sync += tap_reset
                with m.If(~st_last):
                    m.d.sync += st_i.eq(st_n)
                with m.Else():
                    m.d.sync += st_i.eq(0)
                    with m.If(~ct_last):
                        m.d.sync += [ct_i.eq(ct_n), col_t.eq(col_t + d["col_ct"]),
                                     row_t.eq(row_t + d["row_ct"]), out_t.eq(out_t + d["out_ct"]),
                                     p0.eq(p0 + C)]
                    with m.Else():
                        m.d.sync += [ct_i.eq(0), p0.eq(0)]
                        with m.If(~rg_last):
                            nc, nr = col_rb + d["col_rg"], row_rb + d["row_rg"]
                            nw, npar = w_t + d["w_rg"], par_t + d["par_rg"]
                            no = out_rb + d["out_rg"]
                            m.d.sync += [rg_i.eq(rg_n), col_rb.eq(nc), col_t.eq(nc),
                                         row_rb.eq(nr), row_t.eq(nr), w_t.eq(nw),
                                         par_t.eq(npar), out_rb.eq(no), out_t.eq(no),
                                         rows_left.eq(rows_left - R)]
                        with m.Else():
                            m.d.sync += rg_i.eq(0)
                            with m.If(~g_last):
                                nc, nr = col_gb + d["col_g"], row_gb + d["row_g"]
                                nw, npar = w_gb + d["w_g"], par_gb + d["par_g"]
                                no = out_gb + d["out_g"]
                                m.d.sync += [g_i.eq(g_n), col_gb.eq(nc), col_rb.eq(nc),
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
        ones = (1 << L) - 1

        def edge(word, c):
            if not PACKING:
                return word
            return Mux(s2.up[c], word << g_T, Mux(s2.dn[c], word >> g_T, word))

        for c in range(C):
            onehot = Mux(s2.onehot == c, ones, 0) if C > 1 else ones
            word = Mux(d["col_mode"], onehot, edge(colw[c], c))
            m.d.comb += pe.colop[c].eq(Mux(s2.mask[c], word, 0) & lane_valid)
            if PAIRED:
                # A paired step's second operand: port B's run, with the same edges and masks.
                m.d.comb += pe.colop2[c].eq(Mux(s2.pair & s2.mask[c], edge(roww[c], c), 0)
                                            & lane_valid)
        if PACKING:
            back = Signal(range(L * L + 1))
            m.d.comb += back.eq(used - s2.rot)
        for r in range(R):
            rw = roww[r] if r < C else Const(ones, L)
            if PACKING:
                # Lane-group rotation, cyclic over the used lanes (attention across bands).
                rotated = ((rw << s2.rot) | (rw >> back)) & lane_valid
                rw = Mux(s2.rot == 0, rw, rotated)
            m.d.comb += pe.rowop[r].eq(Mux(d["row_mode"], rw, ones))
            m.d.comb += pe.weight[r].eq(w_rd.data[r * WB:(r + 1) * WB])
        m.d.comb += [pe.valid.eq(s2.valid & ~maxpool), pe.last.eq(s2.last),
                     pe.shift.eq(s2.shift), pe.neg.eq(s2.neg)]
        if not DOUBLE:
            # The last row is read from the working accumulators a cycle after its issue.
            clear = Signal()
            m.d.sync += clear.eq(drain_done)
            m.d.comb += pe.clear.eq(clear)

        # Max-pool: output k of the chunk ORs the run words j = 2k .. 2k + 2 (j = seg * C + c:
        # the column words as the PE array would see them, padding masked, edges shifted); the
        # chunk's last step writes its outputs as one run (fewer in a row's last chunk).
        mp_or = Signal(data.ArrayLayout(L, MP_K))
        mp_next = Signal(data.ArrayLayout(L, MP_K))
        for k in range(MP_K):
            hits = []
            for c in range(C):
                if MP_S == 1:
                    if 2 * k <= c <= 2 * k + 2:
                        hits.append(pe.colop[c])
                else:
                    j = (s2.seg << LC) + c
                    hits.append(Mux((j >= 2 * k) & (j <= 2 * k + 2), pe.colop[c], 0))
            m.d.comb += mp_next[k].eq(Mux(s2.first, 0, mp_or[k]) | _or_all(hits, L))
        with m.If(s2.valid):
            m.d.sync += mp_or.eq(mp_next)
        mp_write = s2.valid & s2.last & maxpool
        mp_wmask = Mux(dr.last_ct, ~(Const(-1, C) << d["mp_last"]), (1 << MP_K) - 1)
        if PAIRED:
            m.d.comb += [pe.shift2.eq(s2.shift2), pe.neg2.eq(s2.neg2)]

        # ---- drain -----------------------------------------------------------------------------
        # The drain issues one row (one bit-plane of it for raw outputs) per cycle; the row
        # travels through a pipeline and is written (or, for the head, added to its logit) at
        # the end: issue (the parameter memory's read of the row) -> the read registered
        # with the row's write command -> the LIF units' stages -> the write. The shadow row
        # is read at the registered stage; the shadow stays put until the issuing is over
        # and one cycle more (single-buffered: the restart waits a cycle for it).
        dr_phase = Signal(3)  # 0 idle, 1 first cycle (param read), 2 rows, 3 emit, 4 settle
        dr_row = Signal(range(R + 1))
        dr_plane = Signal(BITS["out_planes"])
        dr_addr = Signal(AW)
        dr_row_addr = Signal(AW)
        last_plane_c = Signal()
        dr_byte = Signal(2)
        dr_wait = Signal(range(cfg.head_latency + 2))
        logits = [Signal(32, name=f"logit{r}") for r in range(R)]
        m.d.comb += drain_busy.eq(dr_phase != 0)
        # The tile's drain parameters, taken from stage 1 as its last step moves on (the
        # previous drain is over by then); the drain starts when that step leaves the array.
        with m.If(advance & last_step):
            m.d.sync += [dr.mask.eq(valid_cols), dr.par_t.eq(par_t), dr.out_t.eq(out_t),
                         dr.rows_left.eq(rows_left), dr.first_ct.eq(ct_i == 0),
                         dr.last_ct.eq(ct_last), dr.final.eq(ct_last & rg_last & g_last)]
        with m.If(pe.last_out):
            m.d.sync += [dr_phase.eq(1), dr_row.eq(0), dr_plane.eq(0)]
        m.d.comb += p_drain_addr.eq(dr.par_t + dr_row + ((dr_phase == 2) & last_plane_c))
        with m.If(dr_phase == 1):
            m.d.comb += p_drain_addr.eq(dr.par_t)
        head = d["out_mode"] == isa.OUT_HEAD
        raw = d["out_mode"] == isa.OUT_RAW
        row_valid = dr_row < dr.rows_left
        last_plane = dr_plane == d["out_planes"] - 1
        m.d.comb += last_plane_c.eq(last_plane)
        issue = Signal()  # a row (plane) is issued this cycle
        m.d.comb += issue.eq(dr_phase == 2)

        # Stage D1: the issued row's command and its parameters, registered.
        d1 = Signal(data.StructLayout({
            "valid": 1, "write": 1, "row": range(R + 1), "plane": BITS["out_planes"],
            "addr": AW, "en": C, "first_ct": 1}))
        d1_bias = Signal(signed(A))
        d1_thr = Signal(signed(M))
        m.d.sync += [d1.valid.eq(issue), d1.write.eq(issue & ~head), d1.row.eq(dr_row),
                     d1.plane.eq(dr_plane), d1.addr.eq(dr_addr),
                     d1.en.eq(Mux(row_valid, dr.mask, 0)), d1.first_ct.eq(dr.first_ct),
                     d1_bias.eq(p_rd.data[:A].as_signed()),
                     d1_thr.eq(p_rd.data[A:].as_signed())]
        # The drained row of the shadow accumulators: an explicit R-way mux (indexing the
        # array by a signal would build one all-to-all part-select, slow to elaborate).
        shadow_row = Signal(pe.shadow.shape().elem_shape, name="shadow_row")
        with m.Switch(d1.row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += shadow_row.eq(pe.shadow[r])

        def delayed(value, cycles, name):
            """`value` `cycles` cycles later (a chain of registers)."""
            for i in range(cycles):
                q = Signal.like(value, name=f"{name}_d{i + 1}")
                m.d.sync += q.eq(value)
                value = q
            return value

        LIF_LAT = cfg.lif_latency
        spikes = Signal(data.ArrayLayout(L, C))
        planes = Signal(data.ArrayLayout(L, C))
        terms = []
        for c in range(C):
            m.submodules[f"lif{c}"] = lif = LifUnit(cfg)
            m.d.comb += [lif.x.eq(shadow_row[c]), lif.bias.eq(d1_bias),
                         lif.threshold.eq(d1_thr), lif.start.eq(lane_start),
                         lif.valid.eq(lane_valid), lif.step.eq(d["out_mode"] == isa.OUT_STEP),
                         spikes[c].eq(lif.spikes)]
            # Raw outputs: bit-plane `plane` of x + bias, from the LIF unit's bias adders.
            m.d.comb += planes[c].eq(Cat(*[
                lif.biased[lane].bit_select(d1.plane[:_log2(A + 1)], 1)
                for lane in range(L)]) & lane_valid)
            terms += [shadow_row[c][lane] for lane in range(L)]
        # Write-back: the command and the raw planes wait for the LIF units' stages.
        wb = delayed(d1, LIF_LAT, "wb")
        wb_planes = delayed(planes, LIF_LAT, "wb_planes")
        with m.If(wb.write):
            m.d.comb += [wr_addr.eq(wb.addr), wr_words.eq(Mux(raw, wb_planes, spikes)),
                         wr_en.eq(wb.en)]
        in_flight = [d1.valid] + [delayed(d1.valid, i, "in_flight")
                                  for i in range(1, LIF_LAT + 1)]
        drain_pipe_busy = Signal()
        m.d.comb += drain_pipe_busy.eq(_or_all(in_flight, 1))

        # The head: the row's sum over columns and lanes through a pipelined adder tree,
        # added to its running logit at the end (the bias on the first column tile).
        row_sum = _sum_tree(m, terms, "row_sum", register_every=2)
        HEAD_LAT = cfg.head_latency
        hd = delayed(d1, HEAD_LAT, "head")
        hd_bias = delayed(d1_bias, HEAD_LAT, "head_bias")
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
            with m.Case(1):
                m.d.sync += [dr_phase.eq(2), dr_addr.eq(dr.out_t), dr_row_addr.eq(dr.out_t)]
            with m.Case(2):
                with m.If(head):
                    with m.If(dr_row == R - 1):
                        with m.If(dr.last_ct):
                            # Emit the tile's logits once the last row's sum is in.
                            m.d.sync += [dr_phase.eq(4), dr_wait.eq(0)]
                        with m.Else():
                            m.d.sync += dr_phase.eq(0)
                            m.d.comb += drain_done.eq(1)
                    m.d.sync += dr_row.eq(dr_row + 1)
                with m.Else():
                    with m.If(last_plane):
                        nxt = dr_row_addr + d["out_row"]
                        m.d.sync += [dr_plane.eq(0), dr_row.eq(dr_row + 1), dr_row_addr.eq(nxt),
                                     dr_addr.eq(nxt)]
                        with m.If(dr_row == R - 1):
                            m.d.sync += dr_phase.eq(0)
                            m.d.comb += drain_done.eq(1)
                    with m.Else():
                        m.d.sync += [dr_plane.eq(dr_plane + 1),
                                     dr_addr.eq(dr_addr + d["out_plane"])]
            with m.Case(4):
                m.d.sync += dr_wait.eq(dr_wait + 1)
                with m.If(dr_wait == HEAD_LAT):
                    m.d.sync += [dr_phase.eq(3), dr_row.eq(0), dr_byte.eq(0)]
            with m.Case(3):
                with m.If(self.results.ready):
                    m.d.sync += dr_byte.eq(dr_byte + 1)
                    with m.If(dr_byte == 3):
                        m.d.sync += dr_row.eq(dr_row + 1)
                        with m.If((dr_row == R - 1) | (dr_row + 1 == dr.rows_left)):
                            m.d.sync += [dr_phase.eq(0), dr_row.eq(0)]
                            m.d.comb += drain_done.eq(1)
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
        head_final = (dr_phase == 3) & dr.final & (dr_byte == 3) & (
            (dr_row == R - 1) | (dr_row + 1 == dr.rows_left))

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
                with m.If(ready & full.bit_select(rslot, 1)):
                    m.d.sync += [busy.eq(1), trace_on.eq(trace_flag.bit_select(rslot, 1)),
                                 up_i.eq(0), up_b.eq(0), up_addr.eq(g_in_base)]
                    m.next = "UNPACK_READ"
            # Unpack: a word's `pack` pixels (consecutive bytes) are gathered into its
            # bit-plane words, one pixel per cycle, then the planes are written, one per cycle.
            with m.State("UNPACK_READ"):
                m.d.comb += x_rd.addr.eq(Cat((up_i + 1)[:IAW], rslot))
                m.d.sync += [up_g.eq(0), up_gmask.eq(lane_group)]
                m.next = "UNPACK_GATHER"
            with m.State("UNPACK_GATHER"):
                if PACKING:
                    m.d.comb += x_rd.addr.eq(Cat((up_i + 2)[:IAW], rslot))
                    for b in range(8):
                        bit = Mux(x_rd.data[b], up_gmask, 0)
                        m.d.sync += up_planes[b].eq(Mux(up_g == 0, bit, up_planes[b] | bit))
                else:
                    # One pixel per word: its planes come straight from the pixel memory,
                    # which holds the pixel through the write cycles.
                    m.d.comb += x_rd.addr.eq(Cat((up_i + 1)[:IAW], rslot))
                m.d.sync += [up_i.eq(up_i + 1), up_g.eq(up_g + 1), up_gmask.eq(up_gmask << g_T)]
                with m.If(up_g == g_pack - 1):
                    m.d.sync += [up_b.eq(0), up_plane_addr.eq(up_addr)]
                    m.next = "UNPACK_WRITE"
            with m.State("UNPACK_WRITE"):
                m.d.comb += [wr_addr.eq(up_plane_addr), wr_en.eq(1)]
                if PACKING:
                    m.d.comb += x_rd.addr.eq(Cat((up_i + 1)[:IAW], rslot))
                    with m.Switch(up_b[:3]):
                        for b in range(8):
                            with m.Case(b):
                                m.d.comb += wr_words[0].eq(up_planes[b])
                else:
                    m.d.comb += [x_rd.addr.eq(Cat(up_i[:IAW], rslot)),
                                 wr_words[0].eq(Mux(x_rd.data.bit_select(up_b[:3], 1),
                                                    lane_group, 0))]
                m.d.sync += [up_b.eq(up_b + 1), up_plane_addr.eq(up_plane_addr + g_in_plane)]
                with m.If(up_b == g_bits - 1):
                    m.d.sync += [up_addr.eq(up_addr + 1), up_g.eq(0), up_gmask.eq(lane_group)]
                    with m.If(up_i == g_n_pixels):
                        m.d.sync += [full.bit_select(rslot, 1).eq(0), rslot.eq(~rslot),
                                     pass_i.eq(0), prog_rd.eq(0)]
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
                    m.d.comb += [wr_addr.eq(dr.out_t), wr_en.eq(mp_wmask)]
                    m.d.comb += [wr_words[k].eq(mp_next[k]) for k in range(MP_K)]
                with m.If(~s1_valid & ~s2.valid & ~pe.last_out & ~drain_busy
                          & ~drain_pipe_busy):
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
        with m.If(dr_phase == 3):
            m.d.comb += [res.valid.eq(1),
                         res.payload.data.eq(emit_byte),
                         res.payload.last.eq(head_final)]
        with m.Else():
            m.d.comb += [res.valid.eq(emit_valid), res.payload.data.eq(emit_data),
                         res.payload.last.eq(emit_last)]
        return m
