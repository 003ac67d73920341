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

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
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


class FieldLimitCheck(wiring.Component):
    """Whether a descriptor or global field lies outside `isa.field_limits(config)`.

    `value` is the 32-bit field completing now, `index` its position in `isa.DESC_FIELDS`
    (with `descriptor`) or `isa.GLOBAL_FIELDS` (with `glob`); `T` is the loaded global T (with
    lane packing, `pack * T` may not exceed the lanes; T is loaded before pack).
    `out_of_range` is high when the field does not fit.

    Latency: combinational. Cost: one check per distinct (lowest, highest) pair, on the bits
    the limit needs (the rest must be zero; a limit of exactly 2^k needs no comparator), the
    field number picks the verdict: no 32-bit comparators, few carry chains; with lane packing
    a shift-and-add `pack * T` and one comparator.
    """

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "value": In(32),
            "index": In(8),
            "descriptor": In(1),
            "glob": In(1),
            "T": In(isa.field_bits(config)["T"]),
            "out_of_range": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, value = self.config, self.value
        limits = isa.field_limits(cfg)
        checks = {}

        def in_range(lo, hi):
            if (lo, hi) not in checks:
                n = hi.bit_length()
                low = value[:n]
                ok = value[n:] == 0 if n < 32 else Const(1, 1)
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
        with m.Switch(self.index[:(len(isa.DESC_FIELDS) - 1).bit_length()]):
            for i, name in enumerate(isa.DESC_FIELDS):
                with m.Case(i):
                    m.d.comb += desc_ok.eq(in_range(*limits[name]))
        global_index = self.index[:(len(isa.GLOBAL_FIELDS) - 1).bit_length()]
        with m.Switch(global_index):
            for i, name in enumerate(isa.GLOBAL_FIELDS):
                with m.Case(i):
                    m.d.comb += glob_ok.eq(in_range(*limits[name]))
        glob_bad = ~glob_ok
        if cfg.lane_packing:
            # pack * T by shift-and-add: at most `lanes`.
            pack_bits = isa.field_bits(cfg)["pack"]
            pack_lanes = sum(Mux(value[j], self.T << j, 0) for j in range(pack_bits))
            pack_field = global_index == isa.GLOBAL_FIELDS.index("pack")
            glob_bad = glob_bad | (pack_field & (pack_lanes > cfg.lanes))
        m.d.comb += self.out_of_range.eq(Mux(self.descriptor, ~desc_ok, self.glob & glob_bad))
        return m


def record_struct(layout: isa.Layout) -> data.StructLayout:
    """The gateware's view of a load-record entry: `layout`'s fields at their bit offsets
    (gaps as padding), signed where the layout says; `data.View(record_struct(l), bits)`
    reads the fields of an entry's bits."""
    fields, at = {}, 0
    for f in sorted(layout, key=lambda f: f.lsb):
        if f.lsb > at:
            fields[f"_pad{at}"] = unsigned(f.lsb - at)
        fields[f.name] = signed(f.width) if f.signed else unsigned(f.width)
        at = f.msb
    if at < 8 * layout.nbytes:
        fields[f"_pad{at}"] = unsigned(8 * layout.nbytes - at)
    return data.StructLayout(fields)


