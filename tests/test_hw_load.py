"""The load parser (`hw/load.py`) in the Amaranth simulator against `pysim.hwref.decode_image`:
the words it writes into each memory and the globals it holds are what the reference decodes
from the same load image, with random gaps on the byte stream; a wrong checksum or record
count is refused."""

import random

import numpy as np
from amaranth import Value
from amaranth.sim import Simulator

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from hw.load import VERDICT_CYCLES, LoadParser
from hw.status import Status
from pysim.hwref import decode_image
from pysim.random_model import random_int_model

CONFIG = ArrayConfig(name="load", pe_rows=2, pe_cols=4, lanes=4, act_depth=1024,
                     weight_depth=1024, param_depth=256, step_depth=1024, program_depth=32,
                     input_depth=128)


def run_parser(config, chunks, gap=0.0, seed=0):
    """Feed `chunks` (bytes, `last` on each chunk's final byte); returns the writes seen per
    memory ({address: value}), the globals, n_passes, ready and the errors reported."""
    dut = LoadParser(config)
    rng = random.Random(seed)
    seen = {"weight": {}, "param": {}, "step": {}, "program": {}}
    out = {}
    errors = []

    async def tick(ctx):
        """One clock, after sampling the memory writes and the errors of this cycle (in the
        bench, after its inputs are set: a second testbench could sample before them)."""
        for name in ("weight", "param", "step"):
            port = getattr(dut, name)
            if ctx.get(port.en):
                seen[name][ctx.get(port.addr)] = ctx.get(Value.cast(port.data))
        if ctx.get(dut.program.en):
            en, word = ctx.get(dut.program.en), ctx.get(dut.program.data)
            fw = isa.field_width(config)
            for lane in range(isa.FIELDS_PER_WORD):
                if en >> lane & 1:
                    addr = ctx.get(dut.program.addr) * isa.FIELDS_PER_WORD + lane
                    seen["program"][addr] = word >> (fw * lane) & ((1 << fw) - 1)
        if ctx.get(dut.error_set):
            errors.append(ctx.get(dut.error))
        await ctx.tick()

    async def bench(ctx):
        for chunk in chunks:
            for i, byte in enumerate(chunk):
                while rng.random() < gap:
                    ctx.set(dut.load.valid, 0)
                    await tick(ctx)
                ctx.set(dut.load.valid, 1)
                ctx.set(dut.load.payload.data, byte)
                ctx.set(dut.load.payload.last, i == len(chunk) - 1)
                while not ctx.get(dut.load.ready):  # a check's bubble
                    await tick(ctx)
                await tick(ctx)
        ctx.set(dut.load.valid, 0)
        for _ in range(VERDICT_CYCLES):
            await tick(ctx)
        out.update(globals={n: ctx.get(getattr(dut.globals, n)) for n in isa.GLOBAL_FIELDS},
                   n_passes=ctx.get(dut.n_passes), ready=ctx.get(dut.ready), errors=errors)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen, out


def signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) & 1 else value


def test_parser_writes_what_the_reference_decodes():
    """Two random networks loaded one after another: every memory word written equals
    `decode_image`'s, the globals and pass count too, and the commit sets `ready`."""
    cfg = CONFIG
    for seed, (family, T) in enumerate([("sew", 4), ("ms", 2)]):
        net = compile_network(random_int_model(family, seed=seed, T=T), cfg)
        image = decode_image(net.records(), cfg)
        seen, out = run_parser(cfg, net.load_chunks(200), gap=0.3, seed=seed)
        assert out["ready"] == 1 and out["errors"] == []
        assert out["n_passes"] == len(net.passes)
        assert out["globals"] == image.globals
        R, WB = cfg.pe_rows, cfg.weight_bits
        for addr, word in seen["weight"].items():
            got = [signed(word >> (WB * r) & ((1 << WB) - 1), WB) for r in range(R)]
            assert got == list(image.weights[addr]), f"weight word {addr}"
        assert len(seen["weight"]) == len(net.weights)
        A, M = cfg.acc_bits, cfg.membrane_bits
        for addr, word in seen["param"].items():
            got = (signed(word & ((1 << A) - 1), A), signed(word >> A, M))
            assert got == tuple(image.params[addr]), f"param {addr}"
        bits = isa.step_bits(cfg)
        order = ("col", "row", "w", "shift", "neg", "pair", "shift2", "neg2")
        for addr, word in seen["step"].items():
            fields, lsb = {}, 0
            for name, n in bits.items():  # the step memory's layout, in order
                fields[name] = word >> lsb & ((1 << n) - 1)
                lsb += n
            fields["row"] |= fields.get("rot", 0) << isa.ROT_SHIFT
            got = [fields.get(name, 0) for name in order]
            assert got == list(image.steps[addr]), f"step {addr}"
        assert len(seen["step"]) == len(net.steps)
        nw = isa.desc_words() * isa.FIELDS_PER_WORD
        for index, desc in enumerate(image.descs):
            for i, name in enumerate(isa.DESC_FIELDS):
                got = seen["program"][index * nw + i] & ((1 << isa.field_bits(cfg)[name]) - 1)
                assert got == desc[name], f"pass {index} field {name}"


