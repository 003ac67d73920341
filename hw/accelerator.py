"""The accelerator core: load parser, token input, sequencer, PE array, drain, max-pool engine.

`Accelerator(config)` runs a program compiled by `hw/compiler.py` (instruction set in
`hw/isa.py`) on each input arriving on `tokens` and sends its results on `results`.

Data path of an array pass (one reduction step per cycle, three pipeline stages):

    stage 0  loop counters (group > row group > column tile > step > tap); step memory address
    stage 1  step word -> activation run-read addresses (port A: columns, port B: rows, or a
             paired step's second operand run), weight address; column masks (grid end, 3x3
             zero padding) and edge reads (a 3x3 window crossing into the next lane group's
             band reads the word `band` away)
    stage 2  bank rotation, edge lane shifts (both runs), row-operand lane-group rotation
             (attention across bands), lane masks, PE array accumulate; a tile's last step
             loads the shadow
    drain    one row (all columns) per cycle through `pe_cols` LIF units, or one bit-plane per
             cycle for raw integer outputs, or a logit per row for the head; writes one run of
             `pe_cols` words per cycle while the next tile accumulates

Activation memory: `pe_cols` banks of `lanes`-bit words interleaved by address; a run of
`pe_cols` consecutive words at any address is read or written in one cycle. A word holds
`pack = lanes / T` lane groups (other positions of the same channel) when T < lanes, so the
spare lanes do useful work; the LIF units restart the membrane at each group's first lane.

Loading: every record is checked as it arrives: malformed -> BAD_RECORD; an address beyond a
memory, or a global/descriptor field outside `isa.field_limits` (T above the lanes, a base
beyond a memory, ...) -> DOES_NOT_FIT; the commit of such a program is refused. A descriptor
sits in one wide program word and loads in two cycles.

Latency: `pysim.cycles.cycle_report` gives the cycles of an inference exactly (busy cycles).
Throughput: `pe_rows * pe_cols * lanes` AND/accumulate lane operations per cycle on conv and
linear layers; max-pool: `(pe_cols - 1) // 2` output words per 3 cycles (a run read per
input row of the 3x3/2 windows).
Cost: the PE array (see `hw/pe.py`), `pe_cols` LIF units, `pe_cols` activation banks with two
read ports each, weight/parameter/step/program/input memories; no multipliers.
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ArrayConfig
from .lif import LifUnit
from .pe import PeArray
from .status import Status

BYTE_STREAM = stream.Signature(data.StructLayout({"data": 8, "last": 1}))
#: The core's status output (also read by the host link).
STATUS_LAYOUT = data.StructLayout({"ready": 1, "busy": 1, "error": 8})


def _log2(n: int) -> int:
    return max(1, (n - 1).bit_length())


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
        LC = _log2(C) if C > 1 else 0
        AW = _log2(cfg.act_depth * C)
        WAW, PAW, SAW = _log2(cfg.weight_depth), _log2(cfg.param_depth), _log2(cfg.step_depth)
        IAW = _log2(cfg.input_depth)
        NF = len(isa.DESC_FIELDS)

        error = Signal(8)
        ready = Signal()
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
        step_layout = data.StructLayout({"col": unsigned(AW), "row": unsigned(AW),
                                         "w": unsigned(WAW), "shift": 4, "neg": 1,
                                         "rot": unsigned(LR), "pair": 1, "shift2": 4,
                                         "neg2": 1})
        smem = Memory(shape=step_layout, depth=cfg.step_depth, init=[])
        # One program word holds a whole descriptor (a 32-bit lane per field, written field by
        # field), so a pass's descriptor loads in one read instead of one per field.
        prog = Memory(shape=unsigned(32 * NF), depth=cfg.program_depth, init=[])
        pix = Memory(shape=unsigned(8), depth=2 * cfg.input_depth, init=[])
        m.submodules.wmem, m.submodules.pmem, m.submodules.smem = wmem, pmem, smem
        m.submodules.prog, m.submodules.pix = prog, pix
        w_rd, w_wr = wmem.read_port(), wmem.write_port()
        # One address for both weight ports (loads and passes never overlap), and no read while
        # writing: a single-port RAM, so an iCE40 maps the weights to SPRAM.
        w_addr, w_load_addr = Signal(WAW), Signal(WAW)
        m.d.comb += [w_rd.addr.eq(w_addr), w_wr.addr.eq(w_addr), w_rd.en.eq(~w_wr.en)]
        p_rd, p_wr = pmem.read_port(), pmem.write_port()
        s_rd, s_wr = smem.read_port(), smem.write_port()
        g_rd, g_wr = prog.read_port(), prog.write_port(granularity=32)
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
                with m.Switch(sel):
                    for b in range(C):
                        with m.Case(b):
                            m.d.comb += word.eq(datas[b])
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
        g_n_pixels = Signal(16)
        g_bits = Signal(4)
        g_T = Signal(range(L + 1))
        g_in_base = Signal(AW)
        g_in_plane = Signal(AW)
        g_pack = Signal(range(L + 1))
        n_passes = Signal(16)

        # Lane masks of the loaded program: `valid` = lanes below pack * T, `group` = the T lanes
        # of lane group 0, `start` = the first lane of every group (where a LIF restarts).
        # pack * T by shift-and-add (both at most `lanes`): no multiplier.
        used = Signal(range(L * L + 1))
        m.d.comb += used.eq(sum(Mux(g_pack[i], g_T << i, 0) for i in range(len(g_pack))))
        lane_valid = Signal(L)
        lane_group = Signal(L)
        lane_start = Signal(L)
        all_ones = Const((1 << L) - 1, L)
        m.d.comb += [lane_valid.eq(~(all_ones << used)), lane_group.eq(~(all_ones << g_T))]
        with m.Switch(g_T):
            for t in range(1, L + 1):
                with m.Case(t):
                    m.d.comb += lane_start.eq(sum(1 << i for i in range(0, L, t)))

        ld = self.load
        rtype = Signal(8)
        idx = Signal(16)  # byte index within the record body
        ent = Signal(8)  # byte index within the current entry
        nent = Signal(16)  # entries completed
        count = Signal(8)
        base = Signal(16)
        SRW = max(96, 8 * R)  # the widest entry: a step (12 bytes) or a weight word (R bytes)
        sr = Signal(SRW)
        records = Signal(16)
        checksum = Signal(16)
        bad = Signal()
        in_body = Signal()
        discard = Signal()
        m.d.comb += ld.ready.eq(~busy)
        byte = ld.payload.data
        sr_next = Cat(sr[8:], byte)  # little-endian assembly, newest byte at the top
        entry_size = Signal(8)
        with m.Switch(rtype):
            with m.Case(isa.REC_WEIGHT):
                m.d.comb += entry_size.eq(R)
            with m.Case(isa.REC_PARAM):
                m.d.comb += entry_size.eq(isa.PARAM_BYTES)
            with m.Case(isa.REC_STEP):
                m.d.comb += entry_size.eq(isa.STEP_BYTES)
            with m.Default():
                m.d.comb += entry_size.eq(4)
        header = Signal(8)
        m.d.comb += header.eq(Mux(rtype == isa.REC_DESC, 2,
                                  Mux(rtype.matches(isa.REC_WEIGHT, isa.REC_PARAM,
                                                    isa.REC_STEP), 3, 0)))

        limits = isa.field_limits(cfg)
        out_of_range = Signal()  # the entry completing now holds a field outside `limits`

        def fail(code):
            return [error.eq(code), bad.eq(1), in_body.eq(0), discard.eq(~ld.payload.last)]

        def entry_word(size):
            return sr_next[SRW - 8 * size:]

        # Range check of the 32-bit field completing at this byte (descriptor or global
        # record), against `isa.field_limits`; decoded once, outside the parser's branches.
        field = entry_word(4)[:32]
        # The field's limits come from a small table indexed by the field number, and one
        # pair of comparators checks them: far fewer LUTs than a comparator pair per field.
        desc_lo, desc_hi = Signal(32), Signal(32)
        glob_lo, glob_hi = Signal(32), Signal(32)
        with m.Switch(nent[:6]):
            for i, name in enumerate(isa.DESC_FIELDS):
                with m.Case(i):
                    m.d.comb += [desc_lo.eq(limits[name][0]), desc_hi.eq(limits[name][1])]
        with m.Switch(nent[:3]):
            for i, name in enumerate(isa.GLOBAL_FIELDS):
                with m.Case(i):
                    m.d.comb += [glob_lo.eq(limits[name][0]), glob_hi.eq(limits[name][1])]
        is_desc = rtype == isa.REC_DESC
        lo_sel = Mux(is_desc, desc_lo, glob_lo)
        hi_sel = Mux(is_desc, desc_hi, glob_hi)
        # pack * T (T is loaded before pack) by shift-and-add: at most `lanes`.
        pack_lanes = sum(Mux(field[j], g_T << j, 0) for j in range(len(g_pack)))
        pack_field = nent[:3] == isa.GLOBAL_FIELDS.index("pack")
        field_bad = (field > hi_sel) | (field < lo_sel)
        desc_bad = field_bad
        glob_bad = field_bad | (pack_field & (pack_lanes > L))
        m.d.comb += out_of_range.eq(Mux(rtype == isa.REC_DESC, desc_bad,
                                        (rtype == isa.REC_GLOBAL) & glob_bad))

        with m.If(ld.valid & ld.ready):
            with m.If(discard):
                m.d.sync += discard.eq(~ld.payload.last)
            with m.Elif(~in_body):
                m.d.sync += [rtype.eq(byte), idx.eq(0), ent.eq(0), nent.eq(0), in_body.eq(1)]
                with m.If(byte != isa.REC_COMMIT):
                    m.d.sync += [checksum.eq(checksum + byte), ready.eq(0)]
                with m.If(~byte.matches(isa.REC_WEIGHT, isa.REC_PARAM, isa.REC_STEP,
                                        isa.REC_DESC, isa.REC_GLOBAL, isa.REC_COMMIT)):
                    m.d.sync += fail(Status.BAD_RECORD)
                with m.Elif(ld.payload.last):
                    m.d.sync += fail(Status.BAD_RECORD)
            with m.Else():
                done = Signal()
                m.d.sync += [idx.eq(idx + 1), sr.eq(sr_next)]
                with m.If(rtype != isa.REC_COMMIT):
                    m.d.sync += checksum.eq(checksum + byte)
                with m.If(idx < header):
                    # addr u16 (or descriptor index u16), then count u8
                    with m.If(idx == 0):
                        m.d.sync += base.eq(byte)
                    with m.Elif(idx == 1):
                        m.d.sync += base.eq(Cat(base[:8], byte))
                    with m.Else():
                        m.d.sync += count.eq(byte)
                    with m.If(idx == header - 1):
                        limit = Signal(17)
                        with m.Switch(rtype):
                            with m.Case(isa.REC_WEIGHT):
                                m.d.comb += limit.eq(cfg.weight_depth)
                            with m.Case(isa.REC_PARAM):
                                m.d.comb += limit.eq(cfg.param_depth)
                            with m.Case(isa.REC_STEP):
                                m.d.comb += limit.eq(cfg.step_depth)
                            with m.Default():
                                m.d.comb += limit.eq(cfg.program_depth)
                        last_addr = Mux(rtype == isa.REC_DESC, Cat(base[:8], byte) + 1,
                                        base + byte)
                        with m.If((rtype != isa.REC_DESC) & (byte == 0)):
                            m.d.sync += fail(Status.BAD_RECORD)
                        with m.Elif(last_addr > limit):
                            m.d.sync += fail(Status.DOES_NOT_FIT)
                        with m.Elif(ld.payload.last):
                            m.d.sync += fail(Status.BAD_RECORD)
                with m.Else():
                    entry_done = ent == entry_size - 1
                    m.d.sync += ent.eq(Mux(entry_done, 0, ent + 1))
                    with m.If(entry_done):
                        m.d.sync += nent.eq(nent + 1)
                        addr = base + nent
                        with m.Switch(rtype):
                            with m.Case(isa.REC_WEIGHT):
                                word = entry_word(R)
                                m.d.comb += [w_load_addr.eq(addr), w_wr.en.eq(1),
                                             w_wr.data.eq(Cat(*[word[8 * r:8 * r + WB]
                                                                for r in range(R)]))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_PARAM):
                                word = entry_word(isa.PARAM_BYTES)
                                m.d.comb += [p_wr.addr.eq(addr), p_wr.en.eq(1),
                                             p_wr.data.eq(Cat(word[:A], word[32:32 + M]))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_STEP):
                                word = entry_word(isa.STEP_BYTES)
                                m.d.comb += [s_wr.addr.eq(addr), s_wr.en.eq(1),
                                             s_wr.data.eq(Cat(word[:AW], word[32:32 + AW],
                                                              word[64:64 + WAW], word[80:84],
                                                              word[87],
                                                              word[32 + isa.ROT_SHIFT:
                                                                   32 + isa.ROT_SHIFT + LR],
                                                              word[95], word[88:92],
                                                              word[92]))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_DESC):
                                word = entry_word(4)
                                m.d.comb += [g_wr.addr.eq(base), g_wr.en.eq(1 << nent[:6]),
                                             g_wr.data.eq(Cat(*[word[:32]] * NF))]
                                m.d.comb += done.eq(nent + 1 == NF)
                            with m.Case(isa.REC_GLOBAL):
                                word = entry_word(4)
                                with m.Switch(nent):
                                    for i, (_, sig) in enumerate(zip(
                                            isa.GLOBAL_FIELDS,
                                            (g_n_pixels, g_bits, g_T, g_in_base, g_in_plane,
                                             g_pack),
                                            strict=True)):
                                        with m.Case(i):
                                            m.d.sync += sig.eq(word[:len(sig)])
                                m.d.comb += done.eq(nent + 1 == len(isa.GLOBAL_FIELDS))
                            with m.Case(isa.REC_COMMIT):
                                pass
                    with m.If(entry_done & out_of_range):
                        # A field beyond this array's memories or lanes: refuse the program.
                        m.d.sync += fail(Status.DOES_NOT_FIT)
                    with m.Elif(rtype == isa.REC_COMMIT):
                        with m.If(idx == isa.COMMIT_BYTES - 1):
                            word = sr_next[SRW - 48:]
                            ok = (~bad & (word[16:32] == records) & (word[32:48] == checksum)
                                  & (word[:16] != 0) & (word[:16] <= cfg.program_depth))
                            m.d.sync += [n_passes.eq(word[:16]), ready.eq(ok), bad.eq(0),
                                         records.eq(0), checksum.eq(0), in_body.eq(0)]
                            with m.If(~ok & ~bad):  # after a failed record, keep its code
                                m.d.sync += error.eq(Status.BAD_RECORD)
                        with m.Elif(ld.payload.last):
                            m.d.sync += fail(Status.BAD_RECORD)
                    with m.Elif(done):
                        m.d.sync += [in_body.eq(0), records.eq(records + 1)]
                    with m.Elif(ld.payload.last):
                        m.d.sync += fail(Status.BAD_RECORD)

        # ---- token input (two slots) ---------------------------------------------------------
        tk = self.tokens
        full = Signal(2)
        trace_flag = Signal(2)
        wslot = Signal()
        rslot = Signal()
        tcount = Signal(17)
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
        def field_shape(name):
            if name in ("col_base", "col_g", "col_rg", "col_ct", "row_base", "row_g", "row_rg",
                        "row_ct", "out_base", "out_g", "out_rg", "out_ct", "out_row",
                        "out_plane", "dump_base"):
                return unsigned(AW)
            if name in ("w_base", "w_g", "w_rg"):
                return unsigned(WAW)
            if name in ("par_base", "par_g", "par_rg"):
                return unsigned(PAW)
            if name == "step_base":
                return unsigned(SAW)
            return unsigned(AW + 1)

        d = {name: Signal(field_shape(name), name="d_" + name) for name in isa.DESC_FIELDS}

        # ---- PE array and pipeline -----------------------------------------------------------
        m.submodules.pe = pe = PeArray(cfg)
        trace_on = Signal()

        # stage 0 counters
        s0_run = Signal()
        g_i, rg_i, ct_i = Signal(16), Signal(16), Signal(16)
        st_i = Signal(16)
        ky, kx = Signal(2), Signal(2)
        tap_off = Signal(AW)
        tap_i = Signal(4)
        col_gb, col_rb, col_t = Signal(AW), Signal(AW), Signal(AW)
        row_gb, row_rb, row_t = Signal(AW), Signal(AW), Signal(AW)
        w_gb, w_t = Signal(WAW), Signal(WAW)
        par_gb, par_t = Signal(PAW), Signal(PAW)
        out_gb, out_rb, out_t = Signal(AW), Signal(AW), Signal(AW)
        p0 = Signal(AW + 1)
        rows_left = Signal(signed(18))

        st_last_step = (st_i == d["steps"] - 1) & (tap_i == d["taps"] - 1)
        ct_last = ct_i == d["cts"] - 1
        rg_last = rg_i == d["rgs"] - 1
        g_last = g_i == d["groups"] - 1

        drain_busy = Signal()
        s1 = Signal(data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "ky": 2, "kx": 2, "tap": 4, "tap_off": AW,
            "col_t": AW, "row_t": AW, "w_t": WAW, "p0": AW + 1, "par_t": PAW, "out_t": AW,
            "rows_left": signed(18), "first_ct": 1, "last_ct": 1, "final": 1}))
        s2 = Signal(data.StructLayout({
            "valid": 1, "first": 1, "last": 1, "shift": 4, "neg": 1, "pair": 1, "shift2": 4,
            "neg2": 1, "col_lo": max(LC, 1),
            "row_lo": max(LC, 1), "onehot": max(LC, 1), "mask": C, "valid_cols": C,
            "up": C, "dn": C, "rot": LR,
            "p0": AW + 1,
            "par_t": PAW, "out_t": AW, "rows_left": signed(18), "first_ct": 1, "last_ct": 1,
            "final": 1}))
        stall = Signal()
        # A tile's last step waits until the shadow of the previous tile has been drained.
        m.d.comb += stall.eq(st_last_step & (drain_busy | (s1.valid & s1.last)
                                             | (s2.valid & s2.last)))
        issue = Signal()
        m.d.comb += issue.eq(s0_run & ~stall)
        m.d.comb += s_rd.addr.eq(d["step_base"] + st_i)

        m.d.sync += s1.valid.eq(issue)
        with m.If(issue):
            m.d.sync += [
                s1.first.eq((st_i == 0) & (tap_i == 0)), s1.last.eq(st_last_step),
                s1.ky.eq(ky), s1.kx.eq(kx), s1.tap.eq(tap_i), s1.tap_off.eq(tap_off),
                s1.col_t.eq(col_t), s1.row_t.eq(row_t), s1.w_t.eq(w_t), s1.p0.eq(p0),
                s1.par_t.eq(par_t), s1.out_t.eq(out_t), s1.rows_left.eq(rows_left),
                s1.first_ct.eq(ct_i == 0), s1.last_ct.eq(ct_last),
                s1.final.eq(ct_last & rg_last & g_last),
            ]
            # advance taps, steps, tiles
            three = d["taps"] == 9
            with m.If(tap_i != d["taps"] - 1):
                m.d.sync += tap_i.eq(tap_i + 1)
                with m.If(kx == 2):
                    m.d.sync += [kx.eq(0), ky.eq(ky + 1), tap_off.eq(tap_off + d["width"] - 2)]
                with m.Else():
                    m.d.sync += [kx.eq(kx + 1), tap_off.eq(tap_off + 1)]
            with m.Else():
                m.d.sync += [tap_i.eq(0), kx.eq(Mux(three, 0, 1)), ky.eq(Mux(three, 0, 1)),
                             tap_off.eq(Mux(three, -d["width"] - 1, 0))]
                with m.If(st_i != d["steps"] - 1):
                    m.d.sync += st_i.eq(st_i + 1)
                with m.Else():
                    m.d.sync += st_i.eq(0)
                    with m.If(~ct_last):
                        m.d.sync += [ct_i.eq(ct_i + 1), col_t.eq(col_t + d["col_ct"]),
                                     row_t.eq(row_t + d["row_ct"]), out_t.eq(out_t + d["out_ct"]),
                                     p0.eq(p0 + C)]
                    with m.Else():
                        m.d.sync += [ct_i.eq(0), p0.eq(0)]
                        with m.If(~rg_last):
                            nc, nr = col_rb + d["col_rg"], row_rb + d["row_rg"]
                            nw, npar = w_t + d["w_rg"], par_t + d["par_rg"]
                            no = out_rb + d["out_rg"]
                            m.d.sync += [rg_i.eq(rg_i + 1), col_rb.eq(nc), col_t.eq(nc),
                                         row_rb.eq(nr), row_t.eq(nr), w_t.eq(nw),
                                         par_t.eq(npar), out_rb.eq(no), out_t.eq(no),
                                         rows_left.eq(rows_left - R)]
                        with m.Else():
                            m.d.sync += rg_i.eq(0)
                            with m.If(~g_last):
                                nc, nr = col_gb + d["col_g"], row_gb + d["row_g"]
                                nw, npar = w_gb + d["w_g"], par_gb + d["par_g"]
                                no = out_gb + d["out_g"]
                                m.d.sync += [g_i.eq(g_i + 1), col_gb.eq(nc), col_rb.eq(nc),
                                             col_t.eq(nc), row_gb.eq(nr), row_rb.eq(nr),
                                             row_t.eq(nr), w_gb.eq(nw), w_t.eq(nw),
                                             par_gb.eq(npar), par_t.eq(npar), out_gb.eq(no),
                                             out_rb.eq(no), out_t.eq(no),
                                             rows_left.eq(d["rows"])]
                            with m.Else():
                                m.d.sync += s0_run.eq(0)

        # stage 1: addresses and masks
        step = s_rd.data
        col_addr = Signal(AW)
        row_addr = Signal(AW)
        # A paired step's second run follows the column run through the taps.
        m.d.comb += [col_addr.eq(s1.col_t + step.col + s1.tap_off),
                     row_addr.eq(s1.row_t + step.row + Mux(step.pair, s1.tap_off, 0)),
                     w_addr.eq(Mux(w_wr.en, w_load_addr, s1.w_t + step.w + s1.tap))]
        dump_addr = Signal(AW)
        mp_addr = Signal(AW)
        mp_active = Signal()
        dump_active = Signal()
        # Edge reads of a 3x3 window: at a band's first row the row above is the previous
        # band's last row (`band` words on, lane groups shifted up a group); at its last row
        # the row below is the next band's first row (`band` words back, shifted down).
        up = Signal(C)
        dn = Signal(C)
        band_words = d["band"][LC:]
        adjust = [Mux(up[c], band_words, Mux(dn[c], -band_words, 0)) for c in range(C)]
        with m.If(mp_active):
            m.d.comb += run_read(0, mp_addr)
        with m.Else():
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
            m.d.comb += pos.eq(s1.p0 + c)
            x = pos & wmask
            ok = pos < d["cols"]
            pad_ok = ~(((s1.kx == 0) & (x == 0)) | ((s1.kx == 2) & (x == wmask)))
            m.d.comb += [mask[c].eq(ok & (pad_ok | ~d["pad"][0])), valid_cols[c].eq(ok),
                         up[c].eq(d["pad"][0] & (s1.ky == 0) & (pos < d["width"])),
                         dn[c].eq(d["pad"][0] & (s1.ky == 2) & (pos >= d["lastrow"]))]
        m.d.sync += s2.valid.eq(s1.valid)
        with m.If(s1.valid):
            m.d.sync += [
                s2.first.eq(s1.first), s2.last.eq(s1.last), s2.shift.eq(step.shift),
                s2.neg.eq(step.neg), s2.pair.eq(step.pair & (d["row_mode"] == isa.ROW_ONES)),
                s2.shift2.eq(step.shift2), s2.neg2.eq(step.neg2),
                s2.col_lo.eq(col_addr[:LC] if LC else 0),
                s2.row_lo.eq(row_addr[:LC] if LC else 0), s2.onehot.eq(step.col[:max(LC, 1)]),
                s2.mask.eq(mask), s2.valid_cols.eq(valid_cols), s2.p0.eq(s1.p0),
                s2.up.eq(up), s2.dn.eq(dn), s2.rot.eq(step.rot),
                s2.par_t.eq(s1.par_t), s2.out_t.eq(s1.out_t),
                s2.rows_left.eq(s1.rows_left), s2.first_ct.eq(s1.first_ct),
                s2.last_ct.eq(s1.last_ct), s2.final.eq(s1.final),
            ]

        # stage 2: operands into the PE array
        colw = rotate(0, s2.col_lo)
        roww = rotate(1, s2.row_lo)
        ones = (1 << L) - 1
        for c in range(C):
            onehot = Mux(s2.onehot == c, ones, 0) if C > 1 else ones
            edge = Mux(s2.up[c], colw[c] << g_T, Mux(s2.dn[c], colw[c] >> g_T, colw[c]))
            word = Mux(d["col_mode"][0], onehot, edge)
            m.d.comb += pe.colop[c].eq(Mux(s2.mask[c], word, 0) & lane_valid)
            # A paired step's second operand: port B's run, with the same edges and masks.
            edge2 = Mux(s2.up[c], roww[c] << g_T, Mux(s2.dn[c], roww[c] >> g_T, roww[c]))
            m.d.comb += pe.colop2[c].eq(Mux(s2.pair & s2.mask[c], edge2, 0) & lane_valid)
        back = Signal(range(L * L + 1))
        m.d.comb += back.eq(used - s2.rot)
        for r in range(R):
            rw = roww[r] if r < C else Const(ones, L)
            # Lane-group rotation, cyclic over the used lanes (attention across bands).
            rotated = ((rw << s2.rot) | (rw >> back)) & lane_valid
            rw = Mux(s2.rot == 0, rw, rotated)
            m.d.comb += pe.rowop[r].eq(Mux(d["row_mode"][0], rw, ones))
            m.d.comb += pe.weight[r].eq(w_rd.data[r * WB:(r + 1) * WB])
        m.d.comb += [pe.valid.eq(s2.valid), pe.first.eq(s2.first), pe.last.eq(s2.last),
                     pe.shift.eq(s2.shift), pe.neg.eq(s2.neg), pe.shift2.eq(s2.shift2),
                     pe.neg2.eq(s2.neg2)]

        # ---- drain -----------------------------------------------------------------------------
        dr = Signal(data.StructLayout({
            "mask": C, "par_t": PAW, "out_t": AW, "rows_left": signed(18), "first_ct": 1,
            "last_ct": 1, "final": 1}))
        dr_phase = Signal(2)  # 0 idle, 1 first cycle (param read), 2 rows, 3 emit
        dr_row = Signal(range(R + 1))
        dr_plane = Signal(6)
        dr_addr = Signal(AW)
        dr_row_addr = Signal(AW)
        dr_emit = Signal(32)
        last_plane_c = Signal()
        dr_byte = Signal(2)
        logits = [Signal(32, name=f"logit{r}") for r in range(R)]
        m.d.comb += drain_busy.eq(dr_phase != 0)
        with m.If(s2.valid & s2.last):
            m.d.sync += [dr.mask.eq(s2.valid_cols), dr.par_t.eq(s2.par_t), dr.out_t.eq(s2.out_t),
                         dr.rows_left.eq(s2.rows_left), dr.first_ct.eq(s2.first_ct),
                         dr.last_ct.eq(s2.last_ct), dr.final.eq(s2.final), dr_phase.eq(1),
                         dr_row.eq(0), dr_plane.eq(0)]
        m.d.comb += p_rd.addr.eq(dr.par_t + dr_row + ((dr_phase == 2) & last_plane_c))
        with m.If(dr_phase == 1):
            m.d.comb += p_rd.addr.eq(dr.par_t)
        bias = p_rd.data[:A].as_signed()
        thr = p_rd.data[A:].as_signed()
        # The drained row of the shadow accumulators: an explicit R-way mux (indexing the
        # array by a signal would build one all-to-all part-select, slow to elaborate).
        shadow_row = Signal(pe.shadow.shape().elem_shape, name="shadow_row")
        with m.Switch(dr_row):
            for r in range(R):
                with m.Case(r):
                    m.d.comb += shadow_row.eq(pe.shadow[r])
        out_words = Signal(data.ArrayLayout(L, C))
        head = d["out_mode"] == isa.OUT_HEAD
        raw = d["out_mode"] == isa.OUT_RAW
        row_sum = Signal(signed(32))
        terms = []
        for c in range(C):
            m.submodules[f"lif{c}"] = lif = LifUnit(cfg)
            m.d.comb += [lif.x.eq(shadow_row[c]), lif.bias.eq(bias), lif.threshold.eq(thr),
                         lif.start.eq(lane_start), lif.valid.eq(lane_valid),
                         lif.step.eq(d["out_mode"] == isa.OUT_STEP)]
            plane = Signal(L, name=f"plane{c}")
            for lane in range(L):
                xv = Signal(signed(A + 1), name=f"xv{c}_{lane}")
                m.d.comb += [xv.eq(shadow_row[c][lane] + bias),
                             plane[lane].eq(xv.bit_select(dr_plane[:_log2(A + 1)], 1))]
                terms.append(shadow_row[c][lane])
            m.d.comb += out_words[c].eq(Mux(raw, plane & lane_valid, lif.spikes))
        m.d.comb += row_sum.eq(sum(terms))
        row_valid = dr_row < dr.rows_left
        last_plane = dr_plane == d["out_planes"] - 1
        m.d.comb += last_plane_c.eq(last_plane)
        with m.Switch(dr_phase):
            with m.Case(1):
                m.d.sync += [dr_phase.eq(2), dr_addr.eq(dr.out_t), dr_row_addr.eq(dr.out_t)]
            with m.Case(2):
                with m.If(head):
                    logit = Signal(32)
                    m.d.comb += logit.eq(Mux(dr.first_ct, 0, logits[0]) + row_sum)
                    for r in range(R):
                        with m.If(dr_row == r):
                            m.d.comb += logit.eq(Mux(dr.first_ct, 0, logits[r]) + row_sum)
                            m.d.sync += logits[r].eq(logit)
                    m.d.sync += dr_emit.eq(logit + bias)
                    with m.If(dr.last_ct & row_valid):
                        m.d.sync += [dr_phase.eq(3), dr_byte.eq(0)]
                    with m.Elif(dr_row == R - 1):
                        m.d.sync += dr_phase.eq(0)
                    m.d.sync += dr_row.eq(dr_row + 1)
                with m.Else():
                    m.d.comb += [wr_addr.eq(dr_addr), wr_words.eq(out_words),
                                 wr_en.eq(Mux(row_valid, dr.mask, 0))]
                    with m.If(last_plane):
                        nxt = dr_row_addr + d["out_row"]
                        m.d.sync += [dr_plane.eq(0), dr_row.eq(dr_row + 1), dr_row_addr.eq(nxt),
                                     dr_addr.eq(nxt)]
                        with m.If(dr_row == R - 1):
                            m.d.sync += dr_phase.eq(0)
                    with m.Else():
                        m.d.sync += [dr_plane.eq(dr_plane + 1),
                                     dr_addr.eq(dr_addr + d["out_plane"])]
            with m.Case(3):
                emitting = Signal()
                m.d.comb += emitting.eq(1)
                with m.If(self.results.ready):
                    m.d.sync += [dr_byte.eq(dr_byte + 1), dr_emit.eq(dr_emit >> 8)]
                    with m.If(dr_byte == 3):
                        m.d.sync += dr_phase.eq(Mux(dr_row == R, 0, 2))
                        with m.If(dr_row == R):
                            m.d.sync += dr_row.eq(0)
        head_final = (dr_phase == 3) & dr.final & (dr_byte == 3) & (
            (dr_row == R) | (dr_row == dr.rows_left))

        # ---- max-pool engine --------------------------------------------------------------------
        # A chunk of MP_K consecutive outputs of one output row needs input columns 2*ox0 - 1 ..
        # 2*(ox0 + MP_K) - 1: one run read (MP_S when pe_cols < 4) per input row, three rows,
        # then the chunk's MP_K words are written as one run.
        MP_K, MP_S = isa.maxpool_chunk(C)
        mp_run = Signal()
        mp_ch, mp_oy, mp_ox = Signal(16), Signal(16), Signal(16)
        mp_ky = Signal(2)
        mp_seg = Signal(range(MP_S + 1))  # (never 0 bits wide)
        mp_chbase = Signal(AW)
        mp_ybase = Signal(AW)  # address of input row 2*oy - 1 of this channel
        mp_row = Signal(AW)  # address of input row 2*oy - 1 + ky
        mp_iy = Signal(signed(18))
        mp_ix0 = Signal(signed(18))  # 2*ox0 - 1
        mp_out = Signal(AW)
        ix = mp_ix0 + (mp_seg << LC)  # pe_cols is a power of two: no multiplier
        # The row above a band's first row is the previous band's last row (edge read).
        mp_up = mp_iy < 0
        m.d.comb += mp_addr.eq(mp_row + ix + Mux(mp_up, d["band"], 0))
        mp_left = Signal(16)  # outputs of this row from ox0 on
        m.d.comb += mp_left.eq(d["mp_wo"] - mp_ox)
        mp_last_chunk = mp_left <= MP_K
        mp_s = Signal(data.StructLayout({
            "valid": 1, "rowok": 1, "first": 1, "last": 1, "out": AW, "lo": max(LC, 1), "up": 1,
            "ix": signed(18), "seg": range(MP_S + 1), "wmask": C}))
        mp_or = Signal(data.ArrayLayout(L, MP_K))
        mp_row_last = (mp_ky == 2) & (mp_seg == MP_S - 1)
        m.d.sync += mp_s.valid.eq(mp_run)
        with m.If(mp_run):
            m.d.sync += [mp_s.rowok.eq(mp_iy < d["mp_h"]), mp_s.up.eq(mp_up), mp_s.ix.eq(ix),
                         mp_s.seg.eq(mp_seg),
                         mp_s.first.eq((mp_ky == 0) & (mp_seg == 0)), mp_s.last.eq(mp_row_last),
                         mp_s.out.eq(mp_out), mp_s.lo.eq(mp_addr[:LC] if LC else 0),
                         mp_s.wmask.eq(Mux(mp_last_chunk,
                                           ~(Const(-1, C) << mp_left[:_log2(C + 1)]),
                                           (1 << MP_K) - 1))]
            with m.If(mp_seg != MP_S - 1):
                m.d.sync += mp_seg.eq(mp_seg + 1)
            with m.Elif(~mp_row_last):
                m.d.sync += [mp_seg.eq(0), mp_ky.eq(mp_ky + 1), mp_iy.eq(mp_iy + 1),
                             mp_row.eq(mp_row + d["mp_w"])]
            with m.Else():
                m.d.sync += [mp_seg.eq(0), mp_ky.eq(0),
                             mp_out.eq(mp_out + Mux(mp_last_chunk, mp_left, MP_K))]
                with m.If(~mp_last_chunk):
                    m.d.sync += [mp_ox.eq(mp_ox + MP_K), mp_ix0.eq(mp_ix0 + 2 * MP_K),
                                 mp_row.eq(mp_ybase), mp_iy.eq(mp_iy - 2)]
                with m.Elif(mp_oy != d["mp_ho"] - 1):
                    ny = mp_ybase + (d["mp_w"] << 1)
                    m.d.sync += [mp_ox.eq(0), mp_ix0.eq(-1), mp_oy.eq(mp_oy + 1),
                                 mp_ybase.eq(ny), mp_row.eq(ny), mp_iy.eq(mp_iy)]
                with m.Elif(mp_ch != d["groups"] - 1):
                    nb = mp_chbase + d["col_g"]
                    m.d.sync += [mp_ox.eq(0), mp_ix0.eq(-1), mp_oy.eq(0), mp_iy.eq(-1),
                                 mp_ch.eq(mp_ch + 1), mp_chbase.eq(nb),
                                 mp_ybase.eq(nb - d["mp_w"]), mp_row.eq(nb - d["mp_w"])]
                with m.Else():
                    m.d.sync += mp_run.eq(0)
        # Column c of the run is input column ix + c; output k of the chunk ORs the run's
        # columns 2k .. 2k + 2 (in segment seg: columns seg * C + c).
        mp_words = rotate(0, mp_s.lo)
        mp_cols = []
        for c in range(C):
            col_x = mp_s.ix + c
            ok = mp_s.rowok & (col_x >= 0) & (col_x < d["mp_w"])
            word = Mux(mp_s.up, (mp_words[c] << g_T) & lane_valid, mp_words[c])
            mp_cols.append(Mux(ok, word, 0))
        mp_next = Signal(data.ArrayLayout(L, MP_K))
        for k in range(MP_K):
            hits = []
            for c in range(C):
                if MP_S == 1:
                    if 2 * k <= c <= 2 * k + 2:
                        hits.append(mp_cols[c])
                else:
                    j = (mp_s.seg << LC) + c
                    hits.append(Mux((j >= 2 * k) & (j <= 2 * k + 2), mp_cols[c], 0))
            m.d.comb += mp_next[k].eq(Mux(mp_s.first, 0, mp_or[k]) | _or_all(hits, L))
        with m.If(mp_s.valid):
            m.d.sync += mp_or.eq(mp_next)
        mp_write = mp_s.valid & mp_s.last

        # ---- sequencer ---------------------------------------------------------------------------
        pass_i = Signal(16)
        up_i = Signal(17)
        up_b = Signal(4)
        up_g = Signal(range(L + 1))
        up_gmask = Signal(L)
        up_addr = Signal(AW)
        up_plane_addr = Signal(AW)
        up_planes = Signal(data.ArrayLayout(L, 8))
        dump_i = Signal(AW + 1)
        dump_word = Signal(L)
        dump_byte = Signal(2)
        emit_data = Signal(8)
        emit_valid = Signal()
        emit_last = Signal()
        WBY = isa.word_bytes(L)

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
                m.d.comb += x_rd.addr.eq(Cat((up_i + 2)[:IAW], rslot))
                for b in range(8):
                    bit = Mux(x_rd.data[b], up_gmask, 0)
                    m.d.sync += up_planes[b].eq(Mux(up_g == 0, bit, up_planes[b] | bit))
                m.d.sync += [up_i.eq(up_i + 1), up_g.eq(up_g + 1), up_gmask.eq(up_gmask << g_T)]
                with m.If(up_g == g_pack - 1):
                    m.d.sync += [up_b.eq(0), up_plane_addr.eq(up_addr)]
                    m.next = "UNPACK_WRITE"
            with m.State("UNPACK_WRITE"):
                m.d.comb += x_rd.addr.eq(Cat((up_i + 1)[:IAW], rslot))
                m.d.comb += [wr_addr.eq(up_plane_addr), wr_en.eq(1)]
                with m.Switch(up_b[:3]):
                    for b in range(8):
                        with m.Case(b):
                            m.d.comb += wr_words[0].eq(up_planes[b])
                m.d.sync += [up_b.eq(up_b + 1), up_plane_addr.eq(up_plane_addr + g_in_plane)]
                with m.If(up_b == g_bits - 1):
                    m.d.sync += [up_addr.eq(up_addr + 1), up_g.eq(0), up_gmask.eq(lane_group)]
                    with m.If(up_i == g_n_pixels):
                        m.d.sync += [full.bit_select(rslot, 1).eq(0), rslot.eq(~rslot),
                                     pass_i.eq(0)]
                        m.next = "DESC"
                    with m.Else():
                        m.next = "UNPACK_GATHER"
            with m.State("DESC"):
                m.d.comb += g_rd.addr.eq(pass_i)
                m.next = "DESC_LATCH"
            with m.State("DESC_LATCH"):
                for i, name in enumerate(isa.DESC_FIELDS):
                    m.d.sync += d[name].eq(g_rd.data[32 * i:32 * i + 32])
                m.next = "START"
            with m.State("START"):
                three = d["taps"] == 9
                m.d.sync += [
                    g_i.eq(0), rg_i.eq(0), ct_i.eq(0), st_i.eq(0), tap_i.eq(0),
                    kx.eq(Mux(three, 0, 1)), ky.eq(Mux(three, 0, 1)),
                    tap_off.eq(Mux(three, -d["width"] - 1, 0)),
                    col_gb.eq(d["col_base"]), col_rb.eq(d["col_base"]), col_t.eq(d["col_base"]),
                    row_gb.eq(d["row_base"]), row_rb.eq(d["row_base"]), row_t.eq(d["row_base"]),
                    w_gb.eq(d["w_base"]), w_t.eq(d["w_base"]), par_gb.eq(d["par_base"]),
                    par_t.eq(d["par_base"]), out_gb.eq(d["out_base"]), out_rb.eq(d["out_base"]),
                    out_t.eq(d["out_base"]), p0.eq(0), rows_left.eq(d["rows"]),
                    mp_ch.eq(0), mp_oy.eq(0), mp_ox.eq(0), mp_ky.eq(0), mp_seg.eq(0),
                    mp_chbase.eq(d["col_base"]), mp_ybase.eq(d["col_base"] - d["mp_w"]),
                    mp_row.eq(d["col_base"] - d["mp_w"]), mp_iy.eq(-1), mp_ix0.eq(-1),
                    mp_out.eq(d["out_base"]),
                ]
                with m.If(d["op"] == isa.OP_MAXPOOL):
                    m.d.sync += mp_run.eq(1)
                    m.next = "MAXPOOL"
                with m.Else():
                    m.d.sync += s0_run.eq(1)
                    m.next = "ARRAY"
            with m.State("ARRAY"):
                with m.If(~s0_run & ~s1.valid & ~s2.valid & ~drain_busy):
                    m.next = "PASS_END"
            with m.State("MAXPOOL"):
                m.d.comb += mp_active.eq(1)
                with m.If(mp_write):
                    m.d.comb += [wr_addr.eq(mp_s.out), wr_en.eq(mp_s.wmask)]
                    m.d.comb += [wr_words[k].eq(mp_next[k]) for k in range(MP_K)]
                with m.If(~mp_run & ~mp_s.valid):
                    m.next = "PASS_END"
            with m.State("PASS_END"):
                m.d.sync += dump_i.eq(0)
                with m.If(trace_on & (d["dump_words"] != 0)):
                    m.next = "DUMP_READ"
                with m.Elif(pass_i == n_passes - 1):
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
                m.d.sync += dump_word.eq(rotate(1, dump_addr[:LC] if LC else Const(0, 1))[0])
                m.next = "DUMP_EMIT"
            with m.State("DUMP_EMIT"):
                m.d.comb += [emit_valid.eq(1),
                             emit_data.eq(dump_word >> Cat(Const(0, 3), dump_byte))]
                with m.If(self.results.ready):
                    m.d.sync += dump_byte.eq(dump_byte + 1)
                    with m.If(dump_byte == WBY - 1):
                        m.d.sync += dump_i.eq(dump_i + 1)
                        with m.If(dump_i == d["dump_words"] - 1):
                            with m.If(pass_i == n_passes - 1):
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
            m.d.comb += [res.valid.eq(1), res.payload.data.eq(dr_emit[:8]),
                         res.payload.last.eq(head_final)]
        with m.Else():
            m.d.comb += [res.valid.eq(emit_valid), res.payload.data.eq(emit_data),
                         res.payload.last.eq(emit_last)]
        return m
