"""UART receiver/transmitter against a bit-level reference, in the Amaranth simulator.

The reference (`ref_frame`) is the 8N1 frame as the standard defines it. The receiver is fed
reference frames (with clock mismatch, glitches, bad stop bits and a stalled consumer); the
transmitter's line is decoded bit by bit and its timing checked to the cycle. The cocotb tests in
`test_uart_cocotb.py` repeat the data tests against cocotbext-uart's independent models.
"""

import itertools
import random

import pytest
from amaranth import Module
from amaranth.sim import Simulator

from hw.uart import UARTRx, UARTTx, uart_divisor

CASES = [0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80, 0x7E, 0x81]


def ref_frame(byte: int) -> list[int]:
    """The 8N1 line levels of one byte: start bit, eight data bits LSB first, stop bit."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def payload(seed: int = 1, count: int = 24) -> list[int]:
    rng = random.Random(seed)
    return CASES + [rng.randrange(256) for _ in range(count)]


async def drive_line(ctx, line, bits_per_byte, divisor, gap=0, bit_cycles=None):
    """Drive `line` with the given frames; `bit_cycles` overrides the bit length (mismatch)."""
    for bits in bits_per_byte:
        for level in bits:
            ctx.set(line, level)
            await ctx.tick().repeat(bit_cycles or divisor)
        if gap:
            await ctx.tick().repeat(gap)


def run_rx(divisor, frames, *, ready_pattern=(1,), gap=0, bit_cycles=None, extra=0):
    """Feed `frames` (lists of line levels) to a receiver; returns (bytes, overruns, errors)."""
    dut = UARTRx(divisor)
    got, overruns, errors = [], [], []
    total = sum(len(f) for f in frames) * (bit_cycles or divisor) + len(frames) * gap
    total += 4 * divisor + extra

    async def producer(ctx):
        await drive_line(ctx, dut.rx, frames, divisor, gap, bit_cycles)

    async def consumer(ctx):
        for cycle, ready in zip(range(total), itertools.cycle(ready_pattern)):
            ctx.set(dut.stream.ready, ready)
            if ctx.get(dut.stream.valid) and ready:
                got.append(ctx.get(dut.stream.payload))
            if ctx.get(dut.overrun):
                overruns.append(cycle)
            if ctx.get(dut.framing_error):
                errors.append(cycle)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return got, overruns, errors


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_rx_receives_reference_frames(divisor):
    data = payload(divisor)
    got, overruns, errors = run_rx(divisor, [ref_frame(b) for b in data])
    assert got == data
    assert overruns == [] and errors == []


@pytest.mark.parametrize("bit_cycles", [31, 33])
def test_rx_tolerates_clock_mismatch(bit_cycles):
    # A sender 3 % fast or slow against a divisor of 32, back to back frames.
    data = payload(bit_cycles, 12)
    got, _, errors = run_rx(32, [ref_frame(b) for b in data], bit_cycles=bit_cycles)
    assert got == data and errors == []


def test_rx_fails_beyond_tolerance():
    # A sender 9 % fast lands the stop-bit sample in the next start bit: the check must notice.
    data = payload(5, 12)
    got, _, errors = run_rx(32, [ref_frame(b) for b in data], bit_cycles=29)
    assert errors, "the receiver's framing check did not notice the drift"
    assert len(got) + len(errors) <= len(data)  # a flagged frame is dropped, not delivered
    assert got != data


def test_rx_under_back_pressure():
    # The consumer takes a byte only every third cycle; the holding register absorbs that.
    data = payload(3)
    got, overruns, _ = run_rx(8, [ref_frame(b) for b in data], ready_pattern=(0, 0, 1))
    assert got == data and overruns == []


def test_rx_overrun_drops_byte_and_pulses():
    # Nobody reads: the first byte waits, the second is dropped with an overrun pulse.
    got, overruns, _ = run_rx(8, [ref_frame(0x12), ref_frame(0x34)], ready_pattern=(0,))
    assert got == [] and len(overruns) == 1


def test_rx_framing_error_drops_byte():
    bad = ref_frame(0x5A)[:-1] + [0, 0, 1]  # stop bit low, then a break, then idle
    got, _, errors = run_rx(8, [bad, ref_frame(0xC3)])
    assert got == [0xC3]
    assert len(errors) == 1


def test_rx_ignores_short_glitch():
    got, errors = run_glitch_then_frame(8)
    assert got == [0x99] and errors == []


def run_glitch_then_frame(divisor):
    dut = UARTRx(divisor)
    got, errors = [], []

    async def producer(ctx):
        ctx.set(dut.rx, 0)
        await ctx.tick().repeat(divisor // 2 - 2)  # shorter than half a bit
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        await drive_line(ctx, dut.rx, [ref_frame(0x99)], divisor)

    async def consumer(ctx):
        ctx.set(dut.stream.ready, 1)
        for _ in range(16 * divisor):
            if ctx.get(dut.stream.valid):
                got.append(ctx.get(dut.stream.payload))
            if ctx.get(dut.framing_error):
                errors.append(1)
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    return got, errors


def test_rx_latency_matches_docstring():
    divisor = 10
    dut = UARTRx(divisor)
    seen = []

    async def bench(ctx):
        ctx.set(dut.stream.ready, 1)
        await ctx.tick().repeat(3)
        levels = ref_frame(0x3C)
        cycle = 0
        for level in levels:
            ctx.set(dut.rx, level)
            for _ in range(divisor):
                if ctx.get(dut.stream.valid) and not seen:
                    seen.append((cycle, ctx.get(dut.stream.payload)))
                await ctx.tick()
                cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(int(9.5 * divisor) + 3, 0x3C)]


def decode_tx(divisor, data, *, valid_pattern=(1,)):
    """Send `data` through a transmitter; returns (decoded bytes, start-bit cycles, cycles
    the line spent in each frame bit)."""
    dut = UARTTx(divisor)
    line = []

    async def producer(ctx):
        pattern = itertools.cycle(valid_pattern)
        for byte in data:
            while not next(pattern):
                await ctx.tick()
            ctx.set(dut.stream.payload, byte)
            ctx.set(dut.stream.valid, 1)
            await ctx.tick().until(dut.stream.ready)
            ctx.set(dut.stream.valid, 0)

    async def monitor(ctx):
        for _ in range((len(data) + 2) * 12 * divisor + 20 * len(data)):
            line.append(ctx.get(dut.tx))
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(monitor)
    sim.run()

    decoded, starts = [], []
    i = 0
    while i < len(line):
        if line[i] == 0:
            starts.append(i)
            bits = [line[i + divisor // 2 + k * divisor] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, "malformed frame on the line"
            decoded.append(sum(b << k for k, b in enumerate(bits[1:9])))
            # every bit holds for exactly `divisor` cycles
            for k in range(9):
                edge = line[i + k * divisor: i + (k + 1) * divisor]
                assert len(set(edge)) == 1, f"bit {k} not steady for {divisor} cycles"
            i += 10 * divisor
        else:
            i += 1
    return decoded, starts


@pytest.mark.parametrize("divisor", [4, 9])
def test_tx_frames_and_timing(divisor):
    data = payload(divisor + 100)
    decoded, starts = decode_tx(divisor, data)
    assert decoded == data
    # back to back: one idle cycle between frames
    assert {b - a for a, b in itertools.pairwise(starts)} == {10 * divisor + 1}


def test_tx_with_idle_producer():
    data = payload(7, 8)
    decoded, _ = decode_tx(5, data, valid_pattern=(0, 0, 0, 1))
    assert decoded == data


def test_tx_to_rx_loopback():
    divisor = 6
    data = payload(11)
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor)
    m.submodules.rx = rx = UARTRx(divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def producer(ctx):
        for byte in data:
            ctx.set(tx.stream.payload, byte)
            ctx.set(tx.stream.valid, 1)
            await ctx.tick().until(tx.stream.ready)
        ctx.set(tx.stream.valid, 0)

    async def consumer(ctx):
        ctx.set(rx.stream.ready, 1)
        for _ in range((len(data) + 2) * 11 * divisor):
            if ctx.get(rx.stream.valid):
                got.append(ctx.get(rx.stream.payload))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert got == data


def test_divisor_from_clock_and_baud():
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(48e6, 1_000_000) == 48
    with pytest.raises(ValueError, match="too high"):
        uart_divisor(12e6, 4e6)
    with pytest.raises(ValueError, match="off by"):
        uart_divisor(12e6, 2.6e6)  # divisor 5 gives 2.4 Mbaud, 7.7 % off
    with pytest.raises(ValueError, match="positive"):
        uart_divisor(0, 9600)


@pytest.mark.parametrize("bad", [3, 0, 4.0, True, "8"])
def test_rejects_bad_divisor(bad):
    with pytest.raises(ValueError, match="divisor must be"):
        UARTRx(bad)
    with pytest.raises(ValueError, match="divisor must be"):
        UARTTx(bad)
