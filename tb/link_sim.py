"""Amaranth-simulator bench of `HostLink` around `EchoCore`: chunks of request bytes in, response
bytes out, under random idle cycles on `rx`, back-pressure on `tx` and stalls of the link's
internal streams. Used by `tests/test_link_sim.py`.

    bench = LinkBench(seed=1, idle=0.3, backpressure=0.3, stall=0.3)
    got = bench.run([chunk0, chunk1], expected_frames=[2, 1])   # one bytes object per chunk

Each chunk goes in once the previous chunk's responses are out and the link's queue has
drained, so the responses are a function of the bytes alone (what `tb.link_model` predicts).
"""

from __future__ import annotations

import random

from amaranth.sim import Simulator

from firmware.protocol import OVERHEAD
from hw.config import ArrayConfig
from hw.host_link import HostLink
from tb.echo_core import EchoCore

CONFIG = ArrayConfig(name="link_sim", max_payload=64)
LINK_ARGS = {"queue_depth": 128, "result_depth": 128, "timeout_cycles": 512, "settle_cycles": 4}


def split_frames(data: bytes) -> list[bytes]:
    """Cut a response byte stream into frames by their length fields (responses are clean)."""
    frames = []
    while data:
        length = data[3] | data[4] << 8
        frames.append(data[:OVERHEAD + length])
        data = data[OVERHEAD + length:]
    return frames


class LinkBench:
    def __init__(self, seed: int = 0, idle: float = 0.0, backpressure: float = 0.0,
                 stall: float = 0.0, config: ArrayConfig = CONFIG, core=None, **link_args):
        self.rng = random.Random(seed)
        self.idle, self.backpressure, self.stall = idle, backpressure, stall
        self.link = HostLink(config, core or EchoCore(), test_hooks=True,
                             **{**LINK_ARGS, **link_args})
        self.cycles = 0

    def run(self, chunks: list[bytes], expected_frames: list[int],
            max_cycles: int = 200_000) -> list[list[bytes]]:
        """Send each chunk, wait for its `expected_frames` responses (and a drained queue);
        return the response frames of each chunk. Raises `TimeoutError` when the link stays
        silent for `max_cycles` in all."""
        link, rng = self.link, self.rng
        out = bytearray()
        frame_ends = []  # positions in `out` where a byte with tx.last ended
        replies: list[list[bytes]] = []
        sim = Simulator(link)
        sim.add_clock(1e-6)

        async def sink(ctx):
            while True:
                ready = rng.random() >= self.backpressure
                ctx.set(link.tx.ready, ready)
                if ready and ctx.get(link.tx.valid):
                    out.append(ctx.get(link.tx.payload.data))
                    if ctx.get(link.tx.payload.last):
                        frame_ends.append(len(out))
                await ctx.tick()

        async def stall(ctx):
            while True:
                ctx.set(link.stall, int(rng.random() < self.stall)
                        | int(rng.random() < self.stall) << 1)
                await ctx.tick()

        async def driver(ctx):
            cycles = 0
            for chunk, count in zip(chunks, expected_frames, strict=True):
                start = len(frame_ends)
                taken = 0
                while taken < len(chunk):
                    if rng.random() < self.idle:
                        ctx.set(link.rx.valid, 0)
                    else:
                        ctx.set(link.rx.valid, 1)
                        ctx.set(link.rx.payload, chunk[taken])
                        if ctx.get(link.rx.ready):
                            taken += 1
                    await ctx.tick()
                    cycles += 1
                ctx.set(link.rx.valid, 0)
                while len(frame_ends) < start + count or not ctx.get(link.queue_idle):
                    await ctx.tick()
                    cycles += 1
                    if cycles > max_cycles:
                        raise TimeoutError(f"{len(frame_ends) - start} of {count} responses "
                                           f"after {cycles} cycles")
                for _ in range(4):  # nothing more may follow (checked by the caller)
                    await ctx.tick()
                cycles += 4
                begin = frame_ends[start - 1] if start else 0
                replies.append(split_frames(bytes(out[begin:])))
            self.cycles += cycles

        sim.add_testbench(sink, background=True)
        sim.add_testbench(stall, background=True)
        sim.add_testbench(driver)
        sim.run()
        return replies
