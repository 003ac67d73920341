"""Regressions of the two silent wrong results (`pysim/regressions.py`) on the NumPy executor
(which decodes the packed load image as the gateware does). Their RTL test is in
`tests/test_cosim.py` (`test_both_regressions_on_the_rtl`), on that file's Verilator build: a
file of its own would build the same folder on another worker at the same time."""

import numpy as np
import pytest

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.hwref import Executor, decode_image
from pysim.random_model import FAMILIES, random_images, random_int_model
from pysim.regressions import stale_lane_networks, wide_shift_network
from tb.run_sim import DEFAULT_CONFIG

CONFIG = ArrayConfig.load(DEFAULT_CONFIG)


def logits_of(net, payload):
    return net.decode_result(payload, False)[0]


def test_step_layout_round_trips_every_shift():
    """Every shift 0 .. 31 of both operands, signs, pairs and negative row offsets with
    rotations survive packing and the gateware's decode; a value that does not fit raises."""
    for shift in range(32):
        for row in (-5, 7, 3 + (2 << isa.ROT_SHIFT), -(1 << 23)):
            entry = isa.pack_step(-3, row, 9, shift, 1, 1, 31 - shift, 1)
            step = isa.decode_step(entry, CONFIG)
            assert (step["shift"], step["shift2"], step["neg"], step["neg2"], step["pair"]) == (
                shift, 31 - shift, 1, 1, 1)
            rot = (row + (1 << (isa.ROT_SHIFT - 1))) >> isa.ROT_SHIFT
            aw = isa.step_bits(CONFIG)["row"]
            assert step["row"] == (row - (rot << isa.ROT_SHIFT)) % (1 << aw)
            assert step["rot"] == rot
    with pytest.raises(ValueError, match="shift"):
        isa.pack_step(0, 0, 0, 32, 0, 0, 0, 0)


def test_wide_shift_planes_reach_the_executor_intact():
    """The 18-bit integer tensor's planes 16 and 17 shift by 16 and 17 after decoding, and
    the executor (running the decoded image) gives the golden logits: all zero."""
    model = wide_shift_network()
    net = compile_network(model, CONFIG)
    steps = decode_image(net.records(), CONFIG).steps
    assert {16, 17} <= set(steps[:, 3].tolist()) | set(steps[:, 6].tolist())
    x = np.ones((2,) + model.input_spec.shape, np.int64)
    expected = golden.run(model, x, record=False)[0]
    assert not expected.any()
    got = np.stack([logits_of(net, p) for p in Executor(net).run_batch(x)])
    np.testing.assert_array_equal(got, expected)


def test_executor_ignores_a_previous_programs_lanes():
    """The victim network runs on the memory the filler network left (all-ones words): its
    logits stay the golden [0, 0]; and every random family on a memory of all ones equals
    the golden model too (nothing reads a word the program did not write)."""
    filler, victim = stale_lane_networks(CONFIG.lanes)
    zeros = np.zeros((1,) + filler.input_spec.shape, np.int64)
    first = Executor(compile_network(filler, CONFIG))
    first.run_batch(zeros)
    net = compile_network(victim, CONFIG)
    second = Executor(net)
    second.stale = first.mem[0]
    assert (first.mem[0] >> victim.T & 1).any(), "the filler left no ones above T lanes"
    got = logits_of(net, second.run(zeros[0]))
    np.testing.assert_array_equal(got, golden.run(victim, zeros, record=False)[0][0])
    for family in FAMILIES:
        for T in (1, 3):
            model = random_int_model(family, seed=5, T=T)
            net = compile_network(model, CONFIG)
            ex = Executor(net)
            ex.stale = (1 << CONFIG.lanes) - 1
            x = random_images(model, 2, seed=1)
            got = np.stack([logits_of(net, p) for p in ex.run_batch(x)])
            np.testing.assert_array_equal(got, golden.run(model, x, record=False)[0],
                                          err_msg=f"{family} T={T}")


def test_executor_sees_a_field_the_hardware_cuts_short(monkeypatch):
    """Negative control of the decoding reference: if the array kept only 4 shift bits (the
    old gateware), the executor running the decoded image disagrees with the golden model on
    the wide-shift network, as the RTL did."""
    model = wide_shift_network()
    net = compile_network(model, CONFIG)
    x = np.ones((1,) + model.input_spec.shape, np.int64)
    real = isa.step_bits

    def four_bit_shifts(config):
        return {**real(config), "shift": 4, "shift2": 4}

    monkeypatch.setattr(isa, "step_bits", four_bit_shifts)
    got = logits_of(net, Executor(net).run(x[0]))
    assert not np.array_equal(got, golden.run(model, x, record=False)[0][0])
