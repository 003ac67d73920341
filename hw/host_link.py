"""The host link: frame decoder, payload queue, sequencer and response encoder around the core.

`HostLink` turns one byte stream in and one byte stream out into the protocol of
`firmware/PROTOCOL.md` (framing and CRC in `firmware/protocol.py`), and drives the core's
`load`, `tokens` and `results` streams. It is a chain of components with one concern each
(`hw/link_decoder.py`, `hw/link_queue.py`, `hw/link_sequencer.py`, `hw/link_encoder.py`):

    rx -> FrameDecoder --queue writes--> LinkQueue --load/tokens--> core
              | request                                               | results
              v                                                       v
         CommandSequencer --response--> ResponseEncoder <--read-- ResultBuffer
                                              |
                                              v tx

`HostLinkTop` gives it AXI4-Stream-named byte ports for the Verilator cosimulation and board
bridges; `generate()` writes that top as Verilog (`python -m hw.top link --config cfg.json -o
build/top.v`).
"""

from __future__ import annotations

from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Const, Elaboratable, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.protocol import STATUS_BYTES
from hw.config import ArrayConfig
from hw.link_common import BYTE_LAST, CORE_STATUS, core_signature
from hw.link_decoder import FrameDecoder
from hw.link_encoder import ResponseEncoder
from hw.link_queue import LinkQueue, ResultBuffer
from hw.link_sequencer import CommandSequencer

__all__ = ["BYTE_LAST", "CORE_STATUS", "HostLink", "HostLinkTop", "core_signature", "generate"]


def _pow2_at_least(value: int) -> int:
    return 1 << (value - 1).bit_length()


