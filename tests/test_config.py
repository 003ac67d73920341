"""ArrayConfig: validation with messages that say what is allowed, and a JSON round trip."""

import pytest

from hw.config import ArrayConfig


def test_json_round_trip(tmp_path):
    config = ArrayConfig(name="wide", pe_rows=16, pe_cols=16, lanes=8, membrane_bits=32)
    path = tmp_path / "wide.json"
    config.save(path)
    assert ArrayConfig.load(path) == config
    assert ArrayConfig.from_json(config.to_json()).total_lanes == 16 * 16 * 8


@pytest.mark.parametrize("changes, message", [
    ({"pe_cols": 6}, "pe_cols = 6 is not allowed: a power of two"),
    ({"lanes": 3}, "lanes = 3 is not allowed: a power of two"),
    ({"pe_rows": 0}, "pe_rows = 0 is not allowed: 1 .. 64"),
    ({"weight_bits": 9}, "weight_bits = 9 is not allowed: 2 .. 8"),
    ({"acc_bits": 8}, "acc_bits = 8 is not allowed"),
    ({"act_depth": 1000}, "act_depth = 1000 is not allowed: a power of two"),
    ({"name": "has space"}, "name = 'has space' is not allowed"),
    ({"pe_rows": 4.0}, "pe_rows = 4.0 is not allowed: an integer"),
])
def test_bad_values_say_what_is_allowed(changes, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        ArrayConfig(**changes)


def test_unknown_json_field_is_named():
    with pytest.raises(ValueError, match="no field.*pe_depth"):
        ArrayConfig.from_json('{"pe_depth": 3}')


def test_frozen():
    with pytest.raises(AttributeError):
        ArrayConfig().pe_rows = 2  # type: ignore[misc]
