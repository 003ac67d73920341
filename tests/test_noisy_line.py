"""The noisy serial line (`tb/noisy_uart.py`): the noise block against its specification, and
the iCEBreaker bridge cosimulation through it.

`LineNoise` is checked in the Amaranth simulator against a character-level reference: the n-th
character's k-th bit cell is inverted when draw 10n + k of xorshift32 from the flip seed is
below the threshold, the character is held idle when draw n from the drop seed is. The `rtl`
tests run the committed spikformer compiled for the iCEBreaker through the noisy bridge
(cocotbext-uart on both sides): with retries every logit equals the golden model's after bit
errors and dropped characters in both directions; with retries off the run ends in a
`LinkError` and returns no wrong result; a tampered expected logit fails the run.
"""

import random

import pytest
from amaranth.sim import Simulator

from tb.noisy_uart import CELLS, LineNoise, threshold, xorshift32

DIVISOR = 4


def draws(seed: int, count: int) -> list[int]:
    """The first `count` states of xorshift32 from `seed`."""
    states = []
    for _ in range(count):
        states.append(seed)
        seed = xorshift32(seed)
    return states


def clean_line(rng: random.Random, characters: int) -> tuple[list[int], list[int]]:
    """An 8N1 line, one sample per cycle, with random idle gaps (0 .. 13 cycles) between
    characters: the samples and the cycle each character starts in."""
    line = [1] * 5
    starts = []
    for _ in range(characters):
        line += [1] * rng.choice([0, 0, 1, 3, 7, 13])
        starts.append(len(line))
        byte = rng.randrange(256)
        bits = [0] + [byte >> k & 1 for k in range(8)] + [1]
        for bit in bits:
            line += [bit] * DIVISOR
    return line + [1] * 8, starts


def reference(line, starts, flip_threshold, drop_threshold, flip_seed, drop_seed):
    """The noisy line the specification says (same timing as `line`), and the counts."""
    noisy = list(line)
    flip_draws = draws(flip_seed, CELLS * len(starts))
    drop_draws = draws(drop_seed, len(starts))
    flips = drops = 0
    for n, start in enumerate(starts):
        dropped = drop_draws[n] < drop_threshold
        drops += dropped
        for k in range(CELLS):
            flipped = flip_draws[CELLS * n + k] < flip_threshold and not dropped
            flips += flipped
            end = start + (k + 1) * DIVISOR - (k == CELLS - 1)  # stop cell: 1 cycle short
            for t in range(start + k * DIVISOR, end):
                noisy[t] = 1 if dropped else line[t] ^ flipped
    return noisy, flips, drops


def simulate(line, flip_threshold, drop_threshold, flip_seed, drop_seed):
    dut = LineNoise(DIVISOR)
    out = []
    counts = {}

    async def bench(ctx):
        ctx.set(dut.flip_seed, flip_seed)
        ctx.set(dut.drop_seed, drop_seed)
        ctx.set(dut.flip_threshold, flip_threshold)
        ctx.set(dut.drop_threshold, drop_threshold)
        for sample in line:
            ctx.set(dut.line_in, sample)
            await ctx.tick()
            out.append(ctx.get(dut.line_out))
        for name in ("characters", "flips", "drops"):
            counts[name] = ctx.get(getattr(dut, name))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out, counts


@pytest.mark.parametrize("flip_p, drop_p", [(0.0, 0.0), (0.2, 0.0), (0.1, 0.25), (1.0, 0.0),
                                            (0.0, 1.0)])
def test_line_noise_matches_its_specification(flip_p, drop_p):
    """Cell by cell and cycle by cycle (one cycle late), characters back to back or apart."""
    rng = random.Random(int(flip_p * 100 + drop_p * 10))
    line, starts = clean_line(rng, 60)
    seeds = rng.getrandbits(32) | 1, rng.getrandbits(32) | 1
    args = threshold(flip_p), threshold(drop_p), *seeds
    expected, flips, drops = reference(line, starts, *args)
    out, counts = simulate(line, *args)
    assert out == expected
    assert counts == {"characters": len(starts), "flips": flips, "drops": drops}
    if 0 < flip_p < 1:
        assert 0 < flips < CELLS * len(starts)  # the case exercises both outcomes
    if drop_p == 1.0:
        assert set(out) == {1}


def test_line_noise_reference_catches_a_wrong_cell():
    """Negative control: the comparison above fails when one cell differs."""
    rng = random.Random(7)
    line, starts = clean_line(rng, 10)
    args = threshold(0.2), 0, 12345, 678
    expected, _, _ = reference(line, starts, *args)
    out, _ = simulate(line, *args)
    wrong = list(out)
    wrong[starts[3] + 2 * DIVISOR] ^= 1
    assert out == expected and wrong != expected


def test_threshold_refuses_probabilities_outside_0_1():
    with pytest.raises(ValueError, match="outside 0 .. 1"):
        threshold(1.5)


def _noisy(tmp_path, **kwargs):
    from tb.noisy_uart import ROOT, run

    # Host to device: the load's 40 kB (about 60 hit LOAD chunks at 1e-4); device to host the
    # higher rates, so that its 3,500 characters surely see errors too.
    args = dict(images=3, ber=(1e-4, 2e-3), drop=(1e-4, 2e-3), seed=1, batch=3,
                folder=ROOT / "build" / "noisy_test", progress=False)
    return run(**{**args, **kwargs})


@pytest.mark.rtl
def test_noisy_line_every_logit_golden_with_retries(tmp_path):
    report = _noisy(tmp_path)
    assert report["failure"] is None, report["failure"]
    assert report["images_returned"] == 3 and report["mismatches"] == 0
    assert report["cycle_model_equal"] and report["passed"]
    for direction in report["line"].values():
        assert direction["flipped_bits"] > 0, report["line"]
    assert report["dropped_characters"] > 0
    assert report["retries"] > 0


@pytest.mark.rtl
def test_noisy_line_without_retries_reports_the_failure(tmp_path):
    """The same noisy run with retries off: a LinkError, never a wrong result."""
    report = _noisy(tmp_path, retries=0)
    assert report["failure"] is not None and report["failure"].startswith("LinkError")
    assert report["retries"] == 0
    assert report["returned_wrong"] == 0
    assert not report["passed"]


@pytest.mark.rtl
def test_noisy_line_tampered_expectation_fails(tmp_path):
    """Negative control of the verdict: one expected logit off by one fails the run."""
    report = _noisy(tmp_path, images=1, batch=1, tamper=True)
    assert report["failure"] is None
    assert report["mismatches"] == 1 and not report["passed"]
