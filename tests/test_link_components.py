"""Each component of the host link alone on the Amaranth simulator, with random stalls on every
stream it has, against a Python reference of what it must do."""

import random

import pytest
from amaranth.sim import Simulator

from firmware.protocol import (
    LINK_VERSION,
    RESPONSE,
    SOF,
    Command,
    FrameParser,
    LinkStatus,
    encode_frame,
    encode_segments,
)
from hw.link_common import ResponseKind
from hw.link_decoder import FrameDecoder
from hw.link_encoder import ResponseEncoder
from hw.link_queue import LinkQueue, ResultBuffer
from hw.link_sequencer import CLEAR_CYCLES, CommandSequencer
from hw.status import Status
from tb.link_model import EchoLinkModel


def simulate(dut, *benches, background=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in background:
        sim.add_testbench(bench, background=True)
    for bench in benches:
        sim.add_testbench(bench)
    sim.run()


async def pulse(ctx, signal):
    ctx.set(signal, 1)
    await ctx.tick()
    ctx.set(signal, 0)


# ---- LinkQueue ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_queue_forwards_committed_frames_only_in_order(seed):
    rng = random.Random(seed)
    dut = LinkQueue(64)
    frames = [(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40))),
               rng.random() < 0.5, rng.random() < 0.7) for _ in range(30)]
    expected = {False: [], True: []}  # destination tokens? -> (byte, last) forwarded
    got = {False: [], True: []}
    done = []

    async def writer(ctx):
        for data, tokens, commit in frames:
            while ctx.get(dut.write.free) < len(data):
                await ctx.tick()
            for i, byte in enumerate(data):
                while rng.random() < 0.3:  # idle cycles between payload bytes
                    await ctx.tick()
                for name, value in (("en", 1), ("data", byte), ("last", i == len(data) - 1),
                                    ("tokens", tokens)):
                    ctx.set(getattr(dut.write, name), value)
                await ctx.tick()
                ctx.set(dut.write.en, 0)
            await pulse(ctx, dut.write.commit if commit else dut.write.rollback)
            if commit:
                expected[tokens] += [(b, i == len(data) - 1) for i, b in enumerate(data)]
        await ctx.tick().until(dut.idle)
        done.append(True)

    async def reader(ctx):
        while True:
            ctx.set(dut.hold, rng.random() < 0.3)
            for tokens, port in ((False, dut.load), (True, dut.tokens)):
                ready = rng.random() < 0.6
                ctx.set(port.ready, ready)
                if ready and ctx.get(port.valid):
                    got[tokens].append((ctx.get(port.payload.data), ctx.get(port.payload.last)))
            await ctx.tick()

    simulate(dut, writer, background=[reader])
    assert done and got == {k: [(b, int(last)) for b, last in v] for k, v in expected.items()}
    assert any(not commit for *_, commit in frames)  # rollbacks were exercised


# ---- ResultBuffer ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_result_buffer_rewinds_to_the_last_commit(seed):
    rng = random.Random(seed)
    dut = ResultBuffer(32)
    data = [(rng.randrange(256), rng.random() < 0.2) for _ in range(300)]
    got = []

    async def producer(ctx):
        for byte, last in data:
            ctx.set(dut.write.valid, 1)
            ctx.set(dut.write.payload.data, byte)
            ctx.set(dut.write.payload.last, last)
            while True:
                ctx.set(dut.hold, rng.random() < 0.3)
                ready = ctx.get(dut.write.ready)
                await ctx.tick()
                if ready:
                    break
            ctx.set(dut.write.valid, 0)
            while rng.random() < 0.3:
                await ctx.tick()

    async def consumer(ctx):
        # READ-like transactions: take up to n bytes, then commit (kept) or rewind (resent).
        while len(got) < len(data):
            n = rng.randrange(0, 12)
            taken = []
            for _ in range(200):
                if len(taken) == n:
                    break
                ready = rng.random() < 0.7
                ctx.set(dut.read.ready, ready)
                if ready and ctx.get(dut.read.valid):
                    taken.append((ctx.get(dut.read.payload.data),
                                  bool(ctx.get(dut.read.payload.last))))
                await ctx.tick()
            ctx.set(dut.read.ready, 0)
            if rng.random() < 0.3:
                await pulse(ctx, dut.rewind)
            else:
                got.extend(taken)
                await pulse(ctx, dut.commit)
            await ctx.tick()

    simulate(dut, consumer, background=[producer])
    assert got == data
    assert sum(last for _, last in data) > 10


# ---- ResponseEncoder ------------------------------------------------------------------------


