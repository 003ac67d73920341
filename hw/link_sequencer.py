"""The host link's command sequencer: carries out a checked request, then issues its response."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.protocol import Command
from hw.link_common import CORE_STATUS, REQUEST, ResponseKind, response_layout
from hw.status import Status

#: Cycles RESET holds the core's `clear` and the link's flush, so that a result byte in flight
#: in the same cycle is dropped too.
CLEAR_CYCLES = 4


class SequencerState(enum.Enum, shape=3):
    IDLE = 0  #: waiting for a request
    CLEAR = 1  #: RESET: core cleared, buffers flushed
    DRAIN = 2  #: LOAD: waiting until the core has taken the whole payload
    SETTLE = 3  #: LOAD: giving the core `settle_cycles` to check the records
    RESPOND = 4  #: the response is out; wait until the encoder has sent it


class CommandSequencer(wiring.Component):
    """Command sequencer: what each accepted request does besides its response.

    Takes one `request` from the frame decoder at a time and keeps it (the decoder stays
    blocked) until its response has been sent. RESET holds the core's `clear` and `flush` for
    4 cycles; LOAD waits until the queue has drained into the core (at most `timeout_cycles`)
    plus `settle_cycles`, so the response carries the core's verdict on the records; READ
    releases the result bytes of the previous READ response (`results_commit`) before it takes
    the result level, or, when it is a duplicate (that response was lost), rewinds to them
    (`results_rewind`) so they are sent again. Then it snapshots everything the response
    reports into the `response` register and holds it until the encoder has sent the last
    byte.

    Latency: the response is valid 1 cycle after the request (RESET: 4 more; LOAD: the drain
    plus `settle_cycles`; READ: 1 more). Cost: the response register (about 130 flip-flops),
    one wait counter of log2(max(`timeout_cycles`, `settle_cycles`)) bits, a 16-bit minimum;
    on the iCE40 at max_payload 256: 112 LUT4, 51 carries, 144 flip-flops.
    """

    def __init__(self, max_payload: int, timeout_cycles: int, settle_cycles: int):
        self.max_payload = max_payload
        self.timeout_cycles = timeout_cycles
        self.settle_cycles = settle_cycles
        super().__init__({
            "request": In(stream.Signature(REQUEST)),
            "response": Out(stream.Signature(response_layout(max_payload))),
            "core_status": In(CORE_STATUS),
            "core_clear": Out(1),
            "flush": Out(1),  #: empty the queue and the result buffer, clear the counters
            "queue_free": In(16),
            "queue_idle": In(1),
            "results_level": In(16),
            "results_done": In(32),
            "busy_cycles": In(32),
            "results_commit": Out(1),  #: release the bytes sent by the last READ response
            "results_rewind": Out(1),  #: send the bytes of the last READ response again
        })

    def elaborate(self, platform):
        m = Module()
        req = self.request.payload
        resp = self.response.payload  # a register: driven on the clock only
        state = Signal(SequencerState)
        wait = Signal(range(max(self.timeout_cycles, self.settle_cycles, CLEAR_CYCLES) + 1))
        kind = Signal(ResponseKind)
        m.d.comb += kind.eq(ResponseKind.STATUS_ONLY)
        with m.If(req.verdict == Status.OK):
            with m.Switch(req.cmd):
                with m.Case(Command.STATUS):
                    m.d.comb += kind.eq(ResponseKind.STATUS)
                with m.Case(Command.LOAD, Command.INFER):
                    m.d.comb += kind.eq(ResponseKind.QUEUE_FREE)
                with m.Case(Command.READ):
                    m.d.comb += kind.eq(ResponseKind.READ)

        # READ: min(max_bytes, max_payload - 4, bytes waiting).
        limit = self.max_payload - 4
        read_n = Signal(range(self.max_payload + 1))
        with m.If((req.arg <= limit) & (req.arg <= self.results_level)):
            m.d.comb += read_n.eq(req.arg)
        with m.Elif(limit <= self.results_level):
            m.d.comb += read_n.eq(limit)
        with m.Else():
            m.d.comb += read_n.eq(self.results_level)

        def issue():
            # The status byte: the decoder's verdict when it rejected the request, else the
            # core's sticky error (OK when all is well).
            status = Signal(8)
            m.d.comb += status.eq(req.verdict)
            with m.If(req.verdict == Status.OK):
                m.d.comb += status.eq(self.core_status.error)
            m.d.sync += [
                resp.cmd.eq(req.cmd), resp.seq.eq(req.seq), resp.kind.eq(kind),
                resp.status.eq(status),
                resp.flags.eq(Cat(self.core_status.ready, self.core_status.busy,
                                  self.queue_idle, Const(0, 5))),
                resp.queue_free.eq(self.queue_free), resp.results_level.eq(self.results_level),
                resp.results_done.eq(self.results_done), resp.busy_cycles.eq(self.busy_cycles),
                resp.read_n.eq(read_n),
                self.response.valid.eq(1), state.eq(SequencerState.RESPOND),
            ]

        with m.Switch(state):
            with m.Case(SequencerState.IDLE):
                m.d.sync += wait.eq(0)
                with m.If(self.request.valid):
                    with m.If(kind == ResponseKind.STATUS_ONLY):
                        with m.If((req.verdict == Status.OK) & (req.cmd == Command.RESET)):
                            m.d.sync += state.eq(SequencerState.CLEAR)
                        with m.Else():
                            issue()
                    with m.Elif(req.cmd == Command.LOAD):
                        m.d.sync += state.eq(SequencerState.DRAIN)
                    with m.Elif(kind == ResponseKind.READ):
                        # Release the bytes of the previous READ; the level is taken on the
                        # next cycle, when the release shows in it.
                        m.d.comb += [self.results_commit.eq((wait == 0) & ~req.dup),
                                     self.results_rewind.eq((wait == 0) & req.dup)]
                        m.d.sync += wait.eq(1)
                        with m.If(wait == 1):
                            issue()
                    with m.Else():
                        issue()
            with m.Case(SequencerState.CLEAR):
                m.d.comb += [self.core_clear.eq(1), self.flush.eq(1)]
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == CLEAR_CYCLES - 1):
                    issue()
            with m.Case(SequencerState.DRAIN):
                m.d.sync += wait.eq(wait + 1)
                with m.If(self.queue_idle):
                    m.d.sync += [wait.eq(0), state.eq(SequencerState.SETTLE)]
                with m.Elif(wait == self.timeout_cycles - 1):
                    issue()
            with m.Case(SequencerState.SETTLE):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == self.settle_cycles - 1):
                    issue()
            with m.Case(SequencerState.RESPOND):
                with m.If(self.response.ready):
                    m.d.comb += self.request.ready.eq(1)
                    m.d.sync += [self.response.valid.eq(0), state.eq(SequencerState.IDLE)]
        return m
