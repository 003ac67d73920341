"""The accelerator end to end in the Amaranth simulator: logits and every layer's output equal
the golden model; busy cycles equal the cycle model; malformed loads and inputs are reported."""

import struct

import numpy as np
import pytest
from amaranth.sim import Simulator

from hw import isa
from hw.accelerator import LOAD_VERDICT_CYCLES, Accelerator
from hw.compiler import compile_network
from hw.config import ArrayConfig
from hw.status import Status
from pysim import golden
from pysim.random_model import random_images, random_int_model

CFG = ArrayConfig(name="sim", pe_rows=4, pe_cols=4, lanes=4, act_depth=2048, weight_depth=512,
                  param_depth=256, step_depth=1024, program_depth=32, input_depth=128)


async def send(ctx, port, data, stall=0):
    for i, byte in enumerate(data):
        if stall and i % stall == stall - 1:
            ctx.set(port.valid, 0)
            await ctx.tick()
        ctx.set(port.valid, 1)
        ctx.set(port.payload.data, byte)
        ctx.set(port.payload.last, i == len(data) - 1)
        await ctx.tick().until(port.ready)
    ctx.set(port.valid, 0)


async def receive(ctx, dut, limit, stall=0):
    out, cycles, busy = bytearray(), 0, 0
    while cycles < limit:
        ready = not (stall and cycles % stall == stall - 1)
        ctx.set(dut.results.ready, ready)
        busy += ctx.get(dut.status.busy)
        done = False
        if ready and ctx.get(dut.results.valid):
            out.append(ctx.get(dut.results.payload.data))
            done = ctx.get(dut.results.payload.last)
        await ctx.tick()
        cycles += 1
        if done:
            while ctx.get(dut.status.busy):  # the sequencer's tail after the last byte
                busy += 1
                await ctx.tick()
            break
    return bytes(out), busy


def simulate(bench, config=CFG):
    dut = Accelerator(config)
    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def testbench(ctx):
        await bench(ctx, dut)

    sim.add_testbench(testbench)
    sim.run()


NARROW = ArrayConfig(name="narrow", pe_rows=2, pe_cols=2, lanes=4, act_depth=8192,
                     weight_depth=1024, param_depth=256, step_depth=1024, program_depth=32,
                     input_depth=128)
WIDE = ArrayConfig(name="wide", pe_rows=2, pe_cols=8, lanes=4, act_depth=1024,
                   weight_depth=1024, param_depth=256, step_depth=1024, program_depth=32,
                   input_depth=128)
#: Without paired steps, lane packing, double buffering and the drain's registers (the
#: iCEBreaker's kind of array).
LEAN = NARROW.replace(name="lean", paired_steps=False, lane_packing=False, double_buffer=False,
                      drain_registers=False)


#: The three longest runs (1-1.5 min of CPU together) stay out of `make test-fast`; the lean
#: array still runs sew and ms there, the default one iand and sdsa.
SLOW = pytest.mark.slow
EXTENDED = [pytest.mark.slow, pytest.mark.extended]


@pytest.mark.parametrize("family, T, config", [
    ("iand", 2, CFG), pytest.param("sew", 4, CFG, marks=SLOW),
    pytest.param("ms", 4, CFG, marks=SLOW), ("sdsa", 1, CFG),
    # max-pool chunks of 3 outputs per run read (8 columns) and of 1 output over 2 run reads
    # per input row (2 columns); packed lane groups with edge reads on the wide array
    pytest.param("sew", 2, WIDE, marks=SLOW), ("ms", 4, NARROW),
    # one operand per step, spare lanes idle at T = 2, tiles wait for their drains
    ("sew", 4, LEAN), pytest.param("ms", 2, LEAN, marks=EXTENDED),
    pytest.param("sdsa", 4, LEAN, marks=EXTENDED)], ids=lambda v: getattr(v, "name", v))
