"""The accelerator's instruction set: load records, pass descriptors and reduction steps.

Shared by the compiler (`hw/compiler.py`), the NumPy executor (`pysim/hwref.py`), the cycle model
(`pysim/cycles.py`) and the gateware (`hw/accelerator.py`). Imports nothing from Amaranth.

A network runs as a list of *passes*. An array pass sweeps output tiles (R output rows x C output
positions) in the order group > row group > column tile; each tile runs the same reduction
micro-program of `steps` entries, each entry repeated over `taps` kernel taps (1 or 9). Every
address is a base plus strides of the loop indices, so every layer kind is a choice of strides.

Activation memory is one flat word space, interleaved over C banks (bank = address mod C). A
word holds `pack` lane groups of T lanes: lane `g * T + t` is time step t of position
`p + g * band` of one bit-plane of one channel, where `band = positions / pack` (so when T is
below the lanes, the spare lanes hold other positions of the same channel and the array stays
busy; lanes from `pack * T` up are zero). Tensors are stored plane-major:
`address = base + (plane * channels + channel) * band + p`, 0 <= p < band. A 3x3 window that
crosses from one band into the next reads the word `band` away with its lane groups shifted by
one group ("edge" reads); attention aligns tokens of different bands by rotating the row
operand's lane groups (`rot`, carried in the step's row offset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

# ---- pass kinds and modes --------------------------------------------------------------------
OP_ARRAY = 0  #: PE-array pass
#: 3x3/2 max-pool on spikes: the array's loops and reads, an OR instead of the PE array. A tile
#: is a chunk of `maxpool_chunk(pe_cols)[0]` outputs of one output row (group = channel, row
#: group = output row, column tile = chunk); its steps are the run reads of the windows: step
#: shift = window row ky | run segment << 2, step column offset = ky * W + segment * pe_cols
#: from the chunk's first input column (input row 2 oy - 1, column 2 ox0 - 1).
OP_MAXPOOL = 1

OUT_LIF = 0  #: LIF over the T accumulated steps (membrane carried across steps)
OUT_STEP = 1  #: per-step threshold (membrane reset every step): IAND, AND
OUT_RAW = 2  #: write acc + bias as `out_planes` two's-complement bit-planes
OUT_HEAD = 3  #: sum every column and lane into one logit per row; emit after the last tile

COL_RUN = 0  #: column c reads word `col_addr + c`
COL_ONEHOT = 1  #: column c sees all-ones when c == step.col_off, else zero (transposes)
ROW_ONES = 0  #: rows see all-ones
ROW_RUN = 1  #: row r reads word `row_addr + r` (needs pe_rows <= pe_cols)

#: Descriptor fields, in load order. Each is a 32-bit signed value in the load image.
DESC_FIELDS = (
    "op", "groups", "rgs", "rows", "cts", "cols", "steps", "step_base", "taps", "pad",
    "width", "lastrow", "col_mode", "row_mode", "out_mode", "out_planes",
    "col_base", "col_g", "col_rg", "col_ct",
    "row_base", "row_g", "row_rg", "row_ct",
    "w_base", "w_g", "w_rg",
    "par_base", "par_g", "par_rg",
    "out_base", "out_g", "out_rg", "out_ct", "out_row", "out_plane",
    "dump_base", "dump_words",
    # max-pool passes: outputs in a row's last chunk; bit 0: input rows odd (a padding row
    # below), bit 1: input columns odd (a padding column right)
    "mp_last", "mp_odd",
    # positions per band of the pass's input grid when pack > 1 (edge reads), else 0
    "band",
)
FIELD_INDEX = {name: i for i, name in enumerate(DESC_FIELDS)}

#: Global record fields (one per program).
GLOBAL_FIELDS = ("n_pixels", "pixel_bits", "T", "in_base", "in_plane", "pack")

#: A step's row offset carries the row operand's lane rotation (in lanes, cyclic over the
#: `pack * T` used lanes) in bits ROT_SHIFT and up; the offset itself is below.
ROT_SHIFT = 24

# ---- load records ----------------------------------------------------------------------------
#: A record is its type byte, a header (`RECORD_HEADER`), then entries: `count` entries of the
#: type's layout (weights, parameters, steps), the descriptor's fields, the global fields, or
#: the commit's body. Every layout below is defined once, as fields (name, bit offset, width);
#: the compiler packs with it, `pysim.hwref` and `pysim.cycles` decode with it and the load
#: parser (`hw/load.py`) slices its shift register with it.
REC_WEIGHT = 0x57  #: 'W' ENTRIES_HEADER, then count words of pe_rows int8 weights (`weight_layout`)
REC_PARAM = 0x50  #: 'P' ENTRIES_HEADER, then count x PARAM_LAYOUT
REC_STEP = 0x53  #: 'S' ENTRIES_HEADER, then count x STEP_LAYOUT
REC_DESC = 0x44  #: 'D' DESC_HEADER, then DESC_LAYOUT (one FIELD_LAYOUT entry per field)
REC_GLOBAL = 0x47  #: 'G' GLOBAL_LAYOUT (one FIELD_LAYOUT entry per field)
REC_COMMIT = 0x43  #: 'C' COMMIT_LAYOUT; checksum = byte sum of the records before it

class Step(NamedTuple):
    """A reduction step as the compiler builds it (`pack_step` encodes it).

    A *paired* step (rows all ones) also reads a second run through the row port at `row`
    (with the same taps, edge reads and masks as the column run) and adds
    `(-1)^neg2 * (w << shift2)` where its bits are set: two bit-planes of a multi-bit input, or
    two operands of an elementwise sum, in one cycle. `row` carries the row operand's lane
    rotation times 2^ROT_SHIFT (`pack_step` splits it into STEP_LAYOUT's `row` and `rot`).
    """

    col: int  #: column run offset (or the one-hot column)
    row: int  #: row run offset | lane rotation << ROT_SHIFT
    w: int  #: weight word offset
    shift: int  #: weight shift (bit-plane)
    neg: int  #: negate (sign plane)
    pair: int = 0  #: paired step: a second operand through the row port
    shift2: int = 0
    neg2: int = 0


STEP_TUPLE = Step._fields
STEP_FIELDS = len(STEP_TUPLE)
#: Bits of a step's weight shift: plane b of an integer operand of up to 32 bits shifts by b.
SHIFT_BITS = 5


@dataclass(frozen=True)
class BitField:
    """A field of a load record entry: bits `lsb .. lsb + width - 1` of the little-endian
    entry, two's complement when `signed`."""

    name: str
    lsb: int
    width: int
    signed: bool = False

    @property
    def msb(self) -> int:
        """One past the field's highest bit (`entry[lsb:msb]` slices it)."""
        return self.lsb + self.width

    def check(self, value: int, what: str = "field") -> int:
        """`value` as the field's raw bits; ValueError when it does not fit."""
        lo, hi = ((-(1 << (self.width - 1)), (1 << (self.width - 1)) - 1) if self.signed
                  else (0, (1 << self.width) - 1))
        if not lo <= value <= hi:
            raise ValueError(f"{what} {self.name} = {value} does not fit its {self.width} "
                             f"bits ({lo} .. {hi})")
        return value & ((1 << self.width) - 1)

    def get(self, entry: int) -> int:
        """The field's value in the entry `entry` (an int of the entry's bits)."""
        raw = (entry >> self.lsb) & ((1 << self.width) - 1)
        return raw - (1 << self.width) if self.signed and raw >> (self.width - 1) else raw


@dataclass(frozen=True)
class Layout:
    """A record entry of `nbytes` little-endian bytes made of `fields` (no two overlap).
    Iterates over its fields; `layout["name"]` is one of them."""

    name: str
    fields: tuple
    nbytes: int

    def __post_init__(self):
        used = 0
        for f in self.fields:
            mask = ((1 << f.width) - 1) << f.lsb
            assert not used & mask, f"{self.name}: field {f.name} overlaps another"
            assert f.msb <= 8 * self.nbytes, f"{self.name}: field {f.name} beyond the entry"
            used |= mask

    def __iter__(self):
        return iter(self.fields)

    def __len__(self):
        return len(self.fields)

    def __getitem__(self, name: str) -> BitField:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"{self.name} has no field {name!r}")

    @property
    def names(self) -> tuple:
        return tuple(f.name for f in self.fields)

    def pack(self, values: dict) -> bytes:
        """The entry holding `values` (one per field); ValueError when one does not fit."""
        entry = 0
        for f in self.fields:
            entry |= f.check(int(values[f.name]), f"{self.name} field") << f.lsb
        return entry.to_bytes(self.nbytes, "little")

    def unpack(self, entry: bytes) -> dict:
        """Every field's value in `entry` (`nbytes` bytes)."""
        if len(entry) != self.nbytes:
            raise ValueError(f"{self.name}: {len(entry)} bytes, expected {self.nbytes}")
        value = int.from_bytes(entry, "little")
        return {f.name: f.get(value) for f in self.fields}