class HostLink(wiring.Component):
    """Frame decoder + payload queue + sequencer + result buffer + response encoder.

    Request path: `FrameDecoder` checks each frame and writes its payload tentatively into
    `LinkQueue`, committed only when the CRC and the command check out, so the core never sees
    a byte of a bad frame (no half-loaded weights); the queue forwards committed bytes to the
    core's `load` or `tokens` stream independently of the decoder, so the host streams the
    next inputs while the core computes. `CommandSequencer` carries out RESET (clear) and LOAD
    (wait for the core's verdict, bounded by `timeout_cycles`) and issues the response, which
    `ResponseEncoder` frames, reading READ's bytes from `ResultBuffer`.

    Errors: a bad CRC, an unknown command, a length over `max_payload` (or wrong for the
    command), a full queue (BUSY), INFER before a program is ready (NOT_LOADED) and a frame that
    stops for `timeout_cycles` (TIMEOUT) each get a one-byte-status response; the frame is
    dropped and the decoder hunts for the next start marker.

    Latency: a response starts 3 cycles after the last CRC byte (READ: 4; LOAD: after the
    queue drains plus `settle_cycles`; RESET: after 4 clear cycles). Throughput: one byte per
    cycle on each stream. Cost: the queue (`queue_depth` x 10 bits) and result buffer
    (`result_depth` x 9 bits) memories, two CRC-16 byte units, two 32-bit counters and the
    registers the components list; on the iCE40 at max_payload 256, around the echo stand-in
    core (`python -m scripts.link_cost`): 895 LUT4, 281 carries, 495 flip-flops, 4 block RAMs.

    `test_hooks` adds a `stall` input (bit 0: queue to the core, bit 1: results from the core)
    so test benches can throttle the internal streams too, and a `queue_idle` output (the queue
    has drained into the core) so they can wait for a quiescent link.
    """

    def __init__(self, config: ArrayConfig, core: wiring.Component | None = None, *,
                 queue_depth: int | None = None, result_depth: int | None = None,
                 timeout_cycles: int = 1 << 16, settle_cycles: int = 32,
                 test_hooks: bool = False):
        if core is None:
            from hw.accelerator import Accelerator

            core = Accelerator(config)
        if not core_signature().is_compliant(core):
            raise TypeError("core must have the signature of hw.accelerator.Accelerator "
                            "(load, tokens, results, status, clear)")
        self.config = config
        self.core = core
        self.max_payload = config.max_payload
        if self.max_payload < STATUS_BYTES:
            raise ValueError(f"max_payload {self.max_payload} cannot hold a STATUS response "
                             f"({STATUS_BYTES} bytes)")
        # Two frames of room each way: the next input streams in while one is computed, and a
        # READ never finds fewer bytes waiting than a frame holds (EBRs are scarce on iCE40).
        self.queue_depth = queue_depth or _pow2_at_least(2 * self.max_payload)
        self.result_depth = result_depth or _pow2_at_least(2 * self.max_payload)
        for name in ("queue_depth", "result_depth"):
            value = getattr(self, name)
            if value & (value - 1) or value < self.max_payload or value > 0x8000:
                raise ValueError(f"{name} = {value} is not allowed: a power of two, at least "
                                 f"max_payload ({self.max_payload}) and at most 32768")
        if not 16 <= timeout_cycles <= 1 << 30:
            raise ValueError(f"timeout_cycles = {timeout_cycles} is not allowed: 16 .. 2^30")
        if not 1 <= settle_cycles <= 1024:
            raise ValueError(f"settle_cycles = {settle_cycles} is not allowed: 1 .. 1024")
        self.timeout_cycles = timeout_cycles
        self.settle_cycles = settle_cycles
        self.test_hooks = test_hooks
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(BYTE_LAST)),
            "status": Out(CORE_STATUS),
        }
        if test_hooks:
            members["stall"] = In(2)
            members["queue_idle"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.decoder = decoder = FrameDecoder(self.max_payload, self.timeout_cycles)
        m.submodules.queue = queue = LinkQueue(self.queue_depth)
        m.submodules.sequencer = sequencer = CommandSequencer(
            self.max_payload, self.timeout_cycles, self.settle_cycles)
        m.submodules.results = results = ResultBuffer(self.result_depth)
        m.submodules.encoder = encoder = ResponseEncoder(
            self.max_payload, self.queue_depth, self.result_depth)
        stall = self.stall if self.test_hooks else Const(0, 2)
        if self.test_hooks:
            m.d.comb += self.queue_idle.eq(queue.idle)

        wiring.connect(m, wiring.flipped(self.rx), decoder.rx)
        wiring.connect(m, decoder.queue, queue.write)
        wiring.connect(m, queue.load, core.load)
        wiring.connect(m, queue.tokens, core.tokens)
        wiring.connect(m, core.results, results.write)
        wiring.connect(m, decoder.request, sequencer.request)
        wiring.connect(m, sequencer.response, encoder.response)
        wiring.connect(m, results.read, encoder.results)
        wiring.connect(m, encoder.tx, wiring.flipped(self.tx))
        m.d.comb += [
            decoder.core_ready.eq(core.status.ready),
            core.clear.eq(sequencer.core_clear),
            queue.flush.eq(sequencer.flush),
            queue.hold.eq(stall[0]),
            results.flush.eq(sequencer.flush),
            results.hold.eq(stall[1]),
            results.busy.eq(core.status.busy),
            results.commit.eq(sequencer.results_commit),
            results.rewind.eq(sequencer.results_rewind),
            sequencer.core_status.eq(core.status),
            sequencer.queue_free.eq(queue.write.free),
            sequencer.queue_idle.eq(queue.idle),
            sequencer.results_level.eq(results.level),
            sequencer.results_done.eq(results.results_done),
            sequencer.busy_cycles.eq(results.busy_cycles),
            self.status.eq(core.status),
        ]
        return m


class HostLinkTop(wiring.Component):
    """`HostLink` with AXI4-Stream-named byte ports: the top of the cosimulation and the bridges.

    `s_axis_*` carries request bytes in, `m_axis_*` response bytes out (`m_axis_tlast` on the
    last byte of each response frame). `status_*` expose the core's status for LEDs. With
    `test_hooks`, `stall` throttles the link's internal streams (see `HostLink`).
    """

    def __init__(self, config: ArrayConfig, core: wiring.Component | None = None, **link_args):
        self.link = HostLink(config, core, **link_args)
        members = {
            "s_axis_tdata": In(8), "s_axis_tvalid": In(1), "s_axis_tready": Out(1),
            "m_axis_tdata": Out(8), "m_axis_tvalid": Out(1), "m_axis_tready": In(1),
            "m_axis_tlast": Out(1),
            "status_ready": Out(1), "status_busy": Out(1), "status_error": Out(8),
        }
        if self.link.test_hooks:
            members["stall"] = In(2)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = self.link
        m.d.comb += [
            link.rx.payload.eq(self.s_axis_tdata),
            link.rx.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(link.rx.ready),
            self.m_axis_tdata.eq(link.tx.payload.data),
            self.m_axis_tlast.eq(link.tx.payload.last),
            self.m_axis_tvalid.eq(link.tx.valid),
            link.tx.ready.eq(self.m_axis_tready),
            self.status_ready.eq(link.status.ready),
            self.status_busy.eq(link.status.busy),
            self.status_error.eq(link.status.error),
        ]
        if link.test_hooks:
            m.d.comb += link.stall.eq(self.stall)
        return m


TOP_NAME = "spikeformer_top"


def generate(config: ArrayConfig, path: str | Path | None = None,
             core: Elaboratable | None = None, **link_args) -> str:
    """Verilog of `HostLinkTop` as module `spikeformer_top` (ports `clk`, `rst`, AXI names).

    Writes it to `path` when given (only if the text changed, so Verilator rebuilds stay
    incremental) and returns the text.
    """
    top = HostLinkTop(config, core, **link_args)
    text = verilog.convert(top, name=TOP_NAME, emit_src=False)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return text
