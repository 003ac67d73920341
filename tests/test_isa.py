"""The load-record layouts of `hw/isa.py`: every record is packed by the compiler and decoded
by `pysim.hwref` from the same (name, offset, width) tables, so a compiled image decodes back
to exactly what the compiler meant, and a value or a bit out of place is caught."""

import pytest

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim.hwref import decode_image
from pysim.random_model import random_int_model

CONFIG = ArrayConfig.load("hw/configs/default.json")


@pytest.mark.parametrize("layout", [isa.PARAM_LAYOUT, isa.STEP_LAYOUT, isa.DESC_LAYOUT,
                                    isa.GLOBAL_LAYOUT, isa.COMMIT_LAYOUT, isa.ENTRIES_HEADER,
                                    isa.DESC_HEADER, isa.weight_layout(4)],
                         ids=lambda layout: layout.name)
def test_layout_round_trips_its_extremes(layout):
    """Each field at its lowest and highest value packs into `nbytes` and unpacks unchanged;
    one more than the highest is refused, naming the field."""
    for end in (0, 1):
        values = {}
        for f in layout:
            lo, hi = ((-(1 << (f.width - 1)), (1 << (f.width - 1)) - 1) if f.signed
                      else (0, (1 << f.width) - 1))
            values[f.name] = (lo, hi)[end]
        entry = layout.pack(values)
        assert len(entry) == layout.nbytes
        assert layout.unpack(entry) == values
    f = layout.fields[-1]
    over = dict(values, **{f.name: values[f.name] + 1})
    with pytest.raises(ValueError, match=f"{f.name} = "):
        layout.pack(over)


def test_overlapping_fields_are_refused():
    with pytest.raises(AssertionError, match="overlaps"):
        isa.Layout("bad", (isa.BitField("a", 0, 8), isa.BitField("b", 7, 2)), 2)
    with pytest.raises(AssertionError, match="beyond"):
        isa.Layout("bad", (isa.BitField("a", 4, 8),), 1)


def test_record_sizes_follow_the_layouts():
    """The sizes the host, the parser and the references use are the layouts' sizes."""
    assert (isa.PARAM_BYTES, isa.STEP_BYTES, isa.COMMIT_BYTES) == (10, 12, 6)
    assert isa.DESC_BYTES == 4 * len(isa.DESC_FIELDS)
    assert isa.GLOBAL_LAYOUT.names == isa.GLOBAL_FIELDS
    assert isa.DESC_LAYOUT.names == isa.DESC_FIELDS
    assert isa.MAX_RECORD_ENTRIES == 255


@pytest.mark.parametrize("family", ["sew", "ms", "iand", "sdsa"])
def test_compiled_image_decodes_to_what_the_compiler_meant(family):
    """Globals, descriptors, parameters and steps decoded from the records (with the same
    layouts) equal the compiler's own values on an array that holds them at full width."""
    net = compile_network(random_int_model(family, seed=1, T=2), CONFIG)
    records = net.records()
    kinds = [isa.split_record(r)[0] for r in records]
    assert kinds[0] == isa.REC_GLOBAL and kinds[-1] == isa.REC_COMMIT
    image = decode_image(records, CONFIG)
    assert image.globals == net.globals
    assert image.descs == [p.desc for p in net.passes]
    assert [tuple(p) for p in image.params[:len(net.params)]] == net.params
    # Steps as the step memory holds them: offsets modulo the activation and weight spaces.
    bits = isa.step_bits(CONFIG)
    held = []
    for step in net.steps:
        fields = isa.STEP_LAYOUT.unpack(isa.pack_step(*step))
        fields = {name: v & ((1 << bits.get(name, 0)) - 1) for name, v in fields.items()}
        fields["row"] |= fields.pop("rot") << isa.ROT_SHIFT
        held.append(isa.Step(**fields))
    assert [isa.Step(*s) for s in image.steps[:len(net.steps)]] == held
    assert [list(w) for w in image.weights[:len(net.weights)]] == net.weights
    _, _, body = isa.split_record(records[-1])
    commit = isa.COMMIT_LAYOUT.unpack(body)
    assert commit == {"passes": len(net.passes), "records": len(records) - 1,
                      "checksum": sum(map(sum, records[:-1])) & 0xFFFF}


def test_a_flipped_bit_changes_the_decoded_field():
    """Negative control: one bit flipped in a parameter's threshold or a step's shift is seen
    by the decoder in that field, and only there."""
    net = compile_network(random_int_model("sew", seed=2, T=4), CONFIG)
    records = net.records()
    clean = decode_image(records, CONFIG)
    for kind, layout, name in ((isa.REC_PARAM, isa.PARAM_LAYOUT, "threshold"),
                               (isa.REC_STEP, isa.STEP_LAYOUT, "shift")):
        i = next(i for i, r in enumerate(records) if r[0] == kind)
        bit = 8 * (1 + isa.ENTRIES_HEADER.nbytes) + layout[name].lsb + 1
        rec = bytearray(records[i])
        rec[bit // 8] ^= 1 << bit % 8
        bad = decode_image(records[:i] + [bytes(rec)] + records[i + 1:], CONFIG)
        addr = isa.split_record(records[i])[1]["addr"]
        if kind == isa.REC_PARAM:
            assert bad.params[addr][1] != clean.params[addr][1]
            assert bad.params[addr][0] == clean.params[addr][0]
        else:
            col = isa.STEP_TUPLE.index(name)
            assert bad.steps[addr][col] == clean.steps[addr][col] ^ 2
            others = [c for c in range(isa.STEP_FIELDS) if c != col]
            assert list(bad.steps[addr][others]) == list(clean.steps[addr][others])


def test_maxpool_step_encodes_its_window():
    for ky in range(3):
        for seg in range(3):
            step = isa.maxpool_step(ky, seg, 8, 16)
            assert isa.maxpool_window(step.shift) == (ky, seg)
            assert step.col == ky * 8 + seg * 16
