"""Block tests on Verilator (or Icarus): the PE array and the LIF unit against `pysim/hwref.py`.

The cocotb tests here run inside the simulator on the Verilog of `hw.pe.PeArray` and
`hw.lif.LifUnit`, converted with Amaranth for the `ArrayConfig` given as JSON in
`TB_BLOCK_CONFIG` and placed side by side in one top, `blocks` (ports `pe_*` and `lif_*`), so
one Verilator build per configuration serves both. Every output is compared with
`pysim.hwref.pe_tile` / `pysim.hwref.lif_unit` and, for the array's modes, also with the plain
integer arithmetic the mode implements (dot products, spike counts, selected sums):

- `pe_corners`: reset clears the shadow bank; weights at both limits with the largest shift and
  negation (accumulators wrap at `acc_bits`); all-zero and all-one spikes; one-step tiles;
  a long tile that wraps.
- `pe_modes`: conv weight-select accumulate, multi-bit input by bit-planes (shift, negate the
  sign plane), the same two planes per step (paired), an elementwise sum of two operands in
  one paired step, spike AND spike (q k^T), spike selects a multi-bit value ((q k^T) v).
- `pe_random`: seeded random tiles back to back.
- `lif_corners`: exactly at / one above the threshold, all-zero and all-one inputs, input,
  bias and threshold at their limits, T=1 and T=lanes, packed lane groups, step mode.
- `lif_random`: seeded random vectors of every T and packing.

The PE tests check the shadow bank on *every* cycle against what it must hold then (the last
finished tile), so they also show the double buffering and that nothing moves while `valid` is
low. `idle` runs a test again with random idle cycles between steps, during which the inputs
(`last` included) carry random garbage. The LIF unit is combinational: its idle
variant holds each vector for a random time and puts unchecked garbage vectors in between,
which shows it keeps no state.

`TB_FAULT=1` drives one deliberately wrong value (a weight bit, a threshold bit) at the first
place where the reference shows it changes an output, while the reference keeps the right one;
the checker must then fail (the negative tests in `tests/test_cosim_blocks.py`).

Host side: `build(config)` writes the Verilog into `build/cocotb/blocks_<config>_<hash>/` and
Verilates it through `tb.runner.VerilatorRunner` (`runner.build`); `run(config)` runs the tests
there (`runner.test`) and returns each one's outcome. `python -m tb.blocks --config <json>`
runs them from the command line; `WAVES=1` records `dump.fst`. `simulator="icarus"` (`--sim
icarus`) builds and runs the same tests on Icarus Verilog (`tb.runner.IcarusRunner`), in
`sim_icarus/` of the same folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, Timer

from hw.config import ArrayConfig
from pysim.hwref import lane_masks, lif_unit, pe_tile

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "cocotb"
CLOCK_NS = 10
TOP = "blocks"


def pack(values, bits: int) -> int:
    """Signed or unsigned integers -> one packed vector, element 0 in the low bits."""
    mask = (1 << bits) - 1
    word = 0
    for i, value in enumerate(values):
        word |= (int(value) & mask) << (i * bits)
    return word


def unpack(word: int, bits: int, count: int) -> np.ndarray:
    """A packed vector -> `count` signed integers of `bits` bits."""
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    return np.array([(((word >> (i * bits)) & mask) ^ half) - half for i in range(count)],
                    np.int64)


def words(bits: np.ndarray) -> list[int]:
    """(n, L) 0/1 -> n lane words (lane l is bit l)."""
    return [int(w) for w in (np.asarray(bits, np.int64) << np.arange(bits.shape[-1])).sum(-1)]


class Ports:
    """The ports of one block inside the `blocks` top: `Ports(dut, "pe_").weight` is
    `dut.pe_weight`."""

    def __init__(self, dut, prefix: str):
        self._dut, self._prefix = dut, prefix

    def __getattr__(self, name: str):
        return getattr(self._dut, self._prefix + name)


# --- PE array ------------------------------------------------------------------------------


@dataclass
class Step:
    """One reduction step: weights (R,), shift, neg, rowop (R, L) and colop (C, L) 0/1; a
    paired step also has a second operand colop2 (C, L) with its own shift2 and neg2."""

    weights: np.ndarray
    shift: int
    neg: int
    rowop: np.ndarray
    colop: np.ndarray
    shift2: int = 0
    neg2: int = 0
    colop2: np.ndarray | None = None

    def second(self, cfg: ArrayConfig) -> np.ndarray:
        if self.colop2 is None:
            return np.zeros((cfg.pe_cols, cfg.lanes), np.int64)
        return self.colop2


def tile_reference(cfg: ArrayConfig, tile: list[Step]) -> np.ndarray:
    """`pysim.hwref.pe_tile` of a tile: the sums (R, C, L) its `last` step leaves in shadow
    (the second operands only count on an array with paired steps)."""
    second = None
    if cfg.paired_steps:
        second = ([s.shift2 for s in tile], [s.neg2 for s in tile],
                  np.array([s.second(cfg) for s in tile]))
    return pe_tile(np.array([s.weights for s in tile]), [s.shift for s in tile],
                   [s.neg for s in tile], np.array([s.rowop for s in tile]),
                   np.array([s.colop for s in tile]), cfg.acc_bits, second=second)


class PeBench:
    """Drives the PE array one step per cycle and checks the shadow bank after every edge.

    Inputs change on the falling edge; the shadow is read on the next falling edge, after the
    rising edge that consumed them. Latency 1: a tile's sums are in shadow one edge after its
    `last` step, and stay there until the next tile's `last`. Tiles run back to back with no
    start marker: the working accumulators must restart from 0 after every `last`.
    """

    def __init__(self, dut, cfg: ArrayConfig, seed: int, idle: float = 0.0):
        self.dut, self.cfg, self.idle = Ports(dut, "pe_"), cfg, idle
        self.clk = dut.clk
        self.rng = random.Random(seed)
        self.gen = np.random.default_rng(seed)
        self.expected = np.zeros((cfg.pe_rows, cfg.pe_cols, cfg.lanes), np.int64)
        #: (cycle, sums): a tile's reference, due in the shadow at that cycle
        self.pending: list[tuple[int, np.ndarray]] = []
        self.latency = cfg.pe_latency  # `hw.pe.PeArray.latency`
        self.cycle = 0
        self.checks = 0
        self.fault_pending = os.environ.get("TB_FAULT") == "1"
        self.log = cocotb.log
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        self.rst = dut.rst

    def drive(self, step: Step, valid: int, last: int) -> None:
        cfg, d = self.cfg, self.dut
        d.valid.value = valid
        d.last.value = last
        d.weight.value = pack(step.weights, cfg.weight_bits)
        d.shift.value = step.shift
        d.neg.value = step.neg
        d.rowop.value = pack(words(step.rowop), cfg.lanes)
        d.colop.value = pack(words(step.colop), cfg.lanes)
        if cfg.paired_steps:
            d.shift2.value = step.shift2
            d.neg2.value = step.neg2
            d.colop2.value = pack(words(step.second(cfg)), cfg.lanes)

    def garbage(self) -> Step:
        """Random inputs of every port (what an idle cycle may carry)."""
        return random_step(self.gen, self.cfg)

    def shadow(self) -> np.ndarray:
        cfg = self.cfg
        flat = unpack(self.dut.shadow.value.to_unsigned(), cfg.acc_bits,
                      cfg.pe_rows * cfg.pe_cols * cfg.lanes)
        return flat.reshape(cfg.pe_rows, cfg.pe_cols, cfg.lanes)

    async def edge(self) -> None:
        """Let one rising edge consume the driven inputs, then check the shadow bank."""
        await FallingEdge(self.clk)
        self.cycle += 1
        while self.pending and self.pending[0][0] <= self.cycle:
            self.expected = self.pending.pop(0)[1]
        got = self.shadow()
        if not np.array_equal(got, self.expected):
            r, c, lane = np.argwhere(got != self.expected)[0]
            raise AssertionError(
                f"shadow mismatch at cycle {self.cycle}: PE ({r}, {c}) lane {lane} holds "
                f"{got[r, c, lane]}, pysim.hwref.pe_tile gives {self.expected[r, c, lane]} "
                f"({int((got != self.expected).sum())} accumulators differ)")
        self.checks += 1

    async def reset(self) -> None:
        await FallingEdge(self.clk)
        self.rst.value = 1
        self.drive(self.garbage(), 1, 1)  # reset wins over a valid last step
        self.expected = np.zeros_like(self.expected)
        self.pending = []
        await self.edge()
        await self.edge()
        self.rst.value = 0
        self.drive(self.garbage(), 0, 0)
        await self.edge()

    def faulty(self, tile: list[Step], ref: np.ndarray) -> list[Step]:
        """With TB_FAULT: the tile as driven, one weight bit flipped where that changes `ref`."""
        if not self.fault_pending:
            return tile
        for k, step in enumerate(tile):
            for r in range(self.cfg.pe_rows):
                weights = step.weights.copy()
                weights[r] ^= 1
                wrong = tile[:k] + [dataclasses.replace(step, weights=weights)] + tile[k + 1:]
                if not np.array_equal(tile_reference(self.cfg, wrong), ref):
                    self.fault_pending = False
                    self.log.info("TB_FAULT: weight of row %d flipped in step %d", r, k)
                    return wrong
        return tile

    async def run(self, tiles: list[list[Step]]) -> list[np.ndarray]:
        """Drive the tiles back to back (random idle cycles between steps when `idle`), check
        every cycle, return each tile's reference sums."""
        refs = []
        for tile in tiles:
            ref = tile_reference(self.cfg, tile)
            refs.append(ref)
            for k, step in enumerate(self.faulty(tile, ref)):
                while self.rng.random() < self.idle:
                    garbage = self.garbage()
                    self.drive(garbage, 0, self.rng.getrandbits(1))
                    await self.edge()
                last = k == len(tile) - 1
                self.drive(step, 1, int(last))
                if last:  # in the shadow `PeArray.latency` edges on
                    self.pending.append((self.cycle + self.latency, ref))
                await self.edge()
                if last and self.cfg.double_buffer:  # the capture gap (no step)
                    self.drive(self.garbage(), 0, self.rng.getrandbits(1))
                    await self.edge()
        self.drive(self.garbage(), 0, 0)
        await self.edge()
        return refs


