"""The load parser: load records (`hw/isa.py`) in, memory writes and the program's globals out.

`LoadParser(config)` takes the load image byte by byte (`load`, whole records per chunk, `last`
on a chunk's final byte) while the core is idle (`busy` low), assembles each entry in a shift
register and, on its last byte, writes it: a weight word, a parameter (bias, threshold), a
reduction step (its fields cut to `isa.step_bits`, slices from `isa.STEP_LAYOUT`), or one
descriptor field into its program word lane; global fields go to `globals`. Every record is
checked as it arrives: a malformed one -> BAD_RECORD; an address beyond a memory, a field
outside `isa.field_limits`, or a step the array cannot run -> DOES_NOT_FIT; the rest of the
chunk is dropped and the next commit refused. The commit record checks the record count and
the byte-sum checksum and sets `ready`.

Its reference is the load image decoder `pysim.hwref.decode_image` (what the memories hold)
and the compiler's records (`hw.compiler.CompiledNetwork.records`).

Latency: a memory write in the cycle an entry's last byte arrives; `ready` the cycle after the
commit's last byte. Throughput: one byte per cycle.
Cost: a shift register of the widest entry (96 bits, or 8 * pe_rows), record counters, a
range check per distinct field limit (on the bits the limit needs), no multipliers.
"""

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil, times_const
from .config import ArrayConfig
from .status import Status
from .streams import BYTE_STREAM


def write_signature(addr_bits: int, data_shape, en_bits: int = 1) -> wiring.Signature:
    """A memory write: address, data, enable (one bit per lane of a granular write)."""
    return wiring.Signature({"addr": Out(addr_bits), "data": Out(data_shape),
                             "en": Out(en_bits)})


def globals_layout(config: ArrayConfig) -> data.StructLayout:
    """The program's global fields as the registers hold them (`isa.GLOBAL_FIELDS`)."""
    bits = isa.field_bits(config)
    return data.StructLayout({name: bits[name] for name in isa.GLOBAL_FIELDS})


def step_layout(config: ArrayConfig) -> data.StructLayout:
    """A reduction step as the step memory holds it (`isa.step_bits`)."""
    return data.StructLayout({name: unsigned(n) for name, n in isa.step_bits(config).items()})


