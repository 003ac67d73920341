"""Amaranth-simulator tests of the core's sequencing blocks against their references in
`pysim/coreref.py` and `pysim/hwref.py`, with random stalls: the activation memory (random run
reads and writes against a flat word memory), the loop sequencer and stage 1 (random
descriptors and steps, every issued address, mask and tile against `coreref.issue_order`,
random drain back-pressure), the input unpacker and the trace dump (random back-pressure)."""

import random

import pytest
from amaranth import Elaboratable, Module
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from hw import isa
from hw.actmem import ActivationMemory
from hw.config import ArrayConfig
from hw.dump import TraceDump
from hw.load import step_layout
from hw.sequencer import LoopSequencer, StepIssue
from hw.unpack import InputUnpacker
from pysim.coreref import issue_order, unpack_input

DEFAULT = ArrayConfig()
SMALL = ArrayConfig(pe_rows=2, pe_cols=4, lanes=4, act_depth=64, weight_depth=64,
                    param_depth=32, step_depth=32, program_depth=4, input_depth=64)
SMALL_UNSTAGED = ArrayConfig(pe_rows=2, pe_cols=4, lanes=4, act_depth=64, weight_depth=64,
                             param_depth=32, step_depth=32, program_depth=4, input_depth=64,
                             issue_stage=False)
LEAN = ArrayConfig(pe_rows=1, pe_cols=1, lanes=4, act_depth=64, weight_depth=64, param_depth=32,
                   step_depth=32, program_depth=4, input_depth=64, paired_steps=False,
                   lane_packing=False, double_buffer=False, issue_stage=False)
CONFIGS = {"default": DEFAULT, "small": SMALL, "small_unstaged": SMALL_UNSTAGED, "lean": LEAN}


def run(dut, bench, deadline=200_000):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run_until(deadline * 1e-6)


# ---- activation memory ------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["default", pytest.param("small", marks=pytest.mark.extended),
                                  "lean"])
def test_activation_memory_runs_match_a_flat_memory(name):
    cfg = CONFIGS[name]
    C, L = cfg.pe_cols, cfg.lanes
    size = cfg.act_depth * C
    rng = random.Random(3)
    dut = ActivationMemory(cfg)
    flat = [0] * size
    checked = []

    async def bench(ctx):
        lane_valid = rng.randrange(1 << L)
        ctx.set(dut.lane_valid, lane_valid)
        for _ in range(150):
            # A random write (or none) and two random run reads in the same cycle; the reads
            # see the words before the write (a pass never reads what it writes that cycle).
            write = rng.random() < 0.6
            addr, en = rng.randrange(size), rng.randrange(1 << C)
            words = [rng.randrange(1 << L) for _ in range(C)]
            ctx.set(dut.write.en, en if write else 0)
            ctx.set(dut.write.addr, addr)
            for c in range(C):
                ctx.set(dut.write.words[c], words[c])
            expected = []
            for port in (dut.col, dut.row):
                raddr = rng.randrange(size)
                adjust = [0] * C
                if cfg.lane_packing:
                    adjust = [rng.choice((0, 0, 1, -1, 3)) for _ in range(C)]
                    for c in range(C):
                        ctx.set(port.adjust[c], adjust[c])
                ctx.set(port.addr, raddr)
                expected.append([flat[(raddr + c + adjust[c] * C) % size] & lane_valid
                                 for c in range(C)])
            await ctx.tick()
            for port, want in zip((dut.col, dut.row), expected, strict=True):
                got = [ctx.get(port.words[c]) for c in range(C)]
                assert got == want
                checked.append(got)
            if write:
                for c in range(C):
                    if en >> c & 1:
                        flat[(addr + c) % size] = words[c]
    run(dut, bench)
    assert len(checked) > 0