def test_encoder_frames_every_kind_under_backpressure():
    rng = random.Random(3)
    dut = ResponseEncoder(max_payload=64, queue_depth=128, result_depth=256)
    stream_bytes = [(rng.randrange(256), rng.random() < 0.25) for _ in range(400)]
    cases, expected = [], []
    position = 0
    for i in range(40):
        kind = [ResponseKind.STATUS_ONLY, ResponseKind.STATUS, ResponseKind.QUEUE_FREE,
                ResponseKind.READ][i % 4]
        fields = {"cmd": rng.randrange(1, 0x80), "seq": rng.randrange(256), "kind": kind,
                  "status": rng.randrange(10),
                  "flags": rng.randrange(8), "queue_free": rng.randrange(1 << 16),
                  "results_level": rng.randrange(1 << 16), "results_done": rng.randrange(1 << 32),
                  "busy_cycles": rng.randrange(1 << 32), "read_n": rng.randrange(0, 61)}
        head = bytes([fields["status"]]) + fields["queue_free"].to_bytes(2, "little")
        if kind == ResponseKind.STATUS_ONLY:
            payload = head[:1]
        elif kind == ResponseKind.STATUS:
            payload = LinkStatus(Status(fields["status"]), *(bool(fields["flags"] >> b & 1)
                                                             for b in range(3)),
                                 LINK_VERSION, fields["queue_free"], fields["results_level"],
                                 fields["results_done"], fields["busy_cycles"], 64, 128,
                                 256).encode()
        elif kind == ResponseKind.QUEUE_FREE:
            payload = head
        else:
            sent = stream_bytes[position:position + fields["read_n"]]
            position += fields["read_n"]
            payload = head + bytes(b for b, _ in sent) + bytes([sum(last for _, last in sent)])
        cases.append(fields)
        expected.append(encode_frame(fields["cmd"] | RESPONSE, payload, fields["seq"]))
    out = bytearray()
    lasts = []

    async def driver(ctx):
        for fields in cases:
            for name, value in fields.items():
                ctx.set(getattr(dut.response.payload, name), value)
            ctx.set(dut.response.valid, 1)
            await ctx.tick().until(dut.response.ready)
            ctx.set(dut.response.valid, 0)
            while rng.random() < 0.5:
                await ctx.tick()

    async def results(ctx):
        for byte, last in stream_bytes:
            while rng.random() < 0.3:
                ctx.set(dut.results.valid, 0)
                await ctx.tick()
            ctx.set(dut.results.valid, 1)
            ctx.set(dut.results.payload.data, byte)
            ctx.set(dut.results.payload.last, last)
            while True:  # taken if ready at the edge (it follows the sink's tx.ready)
                _, _, ready = await ctx.tick().sample(dut.results.ready)
                if ready:
                    break
        ctx.set(dut.results.valid, 0)

    async def sink(ctx):
        # Sampled at the clock edge: the encoder's first byte is valid as soon as the driver
        # (another testbench) offers a response, in the same cycle.
        ctx.set(dut.tx.ready, 1)
        async for _, _, valid, ready, byte, last in ctx.tick().sample(
                dut.tx.valid, dut.tx.ready, dut.tx.payload.data, dut.tx.payload.last):
            if valid and ready:
                out.append(byte)
                if last:
                    lasts.append(len(out))
            ctx.set(dut.tx.ready, rng.random() < 0.6)

    simulate(dut, driver, background=[results, sink])
    assert bytes(out) == b"".join(expected)
    ends = [sum(len(f) for f in expected[:i + 1]) for i in range(len(expected))]
    assert lasts == ends


# ---- FrameDecoder ---------------------------------------------------------------------------


def test_decoder_verdicts_and_committed_payloads():
    rng = random.Random(6)
    model = EchoLinkModel(64, 128, 1 << 15)
    load = encode_frame(Command.LOAD, bytes(rng.randrange(256) for _ in range(20)), seq=1)
    segments = encode_segments([b"abc", b"defgh"], 64)[0]
    infer = encode_frame(Command.INFER, segments, seq=2)
    bad = bytearray(load)
    bad[6] ^= 4
    again = encode_frame(Command.INFER, segments, seq=8)
    chunks = [load, infer, bytes(bad), encode_frame(0x41, seq=3),
              encode_frame(Command.READ, b"\x05", seq=4),
              bytes([SOF, Command.LOAD, 5, 0x41, 0x00]) + b"\x00" * 10, load[:9], b"\x13\x37",
              encode_frame(Command.READ, b"\x34\x12", seq=6),
              encode_frame(Command.INFER, b"\x00\x00x", seq=7), again, again,
              encode_frame(Command.STATUS, seq=9)]
    # the verdicts the link's responses carry (the echo core never reports an error, so an
    # accepted request's status byte is OK too)
    expected = [(frame.cmd & 0x7F, Status(frame.payload[0])) for frame in
                FrameParser().feed(b"".join(f for chunk in chunks for f in model.feed(chunk)))]
    dut = FrameDecoder(max_payload=64, timeout_cycles=64)
    requests, writes, committed = [], [], []

    async def driver(ctx):
        ctx.set(dut.queue.free, 128)
        ctx.set(dut.core_ready, 1)
        for chunk in chunks:
            for byte in chunk:
                while rng.random() < 0.3:
                    ctx.set(dut.rx.valid, 0)
                    await ctx.tick()
                ctx.set(dut.rx.valid, 1)
                ctx.set(dut.rx.payload, byte)
                await ctx.tick().until(dut.rx.ready)
            ctx.set(dut.rx.valid, 0)
            for _ in range(80):  # a pause: an open frame times out
                await ctx.tick()

    async def consumer(ctx):
        # Sampled at the clock edge: the queue writes follow the driver's bytes combinationally.
        q, r = dut.queue, dut.request
        ctx.set(r.ready, 0)
        async for (_, _, valid, ready, cmd, verdict, arg, seq, dup, en, data, last, tokens,
                   commit, rollback) in ctx.tick().sample(
                       r.valid, r.ready, r.payload.cmd, r.payload.verdict, r.payload.arg,
                       r.payload.seq, r.payload.dup, q.en, q.data, q.last, q.tokens, q.commit,
                       q.rollback):
            if valid and ready:
                requests.append((cmd, Status(verdict), arg, seq, dup))
            if en:
                writes.append((data, last, tokens))
            if commit:
                committed.extend(writes)
            if commit or rollback:
                writes.clear()
            ctx.set(r.ready, rng.random() < 0.2)

    simulate(dut, driver, background=[consumer])
    assert [(cmd, verdict) for cmd, verdict, *_ in requests] == expected
    assert [arg for cmd, verdict, arg, *_ in requests
            if cmd == Command.READ and verdict == Status.OK] == [0x1234]  # READ's argument
    assert [seq for *_, seq, dup in requests if dup] == [8]  # the repeated INFER
    load_bytes = [(b, int(i == 19), 0) for i, b in enumerate(load[5:-2])]
    infer_bytes = [(b, int(b in b"ch"), 1) for b in b"abcdefgh"]
    assert committed == load_bytes + infer_bytes + infer_bytes