def test_end_to_end_equals_golden_and_cycle_model(family, T, config):
    """T < lanes packs lanes / T positions per word (pack 2 at T = 2, pack 4 at T = 1), unless
    the array has no lane packing."""
    model = random_int_model(family, seed=1, size=8, dim=4, T=T)
    net = compile_network(model, config)
    assert net.globals["pack"] == (config.lanes // T if config.lane_packing else 1)
    assert any(p.desc["op"] == isa.OP_MAXPOOL for p in net.passes)
    image = random_images(model, 1, seed=3)[0]
    got = {}

    async def bench(ctx, dut):
        for chunk in net.load_chunks(config.max_payload):
            await send(ctx, dut.load, chunk, stall=7)
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        assert ctx.get(dut.status.ready) and ctx.get(dut.status.error) == Status.OK
        await send(ctx, dut.tokens, net.encode_input(image, trace=True), stall=5)
        got["trace"], _ = await receive(ctx, dut, 100_000, stall=3)
        await send(ctx, dut.tokens, net.encode_input(image, trace=False))
        got["plain"], got["busy"] = await receive(ctx, dut, 100_000)

    simulate(bench, config)
    logits, trace = golden.run(model, image[None])
    decoded, traced = net.decode_result(got["trace"], trace=True)
    np.testing.assert_array_equal(decoded, logits[0])
    for name, value in traced.items():
        np.testing.assert_array_equal(value, trace[name][0], err_msg=name)
    np.testing.assert_array_equal(net.decode_result(got["plain"], False)[0], logits[0])
    assert got["busy"] == net.cycles.total, (got["busy"], net.cycles.total)


def test_errors_are_reported_and_clear_recovers():
    model = random_int_model("iand", seed=2, size=4, dim=4)
    net = compile_network(model, CFG)
    seen = {}

    async def bench(ctx, dut):
        await send(ctx, dut.tokens, net.encode_input(random_images(model, 1)[0]))
        await ctx.tick()
        seen["not_loaded"] = ctx.get(dut.status.error)
        await send(ctx, dut.load, b"\x99\x01\x02")
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        seen["bad_record"] = ctx.get(dut.status.error)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        await send(ctx, dut.load, bytes([0x57, 0xFF, 0xFF, 2]) + bytes(2 * CFG.pe_rows))
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        seen["does_not_fit"] = ctx.get(dut.status.error)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        chunks = net.load_chunks(CFG.max_payload)
        await send(ctx, dut.load, chunks[0][:-3])  # a record cut short by `last`
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        seen["truncated"] = ctx.get(dut.status.error)
        seen["ready_after_bad"] = ctx.get(dut.status.ready)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for chunk in chunks:
            await send(ctx, dut.load, chunk)
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        seen["ready"] = ctx.get(dut.status.ready)
        await send(ctx, dut.tokens, b"\x00" * 3)
        await ctx.tick()
        seen["bad_input"] = ctx.get(dut.status.error)
        await send(ctx, dut.tokens, net.encode_input(random_images(model, 1)[0]))
        seen["payload"], _ = await receive(ctx, dut, 20_000)

    simulate(bench)
    assert seen["not_loaded"] == Status.NOT_LOADED
    assert seen["bad_record"] == Status.BAD_RECORD
    assert seen["does_not_fit"] == Status.DOES_NOT_FIT
    assert seen["truncated"] == Status.BAD_RECORD and not seen["ready_after_bad"]
    assert seen["ready"]
    assert seen["bad_input"] == Status.BAD_INPUT
    logits, _ = golden.run(model, random_images(model, 1)[0][None])
    np.testing.assert_array_equal(net.decode_result(seen["payload"], False)[0], logits[0])


def _patched(net, record_type, field_index, value):
    """The load image with one 32-bit field of the first record of `record_type` replaced;
    the commit's checksum is recomputed, so only the range check can refuse it."""
    recs = net.records()
    for i, rec in enumerate(recs):
        if rec[0] == record_type:
            head = 1 if record_type == isa.REC_GLOBAL else 3
            at = head + 4 * field_index
            recs[i] = rec[:at] + struct.pack("<I", value) + rec[at + 4:]
            break
    body = recs[:-1]
    checksum = sum(sum(r) for r in body) & 0xFFFF
    recs[-1] = struct.pack("<BHHH", isa.REC_COMMIT, len(net.passes), len(body), checksum)
    return recs


CASES = [
    (isa.REC_GLOBAL, "T", CFG.lanes + 1),  # more time steps than lanes
    (isa.REC_GLOBAL, "T", 0),
    (isa.REC_GLOBAL, "pack", 2),  # pack x T = 8 lanes on a 4-lane array
    (isa.REC_GLOBAL, "n_pixels", CFG.input_depth),  # beyond the input slot
    (isa.REC_DESC, "w_base", CFG.weight_depth),  # beyond the weight memory
    (isa.REC_DESC, "out_base", CFG.act_depth * CFG.pe_cols),  # beyond activation memory
    (isa.REC_DESC, "step_base", CFG.step_depth),
    (isa.REC_DESC, "taps", 10),
]


def test_load_refuses_fields_beyond_the_array():
    """Global and descriptor fields are range-checked as they load: DOES_NOT_FIT, and the
    program's commit is refused (no inference runs on it); the unpatched image loads."""
    model = random_int_model("iand", seed=2, size=4, dim=4)
    net = compile_network(model, CFG)
    seen = []

    async def bench(ctx, dut):
        for record, field, value in CASES:
            fields = isa.GLOBAL_FIELDS if record == isa.REC_GLOBAL else isa.DESC_FIELDS
            recs = _patched(net, record, fields.index(field), value)
            # the patched record, then the commit (the records between are not needed)
            bad = next(r for r in recs if r[0] == record)
            for rec in (bad, recs[-1]):
                await send(ctx, dut.load, rec)
            await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
            seen.append((field, ctx.get(dut.status.error), ctx.get(dut.status.ready)))
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
        for rec in net.records():
            await send(ctx, dut.load, rec)
        await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
        seen.append(("unpatched", ctx.get(dut.status.error), ctx.get(dut.status.ready)))

    simulate(bench)
    assert seen[:-1] == [(f, Status.DOES_NOT_FIT, 0) for _, f, _ in CASES]
    assert seen[-1] == ("unpatched", Status.OK, 1)


def test_compiler_output_is_within_the_load_checks():
    for family in ("sew", "ms"):
        net = compile_network(random_int_model(family, seed=3, T=2), CFG)
        limits = isa.field_limits(CFG)
        for p in net.passes:
            assert all(limits[f][0] <= v <= limits[f][1] for f, v in p.desc.items())


def test_lean_array_refuses_programs_it_cannot_run():
    """A program with paired steps, or with lane groups packed (pack > 1), loaded onto an
    array without paired steps and lane packing: DOES_NOT_FIT and no commit."""
    model = random_int_model("sew", seed=4, size=8, dim=4, T=2)
    paired = compile_network(model, LEAN.replace(paired_steps=True))
    assert any(step[5] for step in paired.steps)
    packed = compile_network(model, LEAN.replace(lane_packing=True))
    assert packed.globals["pack"] == 2
    seen = []

    async def bench(ctx, dut):
        for net in (paired, packed, compile_network(model, LEAN)):
            for rec in net.records():
                await send(ctx, dut.load, rec)
            await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
            seen.append((ctx.get(dut.status.error), ctx.get(dut.status.ready)))
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)

    simulate(bench, LEAN)
    assert seen == [(Status.DOES_NOT_FIT, 0), (Status.DOES_NOT_FIT, 0), (Status.OK, 1)]


