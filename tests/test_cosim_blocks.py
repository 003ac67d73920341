"""Block tests on Verilator (`tb/blocks.py`): the PE array and the LIF unit against pysim.hwref.

One Verilator build per configuration (`build/cocotb/blocks_<name>/`), through the cocotb runner
(`tb.runner.VerilatorRunner`). The three configurations cover one lane (T = lanes = 1) with a
narrow accumulator that wraps, the shipped default configuration (hw/configs/default.json, the
same build as `python -m tb.blocks`), and sixteen lanes with 4-bit weights.
"""

import time

import numpy as np
import pytest

from hw.config import ArrayConfig
from tb import blocks
from tb.blocks import ROOT

SMALL = ArrayConfig(name="blk_small", pe_rows=3, pe_cols=2, lanes=1, weight_bits=8, acc_bits=14,
                    membrane_bits=17)
CONFIGS = [
    SMALL,
    ArrayConfig.load(ROOT / "hw" / "configs" / "default.json"),
    ArrayConfig(name="blk_lanes16", pe_rows=2, pe_cols=4, lanes=16, weight_bits=4, acc_bits=12,
                membrane_bits=30),
]
#: Every cocotb test of tb/blocks.py, each data test with and without idle cycles.
TESTS = {"pe_corners", "pe_modes/idle=0.0", "pe_modes/idle=0.4", "pe_random/idle=0.0",
         "pe_random/idle=0.3", "lif_corners", "lif_random/idle=0.0", "lif_random/idle=0.5"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_blocks_equal_hwref(config):
    """Every PE array mode and the LIF unit equal pysim.hwref on corners and random inputs,
    with and without idle cycles."""
    outcome = blocks.run(config)
    assert set(outcome.results) == TESTS, f"tests ran: {sorted(outcome.results)}"
    assert not outcome.failed, f"{outcome.failed}; see {outcome.log}"


def test_checker_catches_a_wrong_output():
    """Negative: with one wrong weight bit or threshold bit driven into the RTL (TB_FAULT),
    every test fails, naming the first output that differs from pysim.hwref."""
    outcome = blocks.run(SMALL, fault=True)
    assert set(outcome.results) == TESTS
    for name, message in outcome.results.items():
        assert message is not None, f"{name} passed with a wrong value driven"
        kind = "shadow mismatch" if name.startswith("pe_") else "spike mismatch"
        assert kind in message, f"{name}: {message}"


def test_unchanged_build_skips_verilator():
    """A second build of an unchanged configuration only runs make (incremental)."""
    blocks.build(SMALL)
    start = time.monotonic()
    runner = blocks.build(SMALL)
    assert not runner.verilated
    assert time.monotonic() - start < 20


def test_waves_give_an_fst_trace(monkeypatch):
    """WAVES=1 builds into sim_waves/ with FST tracing and the run writes dump.fst."""
    monkeypatch.setenv("WAVES", "1")
    outcome = blocks.run(SMALL, tests="pe_corners|lif_corners")
    assert set(outcome.results) == {"pe_corners", "lif_corners"} and not outcome.failed
    dump = blocks.build_dir(SMALL) / "sim_waves" / "dump.fst"
    assert dump.stat().st_size > 1000
    assert dump.read_bytes()[0] == 0  # FST block type 0: header (a VCD starts with text)


@pytest.mark.parametrize("bits", [1, 4, 20])
def test_pack_unpack_round_trip(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), 37)
    np.testing.assert_array_equal(blocks.unpack(blocks.pack(values, bits), bits, 37), values)
    assert blocks.pack([-1], bits) == (1 << bits) - 1