def _words(name: str, names, bits: int = 32) -> Layout:
    """A layout of `bits`-bit signed fields one after another."""
    return Layout(name, tuple(BitField(n, bits * i, bits, signed=True)
                              for i, n in enumerate(names)), bits // 8 * len(names))


#: Header of a weight, parameter or step record: the first memory address, the entry count.
ENTRIES_HEADER = Layout("record header", (BitField("addr", 0, 16), BitField("count", 16, 8)), 3)
#: Header of a descriptor record: the pass's index.
DESC_HEADER = Layout("descriptor header", (BitField("index", 0, 16),), 2)
NO_HEADER = Layout("no header", (), 0)
RECORD_HEADER = {REC_WEIGHT: ENTRIES_HEADER, REC_PARAM: ENTRIES_HEADER,
                 REC_STEP: ENTRIES_HEADER, REC_DESC: DESC_HEADER, REC_GLOBAL: NO_HEADER,
                 REC_COMMIT: NO_HEADER}
#: A parameter entry: the drain's bias and (LIF) threshold of one output row.
PARAM_LAYOUT = Layout("parameter", (BitField("bias", 0, 32, signed=True),
                                    BitField("threshold", 32, 48, signed=True)), 10)
#: The one definition of a step entry's bits. The compiler packs with it (`pack_step`), the
#: gateware slices its load parser's shift register with it, and `pysim.hwref` decodes the
#: packed load image with it (`decode_step`), so an encoding fault cannot hide in one place.
#: The row offset and its lane rotation share the second 32-bit word (rotation in bits
#: `ROT_SHIFT` up, as the compiler computes `row_off | rot << ROT_SHIFT`).
STEP_LAYOUT = Layout("step", (
    BitField("col", 0, 32, signed=True),
    BitField("row", 32, 24, signed=True),
    BitField("rot", 56, 8),
    BitField("w", 64, 16),
    BitField("shift", 80, SHIFT_BITS),
    BitField("neg", 87, 1),
    BitField("shift2", 88, SHIFT_BITS),
    BitField("neg2", 93, 1),
    BitField("pair", 95, 1),
), 12)
STEP_FIELD = {f.name: f for f in STEP_LAYOUT}
#: Descriptor and global records: 32-bit signed fields in load order (`DESC_FIELDS`,
#: `GLOBAL_FIELDS`); the load parser takes one field per FIELD_LAYOUT entry.
FIELD_LAYOUT = Layout("field", (BitField("value", 0, 32, signed=True),), 4)
DESC_LAYOUT = _words("descriptor", DESC_FIELDS)
GLOBAL_LAYOUT = _words("global record", GLOBAL_FIELDS)
#: The commit record: passes, records before it, their byte-sum checksum (mod 2^16).
COMMIT_LAYOUT = Layout("commit", (BitField("passes", 0, 16), BitField("records", 16, 16),
                                  BitField("checksum", 32, 16)), 6)


def weight_layout(pe_rows: int) -> Layout:
    """A weight entry: one signed byte per PE row (`w0` for row 0); the array keeps the low
    `weight_bits` bits of each."""
    return Layout("weight", tuple(BitField(f"w{r}", 8 * r, 8, signed=True)
                                  for r in range(pe_rows)), pe_rows)


PARAM_BYTES = PARAM_LAYOUT.nbytes
STEP_BYTES = STEP_LAYOUT.nbytes
DESC_BYTES = DESC_LAYOUT.nbytes
GLOBAL_BYTES = GLOBAL_LAYOUT.nbytes
COMMIT_BYTES = COMMIT_LAYOUT.nbytes
#: Largest count of entries in one weight/param/step record.
MAX_RECORD_ENTRIES = (1 << ENTRIES_HEADER["count"].width) - 1


def record(kind: int, body: bytes = b"", **header) -> bytes:
    """A whole record: the type byte, `RECORD_HEADER[kind]` holding `header`, then `body`."""
    return bytes([kind]) + RECORD_HEADER[kind].pack(header) + body


def split_record(rec: bytes) -> tuple[int, dict, bytes]:
    """(type, header fields, body) of a record; KeyError for an unknown type."""
    header = RECORD_HEADER[rec[0]]
    return rec[0], header.unpack(rec[1:1 + header.nbytes]), rec[1 + header.nbytes:]


def commit_record(passes: int, records: list) -> bytes:
    """The commit record after `records` (every record before it, as sent)."""
    checksum = sum(sum(r) for r in records) & 0xFFFF
    return record(REC_COMMIT, COMMIT_LAYOUT.pack(
        {"passes": passes, "records": len(records), "checksum": checksum}))


def pack_step(col: int, row: int, w: int, shift: int, neg: int, pair: int, shift2: int,
              neg2: int) -> bytes:
    """One step entry (`STEP_BYTES`) from the compiler's step tuple (`STEP_TUPLE`): `row` is
    the row offset (-2^23 .. 2^23 - 1) plus the lane rotation times 2^`ROT_SHIFT`.
    ValueError when a value does not fit its field."""
    rot = (row + (1 << (ROT_SHIFT - 1))) >> ROT_SHIFT
    return STEP_LAYOUT.pack({"col": col, "row": row - (rot << ROT_SHIFT), "rot": rot,
                             "w": w, "shift": shift, "neg": neg, "shift2": shift2,
                             "neg2": neg2, "pair": pair})


def step_bits(config) -> dict:
    """Bits of each step field the gateware keeps in its step memory on `config` (the rest of
    the entry is dropped at load; a field it cannot hold is refused, see `step_supported`)."""
    act = config.act_depth * config.pe_cols
    bits = {"col": _bits(act), "row": _bits(act), "w": _bits(config.weight_depth),
            "shift": SHIFT_BITS, "neg": 1}
    if config.lane_packing:
        bits["rot"] = _bits(config.lanes)
    if config.paired_steps:
        bits.update(pair=1, shift2=SHIFT_BITS, neg2=1)
    return bits


def decode_step(entry: bytes, config) -> dict:
    """A step entry as the gateware holds it: each field cut to `step_bits(config)` (fields the
    array does not build read 0). Addresses are modular, as the gateware's adders are."""
    value = int.from_bytes(entry, "little")
    keep = step_bits(config)
    return {f.name: (f.get(value) & ((1 << keep[f.name]) - 1) if f.name in keep else 0)
            for f in STEP_LAYOUT}


def step_supported(entry: bytes, config) -> bool:
    """Whether the array can run this step: a paired step needs `paired_steps`, a lane
    rotation `lane_packing` (the gateware answers DOES_NOT_FIT otherwise)."""
    value = int.from_bytes(entry, "little")
    if not config.paired_steps and STEP_FIELD["pair"].get(value):
        return False
    return config.lane_packing or not STEP_FIELD["rot"].get(value)


def maxpool_chunk(pe_cols: int) -> tuple[int, int]:
    """A max-pool tile: (outputs per chunk, run reads per input row). A run of
    `pe_cols` words covers the 2k + 1 input columns of k outputs of a 3x3/2 window."""
    k = max(1, (pe_cols - 1) // 2)
    return k, -(-(2 * k + 1) // pe_cols)


def maxpool_step(ky: int, segment: int, width: int, pe_cols: int) -> Step:
    """The max-pool step that reads run `segment` of window row `ky` (`OP_MAXPOOL`): the
    window row and segment ride in the shift field (`ky | segment << 2`), the column offset
    is `ky * width + segment * pe_cols` from the chunk's first input column."""
    return Step(ky * width + segment * pe_cols, 0, 0, ky | segment << 2, 0)


def maxpool_window(shift):
    """(window row, run segment) of a max-pool step's shift field (ints or arrays)."""
    return shift & 3, shift >> 2


def word_bytes(lanes: int) -> int:
    """Bytes per activation word in a trace dump (lanes little-endian, lane 0 = bit 0)."""
    return (lanes + 7) // 8


#: Descriptor fields a program memory word holds: a descriptor is `desc_words()` words, read
#: one per cycle when a pass starts.
FIELDS_PER_WORD = 4
assert FIELDS_PER_WORD & (FIELDS_PER_WORD - 1) == 0, "a power of two"


def desc_words() -> int:
    """Program memory words per descriptor."""
    return -(-len(DESC_FIELDS) // FIELDS_PER_WORD)


def _bits(n: int) -> int:
    """Bits of an unsigned register that holds 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


#: Descriptor fields that count things (tiles, rows, positions, words) rather than address them.
COUNT_FIELDS = ("groups", "rgs", "rows", "cts", "cols", "width", "lastrow", "dump_words")
#: Fields that are activation addresses or strides of them.
ACT_FIELDS = ("col_base", "col_g", "col_rg", "col_ct", "row_base", "row_g", "row_rg", "row_ct",
              "out_base", "out_g", "out_rg", "out_ct", "out_row", "out_plane", "dump_base",
              "band")


def field_bits(config) -> dict:
    """Width in bits of the register that holds each descriptor and global field on `config`
    (the gateware's registers; `field_limits` keeps every value inside them)."""
    act = config.act_depth * config.pe_cols
    AW = _bits(act)
    bits = {name: AW for name in ACT_FIELDS}
    bits.update({name: AW + 1 for name in COUNT_FIELDS})
    bits.update({name: _bits(config.weight_depth) for name in ("w_base", "w_g", "w_rg")})
    bits.update({name: _bits(config.param_depth) for name in ("par_base", "par_g", "par_rg")})
    bits.update(step_base=_bits(config.step_depth), steps=_bits(config.step_depth + 1),
                op=1, taps=4, pad=1, col_mode=1, row_mode=1, out_mode=2,
                out_planes=_bits(config.acc_bits + 2),
                mp_last=_bits(maxpool_chunk(config.pe_cols)[0] + 1), mp_odd=2)
    bits.update(n_pixels=_bits(config.input_depth), pixel_bits=4, T=_bits(config.lanes + 1),
                in_base=AW, in_plane=AW, pack=_bits(config.lanes + 1))
    return bits


def field_width(config) -> int:
    """Bits of one field lane of a program memory word (the widest descriptor field)."""
    bits = field_bits(config)
    return max(bits[name] for name in DESC_FIELDS)


def field_limits(config) -> dict:
    """Allowed (lowest, highest) value of every descriptor and global field on `config`.

    The gateware checks each field as it loads (a value outside -> DOES_NOT_FIT) and the
    compiler asserts its own output against the same table, so the two cannot disagree.
    Strides and bases are activation, weight, parameter or step addresses; counts are at most
    the activation words. Without `lane_packing`, a word holds one lane group (`pack` 1, no
    band); `row_mode` ROW_RUN needs `pe_rows <= pe_cols`.
    """
    act = config.act_depth * config.pe_cols
    limits = {name: (0, act - 1) for name in ACT_FIELDS}
    limits.update({name: (0, act) for name in COUNT_FIELDS})
    limits.update(
        op=(0, 1), groups=(1, act),
        steps=(0, config.step_depth), step_base=(0, config.step_depth - 1), taps=(1, 9),
        pad=(0, 1), col_mode=(0, 1), row_mode=(0, 1 if config.pe_rows <= config.pe_cols else 0),
        out_mode=(0, 3), out_planes=(1, config.acc_bits + 1),
        mp_last=(0, maxpool_chunk(config.pe_cols)[0]), mp_odd=(0, 3))
    for name in ("w_base", "w_g", "w_rg"):
        limits[name] = (0, config.weight_depth - 1)
    for name in ("par_base", "par_g", "par_rg"):
        limits[name] = (0, config.param_depth - 1)
    packs = config.lanes if config.lane_packing else 1
    limits.update(n_pixels=(1, config.input_depth - 1), pixel_bits=(1, 8), T=(1, config.lanes),
                  in_base=(0, act - 1), in_plane=(0, act - 1), pack=(1, packs))
    if not config.lane_packing:
        limits["band"] = (0, 0)
    bits = field_bits(config)
    assert all(hi < 1 << bits[name] for name, (_, hi) in limits.items())
    return limits