def test_activation_memory_check_catches_a_wrong_rotation():
    """Negative control of the flat-memory check: on a run starting mid-bank-row, the words
    the memory returns equal the run's words and differ from bank c's word at column c (what
    a memory without rotation would return), so the comparison above would fail on one."""
    cfg = SMALL
    C, L = cfg.pe_cols, cfg.lanes
    dut = ActivationMemory(cfg)
    got = []

    async def bench(ctx):
        ctx.set(dut.lane_valid, (1 << L) - 1)
        for addr in range(2 * C):  # word a holds a % 15 + 1 (all different, nonzero)
            ctx.set(dut.write.addr, addr)
            ctx.set(dut.write.en, 1)
            ctx.set(dut.write.words[0], addr % 15 + 1)
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        ctx.set(dut.col.addr, 1)
        await ctx.tick()
        got.extend(ctx.get(dut.col.words[c]) for c in range(C))
    run(dut, bench)
    run_words = [(1 + c) % 15 + 1 for c in range(C)]
    unrotated = [(C + c if c < 1 else c) % 15 + 1 for c in range(C)]
    assert got == run_words
    assert got != unrotated


# ---- loop sequencer and stage 1 ----------------------------------------------------------------

class _SequencerHarness(Elaboratable):
    def __init__(self, cfg, steps):
        self.cfg = cfg
        self.loops = LoopSequencer(cfg)
        self.issue = StepIssue(cfg)
        layout = step_layout(cfg)
        self.smem = Memory(shape=layout, depth=cfg.step_depth,
                           init=[layout.const(s) for s in steps])

    def elaborate(self, platform):
        m = Module()
        m.submodules.loops, m.submodules.issue = self.loops, self.issue
        m.submodules.smem = self.smem
        rd = self.smem.read_port()
        m.d.comb += [rd.addr.eq(self.loops.step_addr), rd.en.eq(self.loops.step_en),
                     self.issue.step.eq(rd.data), self.issue.desc.eq(self.loops.desc),
                     self.issue.state.eq(self.loops.state),
                     self.loops.advance.eq(self.issue.advance)]
        return m


def random_steps(rng, cfg):
    bits = isa.step_bits(cfg)
    return [{name: rng.randrange(1 << n) for name, n in bits.items()}
            for _ in range(cfg.step_depth)]


def random_desc(rng, cfg, op):
    """A descriptor with every field inside `isa.field_limits` and small loop counts."""
    limits = isa.field_limits(cfg)
    desc = {name: rng.randint(*limits[name]) for name in isa.DESC_FIELDS}
    desc.update(op=op, groups=rng.randint(1, 2), rgs=rng.randint(1, 3), cts=rng.randint(1, 3),
                steps=rng.randint(1, 3), taps=rng.choice((1, 9, rng.randint(1, 9))),
                width=rng.choice((rng.randint(1, 12), 4, 8)), cols=rng.randint(1, 3 * cfg.pe_cols),
                lastrow=rng.randint(0, 3 * cfg.pe_cols), pad=rng.randint(0, 1))
    return desc