class LoadParser(wiring.Component):
    """See the module docstring. `error_set` pulses with `error` when a record fails."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        cfg = config
        R, WB, A, M = cfg.pe_rows, cfg.weight_bits, cfg.acc_bits, cfg.membrane_bits
        FW, FPW = isa.field_width(cfg), isa.FIELDS_PER_WORD
        super().__init__({
            "load": In(BYTE_STREAM),
            "busy": In(1),
            "weight": Out(write_signature(log2_ceil(cfg.weight_depth), R * WB)),
            "param": Out(write_signature(log2_ceil(cfg.param_depth), A + M)),
            "step": Out(write_signature(log2_ceil(cfg.step_depth), step_layout(cfg))),
            "program": Out(write_signature(log2_ceil(cfg.program_depth * isa.desc_words()),
                                           FW * FPW, FPW)),
            "globals": Out(globals_layout(cfg)),
            "n_passes": Out(range(cfg.program_depth + 1)),
            "ready": Out(1),
            "error": Out(8),
            "error_set": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, L = cfg.pe_rows, cfg.lanes
        WB, A, M = cfg.weight_bits, cfg.acc_bits, cfg.membrane_bits
        PAIRED, PACKING = cfg.paired_steps, cfg.lane_packing
        NF = len(isa.DESC_FIELDS)
        FPW, NW, FW = isa.FIELDS_PER_WORD, isa.desc_words(), isa.field_width(cfg)
        FPB = (FPW - 1).bit_length()  # FIELDS_PER_WORD is a power of two
        step_fields = isa.step_bits(cfg)
        g = self.globals
        ld = self.load
        rtype = Signal(8)
        idx = Signal(3)  # byte index within the record body (saturates: only 0 .. 5 matter)
        assert max(isa.COMMIT_BYTES, *(h.nbytes for h in isa.RECORD_HEADER.values())) < 7
        # Descriptor and global records: one FIELD_LAYOUT entry per field, in order.
        assert all(f.lsb == 8 * isa.FIELD_LAYOUT.nbytes * i and f.width == 32
                   for layout in (isa.DESC_LAYOUT, isa.GLOBAL_LAYOUT)
                   for i, f in enumerate(layout))
        weight_layout = isa.weight_layout(R)
        ent = Signal(8)  # byte index within the current entry
        nent = Signal(8)  # entries completed (a record holds at most 255)
        count = Signal(isa.ENTRIES_HEADER["count"].width)
        base = Signal(max(isa.ENTRIES_HEADER["addr"].width, isa.DESC_HEADER["index"].width))
        prog_row = Signal(range(cfg.program_depth * NW + 1))  # first word of the descriptor
        # The widest entry: a step or a weight word (R bytes).
        SRW = 8 * max(isa.STEP_BYTES, isa.PARAM_BYTES, isa.COMMIT_BYTES, R)
        sr = Signal(SRW)
        records = Signal(16)
        checksum = Signal(16)
        bad = Signal()
        in_body = Signal()
        discard = Signal()
        m.d.comb += ld.ready.eq(~self.busy)
        byte = ld.payload.data
        sr_next = Cat(sr[8:], byte)  # little-endian assembly, newest byte at the top
        entry_size = Signal(8)
        header = Signal(8)
        with m.Switch(rtype):
            for kind, layout in ((isa.REC_WEIGHT, weight_layout), (isa.REC_PARAM,
                                 isa.PARAM_LAYOUT), (isa.REC_STEP, isa.STEP_LAYOUT)):
                with m.Case(kind):
                    m.d.comb += entry_size.eq(layout.nbytes)
            with m.Default():
                m.d.comb += entry_size.eq(isa.FIELD_LAYOUT.nbytes)
        with m.Switch(rtype):
            for kind, layout in isa.RECORD_HEADER.items():
                with m.Case(kind):
                    m.d.comb += header.eq(layout.nbytes)

        limits = isa.field_limits(cfg)
        out_of_range = Signal()  # the entry completing now holds a field outside `limits`

        def fail(code):
            """Report `code` now; drop the rest of the chunk and refuse the next commit."""
            m.d.comb += [self.error.eq(code), self.error_set.eq(1)]
            return [bad.eq(1), in_body.eq(0), discard.eq(~ld.payload.last)]

        def entry_word(size):
            return sr_next[SRW - 8 * size:]

        def sliced(word, field, width=None):
            """Bits of `field` (an `isa.BitField`) in `word`, the low `width` of them."""
            return word[field.lsb:field.lsb + (field.width if width is None else width)]

        # Range check of the 32-bit field completing at this byte (descriptor or global
        # record), against `isa.field_limits`; decoded once, outside the parser's branches.
        field = sliced(entry_word(isa.FIELD_LAYOUT.nbytes), isa.FIELD_LAYOUT["value"])
        # Each distinct (lowest, highest) pair is checked once, on the bits its limit needs
        # (the rest must be zero; a limit of exactly 2^k needs no comparator), and the field
        # number picks the verdict: no 32-bit comparators, few carry chains.
        checks = {}

        def in_range(lo, hi):
            if (lo, hi) not in checks:
                n = hi.bit_length()
                low = field[:n]
                ok = field[n:] == 0 if n < 32 else Const(1, 1)
                if hi & (hi - 1) == 0 and hi:
                    ok = ok & (~low[n - 1] | (low[:n - 1] == 0))  # <= 2^(n - 1)
                elif hi != (1 << n) - 1:
                    ok = ok & (low <= hi)
                if lo:
                    ok = ok & ((low >= lo) if lo > 1 else (low != 0))
                checks[lo, hi] = Signal(name=f"in_{lo}_{hi}")
                m.d.comb += checks[lo, hi].eq(ok)
            return checks[lo, hi]

        for name in isa.DESC_FIELDS + isa.GLOBAL_FIELDS:
            in_range(*limits[name])  # built outside the switches below: unconditional
        desc_ok, glob_ok = Signal(), Signal()
        with m.Switch(nent[:6]):
            for i, name in enumerate(isa.DESC_FIELDS):
                with m.Case(i):
                    m.d.comb += desc_ok.eq(in_range(*limits[name]))
        with m.Switch(nent[:3]):
            for i, name in enumerate(isa.GLOBAL_FIELDS):
                with m.Case(i):
                    m.d.comb += glob_ok.eq(in_range(*limits[name]))
        field_bad = ~desc_ok
        glob_bad = ~glob_ok
        if PACKING:
            # pack * T (T is loaded before pack) by shift-and-add: at most `lanes`.
            pack_lanes = sum(Mux(field[j], g.T << j, 0) for j in range(len(g.pack)))
            pack_field = nent[:3] == isa.GLOBAL_FIELDS.index("pack")
            glob_bad = glob_bad | (pack_field & (pack_lanes > L))
        m.d.comb += out_of_range.eq(Mux(rtype == isa.REC_DESC, field_bad,
                                        (rtype == isa.REC_GLOBAL) & glob_bad))
        # A step this array cannot execute: a paired step without the second operand path, a
        # lane rotation without lane packing.
        step_word = entry_word(isa.STEP_BYTES)
        unsupported = Const(0, 1)

        def step_field(name):
            return sliced(step_word, isa.STEP_LAYOUT[name])

        if not PAIRED:
            unsupported = unsupported | step_field("pair")
        if not PACKING:
            unsupported = unsupported | (step_field("rot") != 0)
        unsupported = (rtype == isa.REC_STEP) & unsupported

        with m.If(ld.valid & ld.ready):
            with m.If(discard):
                m.d.sync += discard.eq(~ld.payload.last)
            with m.Elif(~in_body):
                m.d.sync += [rtype.eq(byte), idx.eq(0), ent.eq(0), nent.eq(0), in_body.eq(1)]
                with m.If(byte != isa.REC_COMMIT):
                    m.d.sync += [checksum.eq(checksum + byte), self.ready.eq(0)]
                with m.If(~byte.matches(isa.REC_WEIGHT, isa.REC_PARAM, isa.REC_STEP,
                                        isa.REC_DESC, isa.REC_GLOBAL, isa.REC_COMMIT)):
                    m.d.sync += fail(Status.BAD_RECORD)
                with m.Elif(ld.payload.last):
                    m.d.sync += fail(Status.BAD_RECORD)
            with m.Else():
                done = Signal()
                m.d.sync += [idx.eq(Mux(idx == 7, 7, idx + 1)), sr.eq(sr_next)]
                with m.If(rtype != isa.REC_COMMIT):
                    m.d.sync += checksum.eq(checksum + byte)
                with m.If(idx < header):
                    # The header (`isa.RECORD_HEADER`) is whole in the shift register at its
                    # last byte: a weight, parameter or step record's first address and entry
                    # count, or a descriptor's index.
                    with m.If(idx == header - 1):
                        entries = entry_word(isa.ENTRIES_HEADER.nbytes)
                        first = sliced(entries, isa.ENTRIES_HEADER["addr"])
                        n_entries = sliced(entries, isa.ENTRIES_HEADER["count"])
                        index = sliced(entry_word(isa.DESC_HEADER.nbytes),
                                       isa.DESC_HEADER["index"])
                        m.d.sync += [base.eq(Mux(rtype == isa.REC_DESC, index, first)),
                                     count.eq(n_entries)]
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
                        last_addr = Mux(rtype == isa.REC_DESC, index + 1, first + n_entries)
                        m.d.sync += prog_row.eq(times_const(index, NW))
                        with m.If((rtype != isa.REC_DESC) & (n_entries == 0)):
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
                                word = entry_word(weight_layout.nbytes)
                                m.d.comb += [self.weight.addr.eq(addr), self.weight.en.eq(1),
                                             self.weight.data.eq(Cat(*[sliced(word, f, WB)
                                                                       for f in weight_layout]))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_PARAM):
                                word = entry_word(isa.PARAM_BYTES)
                                bias = sliced(word, isa.PARAM_LAYOUT["bias"], A)
                                thr = sliced(word, isa.PARAM_LAYOUT["threshold"], M)
                                m.d.comb += [self.param.addr.eq(addr), self.param.en.eq(1),
                                             self.param.data.eq(Cat(bias, thr))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_STEP):
                                m.d.comb += [self.step.addr.eq(addr), self.step.en.eq(1),
                                             self.step.data.eq(Cat(*[
                                                 step_field(name)[:width]
                                                 for name, width in step_fields.items()]))]
                                m.d.comb += done.eq(nent + 1 == count)
                            with m.Case(isa.REC_DESC):
                                m.d.comb += [self.program.addr.eq(prog_row + nent[FPB:]),
                                             self.program.en.eq(1 << nent[:FPB]),
                                             self.program.data.eq(Cat(*[field[:FW]] * FPW))]
                                m.d.comb += done.eq(nent + 1 == NF)
                            with m.Case(isa.REC_GLOBAL):
                                with m.Switch(nent):
                                    for i, name in enumerate(isa.GLOBAL_FIELDS):
                                        sig = getattr(g, name)
                                        with m.Case(i):
                                            m.d.sync += sig.eq(field[:len(sig)])
                                m.d.comb += done.eq(nent + 1 == len(isa.GLOBAL_FIELDS))
                            with m.Case(isa.REC_COMMIT):
                                pass
                    with m.If(entry_done & (out_of_range | unsupported)):
                        # A field beyond this array's memories or lanes: refuse the program.
                        m.d.sync += fail(Status.DOES_NOT_FIT)
                    with m.Elif(rtype == isa.REC_COMMIT):
                        with m.If(idx == isa.COMMIT_BYTES - 1):
                            word = entry_word(isa.COMMIT_BYTES)
                            passes = sliced(word, isa.COMMIT_LAYOUT["passes"])
                            ok = (~bad
                                  & (sliced(word, isa.COMMIT_LAYOUT["records"]) == records)
                                  & (sliced(word, isa.COMMIT_LAYOUT["checksum"]) == checksum)
                                  & (passes != 0) & (passes <= cfg.program_depth))
                            m.d.sync += [self.n_passes.eq(passes), self.ready.eq(ok),
                                         bad.eq(0),
                                         records.eq(0), checksum.eq(0), in_body.eq(0)]
                            with m.If(~ok & ~bad):  # after a failed record, keep its code
                                m.d.comb += [self.error.eq(Status.BAD_RECORD),
                                             self.error_set.eq(1)]
                        with m.Elif(ld.payload.last):
                            m.d.sync += fail(Status.BAD_RECORD)
                    with m.Elif(done):
                        m.d.sync += [in_body.eq(0), records.eq(records + 1)]
                    with m.Elif(ld.payload.last):
                        m.d.sync += fail(Status.BAD_RECORD)

        return m