# ---- CommandSequencer -----------------------------------------------------------------------


def test_sequencer_clears_drains_and_snapshots():
    rng = random.Random(8)
    dut = CommandSequencer(max_payload=64, timeout_cycles=100, settle_cycles=5)
    log = []

    async def env(ctx):
        # A queue that drains 12 cycles after a LOAD request arrives, a result level of 50.
        ctx.set(dut.results_level, 50)
        ctx.set(dut.queue_free, 77)
        cycle, drained_at, load_seen = 0, 0, False
        async for _, _, valid, cmd, clear, commit in ctx.tick().sample(
                dut.request.valid, dut.request.payload.cmd, dut.core_clear, dut.results_commit):
            cycle += 1
            if valid and cmd == Command.LOAD and not load_seen:
                drained_at, load_seen = cycle + 12, True
            load_seen &= bool(valid)
            if clear:
                log.append(("clear", cycle))
            if commit:
                log.append(("commit", cycle))
            ctx.set(dut.queue_idle, cycle >= drained_at)

    responses = []

    async def driver(ctx):
        for cmd, verdict, arg in [(Command.RESET, Status.OK, 0), (Command.LOAD, Status.OK, 0),
                                  (Command.READ, Status.OK, 20), (Command.READ, Status.OK, 300),
                                  (Command.INFER, Status.BUSY, 0), (Command.STATUS, Status.OK, 0)]:
            ctx.set(dut.request.payload.cmd, cmd)
            ctx.set(dut.request.payload.verdict, verdict)
            ctx.set(dut.request.payload.arg, arg)
            ctx.set(dut.request.valid, 1)
            waited = 0
            while not ctx.get(dut.response.valid):
                await ctx.tick()
                waited += 1
            for _ in range(rng.randrange(5)):  # the encoder takes its time
                await ctx.tick()
            resp = dut.response.payload
            responses.append((cmd, waited, ctx.get(resp.kind), ctx.get(resp.status),
                              ctx.get(resp.read_n), ctx.get(resp.queue_free)))
            ctx.set(dut.response.ready, 1)
            assert ctx.get(dut.request.ready)
            await ctx.tick()
            ctx.set(dut.response.ready, 0)
            ctx.set(dut.request.valid, 0)
            await ctx.tick()

    simulate(dut, driver, background=[env])
    kinds = [(cmd, kind, status, n) for cmd, _, kind, status, n, _ in responses]
    assert kinds == [
        (Command.RESET, ResponseKind.STATUS_ONLY, Status.OK, 0),
        (Command.LOAD, ResponseKind.QUEUE_FREE, Status.OK, 0),
        (Command.READ, ResponseKind.READ, Status.OK, 20),
        (Command.READ, ResponseKind.READ, Status.OK, 50),  # min(300, 60, level 50)
        (Command.INFER, ResponseKind.STATUS_ONLY, Status.BUSY, 0),
        (Command.STATUS, ResponseKind.STATUS, Status.OK, 0),
    ]
    assert sum(1 for e in log if e[0] == "clear") == CLEAR_CYCLES
    waits = {cmd: waited for cmd, waited, *_ in responses}
    assert waits[Command.LOAD] >= 12 + 5  # drained, then settled
    assert waits[Command.STATUS] == 1 and waits[Command.READ] == 2
    assert sum(1 for e in log if e[0] == "commit") == 2  # one release per READ
