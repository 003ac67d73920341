"""The noisy serial line (`tb/noisy_uart.py`): the noise block against its specification, and
the iCEBreaker bridge cosimulation through it.

`LineNoise` is checked in the Amaranth simulator against a character-level reference: the n-th
character's k-th bit cell is inverted when draw 10n + k of xorshift32 from the flip seed is
below the threshold, the character is held idle when draw n from the drop seed is. The `rtl`
tests run the committed spikformer compiled for the iCEBreaker through the noisy bridge
(cocotbext-uart on both sides): with retries every logit equals the golden model's after bit
errors and dropped characters in both directions; with retries off the run ends in a
`LinkError` and returns no wrong result; a tampered expected logit fails the run. The host's
parser drops a frame inside which the line goes quiet (a response whose length field was hit
hid the answers behind it: found by the noisy line, tested here on a scripted line).
"""

import random
import time

import pytest
from amaranth.sim import Simulator

from firmware.host import AcceleratorClient, LinkError
from firmware.protocol import (
    LINK_VERSION,
    RESPONSE,
    SOF,
    FrameParser,
    LinkStatus,
    encode_frame,
)
from firmware.transport import Transport
from hw.status import Status
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


class HitLengthLine(Transport):
    """A device that answers STATUS, the first answer behind a start marker and a header whose
    length field was hit (claims 200 bytes): what a bit error on the line back can make."""

    def __init__(self):
        self.parser = FrameParser()
        self.out = b""

    def write(self, data):
        for frame in self.parser.feed(data):
            status = LinkStatus(Status.OK, True, False, True, LINK_VERSION, 512, 0, 0, 0, 256,
                                512, 512).encode()
            hit = b"" if self.out else bytes([SOF, RESPONSE | frame.cmd, frame.seq, 200, 0])
            self.out = hit + encode_frame(RESPONSE | frame.cmd, status, frame.seq)

    def read(self, max_bytes, timeout):
        data, self.out = self.out[:max_bytes], self.out[max_bytes:]
        if not data:
            time.sleep(timeout)
        return data

    def close(self):
        pass


def test_host_finds_the_answer_behind_a_hit_length_field():
    """The line goes quiet inside the false frame: the host drops it and reads the answer
    behind it in the first attempt (before, the false frame hid every answer until 200 bytes
    had come: each attempt timed out)."""
    acc = AcceleratorClient(HitLengthLine(), retries=0, response_timeout=0.6)
    assert acc.retried == 0 and acc.parser.errors == 1
    assert acc.status().version == LINK_VERSION


def test_without_expiry_the_hit_length_field_hides_the_answers(monkeypatch):
    """Negative control: a parser that keeps waiting for the false frame's bytes."""
    monkeypatch.setattr(FrameParser, "expire", lambda self: [])
    with pytest.raises(LinkError, match="no response within"):
        AcceleratorClient(HitLengthLine(), retries=1, response_timeout=0.6)


def _noisy(tmp_path, **kwargs):
    from tb.noisy_uart import ROOT, run

    # Host to device: the load's 40 kB (about 60 hit LOAD chunks at 1e-4); device to host
    # higher rates, so that its 3,500 characters surely see errors too (about 17 flips). One
    # image per batch: a READ answers with at most one result (51 bytes, hit 24% of the
    # time at 5e-4), where three waiting results would make it 131 bytes (hit 51%).
    args = dict(images=3, ber=(1e-4, 5e-4), drop=(2e-4, 5e-4), seed=1, batch=1,
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
    assert report["mismatches"] == 0
    assert not report["passed"]


@pytest.mark.rtl
@pytest.mark.extended  # (`make test` has the run without any retries)
def test_noisy_line_without_retries_after_the_load_reports_the_failure(tmp_path):
    """Retries on for the load, off for the inferences, the line back noisier (an empty READ
    answer is hit 20% of the time): a STATUS, INFER or READ ends the run with a LinkError;
    what was returned before it equals the golden model."""
    report = _noisy(tmp_path, retries=0, load_retries=8, ber=(1e-4, 2e-3))
    assert report["failure"] is not None, report
    assert report["failure"].startswith(("LinkError: STATUS", "LinkError: READ",
                                         "LinkError: INFER")), report["failure"]
    assert report["images_returned"] < 3 and report["mismatches"] == 0
    assert not report["passed"]


@pytest.mark.rtl
@pytest.mark.extended  # (the soak's negative control covers the verdict in `make test`)
def test_noisy_line_tampered_expectation_fails(tmp_path):
    """Negative control of the verdict: one expected logit off by one fails the run."""
    report = _noisy(tmp_path, images=1, batch=1, tamper=True)
    assert report["failure"] is None
    assert report["mismatches"] == 1 and not report["passed"]