class LoadParser(wiring.Component):
    """See the module docstring. `error_set` pulses with `error` when a record fails.

    Its parts: `FieldLimitCheck` (descriptor and global fields), `_record_sizes` (header and
    entry length per record type), `_write_entry` (an entry into its memory or register) and
    the framing in `elaborate` (type byte, header, entries, commit, errors)."""

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

    def _record_sizes(self, m, rtype):
        """(header bytes, entry bytes) of the record type `rtype` (`isa.RECORD_HEADER`, the
        entry layouts; descriptor and global records take one `isa.FIELD_LAYOUT` per entry)."""
        entry_size, header = Signal(8), Signal(8)
        entries = ((isa.REC_WEIGHT, isa.weight_layout(self.config.pe_rows)),
                   (isa.REC_PARAM, isa.PARAM_LAYOUT), (isa.REC_STEP, isa.STEP_LAYOUT))
        with m.Switch(rtype):
            for kind, layout in entries:
                with m.Case(kind):
                    m.d.comb += entry_size.eq(layout.nbytes)
            with m.Default():
                m.d.comb += entry_size.eq(isa.FIELD_LAYOUT.nbytes)
        with m.Switch(rtype):
            for kind, layout in isa.RECORD_HEADER.items():
                with m.Case(kind):
                    m.d.comb += header.eq(layout.nbytes)
        return header, entry_size

    def _step_unsupported(self, step):
        """A step (a view of `isa.STEP_LAYOUT`) this array cannot execute: a paired step
        without the second operand path, a lane rotation without lane packing."""
        unsupported = Const(0, 1)
        if not self.config.paired_steps:
            unsupported = unsupported | step.pair
        if not self.config.lane_packing:
            unsupported = unsupported | (step.rot != 0)
        return unsupported

    def _write_entry(self, m, rtype, entry, field, addr, nent, count, prog_row, done):
        """The entry completing now into its memory (weight, parameter, step, program word
        lane) or global register; `done` when it is the record's last."""
        cfg = self.config
        R, WB, A, M = cfg.pe_rows, cfg.weight_bits, cfg.acc_bits, cfg.membrane_bits
        FPW, FW = isa.FIELDS_PER_WORD, isa.field_width(cfg)
        FPB = (FPW - 1).bit_length()  # FIELDS_PER_WORD is a power of two
        with m.Switch(rtype):
            with m.Case(isa.REC_WEIGHT):
                layout = isa.weight_layout(R)
                word = entry(layout)
                m.d.comb += [self.weight.addr.eq(addr), self.weight.en.eq(1),
                             self.weight.data.eq(Cat(*[word[f.name][:WB] for f in layout])),
                             done.eq(nent + 1 == count)]
            with m.Case(isa.REC_PARAM):
                param = entry(isa.PARAM_LAYOUT)
                m.d.comb += [self.param.addr.eq(addr), self.param.en.eq(1),
                             self.param.data.eq(Cat(param.bias[:A], param.threshold[:M])),
                             done.eq(nent + 1 == count)]
            with m.Case(isa.REC_STEP):
                step = entry(isa.STEP_LAYOUT)
                m.d.comb += [self.step.addr.eq(addr), self.step.en.eq(1),
                             self.step.data.eq(Cat(*[
                                 step[name][:width] for name, width in isa.step_bits(cfg).items()
                             ])),
                             done.eq(nent + 1 == count)]
            with m.Case(isa.REC_DESC):
                m.d.comb += [self.program.addr.eq(prog_row + nent[FPB:]),
                             self.program.en.eq(1 << nent[:FPB]),
                             self.program.data.eq(Cat(*[field[:FW]] * FPW)),
                             done.eq(nent + 1 == len(isa.DESC_FIELDS))]
            with m.Case(isa.REC_GLOBAL):
                with m.Switch(nent):
                    for i, name in enumerate(isa.GLOBAL_FIELDS):
                        sig = getattr(self.globals, name)
                        with m.Case(i):
                            m.d.sync += sig.eq(field[:len(sig)])
                m.d.comb += done.eq(nent + 1 == len(isa.GLOBAL_FIELDS))

    def elaborate(self, platform):
        # One byte per cycle through a shift register: each entry is sliced on its last byte
        # with the layouts of `hw/isa.py`, so nothing is buffered beyond one entry.
        m = Module()
        cfg = self.config
        NW = isa.desc_words()
        ld = self.load
        assert max(isa.COMMIT_BYTES, *(h.nbytes for h in isa.RECORD_HEADER.values())) < 7
        # Descriptor and global records: one FIELD_LAYOUT entry per field, in order.
        assert all(f.lsb == 8 * isa.FIELD_LAYOUT.nbytes * i and f.width == 32
                   for layout in (isa.DESC_LAYOUT, isa.GLOBAL_LAYOUT)
                   for i, f in enumerate(layout))
        rtype = Signal(8)
        idx = Signal(3)  # byte index within the record body (saturates: only 0 .. 5 matter)
        ent = Signal(8)  # byte index within the current entry
        nent = Signal(8)  # entries completed (a record holds at most 255)
        count = Signal(isa.ENTRIES_HEADER["count"].width)
        base = Signal(max(isa.ENTRIES_HEADER["addr"].width, isa.DESC_HEADER["index"].width))
        prog_row = Signal(range(cfg.program_depth * NW + 1))  # first word of the descriptor
        # The widest entry: a step or a weight word (R bytes).
        SRW = 8 * max(isa.STEP_BYTES, isa.PARAM_BYTES, isa.COMMIT_BYTES, cfg.pe_rows)
        sr = Signal(SRW)
        records = Signal(16)
        checksum = Signal(16)
        bad = Signal()
        in_body = Signal()
        discard = Signal()
        m.d.comb += ld.ready.eq(~self.busy)
        byte = ld.payload.data
        sr_next = Cat(sr[8:], byte)  # little-endian assembly, newest byte at the top
        header, entry_size = self._record_sizes(m, rtype)

        def fail(code):
            """Report `code` now; drop the rest of the chunk and refuse the next commit."""
            m.d.comb += [self.error.eq(code), self.error_set.eq(1)]
            return [bad.eq(1), in_body.eq(0), discard.eq(~ld.payload.last)]

        def entry(layout):
            """The entry completing at this byte, a view of `layout` (`record_struct`)."""
            return data.View(record_struct(layout), sr_next[SRW - 8 * layout.nbytes:])

        # The descriptor or global field completing at this byte, checked against
        # `isa.field_limits` outside the parser's branches.
        field = entry(isa.FIELD_LAYOUT).value.as_unsigned()
        m.submodules.field_check = check = FieldLimitCheck(cfg)
        m.d.comb += [check.value.eq(field), check.index.eq(nent), check.T.eq(self.globals.T),
                     check.descriptor.eq(rtype == isa.REC_DESC),
                     check.glob.eq(rtype == isa.REC_GLOBAL)]
        unsupported = (rtype == isa.REC_STEP) & self._step_unsupported(entry(isa.STEP_LAYOUT))

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
                        first = entry(isa.ENTRIES_HEADER).addr
                        n_entries = entry(isa.ENTRIES_HEADER).count
                        index = entry(isa.DESC_HEADER).index
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
                        self._write_entry(m, rtype, entry, field, base + nent, nent, count,
                                          prog_row, done)
                    with m.If(entry_done & (check.out_of_range | unsupported)):
                        # A field beyond this array's memories or lanes: refuse the program.
                        m.d.sync += fail(Status.DOES_NOT_FIT)
                    with m.Elif(rtype == isa.REC_COMMIT):
                        with m.If(idx == isa.COMMIT_BYTES - 1):
                            commit = entry(isa.COMMIT_LAYOUT)
                            passes = commit.passes
                            ok = (~bad & (commit.records == records)
                                  & (commit.checksum == checksum)
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