def test_parser_refuses_a_wrong_checksum_and_record_count():
    """The commit's checksum or record count off by one: BAD_RECORD, not ready; the same image
    with the right commit after it is accepted (the parser keeps serving)."""
    net = compile_network(random_int_model("iand", seed=3, T=2), CONFIG)
    records = net.records()
    commit = records[-1]
    passes, count, checksum = np.frombuffer(commit[1:], "<u2")
    for bad_count, bad_sum in ((count, checksum ^ 1), (count + 1, checksum)):
        wrong = bytes([isa.REC_COMMIT]) + np.array([passes, bad_count, bad_sum],
                                                   "<u2").tobytes()
        _, out = run_parser(CONFIG, [b"".join(records[:-1]) + wrong])
        assert out["ready"] == 0 and out["errors"] == [Status.BAD_RECORD]
    _, out = run_parser(CONFIG, [b"".join(records[:-1]) + wrong, b"".join(records)])
    assert out["ready"] == 1 and out["errors"] == [Status.BAD_RECORD]


def test_parser_refuses_each_malformed_record_and_keeps_serving():
    """Every verdict the parser can reach before a commit, each in its own chunk ahead of the
    whole image in the next one: an unknown record type, a weight record of no entries and a
    chunk that ends inside a record (BAD_RECORD), a weight record past the memory's end
    (DOES_NOT_FIT). Each error is reported once, the rest of its chunk is dropped (the good
    records after the bad one in the same chunk write nothing), the next commit is refused
    (the image it closes followed a failed record) without a second error, and the image
    loaded after that is committed."""
    net = compile_network(random_int_model("iand", seed=3, T=2), CONFIG)
    records = net.records()
    weight = next(r for r in records if r[0] == isa.REC_WEIGHT)
    entry_bytes = isa.weight_layout(CONFIG.pe_rows).nbytes

    assert isa.ENTRIES_HEADER.nbytes == 3  # addr u16, count u8

    def weights(addr, count):
        return (bytes([isa.REC_WEIGHT]) + addr.to_bytes(2, "little") + bytes([count])
                + bytes(entry_bytes * count))

    # (what, chunk, code, whether a good weight record follows the bad one in its chunk)
    cases = (
        ("unknown type", bytes([0x7F]) + weight, Status.BAD_RECORD, True),
        ("no entries", weights(0, 0) + weight, Status.BAD_RECORD, True),
        ("past the end", weights(CONFIG.weight_depth - 1, 2) + weight, Status.DOES_NOT_FIT,
         True),
        # (its whole entries are written as they complete; the commit is what is refused)
        ("cut off", weight[:len(weight) - 1], Status.BAD_RECORD, False),
    )
    for what, bad, code, followed in cases:
        seen, out = run_parser(CONFIG, [bad])
        assert out["errors"] == [code] and out["ready"] == 0, what
        if followed:
            assert seen["weight"] == {}, what  # the rest of the chunk is dropped
        image = b"".join(records)
        _, out = run_parser(CONFIG, [bad, image])
        assert out["errors"] == [code] and out["ready"] == 0, what
        _, out = run_parser(CONFIG, [bad, image, image])
        assert out["errors"] == [code] and out["ready"] == 1, what