def desc_words(desc, cfg):
    """The descriptor's program words, packed as the loader writes them."""
    FPW, FW = isa.FIELDS_PER_WORD, isa.field_width(cfg)
    words = [0] * isa.desc_words()
    for i, name in enumerate(isa.DESC_FIELDS):
        value = desc[name] & ((1 << isa.field_bits(cfg)[name]) - 1)
        words[i // FPW] |= value << (FW * (i % FPW))
    return words


STAGE2_FIELDS = ("first", "last", "shift", "neg", "onehot", "mask")


def read_addresses(ctx, issue, cfg, weight_addr):
    """The run-read addresses and edge-read moves a step presents to the activation memory."""
    C = cfg.pe_cols
    entry = {"col": ctx.get(issue.col.addr), "row": ctx.get(issue.row.addr), "w": weight_addr,
             "adjust": [ctx.get(issue.col.adjust[c]) if cfg.lane_packing else 0
                        for c in range(C)]}
    if cfg.lane_packing:
        assert entry["adjust"] == [ctx.get(issue.row.adjust[c]) for c in range(C)]
    return entry


def run_sequencer(cfg, desc, steps, stall_rate, rng):
    dut = _SequencerHarness(cfg, steps)
    loops, issue = dut.loops, dut.issue
    got_issue, got_stage2, got_tiles = [], [], []

    async def bench(ctx):
        for i, word in enumerate(desc_words(desc, cfg)):
            ctx.set(loops.desc_word.valid, 1)
            ctx.set(loops.desc_word.index, i)
            ctx.set(loops.desc_word.data, word)
            await ctx.tick()
        ctx.set(loops.desc_word.valid, 0)
        ctx.set(loops.start, 1)
        await ctx.tick()
        ctx.set(loops.start, 0)
        for _ in range(20_000):
            pending = rng.random() < stall_rate
            ctx.set(issue.drain_pending, pending)
            advance = ctx.get(issue.advance)
            last = ctx.get(loops.state.last_step)
            if advance and last and cfg.double_buffer and desc["op"] != isa.OP_MAXPOOL:
                # The wait contract: a tile's last step never moves on into a drain.
                assert not pending
            if advance:
                weight_addr = ctx.get(issue.weight_addr)  # read a stage ahead of the runs
            if advance and not cfg.issue_stage:
                got_issue.append(read_addresses(ctx, issue, cfg, weight_addr))
            await ctx.tick()
            if advance and cfg.issue_stage:
                got_issue.append(read_addresses(ctx, issue, cfg, weight_addr))
            if ctx.get(issue.op.valid):
                got_stage2.append({f: ctx.get(issue.op[f]) for f in STAGE2_FIELDS + (
                    ("up", "dn", "rot") if cfg.lane_packing else ()) + (
                    ("pair", "shift2", "neg2") if cfg.paired_steps else ()) + (
                    ("seg",) if desc["op"] == isa.OP_MAXPOOL else ())})
            if advance and last:
                got_tiles.append({f: ctx.get(issue.tile[f]) for f in (
                    "mask", "par_t", "out_t", "rows_left", "first_ct", "last_ct", "final")})
            if not ctx.get(loops.state.valid) and not ctx.get(issue.pending):
                break
    run(dut, bench)
    return got_issue, got_stage2, got_tiles


@pytest.mark.parametrize("name", ["default", "small",
                                  pytest.param("small_unstaged", marks=pytest.mark.extended),
                                  "lean"])
@pytest.mark.parametrize("op", [isa.OP_ARRAY, isa.OP_MAXPOOL])
def test_sequencer_issues_every_step_as_the_reference(name, op):
    cfg = CONFIGS[name]
    rng = random.Random(hash((name, op)) & 0xFFFF)
    for trial in range(2 if name == "default" else 4):
        steps = random_steps(rng, cfg)
        desc = random_desc(rng, cfg, op)
        expected, tiles = issue_order(desc, steps, cfg)
        got_issue, got_stage2, got_tiles = run_sequencer(cfg, desc, steps, 0.3, rng)
        assert len(got_issue) == len(expected), (trial, desc)
        for i, (got, want) in enumerate(zip(got_issue, expected, strict=True)):
            assert got == {k: want[k] for k in got}, (trial, i, desc)
        for i, (got, want) in enumerate(zip(got_stage2, expected, strict=True)):
            assert got == {k: int(want[k]) for k in got}, (trial, i, desc)
        assert got_tiles == tiles, (trial, desc)


def test_sequencer_reference_catches_a_wrong_tap_offset():
    """Negative control: the reference's addresses change when a 3x3 tap offset is off by
    one, so the comparison above would catch a sequencer that got it wrong."""
    cfg = SMALL
    rng = random.Random(5)
    steps = random_steps(rng, cfg)
    desc = random_desc(rng, cfg, isa.OP_ARRAY)
    desc.update(taps=9, width=6)
    good, _ = issue_order(desc, steps, cfg)
    bad, _ = issue_order(dict(desc, width=7), steps, cfg)
    assert [e["col"] for e in good] != [e["col"] for e in bad]


# ---- input unpacker ------------------------------------------------------------------------------

class _UnpackHarness(Elaboratable):
    def __init__(self, cfg, pixels):
        self.unpack = InputUnpacker(cfg)
        # The token input's slot: byte 0 is the flags byte, pixel i at index i + 1.
        self.slot = Memory(shape=8, depth=cfg.input_depth, init=[0] + list(pixels))

    def elaborate(self, platform):
        m = Module()
        m.submodules.unpack, m.submodules.slot = self.unpack, self.slot
        rd = self.slot.read_port()
        m.d.comb += [rd.addr.eq(self.unpack.rd_index), self.unpack.rd_data.eq(rd.data)]
        return m


@pytest.mark.parametrize("name", ["default", pytest.param("small", marks=pytest.mark.extended),
                                  "lean"])
def test_unpacker_writes_the_reference_words(name):
    cfg = CONFIGS[name]
    L = cfg.lanes
    rng = random.Random(11)
    for trial in range(5):
        T = rng.randint(1, L)
        pack = rng.randint(1, L // T) if cfg.lane_packing else 1
        bits = rng.randint(1, 8)
        # Any pixel count, also one that leaves the last word's groups empty.
        n = rng.randint(1, min(cfg.input_depth - 1, 20))
        glob = {"n_pixels": n, "pixel_bits": bits, "T": T, "pack": pack,
                "in_base": rng.randrange(64), "in_plane": rng.randrange(1, 16)}
        pixels = [rng.randrange(1 << bits) for _ in range(n)]
        dut = _UnpackHarness(cfg, pixels)
        writes, cycles = {}, []

        async def bench(ctx, dut=dut, glob=glob, writes=writes, cycles=cycles, T=T):
            up = dut.unpack
            for name, value in glob.items():
                ctx.set(up.globals[name], value)
            ctx.set(up.lane_group, (1 << T) - 1)
            ctx.set(up.start, 1)
            await ctx.tick()
            ctx.set(up.start, 0)
            for cycle in range(1, 10_000):
                if ctx.get(up.write.en):
                    writes[ctx.get(up.write.addr)] = ctx.get(up.write.word)
                done = ctx.get(up.done)
                assert ctx.get(up.release) == done
                await ctx.tick()
                if done:
                    cycles.append(cycle)
                    break
        run(dut, bench)
        assert writes == unpack_input(bytes(pixels), glob, cfg), (trial, glob)
        assert cycles == [1 + -(-n // pack) * (pack + bits)], (trial, glob)


# ---- trace dump ----------------------------------------------------------------------------------

@pytest.mark.parametrize("stall_rate", [0.0, 0.5])
def test_trace_dump_sends_every_word_under_back_pressure(stall_rate):
    cfg = DEFAULT
    L = cfg.lanes
    rng = random.Random(7)
    memory = [rng.randrange(1 << L) for _ in range(64)]
    base, count = 9, 13
    dut = TraceDump(cfg)
    sent = []

    async def bench(ctx):
        ctx.set(dut.base, base)
        ctx.set(dut.words, count)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        for _ in range(5_000):
            ready = rng.random() >= stall_rate
            ctx.set(dut.emit_ready, ready)
            if ctx.get(dut.emit.valid) and ready:
                sent.append(ctx.get(dut.emit.data))
            done = ctx.get(dut.done)
            read = ctx.get(dut.read_addr) if ctx.get(dut.read_active) else None
            await ctx.tick()
            if read is not None:  # the row port's word arrives a cycle after its address
                ctx.set(dut.read_word, memory[read])
            if done:
                break
    run(dut, bench)
    per_word = isa.word_bytes(L)
    expected = b"".join(memory[base + i].to_bytes(per_word, "little") for i in range(count))
    assert bytes(sent) == expected