def test_commit_refuses_a_wrong_checksum_or_record_count():
    """The commit record carries the number of records before it and their byte sum. A load
    image whose commit disagrees with what arrived is refused (BAD_RECORD, not ready; an input
    then gets NOT_LOADED): a checksum or count off by one, a record lost in flight, a weight byte
    changed in flight. The other tests' helpers recompute the commit; here it stays wrong."""
    model = random_int_model("iand", seed=2, size=4, dim=4)
    net = compile_network(model, CFG)
    recs = net.records()
    body, (kind, passes, count, checksum) = recs[:-1], struct.unpack("<BHHH", recs[-1])
    assert kind == isa.REC_COMMIT and count == len(body)
    assert checksum == sum(sum(r) for r in body) & 0xFFFF

    def commit(count=count, checksum=checksum):
        return struct.pack("<BHHH", isa.REC_COMMIT, passes, count, checksum)

    weight = next(i for i, r in enumerate(body) if r[0] == isa.REC_WEIGHT)
    changed = bytearray(body[weight])
    changed[-1] ^= 0x01  # a weight bit flipped: same length, a byte sum off by one
    cases = {
        "checksum + 1": body + [commit(checksum=(checksum + 1) & 0xFFFF)],
        "checksum - 1": body + [commit(checksum=(checksum - 1) & 0xFFFF)],
        "count + 1": body + [commit(count=count + 1)],
        "count - 1": body + [commit(count=count - 1)],
        "a record lost": body[:weight] + body[weight + 1:] + [commit()],
        "a weight byte changed": body[:weight] + [bytes(changed)] + body[weight + 1:]
        + [commit()],
        "unchanged": recs,
    }
    image = random_images(model, 1)[0]
    seen = {}

    async def bench(ctx, dut):
        for what, image_recs in cases.items():
            for rec in image_recs:
                await send(ctx, dut.load, rec)
            await ctx.tick().repeat(LOAD_VERDICT_CYCLES)
            state = (ctx.get(dut.status.error), ctx.get(dut.status.ready))
            await send(ctx, dut.tokens, net.encode_input(image))
            await ctx.tick()
            seen[what] = (*state, ctx.get(dut.status.error))
            if what == "unchanged":
                seen["payload"], _ = await receive(ctx, dut, 20_000)
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)

    simulate(bench)
    payload = seen.pop("payload")
    refused = (Status.BAD_RECORD, 0, Status.NOT_LOADED)  # and the input dropped, not computed
    assert seen == {what: (refused if what != "unchanged" else (Status.OK, 1, Status.OK))
                    for what in cases}
    logits, _ = golden.run(model, image[None])
    np.testing.assert_array_equal(net.decode_result(payload, False)[0], logits[0])
