"""PE array and LIF unit in the Amaranth simulator against `pysim/hwref.py`."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw.config import ArrayConfig
from hw.lif import LifUnit
from hw.pe import PeArray
from pysim.hwref import bits_word, lane_masks, lif_unit, pe_tile

CFG = ArrayConfig(name="blk", pe_rows=3, pe_cols=2, lanes=4, weight_bits=8, acc_bits=14,
                  membrane_bits=20)


def set_pe_step(ctx, dut, config, step, last):
    """Present one step (weights, shift, neg, rowops, colops[, shift2, neg2, colops2]) with
    `valid` high; the second operand only exists on paired arrays."""
    w, shift, neg, rowop, colop, *second = step
    shift2, neg2, colop2 = second or (0, 0, np.zeros((config.pe_cols, config.lanes), int))
    ctx.set(dut.valid, 1)
    ctx.set(dut.last, last)
    for r in range(config.pe_rows):
        ctx.set(dut.weight[r], int(w[r]))
        ctx.set(dut.rowop[r], int(bits_word(rowop[r])))
    for c in range(config.pe_cols):
        ctx.set(dut.colop[c], int(bits_word(colop[c])))
        if config.paired_steps:
            ctx.set(dut.colop2[c], int(bits_word(colop2[c])))
    ctx.set(dut.shift, shift)
    ctx.set(dut.neg, neg)
    if config.paired_steps:
        ctx.set(dut.shift2, shift2)
        ctx.set(dut.neg2, neg2)


def get_pe_shadow(ctx, dut, config):
    """The shadow (drain-side) accumulators as (R, C, L)."""
    return np.array([[[ctx.get(dut.shadow[r][c][lane]) for lane in range(config.lanes)]
                      for c in range(config.pe_cols)] for r in range(config.pe_rows)])


def run_pe_tiles(config, tiles, stall_every=0, gap=True):
    """Drive `tiles`, each a list of steps (weights, shift, neg, rowops, colops[, shift2, neg2,
    colops2]; the optional part: a paired step), back to back with no start marker; stalls
    insert invalid cycles, and with double buffering one invalid cycle follows each tile's
    last step (the capture gap the sequencer leaves; `gap=False` breaks that contract).
    Returns the shadow accumulators (R, C, L) of each tile, read `PeArray.latency` cycles
    after its last step was presented (while the next tile's steps keep coming)."""
    dut = PeArray(config)
    shadows = []

    async def bench(ctx):
        due = []  # cycles at which a tile's sums are in the shadow

        async def tick():
            await ctx.tick()
            bench.cycle += 1
            if due and due[0] == bench.cycle:
                due.pop(0)
                shadows.append(get_pe_shadow(ctx, dut, config))

        bench.cycle = 0
        i = 0
        for steps in tiles:
            for k, step in enumerate(steps):
                if stall_every and i % stall_every == 1:
                    ctx.set(dut.valid, 0)
                    await tick()
                i += 1
                set_pe_step(ctx, dut, config, step, k == len(steps) - 1)
                if k == len(steps) - 1:
                    due.append(bench.cycle + dut.latency)
                await tick()
                if k == len(steps) - 1 and gap and config.double_buffer:
                    ctx.set(dut.valid, 0)
                    await tick()
        ctx.set(dut.valid, 0)
        while due:
            await tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return shadows


def run_pe(config, steps, stall_every=0):
    """One tile of `steps` (see `run_pe_tiles`); returns its shadow accumulators."""
    return run_pe_tiles(config, [steps], stall_every)[0]


def reference(config, steps):
    C, L = config.pe_cols, config.lanes
    steps = [s if len(s) == 8 else tuple(s) + (0, 0, np.zeros((C, L), int)) for s in steps]
    w, s, n, ro, co, s2, n2, co2 = zip(*steps, strict=True)
    return pe_tile(np.array(w), s, n, np.array(ro), np.array(co), config.acc_bits,
                   second=(s2, n2, np.array(co2)))


def random_steps(rng, config, count, qmax=127):
    R, C, L = config.pe_rows, config.pe_cols, config.lanes
    return [(rng.integers(-qmax, qmax + 1, R), int(rng.integers(0, 4)), int(rng.integers(0, 2)),
             rng.integers(0, 2, (R, L)), rng.integers(0, 2, (C, L))) for _ in range(count)]


@pytest.mark.parametrize("stall", [0, 2])
def test_pe_array_random(stall):
    rng = np.random.default_rng(1)
    steps = random_steps(rng, CFG, 12)
    np.testing.assert_array_equal(run_pe(CFG, steps, stall), reference(CFG, steps))


def test_pe_array_corners():
    R, C, L = CFG.pe_rows, CFG.pe_cols, CFG.lanes
    ones_r, ones_c = np.ones((R, L), int), np.ones((C, L), int)
    zero_c = np.zeros((C, L), int)
    # Saturation limits of the weights, all-one and all-zero spikes, the largest shift.
    steps = [(np.full(R, 127), 3, 0, ones_r, ones_c), (np.full(R, -127), 0, 1, ones_r, ones_c),
             (np.full(R, -127), 3, 0, ones_r, zero_c), (np.array([1, -1, 0]), 0, 0, ones_r,
                                                         ones_c)]
    acc = run_pe(CFG, steps)
    np.testing.assert_array_equal(acc, reference(CFG, steps))
    assert acc[0, 0, 0] == 127 * 8 + 127 + 1


def random_paired_steps(rng, config, count, qmax=127):
    C, L = config.pe_cols, config.lanes
    return [step + (int(rng.integers(0, 4)), int(rng.integers(0, 2)), rng.integers(0, 2, (C, L)))
            for step in random_steps(rng, config, count, qmax)]


@pytest.mark.parametrize("stall", [0, 2])
def test_pe_array_paired_random(stall):
    """Two operands per step (each lane picks 0, t, t2 or t + t2), mixed with single steps."""
    rng = np.random.default_rng(4)
    steps = random_paired_steps(rng, CFG, 10) + random_steps(rng, CFG, 3)
    np.testing.assert_array_equal(run_pe(CFG, steps, stall), reference(CFG, steps))


def test_pe_array_paired_corners():
    R, C, L = CFG.pe_rows, CFG.pe_cols, CFG.lanes
    ones_r, ones_c, zero_c = np.ones((R, L), int), np.ones((C, L), int), np.zeros((C, L), int)
    half = np.array([[1, 0, 1, 0], [0, 1, 0, 1]])
    steps = [
        (np.full(R, 127), 3, 0, ones_r, ones_c, 3, 0, ones_c),  # both planes: t + t2 at max
        (np.full(R, -127), 0, 1, ones_r, ones_c, 2, 1, ones_c),  # both negated
        (np.full(R, 5), 0, 0, ones_r, zero_c, 1, 0, half),  # second operand alone
        (np.full(R, 7), 1, 0, ones_r, half, 0, 1, zero_c),  # first alone, second all zero
        (np.array([1, -1, 0]), 0, 0, ones_r, ones_c, 0, 1, ones_c),  # t - t = 0
    ]
    acc = run_pe(CFG, steps)
    np.testing.assert_array_equal(acc, reference(CFG, steps))
    assert acc[0, 0, 0] == 127 * 16 + 127 * 5 + 5 * 2 + 7 * 2
    assert acc[0, 0, 1] == 127 * 16 + 127 * 5
    # The reference sees a second operand that is dropped.
    dropped = [s[:5] for s in steps]
    assert not np.array_equal(acc, reference(CFG, dropped))


def test_pe_reference_detects_a_wrong_sum():
    rng = np.random.default_rng(2)
    steps = random_steps(rng, CFG, 4)
    acc = run_pe(CFG, steps)
    bad = list(steps)
    bad[0] = (steps[0][0] + 1,) + steps[0][1:]
    assert not np.array_equal(acc, reference(CFG, bad))


def run_lif(config, cases):
    """Present one case per clock cycle (a new row every cycle, as the drain does) and collect
    each case's spikes `LifUnit.latency` cycles later."""
    dut = LifUnit(config)
    got = []

    async def bench(ctx):
        for i in range(len(cases) + dut.latency):
            if i < len(cases):
                x, bias, thr, T, step, *pack = cases[i]
                for lane, value in enumerate(x):
                    ctx.set(dut.x[lane], int(value))
                ctx.set(dut.bias, bias)
                ctx.set(dut.threshold, thr)
                valid, _ = lane_masks(T, pack[0] if pack else 1, config.lanes)
                ctx.set(dut.valid, valid)
                ctx.set(dut.start, sum(1 << t for t in range(0, config.lanes, T)))
                ctx.set(dut.step, step)
            if i >= dut.latency:
                got.append([(ctx.get(dut.spikes) >> t) & 1 for t in range(config.lanes)])
            if dut.latency:
                await ctx.tick()
            else:  # one combinational stage: no clock at all
                await ctx.delay(1e-7)

    sim = Simulator(dut)
    if dut.latency:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return np.array(got)


#: LIF chains cut into stages of 1 and 2 lanes, and one combinational stage.
LIF_STAGES = [1, 2, CFG.lanes]


@pytest.mark.parametrize("stage_lanes", LIF_STAGES)
def test_lif_unit_corners_and_random(stage_lanes):
    L, A = CFG.lanes, CFG.acc_bits
    top = (1 << (A - 1)) - 1
    cases = [
        ([4, 4, 4, 4], 0, 4 << (L - 1), 4, 0),  # B = 32 exactly at the threshold: fires
        ([8, 0, 0, 0], 0, 4 << L, 4, 0),  # H = 4 >= theta 4 exactly
        ([7, 0, 0, 0], 0, 4 << L, 4, 0),  # just below
        ([top, top, top, top], 0, 1, 4, 0),  # saturation limit, fires every step
        ([-top - 1] * 4, 0, 1, 4, 0),  # most negative
        ([0, 0, 0, 0], 0, 1, 4, 0),  # all zero
        ([5, 5, 5, 5], 3, 16, 1, 0),  # T = 1: later lanes masked
        ([1, -1, 1, 0], 0, 1 << (L - 1), 4, 1),  # step mode (IAND)
    ]
    rng = np.random.default_rng(3)
    for _ in range(30):
        cases.append((list(rng.integers(-300, 300, L)), int(rng.integers(-50, 50)),
                      int(rng.integers(1, 3000)), int(rng.integers(1, L + 1)),
                      int(rng.integers(0, 2))))
    got = run_lif(CFG.replace(lif_stage_lanes=stage_lanes), cases)
    for case, spikes in zip(cases, got, strict=True):
        x, bias, thr, T, step = case
        want = lif_unit(np.array(x), bias, thr, T, L, CFG.membrane_bits, bool(step))
        np.testing.assert_array_equal(spikes, want, err_msg=str(case))
    assert list(got[0]) == [1, 1, 1, 1]
    assert list(got[1]) == [1, 0, 0, 0] and list(got[2]) == [0, 0, 0, 0]
    assert list(got[6]) == [1, 0, 0, 0]


@pytest.mark.parametrize("stage_lanes", LIF_STAGES)
def test_lif_unit_lane_groups(stage_lanes):
    """T < lanes: two groups of T = 2 (other positions) restart the membrane at lane 2."""
    L = CFG.lanes
    cases = [([8, 8, 8, 8], 0, 16 << (L - 1), 2, 0, 2),  # each group: 0, 1 (no carry over)
             ([0, 40, 0, 40], 0, 16 << (L - 1), 2, 0, 2),
             ([9, 9, 9, 9], 0, 4 << L, 1, 0, 4),  # T = 1: every lane is its own group
             ([9, 9, 9, 9], 0, 4 << L, 1, 0, 2)]  # pack 2 of a possible 4: lanes 2, 3 idle
    rng = np.random.default_rng(4)
    for _ in range(20):
        T = int(rng.choice([1, 2]))
        cases.append((list(rng.integers(-300, 300, L)), int(rng.integers(-50, 50)),
                      int(rng.integers(1, 3000)), T, int(rng.integers(0, 2)), L // T))
    got = run_lif(CFG.replace(lif_stage_lanes=stage_lanes), cases)
    for (x, bias, thr, T, step, pack), spikes in zip(cases, got, strict=True):
        want = lif_unit(np.array(x), bias, thr, T, L, CFG.membrane_bits, bool(step), pack)
        np.testing.assert_array_equal(spikes, want, err_msg=str((x, bias, thr, T, pack)))
    assert list(got[0]) == list(got[0][2:]) * 2  # the second group repeats the first
    assert list(got[3][2:]) == [0, 0]


@pytest.mark.parametrize("stall", [0, 3])
def test_pe_tiles_back_to_back_restart_from_zero(stall):
    """A tile's capture (the cycle after its `last` step) resets the working accumulators:
    the next tile, issued right after that gap, sums from 0 (no start marker, no per-lane
    mux)."""
    rng = np.random.default_rng(5)
    tiles = [random_paired_steps(rng, CFG, int(rng.integers(1, 5))) for _ in range(6)]
    for got, tile in zip(run_pe_tiles(CFG, tiles, stall), tiles, strict=True):
        np.testing.assert_array_equal(got, reference(CFG, tile))


def test_pe_step_in_the_capture_gap_is_lost():
    """Negative control for the gap: a step presented in the cycle after a tile's last step
    falls into the capture (the working accumulators restart) and its sums are lost, so the
    sequencer's gap (`StepIssue`) and the cycle model's count of it matter."""
    rng = np.random.default_rng(5)
    tiles = [random_paired_steps(rng, CFG, 3) for _ in range(4)]
    got = run_pe_tiles(CFG, tiles, gap=False)
    assert any(not np.array_equal(g, reference(CFG, t)) for g, t in zip(got, tiles, strict=True))


def test_pe_array_without_paired_steps():
    """`paired_steps=False` builds no second operand path: single steps still equal the
    reference, tile after tile."""
    config = CFG.replace(name="blk_single", paired_steps=False)
    assert "colop2" not in PeArray(config).signature.members
    rng = np.random.default_rng(6)
    tiles = [random_steps(rng, config, int(rng.integers(1, 8))) for _ in range(5)]
    for got, tile in zip(run_pe_tiles(config, tiles, 2), tiles, strict=True):
        np.testing.assert_array_equal(got, reference(config, tile))


def test_pe_array_single_buffered_shows_the_working_sums_and_clears():
    """`double_buffer=False`: `shadow` is the working bank (it follows every step), `last`
    leaves it alone and `clear` restarts it."""
    config = CFG.replace(name="blk_single_buffer", double_buffer=False)
    assert "clear" in PeArray(config).signature.members
    rng = np.random.default_rng(7)
    tiles = [random_paired_steps(rng, config, 3), random_steps(rng, config, 4)]
    dut = PeArray(config)
    seen = []

    def read(ctx):
        return get_pe_shadow(ctx, dut, config)

    async def bench(ctx):
        for steps in tiles:
            for k, step in enumerate(steps):
                set_pe_step(ctx, dut, config, step, k == len(steps) - 1)
                await ctx.tick()
                if k:  # the sums follow the steps `latency` cycles behind
                    seen.append(read(ctx))
            ctx.set(dut.valid, 0)
            await ctx.tick()
            seen.append(read(ctx))
            await ctx.tick()
            seen.append(read(ctx))  # held after `last` until cleared
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            seen.append(read(ctx))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    first, second = tiles
    np.testing.assert_array_equal(seen[0], reference(config, first[:1]))
    np.testing.assert_array_equal(seen[2], reference(config, first))
    np.testing.assert_array_equal(seen[3], reference(config, first))
    assert not seen[4].any()
    np.testing.assert_array_equal(seen[8], reference(config, second))
    assert not seen[10].any()