def random_step(gen: np.random.Generator, cfg: ArrayConfig, spike_p: float = 0.5) -> Step:
    R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
    wmax = 1 << (cfg.weight_bits - 1)
    return Step(gen.integers(-wmax, wmax, R), int(gen.integers(0, 16)), int(gen.integers(0, 2)),
                (gen.random((R, L)) < spike_p).astype(np.int64),
                (gen.random((C, L)) < spike_p).astype(np.int64),
                int(gen.integers(0, 16)), int(gen.integers(0, 2)),
                (gen.random((C, L)) < spike_p * gen.integers(0, 2)).astype(np.int64))


def block_config() -> ArrayConfig:
    return ArrayConfig.from_json(os.environ["TB_BLOCK_CONFIG"])


@cocotb.test()
async def pe_corners(dut):
    """Reset, weight limits with shift 15 and negation, all-zero/all-one spikes, one-step
    tiles, a long wrapping tile, the shadow holding through idle cycles."""
    cfg = block_config()
    R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
    tb = PeBench(dut, cfg, seed=11)
    await tb.reset()
    wmin, wmax = -(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1
    ones_r, ones_c = np.ones((R, L), np.int64), np.ones((C, L), np.int64)
    zero_r, zero_c = np.zeros((R, L), np.int64), np.zeros((C, L), np.int64)
    full = np.full(R, wmax)
    low = np.full(R, wmin)
    tiles = [
        [Step(full, 0, 0, ones_r, ones_c)],  # a one-step tile
        [Step(low, 0, 1, ones_r, ones_c)],  # -(-2^(wb-1)): the negation of the minimum
        [Step(full, 15, 0, ones_r, ones_c), Step(low, 15, 0, ones_r, ones_c),
         Step(low, 15, 1, ones_r, ones_c)],  # largest shift: terms wrap at acc_bits
        [Step(full, 3, 0, ones_r, zero_c), Step(low, 7, 1, zero_r, ones_c)],  # no spikes
        [Step(full, 15, 0, ones_r, ones_c)] * 40,  # a long tile: the sum wraps around
        [Step(np.arange(R) - R // 2, 0, 0, ones_r, ones_c)],
    ]
    refs = await tb.run(tiles)
    np.testing.assert_array_equal(refs[0], np.full((R, C, L), wmax))
    np.testing.assert_array_equal(refs[1], np.full((R, C, L), -wmin))
    np.testing.assert_array_equal(refs[3], np.zeros((R, C, L)))
    # The shadow holds its tile through many idle cycles of garbage.
    for _ in range(8):
        tb.drive(tb.garbage(), 0, 1)
        await tb.edge()
    # Reset in the middle of a tile clears the working and the shadow bank.
    tb.drive(random_step(tb.gen, cfg), 1, 0)
    await tb.edge()
    await tb.reset()
    await tb.run([[Step(full, 0, 0, ones_r, ones_c)]])
    assert tb.checks > 60

@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.4])
async def pe_modes(dut, idle):
    """Every mode of the array, against pysim.hwref and against the integer arithmetic
    that mode computes."""
    cfg = block_config()
    R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
    tb = PeBench(dut, cfg, seed=12, idle=idle)
    gen = tb.gen
    await tb.reset()
    wmax = 1 << (cfg.weight_bits - 1)
    ones_r = np.ones((R, L), np.int64)
    one = np.ones(R, np.int64)
    K = 9

    # conv / linear: rowop all ones, the input spikes select the weights.
    w = gen.integers(-wmax, wmax, (K, R))
    s = gen.integers(0, 2, (K, C, L))
    conv = [Step(w[k], 0, 0, ones_r, s[k]) for k in range(K)]
    # multi-bit signed input by bit-planes: plane b weighs 2^b, the sign plane -2^(P-1).
    P = 4
    x = gen.integers(-(1 << (P - 1)), 1 << (P - 1), (K, C, L))
    planes = [Step(w[k], b, int(b == P - 1), ones_r, (x[k] >> b) & 1)
              for k in range(K) for b in range(P)]
    # the same input two planes per step (paired): planes b and b + 1 in one cycle.
    paired = [Step(w[k], b, 0, ones_r, (x[k] >> b) & 1, b + 1, int(b + 1 == P - 1),
                   (x[k] >> (b + 1)) & 1) for k in range(K) for b in range(0, P, 2)]
    # an elementwise sum of two spike operands in one paired step (identity weights).
    a, bb = gen.integers(0, 2, (2, R, C, L))
    ident = np.eye(R, dtype=np.int64)
    pairsum = [Step(ident[r], 0, 0, ones_r, a[r, :C], 0, 1, bb[r, :C]) for r in range(R)]
    # spike AND spike (q k^T, k AND v): weight 1, both operands are spike words.
    q = gen.integers(0, 2, (K, R, L))
    kk = gen.integers(0, 2, (K, C, L))
    spikes = [Step(one, 0, 0, q[k], kk[k]) for k in range(K)]
    # a spike selects a multi-bit value ((q k^T) v): plane b of v, shifted by b.
    V = 5
    v = gen.integers(0, 1 << V, (K, C, L))
    select = [Step(one, b, 0, q[k], (v[k] >> b) & 1) for k in range(K) for b in range(V)]

    if not cfg.paired_steps:  # no second operand path: the paired tiles do not apply
        paired, pairsum = [], []
    refs = await tb.run([t for t in (conv, planes, paired, pairsum, spikes, select) if t])
    if not cfg.paired_steps:
        refs[2:2] = [None, None]
    wrap = 1 << cfg.acc_bits

    def expect(ref, value, what):
        value = ((value + wrap // 2) % wrap) - wrap // 2
        assert np.array_equal(ref, value), f"pysim.hwref.pe_tile disagrees with {what}"

    expect(refs[0], np.einsum("kr,kcl->rcl", w, s), "the spike-selected weight sums")
    expect(refs[1], np.einsum("kr,kcl->rcl", w, x), "the multi-bit dot products")
    if cfg.paired_steps:
        expect(refs[2], np.einsum("kr,kcl->rcl", w, x), "the paired multi-bit dot products")
        expect(refs[3], a - bb, "the paired elementwise differences")
    expect(refs[4], np.einsum("krl,kcl->rcl", q, kk), "the spike coincidence counts")
    expect(refs[5], np.einsum("krl,kcl->rcl", q, v), "the spike-selected value sums")

@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.3])
async def pe_random(dut, idle):
    """Seeded random tiles of 1 .. 12 steps, back to back, random spike densities."""
    cfg = block_config()
    tb = PeBench(dut, cfg, seed=13 + int(idle * 10), idle=idle)
    await tb.reset()
    tiles = [[random_step(tb.gen, cfg, float(tb.gen.choice([0.05, 0.5, 0.95])))
              for _ in range(int(tb.gen.integers(1, 13)))] for _ in range(40)]
    await tb.run(tiles)


# --- LIF unit ------------------------------------------------------------------------------


@dataclass
class LifCase:
    """One vector of the LIF unit: lane inputs x (L,), bias, threshold, T, pack, step mode."""

    x: list[int]
    bias: int
    threshold: int
    T: int
    pack: int = 1
    step: int = 0

    def reference(self, cfg: ArrayConfig) -> np.ndarray:
        return lif_unit(np.array(self.x, np.int64), self.bias, self.threshold, self.T,
                        cfg.lanes, cfg.membrane_bits, bool(self.step), self.pack)


class LifBench:
    """Applies vectors to the combinational LIF unit and checks its spikes against
    `pysim.hwref.lif_unit` after each settles (1 .. 3 ns holds; no clock)."""

    def __init__(self, dut, cfg: ArrayConfig, seed: int, idle: float = 0.0):
        self.dut, self.cfg, self.idle = Ports(dut, "lif_"), cfg, idle
        self.rng = random.Random(seed)
        self.gen = np.random.default_rng(seed)
        self.checks = 0
        self.fault_pending = os.environ.get("TB_FAULT") == "1"
        self.log = cocotb.log

    def drive(self, case: LifCase) -> None:
        cfg, d = self.cfg, self.dut
        L = cfg.lanes
        d.x.value = pack(case.x, cfg.acc_bits)
        d.bias.value = case.bias & ((1 << cfg.acc_bits) - 1)
        d.threshold.value = case.threshold & ((1 << cfg.membrane_bits) - 1)
        d.start.value = sum(1 << t for t in range(0, L, case.T))
        d.valid.value = lane_masks(case.T, case.pack, L)[0]
        d.step.value = case.step

    async def settle(self) -> int:
        await Timer(self.rng.randint(1, 3) if self.idle else 1, unit="ns")
        value = self.dut.spikes.value
        # A one-lane configuration has a 1-bit port, which cocotb gives as a `Logic`.
        return value.to_unsigned() if hasattr(value, "to_unsigned") else int(value)

    def faulty(self, case: LifCase, want: np.ndarray) -> LifCase:
        """With TB_FAULT: the case as driven, threshold bit 0 flipped if that changes `want`."""
        if not self.fault_pending:
            return case
        wrong = LifCase(case.x, case.bias, case.threshold ^ 1, case.T, case.pack, case.step)
        if np.array_equal(wrong.reference(self.cfg), want):
            return case
        self.fault_pending = False
        self.log.info("TB_FAULT: threshold %d driven as %d", case.threshold, wrong.threshold)
        return wrong

    async def check(self, cases: list[LifCase]) -> list[np.ndarray]:
        L = self.cfg.lanes
        results = []
        for i, case in enumerate(cases):
            while self.rng.random() < self.idle:
                self.drive(random_lif_case(self.gen, self.cfg))
                await self.settle()
            want = case.reference(self.cfg)
            self.drive(self.faulty(case, want))
            word = await self.settle()
            got = np.array([(word >> t) & 1 for t in range(L)])
            if not np.array_equal(got, want):
                raise AssertionError(f"spike mismatch on vector {i} ({case}): the LIF unit gives "
                                     f"{got.tolist()}, pysim.hwref.lif_unit {want.tolist()}")
            self.checks += 1
            results.append(got)
        return results


def random_lif_case(gen: np.random.Generator, cfg: ArrayConfig) -> LifCase:
    """Half of the vectors use small values around typical thresholds (mixed spike trains),
    half the full input, bias and threshold ranges (wrap-around of the membrane included)."""
    L = cfg.lanes
    T = int(gen.integers(1, L + 1))
    packing = int(gen.integers(1, L // T + 1))
    if gen.random() < 0.5:
        x = gen.integers(-64, 64, L)
        bias = int(gen.integers(-16, 16))
        threshold = int(gen.integers(-4, 64 << L))
    else:
        amax, mmax = 1 << (cfg.acc_bits - 1), 1 << (cfg.membrane_bits - 1)
        x = gen.integers(-amax, amax, L)
        bias = int(gen.integers(-amax, amax))
        threshold = int(gen.integers(-mmax, mmax))
    return LifCase([int(v) for v in x], bias, threshold, T, packing, int(gen.integers(0, 2)))


@cocotb.test()
async def lif_corners(dut):
    """Threshold exactness, all-zero and all-one inputs, limits of input, bias, threshold
    and membrane, T=1 and T=lanes, packed groups, step mode."""
    cfg = block_config()
    L, A, M = cfg.lanes, cfg.acc_bits, cfg.membrane_bits
    tb = LifBench(dut, cfg, seed=21)
    amax, amin = (1 << (A - 1)) - 1, -(1 << (A - 1))
    mmax, mmin = (1 << (M - 1)) - 1, -(1 << (M - 1))
    h = 5
    at = h << (L - 1)  # lane 0's membrane with x = h: B0 = (h << L) >> 1
    cases = [
        LifCase([h] * L, 0, at, L),  # 0: exactly at the threshold: lane 0 fires
        LifCase([h] * L, 0, at + 1, L),  # 1: one above: lane 0 does not
        LifCase([0] * L, 0, 1, L),  # 2: all-zero input
        LifCase([0] * L, 0, 0, L),  # 3: zero input at threshold 0: every lane fires
        LifCase([amax] * L, amax, mmax, L),  # 4: largest input, unreachable threshold
        LifCase([amin] * L, amin, mmin, L),  # 5: smallest input, lowest threshold
        LifCase([amax] * L, amax, 1, L),  # 6: largest input fires every step
        LifCase([amin] * L, amin, 1, L),  # 7: most negative input never fires
        LifCase([h] * L, 0, at, 1, L),  # 8: T = 1, all lanes independent positions
        LifCase([h] * L, 0, at, 1, 1),  # 9: T = 1, one position: lanes 1.. masked
        LifCase([h, -h] * (L // 2) or [h], 0, at, L, 1, 1),  # 10: step mode
        LifCase([1] * L, 0, 1 << (L - 1), L),  # 11: smallest positive at threshold
        LifCase([amax] * L, amin, 0, L),  # 12: input and bias cancel to -1
    ]
    if L >= 2:
        cases.append(LifCase([h] * L, 0, at, L // 2, 2))  # two groups of T = L/2
        cases.append(LifCase([h] * L, 0, at, L // 2, 1))  # one group, upper half masked
    got = await tb.check(cases)
    valid = np.ones(L, np.int64)
    assert got[0][0] == 1 and got[1][0] == 0
    assert not got[2].any() and np.array_equal(got[3], valid)
    assert not got[4].any() and np.array_equal(got[5], valid)
    assert np.array_equal(got[6], valid) and not got[7].any()
    assert np.array_equal(got[8], valid) and got[9].tolist() == [1] + [0] * (L - 1)
    assert got[11][0] == 1 and not got[12].any()

@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.5])
async def lif_random(dut, idle):
    """Seeded random vectors of every T and packing, mixed and full-range values."""
    cfg = block_config()
    tb = LifBench(dut, cfg, seed=22 + int(idle * 10), idle=idle)
    cases = [random_lif_case(tb.gen, cfg) for _ in range(300)]
    got = await tb.check(cases)
    spikes = np.array(got).sum()
    assert 0 < spikes < len(got) * cfg.lanes, "random vectors should give mixed spikes"


# --- host side: build and run through the cocotb runner ------------------------------------


def blocks_top(config: ArrayConfig):
    """`PeArray` and `LifUnit` of `config` side by side in one top, `blocks`, their ports
    renamed `pe_<port>` and `lif_<port>`: one Verilator build per configuration tests both
    (the C++ of a build costs more than the blocks' own code)."""
    from amaranth import Module
    from amaranth.lib import wiring

    from hw.lif import LifUnit
    from hw.pe import PeArray

    class BlocksTop(wiring.Component):
        def __init__(self):
            # The LIF bench checks settled outputs without a clock: its unit is built as one
            # combinational stage (the pipelined stages are checked in the Amaranth simulator
            # and end to end).
            self.blocks = {"pe": PeArray(config),
                           "lif": LifUnit(config.replace(lif_stage_lanes=config.lanes))}
            super().__init__({f"{prefix}_{name}": member
                              for prefix, block in self.blocks.items()
                              for name, member in block.signature.members.items()})

        def elaborate(self, platform):
            m = Module()
            for prefix, block in self.blocks.items():
                m.submodules[prefix] = block
                for name, member in block.signature.members.items():
                    inner, outer = getattr(block, name), getattr(self, f"{prefix}_{name}")
                    m.d.comb += (inner.eq(outer) if member.flow == wiring.In
                                 else outer.eq(inner))
            return m

    return BlocksTop()


def build_dir(config: ArrayConfig) -> Path:
    from tb.runner import build_name

    return BUILD / f"{TOP}_{build_name(config)}"


def build(config: ArrayConfig, simulator: str = "verilator"):
    """Write the blocks' Verilog and Verilate it (skipped when unchanged); return the runner.

    Folder: `build/cocotb/blocks_<config name>_<hash>/` (`tb.runner.build_name`), with `sim/`
    (or `sim_waves/` under `WAVES=1`) holding the Verilator model, `sim_icarus/` the Icarus one
    (`tb.runner.sim_folder`).
    """
    from amaranth.back import verilog

    from tb.runner import make_runner, sim_folder, write_if_changed

    directory = build_dir(config)
    source = directory / f"{TOP}.v"
    write_if_changed(source, verilog.convert(blocks_top(config), name=TOP))
    write_if_changed(directory / "config.json", config.to_json())
    runner = make_runner(simulator, opt="-O0")  # short runs: compile time dominates
    runner.build(sources=[source], hdl_toplevel=TOP,
                 build_dir=directory / sim_folder(simulator), timescale=("1ns", "1ps"),
                 log_file=directory / ("build.log" if simulator == "verilator"
                                       else f"build_{simulator}.log"))
    return runner


@dataclass
class Outcome:
    """Per cocotb test name: None when it passed, else the failure message."""

    results: dict[str, str | None]
    log: Path

    @property
    def failed(self) -> dict[str, str]:
        return {name: msg for name, msg in self.results.items() if msg is not None}


def run(config: ArrayConfig, tests: str | None = None, fault: bool = False,
        seed: int = 1, simulator: str = "verilator") -> Outcome:
    """Build the blocks and run their cocotb tests (all, or those whose names match the
    regex `tests`) on `simulator`; `fault` sets TB_FAULT."""
    runner = build(config, simulator)
    directory = build_dir(config)
    tag = ("_fault" if fault else "") + ("" if simulator == "verilator" else f"_{simulator}")
    results_xml = runner.build_dir / f"results{tag}.xml"
    log = directory / f"sim{tag}.log"
    env = {"TB_BLOCK_CONFIG": config.to_json(), "TB_FAULT": str(int(fault))}
    try:
        runner.test(test_module="tb.blocks", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                    test_filter=rf"\.({tests or '.*'})", extra_env=env,
                    results_xml=str(results_xml), seed=seed, log_file=log)
    except SystemExit:
        pass  # under pytest the runner exits on a failing test; the XML says which
    if not results_xml.exists():
        raise RuntimeError(f"the block simulation wrote no results; see {log}")
    results = {}
    for case in ET.parse(results_xml).getroot().iter("testcase"):
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        results[case.get("name")] = None if bad is None else (bad.get("message") or bad.text
                                                              or "failed")
    return Outcome(results, log)


def main(argv=None) -> int:
    import argparse

    from tb.runner import SIMULATORS

    parser = argparse.ArgumentParser(prog="python -m tb.blocks",
                                     description="Block tests of the PE array and the LIF unit "
                                                 "on Verilator (or Icarus)")
    parser.add_argument("--config", help="ArrayConfig JSON (default hw/configs/default.json)")
    parser.add_argument("--tests", help="regex of the cocotb tests to run (default: all)")
    parser.add_argument("--fault", action="store_true", help="inject a wrong value (TB_FAULT)")
    parser.add_argument("--sim", choices=SIMULATORS, default=SIMULATORS[0], help="simulator")
    args = parser.parse_args(argv)
    config = ArrayConfig.load(args.config or ROOT / "hw" / "configs" / "default.json")
    outcome = run(config, args.tests, args.fault, simulator=args.sim)
    print(json.dumps(outcome.results, indent=2))
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
