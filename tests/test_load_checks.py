"""The load parser's parts on their own (`hw/load.py`): `FieldLimitCheck` against
`isa.field_limits` at every field's ends, and the parser's refusal of steps the array cannot
run (a lean array: no paired steps, no lane packing)."""

import pytest
from amaranth.sim import Simulator

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from hw.load import VERDICT_CYCLES, FieldLimitCheck, LoadParser, record_struct
from hw.status import Status
from pysim.random_model import random_int_model

DEFAULT = ArrayConfig.load("hw/configs/default.json")
LEAN = ArrayConfig(name="lean", pe_rows=2, pe_cols=4, lanes=4, act_depth=1024,
                   weight_depth=1024, param_depth=256, step_depth=1024, program_depth=32,
                   input_depth=128, paired_steps=False, lane_packing=False,
                   double_buffer=False)


@pytest.mark.parametrize("layout", [isa.PARAM_LAYOUT, isa.STEP_LAYOUT, isa.ENTRIES_HEADER,
                                    isa.DESC_HEADER, isa.COMMIT_LAYOUT, isa.FIELD_LAYOUT,
                                    isa.weight_layout(4)], ids=lambda layout: layout.name)
def test_gateware_view_of_a_record_is_the_isa_layout(layout):
    """The parser's `data.StructLayout` of each entry puts every field where `hw/isa.py`
    says, at its width and signedness, and spans the entry."""
    struct = record_struct(layout)
    assert struct.size == 8 * layout.nbytes
    for f in layout:
        member = struct[f.name]
        assert (member.offset, member.shape.width, member.shape.signed) == (f.lsb, f.width,
                                                                           f.signed)


def field_cases(config):
    """(descriptor?, index, value, T, outside?) at and beyond both ends of every field."""
    limits = isa.field_limits(config)
    cases = []
    for descriptor, names in ((1, isa.DESC_FIELDS), (0, isa.GLOBAL_FIELDS)):
        for index, name in enumerate(names):
            lo, hi = limits[name]
            for value in sorted({lo - 1, lo, hi, hi + 1, (1 << 31) - 1, -1}):
                cases.append((descriptor, index, value & 0xFFFFFFFF, 1, not lo <= value <= hi))
    if config.lane_packing:  # pack * T must fit the lanes
        pack = isa.GLOBAL_FIELDS.index("pack")
        T = 2
        cases += [(0, pack, config.lanes // T, T, False), (0, pack, config.lanes // T + 1, T,
                                                             True)]
    return cases


@pytest.mark.parametrize("config", [DEFAULT, LEAN], ids=lambda c: c.name)
def test_field_limit_check_matches_the_limits_table(config):
    dut = FieldLimitCheck(config)
    cases = field_cases(config)
    got = []

    async def check(ctx, value):
        """The field's bytes, least significant first; the verdict the cycle after."""
        for j in range(4):
            ctx.set(dut.byte, value >> 8 * j & 0xFF)
            ctx.set(dut.byte_index, j)
            ctx.set(dut.strobe, 1)
            await ctx.tick()
        ctx.set(dut.strobe, 0)
        return ctx.get(dut.out_of_range)

    async def bench(ctx):
        for descriptor, index, value, T, _ in cases:
            ctx.set(dut.index, index)
            ctx.set(dut.descriptor, descriptor)
            ctx.set(dut.glob, 1 - descriptor)
            ctx.set(dut.T, T)
            await ctx.tick()  # the field number is decoded a cycle ahead
            got.append(await check(ctx, value))
        ctx.set(dut.descriptor, 0)
        ctx.set(dut.glob, 0)  # neither record: never out of range
        await ctx.tick()
        got.append(await check(ctx, 0xFFFFFFFF))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expected = [int(c[-1]) for c in cases] + [0]
    wrong = [(c, g) for c, g, e in zip(cases, got, expected, strict=False) if g != e]
    assert got == expected, wrong[:5]


def feed(config, data: bytes):
    """The errors the parser reports and its `ready` after `data` (one chunk)."""
    dut = LoadParser(config)
    out = {}

    errors = []

    async def tick(ctx):
        """One clock, after noting this cycle's error (sampled after the inputs are set)."""
        if ctx.get(dut.error_set):
            errors.append(ctx.get(dut.error))
        await ctx.tick()

    async def bench(ctx):
        for i, byte in enumerate(data):
            ctx.set(dut.load.valid, 1)
            ctx.set(dut.load.payload.data, byte)
            ctx.set(dut.load.payload.last, i == len(data) - 1)
            while not ctx.get(dut.load.ready):  # a check's bubble
                await tick(ctx)
            await tick(ctx)
        ctx.set(dut.load.valid, 0)
        for _ in range(VERDICT_CYCLES):
            await tick(ctx)
        out.update(errors=errors, ready=ctx.get(dut.ready))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("field, value", [("pair", 1), ("rot", 1)])
def test_lean_parser_refuses_a_step_it_cannot_run(field, value):
    """A lean array's program, then one step with a paired operand or a lane rotation:
    DOES_NOT_FIT and no commit; the same program without it is accepted."""
    net = compile_network(random_int_model("iand", seed=1, T=4), LEAN)
    records = net.records()
    assert feed(LEAN, b"".join(records)) == {"errors": [], "ready": 1}
    step = dict(zip(isa.STEP_TUPLE, (0, 0, 0, 0, 0, 0, 0, 0), strict=True))
    entry = isa.pack_step(**step)
    fields = isa.STEP_LAYOUT.unpack(entry)
    fields[field] = value
    bad = isa.record(isa.REC_STEP, isa.STEP_LAYOUT.pack(fields), addr=0, count=1)
    body = records[:-1] + [bad]
    out = feed(LEAN, b"".join(body + [isa.commit_record(len(net.passes), body)]))
    assert out == {"errors": [Status.DOES_NOT_FIT], "ready": 0}
