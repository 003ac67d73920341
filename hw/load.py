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

Latency: a memory write the cycle after an entry's last byte (from the shift register, with a
registered address); `ready` one edge (`VERDICT_CYCLES`) after the edge that takes the
commit's last byte. Throughput: one byte per cycle, but one bubble (`load.ready` low) after
each record header, each descriptor or global field, each step and the commit, in which the
verdict of that byte's checks, registered, is applied: no decision depends on more than
the arriving byte's own checks in its cycle (on the iCE40 the parser was the design's worst
path, 16 LUT levels from the byte to `n_passes`).
Over a UART link the bubbles cost nothing (a byte every 10 bit times); a weight or parameter
entry takes none.
Cost: a shift register of the widest entry (96 bits, or 8 * pe_rows), record counters, a
range check per distinct field limit (on the bits the limit needs), the registered write
flags and address, no multipliers.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil, times_const
from .config import ArrayConfig
from .status import Status
from .streams import BYTE_STREAM

#: Clock edges from the edge that takes a byte to its verdict on `ready` (after a commit) or
#: `error_set` (after a failing byte): the verdict is applied in the bubble that follows.
VERDICT_CYCLES = 1


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
    """Whether a descriptor or global field lies outside `isa.field_limits(config)`, checked
    byte by byte as the field arrives.

    The field's four bytes come least significant first on `byte` with `strobe` and their
    position in `byte_index`; `index` is the field's position in `isa.DESC_FIELDS` (with
    `descriptor`) or `isa.GLOBAL_FIELDS` (with `glob`), `T` the loaded global T (with lane
    packing, `pack * T` may not exceed the lanes; T is loaded before pack): these must hold
    from the cycle before the first byte. `out_of_range` is high the cycle after the last
    byte when the field does not fit.

    Latency: 1 cycle after the last byte. Each distinct (lowest, highest) pair keeps two
    registered flags, "at most highest" and "at least lowest" so far, updated per byte from
    that byte alone (an 8-bit compare with the limit's byte: the serial comparison of a
    little-endian number); the field number is decoded a cycle ahead into a registered
    one-hot choice of pair. No path crosses more than one byte's compare and the choice
    (on the iCE40 a 32-bit check with its field select was 13 LUT levels). Cost: two
    flip-flops and two 8-bit constant compares per pair, a flip-flop per pair for the
    choice; with lane packing a shift-and-add `pack * T` and one comparator on byte 0.
    """

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "byte": In(8),
            "byte_index": In(2),
            "strobe": In(1),
            "index": In(8),
            "descriptor": In(1),
            "glob": In(1),
            "T": In(isa.field_bits(config)["T"]),
            "out_of_range": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, byte = self.config, self.byte
        limits = isa.field_limits(cfg)
        pairs = sorted({limits[name] for name in isa.DESC_FIELDS + isa.GLOBAL_FIELDS})
        # The pair this field answers to, decoded from the field number a cycle ahead.
        choice, choose = Signal(len(pairs)), Signal(len(pairs))
        desc_index = self.index[:(len(isa.DESC_FIELDS) - 1).bit_length()]
        global_index = self.index[:(len(isa.GLOBAL_FIELDS) - 1).bit_length()]
        with m.If(self.descriptor):
            with m.Switch(desc_index):
                for i, name in enumerate(isa.DESC_FIELDS):
                    with m.Case(i):
                        m.d.comb += choose.eq(1 << pairs.index(limits[name]))
        with m.Elif(self.glob):
            with m.Switch(global_index):
                for i, name in enumerate(isa.GLOBAL_FIELDS):
                    with m.Case(i):
                        m.d.comb += choose.eq(1 << pairs.index(limits[name]))
        m.d.sync += choice.eq(choose)
        first, final = self.byte_index == 0, self.byte_index == 3
        bad = 0
        for i, (lo, hi) in enumerate(pairs):
            at_most, at_least = Signal(name=f"le_{hi}"), Signal(name=f"ge_{lo}")
            # Serial little-endian compare: this byte decides unless it equals the limit's.
            le_before = Mux(first, 1, at_most)
            ge_before = Mux(first, 1, at_least)
            le_now, ge_now = Signal(name=f"le_{hi}_now"), Signal(name=f"ge_{lo}_now")
            with m.Switch(self.byte_index):
                for j in range(4):
                    h, lo_byte = hi >> 8 * j & 0xFF, lo >> 8 * j & 0xFF
                    # (a compare that is constant for this limit byte is left out: the
                    # Verilog must stay lint-clean)
                    below = (byte < h) if h else Const(0, 1)
                    above = (byte > lo_byte) if lo_byte < 0xFF else Const(0, 1)
                    with m.Case(j):
                        m.d.comb += [
                            le_now.eq(below | ((byte == h) & le_before)),
                            ge_now.eq(above | ((byte == lo_byte) & ge_before))]
            with m.If(self.strobe):
                m.d.sync += [at_most.eq(le_now), at_least.eq(ge_now)]
            bad = bad | (choice[i] & ~(le_now & ge_now))
        if cfg.lane_packing:
            # pack * T by shift-and-add on the field's first byte: at most `lanes`.
            pack_bits = isa.field_bits(cfg)["pack"]
            assert pack_bits <= 8
            pack_lanes = sum(Mux(byte[j], self.T << j, 0) for j in range(pack_bits))
            too_many = Signal()
            with m.If(self.strobe & first):
                m.d.sync += too_many.eq(pack_lanes > cfg.lanes)
            pack_choice = Signal()
            m.d.sync += pack_choice.eq(self.glob
                                       & (global_index == isa.GLOBAL_FIELDS.index("pack")))
            bad = bad | (pack_choice & too_many)
        m.d.sync += self.out_of_range.eq(0)
        with m.If(self.strobe & final):
            m.d.sync += self.out_of_range.eq(bad)
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

    def _entry_write(self, m, kind, held, nent):
        """At an entry's last byte: which memory or register it goes to next cycle (`held`'s
        one-hot flags) and where."""
        FPB = (isa.FIELDS_PER_WORD - 1).bit_length()  # FIELDS_PER_WORD is a power of two
        m.d.sync += [held.weight.eq(kind.weight), held.param.eq(kind.param),
                     held.step.eq(kind.step), held.desc.eq(kind.desc), held.glob.eq(kind.glob),
                     held.nent.eq(nent), held.lane.eq(1 << nent[:FPB]),
                     held.prog_addr.eq(held.prog_row + nent[FPB:])]

    def _drive_writes(self, m, held, entry_held, field_held):
        """The write the entry completed last cycle asks for, from the registered flags and
        the shift register (which holds that entry until the next byte shifts in)."""
        cfg = self.config
        R, WB, A, M = cfg.pe_rows, cfg.weight_bits, cfg.acc_bits, cfg.membrane_bits
        FW, FPW = isa.field_width(cfg), isa.FIELDS_PER_WORD
        layout = isa.weight_layout(R)
        word = entry_held(layout)
        param = entry_held(isa.PARAM_LAYOUT)
        step = entry_held(isa.STEP_LAYOUT)
        m.d.comb += [
            self.weight.addr.eq(held.addr), self.weight.en.eq(held.weight),
            self.weight.data.eq(Cat(*[word[f.name][:WB] for f in layout])),
            self.param.addr.eq(held.addr), self.param.en.eq(held.param),
            self.param.data.eq(Cat(param.bias[:A], param.threshold[:M])),
            self.step.addr.eq(held.addr), self.step.en.eq(held.step),
            self.step.data.eq(Cat(*[step[name][:width]
                                    for name, width in isa.step_bits(cfg).items()])),
            self.program.addr.eq(held.prog_addr),
            self.program.en.eq(Mux(held.desc, held.lane, 0)),
            self.program.data.eq(Cat(*[field_held[:FW]] * FPW)),
        ]
        with m.If(held.glob):
            with m.Switch(held.nent):
                for i, name in enumerate(isa.GLOBAL_FIELDS):
                    sig = getattr(self.globals, name)
                    with m.Case(i):
                        m.d.sync += sig.eq(field_held[:len(sig)])

    def elaborate(self, platform):
        # One byte per cycle through a shift register: each entry is sliced with the layouts
        # of `hw/isa.py`, so nothing is buffered beyond one entry. For the clock, no decision
        # is taken in the cycle a byte arrives: the checks of a header, a descriptor or global
        # field, a step and the commit, and every failure, are registered as a verdict
        # (`pending`) and applied in the next cycle, a bubble in which `load.ready` is low;
        # `error`/`error_set` come from those registers only. The write of a completed entry
        # goes out the cycle after its last byte, from the shift register.
        m = Module()
        cfg = self.config
        NW = isa.desc_words()
        ld = self.load
        assert max(isa.COMMIT_BYTES, *(h.nbytes for h in isa.RECORD_HEADER.values())) < 7
        # Descriptor and global records: one FIELD_LAYOUT entry per field, in order.
        assert all(f.lsb == 8 * isa.FIELD_LAYOUT.nbytes * i and f.width == 32
                   for layout in (isa.DESC_LAYOUT, isa.GLOBAL_LAYOUT)
                   for i, f in enumerate(layout))
        kinds = ("weight", "param", "step", "desc", "glob", "commit")
        codes = (isa.REC_WEIGHT, isa.REC_PARAM, isa.REC_STEP, isa.REC_DESC, isa.REC_GLOBAL,
                 isa.REC_COMMIT)
        # The record type as one-hot registered flags (set by the type byte).
        kind = Signal(data.StructLayout({k: 1 for k in kinds}))
        rtype = Signal(8)
        idx = Signal(3)  # byte index within the record body (saturates: only 0 .. 5 matter)
        header_last = Signal()  # the next body byte is the header's last
        in_header = Signal()
        ent = Signal(8)  # byte index within the current entry
        entry_last = Signal()  # the next body byte is the current entry's last
        nent = Signal(8)  # entries completed (a record holds at most 255)
        final_entry = Signal()  # the current entry is the record's last
        remaining = Signal(8)  # entries still to come in the record, this one included
        base = Signal(max(isa.ENTRIES_HEADER["addr"].width, isa.DESC_HEADER["index"].width))
        # The write of the entry completed last cycle (see `_drive_writes`).
        held = Signal(data.StructLayout({
            "weight": 1, "param": 1, "step": 1, "desc": 1, "glob": 1, "nent": 8,
            "addr": len(base), "lane": isa.FIELDS_PER_WORD,
            "prog_row": range(cfg.program_depth * NW + 1),  # first word of the descriptor
            "prog_addr": range(cfg.program_depth * NW + NW)}))
        # The widest entry: a step or a weight word (R bytes).
        SRW = 8 * max(isa.STEP_BYTES, isa.PARAM_BYTES, isa.COMMIT_BYTES, cfg.pe_rows)
        sr = Signal(SRW)
        records = Signal(16)
        checksum = Signal(16)
        bad = Signal()
        in_body = Signal()
        discard = Signal()
        # The verdict of the last cycle's byte, applied now.
        pending = Signal()
        p_code = Signal(Status)  # the failure found (Status.OK: none)
        p_fail = Signal()  # p_code != Status.OK, registered with it
        p_field = Signal()  # a descriptor or global field: `field_check`'s verdict counts too
        p_range = Signal()  # a header: its last address `p_end` may not pass its memory's end
        p_end = Signal(max(isa.ENTRIES_HEADER["addr"].width, isa.DESC_HEADER["index"].width) + 1)
        p_last = Signal()  # that byte ended its chunk
        p_done = Signal()  # it completed its record
        p_commit = Signal()  # it was the commit's last byte; p_ok: the commit is accepted
        p_ok = Signal()
        m.d.comb += ld.ready.eq(~self.busy & ~pending)
        byte = ld.payload.data
        sr_next = Cat(sr[8:], byte)  # little-endian assembly, newest byte at the top

        def verdict(code=Status.OK, *, field=0, done=0, commit=0, ok=0):
            """Decide at the next cycle (the bubble): fail with `code`, or finish the record
            (`done`), or take the commit (`ok`); with `field`, fail if the field is out of
            range; a byte that ends its chunk mid-record fails too."""
            return [pending.eq(1), p_code.eq(code), p_fail.eq(code != Status.OK),
                    p_field.eq(field), p_range.eq(0),
                    p_last.eq(ld.payload.last), p_done.eq(done), p_commit.eq(commit),
                    p_ok.eq(ok)]

        def entry(layout):
            """The entry completing at this byte, a view of `layout` (`record_struct`)."""
            return data.View(record_struct(layout), sr_next[SRW - 8 * layout.nbytes:])

        def entry_held(layout):
            """The entry completed last cycle (the shift register's top)."""
            return data.View(record_struct(layout), sr[SRW - 8 * layout.nbytes:])

        held_field = entry_held(isa.FIELD_LAYOUT).value.as_unsigned()
        self._drive_writes(m, held, entry_held, held_field)
        m.d.sync += [held.weight.eq(0), held.param.eq(0), held.step.eq(0), held.desc.eq(0),
                     held.glob.eq(0)]

        # The descriptor or global field completing at this byte, checked against
        # `isa.field_limits` (its verdict one cycle later, in the bubble).
        m.submodules.field_check = check = FieldLimitCheck(cfg)
        m.d.comb += [check.byte.eq(byte), check.byte_index.eq(ent[:2]),
                     check.strobe.eq(ld.valid & ld.ready & ~discard & in_body & ~in_header
                                     & (kind.desc | kind.glob)),
                     check.index.eq(nent), check.T.eq(self.globals.T),
                     check.descriptor.eq(kind.desc), check.glob.eq(kind.glob)]
        assert isa.FIELD_LAYOUT.nbytes == 4
        unsupported = self._step_unsupported(entry(isa.STEP_LAYOUT))
        header, entry_size = self._record_sizes(m, byte)  # of the record `byte` starts
        header_bytes, size = self._record_sizes(m, rtype)  # of the current record

        with m.If(pending):
            # (one constant compare per memory, picked by the record's one-hot type)
            past_end = ((kind.weight & (p_end > cfg.weight_depth))
                        | (kind.param & (p_end > cfg.param_depth))
                        | (kind.step & (p_end > cfg.step_depth))
                        | (kind.desc & (p_end > cfg.program_depth)))
            beyond = (p_field & check.out_of_range) | (p_range & past_end)
            # The record fails on its own code or on a range check: the decision is an OR of
            # flags (not a compare of the chosen code with OK, which put the code's mux in
            # front of every register the verdict enables).
            fail = p_fail | beyond
            code = Mux(p_fail, p_code, Status.DOES_NOT_FIT)
            m.d.sync += pending.eq(0)
            # A commit's checks are all in `p_ok` (its `code` is OK), so it is decided
            # first: the range compare stays off the commit's registers.
            with m.If(p_commit):
                m.d.sync += [self.n_passes.eq(entry_held(isa.COMMIT_LAYOUT).passes),
                             self.ready.eq(p_ok), bad.eq(0), records.eq(0), checksum.eq(0),
                             in_body.eq(0)]
                with m.If(~p_ok & ~bad):  # after a failed record, keep its code
                    m.d.comb += [self.error.eq(Status.BAD_RECORD), self.error_set.eq(1)]
            with m.Elif(fail):
                m.d.sync += [bad.eq(1), in_body.eq(0), discard.eq(~p_last)]
                m.d.comb += [self.error.eq(code), self.error_set.eq(1)]
            with m.Elif(p_done):
                m.d.sync += [in_body.eq(0), records.eq(records + 1)]
            with m.Elif(p_last):  # the chunk ended inside the record
                m.d.sync += [bad.eq(1), in_body.eq(0), discard.eq(0)]
                m.d.comb += [self.error.eq(Status.BAD_RECORD), self.error_set.eq(1)]

        with m.Elif(ld.valid & ld.ready):
            with m.If(discard):
                m.d.sync += discard.eq(~ld.payload.last)
            with m.Elif(~in_body):
                n_fields = Mux(byte == isa.REC_DESC, len(isa.DESC_FIELDS), len(isa.GLOBAL_FIELDS))
                m.d.sync += [rtype.eq(byte), idx.eq(0), ent.eq(0), nent.eq(0), in_body.eq(1),
                             in_header.eq(header != 0), header_last.eq(header == 1),
                             entry_last.eq(entry_size == 1), remaining.eq(n_fields),
                             final_entry.eq(n_fields == 1)]
                m.d.sync += [kind[k].eq(byte == c) for k, c in zip(kinds, codes, strict=True)]
                with m.If(byte != isa.REC_COMMIT):
                    m.d.sync += [checksum.eq(checksum + byte), self.ready.eq(0)]
                with m.If(~byte.matches(*codes)):
                    m.d.sync += verdict(Status.BAD_RECORD)
                with m.Elif(ld.payload.last):
                    m.d.sync += verdict(Status.BAD_RECORD)
            with m.Else():
                m.d.sync += [idx.eq(Mux(idx == 7, 7, idx + 1)), sr.eq(sr_next),
                             header_last.eq(0)]
                with m.If(~kind.commit):
                    m.d.sync += checksum.eq(checksum + byte)
                with m.If(kind.commit):
                    with m.If(idx == isa.COMMIT_BYTES - 1):
                        commit = entry(isa.COMMIT_LAYOUT)
                        passes = commit.passes
                        ok = (~bad & (commit.records == records)
                              & (commit.checksum == checksum)
                              & (passes != 0) & (passes <= cfg.program_depth))
                        m.d.sync += verdict(commit=1, ok=ok)
                    with m.Elif(ld.payload.last):
                        m.d.sync += verdict(Status.BAD_RECORD)
                with m.Elif(in_header):
                    # The header (`isa.RECORD_HEADER`) is whole in the shift register at its
                    # last byte: a weight, parameter or step record's first address and entry
                    # count, or a descriptor's index.
                    with m.If(header_last):
                        first = entry(isa.ENTRIES_HEADER).addr
                        n_entries = entry(isa.ENTRIES_HEADER).count
                        index = entry(isa.DESC_HEADER).index
                        m.d.sync += [base.eq(Mux(kind.desc, index, first)),
                                     held.prog_row.eq(times_const(index, NW)),
                                     in_header.eq(0)]
                        with m.If(~kind.desc):  # (a descriptor's count is its field count)
                            m.d.sync += [remaining.eq(n_entries),
                                         final_entry.eq(n_entries == 1)]
                        last_addr = Mux(kind.desc, index + 1, first + n_entries)
                        # (the range compare in the bubble; the chunk may not end here)
                        m.d.sync += verdict(Mux(~kind.desc & (n_entries == 0),
                                                Status.BAD_RECORD, Status.OK))
                        m.d.sync += [p_range.eq(1), p_end.eq(last_addr)]
                    with m.Else():
                        m.d.sync += header_last.eq(idx + 2 == header_bytes)
                        with m.If(ld.payload.last):
                            m.d.sync += verdict(Status.BAD_RECORD)
                with m.Else():
                    m.d.sync += [ent.eq(Mux(entry_last, 0, ent + 1)),
                                 entry_last.eq(Mux(entry_last, size == 1, ent + 2 == size))]
                    with m.If(entry_last):
                        m.d.sync += [nent.eq(nent + 1), held.addr.eq(base + nent),
                                     remaining.eq(remaining - 1),
                                     final_entry.eq(remaining == 2)]
                        self._entry_write(m, kind, held, nent)
                    with m.If(entry_last & (kind.desc | kind.glob)):
                        m.d.sync += verdict(field=1, done=final_entry)
                    with m.Elif(entry_last & kind.step):
                        m.d.sync += verdict(Mux(unsupported, Status.DOES_NOT_FIT, Status.OK),
                                            done=final_entry)
                    with m.Elif(entry_last & final_entry):
                        m.d.sync += [in_body.eq(0), records.eq(records + 1)]
                    with m.Elif(ld.payload.last):
                        m.d.sync += verdict(Status.BAD_RECORD)

        return m
