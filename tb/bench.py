"""cocotb side of the cosimulation: the `TB` class and the socket bridge to the host firmware.

Runs inside the simulator (Verilator or Icarus) process. `TB` owns the clock, the reset and the
cocotbext-axi stream models of `spikeformer_top`'s `s_axis`/`m_axis` byte ports, with optional
random idle cycles on the source, back-pressure on the sink and random stalls of the link's
internal streams. `TB.serve()` bridges a Unix socket to those streams so that the synchronous
host firmware (`firmware.host.AcceleratorClient` over `firmware.transport.SocketTransport`)
drives the RTL exactly as it drives a board over a serial port.

Start-up order (what lets the same bench run on Icarus): the inputs are driven to their idle
values (reset high, no valid, no ready) and the design is given 1 ns to settle before the clock
and the stream models start. An event-driven simulator evaluates the design's initial values and
combinational blocks during that time; started at time 0, the models' first edge read X or Z
outputs on Icarus, where cocotbext-axi's `setimmediatevalue` is not applied at once.
"""

from __future__ import annotations

import json
import logging
import os
import random
import select
import socket
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, Timer
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

CLOCK_NS = 10
#: Settling time before the clock starts; `TB_SETTLE_NS=0` starts at time 0 as the old bench did
#: (the negative control in tests/test_icarus.py).
SETTLE_NS = 1
#: The top's inputs and their values while idle, driven before anything starts.
IDLE_INPUTS = {"rst": 1, "s_axis_tvalid": 0, "s_axis_tdata": 0, "s_axis_tlast": 0,
               "m_axis_tready": 0, "stall": 0}


def _bernoulli(rng: random.Random, probability: float):
    """An endless 0/1 generator: 1 (pause) with `probability`, for the stream models."""
    while True:
        yield int(rng.random() < probability)


class TB:
    """Clock, reset and stream models of one `spikeformer_top` instance.

    `idle`: probability of a pause cycle on the request source; `backpressure`: probability of
    tready low on the response sink; `stall`: probability that each internal stream of the link
    (queue -> core, core -> result FIFO) is held for a cycle (needs a build with test hooks).
    Nothing runs until `start()` (which `reset()` calls): see the module's docstring.
    """

    def __init__(self, dut, idle: float = 0.0, backpressure: float = 0.0, stall: float = 0.0,
                 seed: int = 0):
        self.dut = dut
        self.log = logging.getLogger("cocotb.tb")
        self.rng = random.Random(seed)
        self.idle, self.backpressure, self.stall, self.seed = idle, backpressure, stall, seed
        self.has_stall = hasattr(dut, "stall")
        self.source = self.sink = None
        for name, value in IDLE_INPUTS.items():
            if hasattr(dut, name):
                getattr(dut, name).value = value

    async def start(self) -> None:
        """Let the design settle with its inputs idle, then start the clock and the models."""
        if self.source is not None:
            return
        dut, seed = self.dut, self.seed
        settle = float(os.environ.get("TB_SETTLE_NS", SETTLE_NS))
        if settle:
            await Timer(settle, unit="ns")
        Clock(dut.clk, CLOCK_NS, unit="ns", impl="gpi").start()
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.clk, dut.rst)
        for stream in (self.source, self.sink):
            stream.log.setLevel(logging.WARNING)
        if self.idle:
            self.source.set_pause_generator(_bernoulli(random.Random(seed + 1), self.idle))
        if self.backpressure:
            self.sink.set_pause_generator(_bernoulli(random.Random(seed + 2),
                                                     self.backpressure))
        if self.has_stall and self.stall:
            cocotb.start_soon(self._stall(self.stall, random.Random(seed + 3)))

    @classmethod
    def from_env(cls, dut) -> TB:
        """Build from the TB_IDLE, TB_BACKPRESSURE, TB_STALL and TB_SEED environment variables."""
        return cls(dut, idle=float(os.environ.get("TB_IDLE", 0)),
                   backpressure=float(os.environ.get("TB_BACKPRESSURE", 0)),
                   stall=float(os.environ.get("TB_STALL", 0)),
                   seed=int(os.environ.get("TB_SEED", 0)))

    async def _stall(self, probability: float, rng: random.Random):
        edge = RisingEdge(self.dut.clk)
        while True:
            self.dut.stall.value = (int(rng.random() < probability)
                                    | int(rng.random() < probability) << 1)
            await edge

    async def reset(self, cycles: int = 4):
        await self.start()
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 1)

    @staticmethod
    def cycles() -> int:
        """Clock cycles simulated so far."""
        return int(cocotb.utils.get_sim_time("ns")) // CLOCK_NS

    async def serve(self, path: str, poll_cycles: int = 32, accept_timeout: float = 120.0):
        """Bridge the Unix socket at `path` to the DUT until the host disconnects.

        Host bytes go to the request source as they arrive; response frames go back as soon as
        the sink has them. While the host has no request outstanding and the core is idle,
        the bridge blocks on the socket (in wall time) instead of spinning the simulator, so
        host-side work between requests costs no simulated cycles.
        """
        await self.start()
        if os.path.exists(path):
            os.unlink(path)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        server.settimeout(accept_timeout)
        conn, _ = server.accept()
        conn.setblocking(False)
        wall = time.monotonic()
        start = self.cycles()
        poll = Timer(poll_cycles * CLOCK_NS, unit="ns")
        expecting = False  # a request went in and its response has not come out yet
        rx_bytes = tx_bytes = 0
        try:
            while True:
                progressed = False
                try:
                    data = conn.recv(65536)
                    if not data:
                        break
                    self.source.send_nowait(data)
                    rx_bytes += len(data)
                    expecting = progressed = True
                except BlockingIOError:
                    pass
                while not self.sink.empty():
                    frame = self.sink.recv_nowait()
                    conn.setblocking(True)
                    conn.sendall(bytes(frame.tdata))
                    conn.setblocking(False)
                    tx_bytes += len(frame.tdata)
                    expecting = False
                    progressed = True
                quiet = (not expecting and not progressed and self.source.empty()
                         and self.sink.idle() and not int(self.dut.status_busy.value))
                if quiet:
                    select.select([conn], [], [], 0.005)
                await poll
        finally:
            conn.close()
            server.close()
            if os.path.exists(path):
                os.unlink(path)
        stats = {"cycles": self.cycles() - start, "wall_seconds": time.monotonic() - wall,
                 "rx_bytes": rx_bytes, "tx_bytes": tx_bytes}
        stats_path = os.environ.get("TB_STATS")
        if stats_path:
            with open(stats_path, "w") as f:
                json.dump(stats, f)
        self.log.info("bridge closed: %s", stats)
        return stats
