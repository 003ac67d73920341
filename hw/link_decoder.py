"""The host link's frame decoder: request bytes in, checked requests and queue writes out."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, ResetInserter, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.protocol import LINK_CRC, SOF, Command
from hw.link_common import QUEUE_WRITE, REQUEST
from hw.status import Status


class DecoderState(enum.Enum, shape=4):
    HUNT = 0  #: skipping bytes until a start marker
    CMD = 1
    SEQ = 2
    LEN0 = 3
    LEN1 = 4
    PAYLOAD = 5
    CRC0 = 6
    CRC1 = 7
    DECIDE = 8  #: the frame is in: check it (the verdict into registers)
    HOLD = 9  #: a request is out; wait until its response has been sent
    APPLY = 10  #: commit or roll back its payload by the registered verdict; the request out


class SegmentState(enum.Enum, shape=2):
    """Where an INFER payload's byte falls: segment header (two bytes) or segment data."""

    HEADER_LO = 0
    HEADER_HI = 1
    DATA = 2


class FrameDecoder(wiring.Component):
    """Frame decoder: start marker, header, length check, payload, CRC check, verdict.

    Takes request bytes from `rx` (always ready except while a request is out) and writes LOAD
    payloads, and the data bytes of INFER segments with `last` on the end of each input,
    tentatively into the queue (`queue`); when the frame is in, it checks the CRC residue, the
    command, the length for the command, the queue's room (measured at the length field) and,
    for INFER, that the core holds a program, then commits or rolls back the payload and puts
    one `request` out (command, sequence number, verdict, READ's argument). It waits for the
    request to be taken, i.e. for its response to be sent, before hunting for the next start
    marker.

    Duplicates: the sequence number of the last accepted request is kept; a request that checks
    out and carries the same number is a retry of it (its response was lost). It is accepted
    without queueing its payload again (LOAD, INFER: no queue room needed) and marked `dup`, so
    the sequencer sends a READ's bytes again instead of releasing them.

    A length over `max_payload` is answered right after the length field (BAD_LENGTH, hunt from
    the next byte); a frame that stops for `timeout_cycles` is rolled back (TIMEOUT).

    Latency: `request` is valid 3 cycles after the last CRC byte was taken (1 after a rejected
    length, `timeout_cycles` after the last byte of a stalled frame): DECIDE registers the
    verdict and APPLY commits by it, so the checks and the queue's pointer enables are two
    paths. Throughput: one byte per
    cycle. Cost: one `amaranth.lib.crc.Processor` (16 XOR trees, 16 flip-flops), a timeout
    counter of log2(`timeout_cycles`) bits, the length/remaining/segment counters, the request
    register and the last sequence number; on the iCE40 at max_payload 256 (unflattened,
    `scripts/link_cost.py`): 235 LUT4, 72 carries, 128 flip-flops.
    """

    def __init__(self, max_payload: int, timeout_cycles: int):
        self.max_payload = max_payload
        self.timeout_cycles = timeout_cycles
        super().__init__({
            "rx": In(stream.Signature(8)),
            "queue": Out(QUEUE_WRITE),
            "core_ready": In(1),  #: the core holds a committed program (INFER allowed)
            "request": Out(stream.Signature(REQUEST)),
        })

    def elaborate(self, platform):
        m = Module()
        rx, queue, request = self.rx, self.queue, self.request
        byte = rx.payload
        req = request.payload  # a register: driven on the clock only
        state = Signal(DecoderState)
        # The CRC restarts while hunting (a synchronous reset: the flip-flops' own set/reset
        # pins, where `start` would put a multiplexer in front of every XOR tree).
        crc = LINK_CRC.create()
        m.submodules.crc = ResetInserter(state == DecoderState.HUNT)(crc)
        length = Signal(16)
        remaining = Signal(range(self.max_payload + 1))
        space_ok = Signal()  # the queue has room for the whole payload
        seg_state = Signal(SegmentState)
        seg_left = Signal(15)
        seg_more = Signal()
        seg_bad = Signal()  # an INFER segment header said 0 bytes
        idle = Signal(range(self.timeout_cycles))
        last_seq = Signal(8)  # of the last accepted request
        last_valid = Signal()
        accepted = Signal()  # DECIDE's verdict: the request is accepted (APPLY acts on it)

        is_load = req.cmd == Command.LOAD
        is_infer = req.cmd == Command.INFER
        in_frame = Signal()
        m.d.comb += [
            in_frame.eq(~state.as_value().matches(DecoderState.HUNT, DecoderState.DECIDE,
                                       DecoderState.APPLY, DecoderState.HOLD)),
            rx.ready.eq(in_frame | (state == DecoderState.HUNT)),
            queue.data.eq(byte),
            queue.tokens.eq(is_infer),
        ]
        m.d.comb += [crc.data.eq(byte), crc.valid.eq(rx.valid & in_frame)]

        with m.Switch(state):
            with m.Case(DecoderState.HUNT):
                with m.If(rx.valid & (byte == SOF)):
                    m.d.sync += [seg_state.eq(SegmentState.HEADER_LO), seg_bad.eq(0)]
                    m.d.sync += state.eq(DecoderState.CMD)
            with m.Case(DecoderState.CMD):
                with m.If(rx.valid):
                    m.d.sync += [req.cmd.eq(byte), state.eq(DecoderState.SEQ)]
            with m.Case(DecoderState.SEQ):
                with m.If(rx.valid):
                    m.d.sync += [req.seq.eq(byte), state.eq(DecoderState.LEN0)]
            with m.Case(DecoderState.LEN0):
                with m.If(rx.valid):
                    m.d.sync += [length[:8].eq(byte), state.eq(DecoderState.LEN1)]
            with m.Case(DecoderState.LEN1):
                full = Cat(length[:8], byte)
                with m.If(rx.valid):
                    m.d.sync += [length[8:].eq(byte), remaining.eq(full),
                                 space_ok.eq(queue.free >= full)]
                    with m.If(full > self.max_payload):
                        m.d.sync += [req.verdict.eq(Status.BAD_LENGTH), req.dup.eq(0),
                                     request.valid.eq(1), state.eq(DecoderState.HOLD)]
                    with m.Elif(full == 0):
                        m.d.sync += state.eq(DecoderState.CRC0)
                    with m.Else():
                        m.d.sync += state.eq(DecoderState.PAYLOAD)
            with m.Case(DecoderState.PAYLOAD):
                with m.If(rx.valid):
                    m.d.sync += [remaining.eq(remaining - 1), req.arg.eq(Cat(req.arg[8:], byte))]
                    with m.If(remaining == 1):
                        m.d.sync += state.eq(DecoderState.CRC0)
                    with m.If(is_load):
                        m.d.comb += [queue.en.eq(space_ok), queue.last.eq(remaining == 1)]
                    with m.If(is_infer):
                        self._segment(m, queue, byte, space_ok, seg_state, seg_left, seg_more,
                                      seg_bad)
            with m.Case(DecoderState.CRC0):
                with m.If(rx.valid):
                    m.d.sync += state.eq(DecoderState.CRC1)
            with m.Case(DecoderState.CRC1):
                with m.If(rx.valid):
                    m.d.sync += state.eq(DecoderState.DECIDE)
            with m.Case(DecoderState.DECIDE):
                length_ok = Signal()
                with m.Switch(req.cmd):
                    with m.Case(Command.RESET, Command.STATUS):
                        m.d.comb += length_ok.eq(length == 0)
                    with m.Case(Command.READ):
                        m.d.comb += length_ok.eq(length == 2)
                    with m.Case(Command.LOAD):
                        m.d.comb += length_ok.eq(length != 0)
                    with m.Case(Command.INFER):
                        m.d.comb += length_ok.eq((length >= 3) & ~seg_bad
                                                 & (seg_state == SegmentState.HEADER_LO))
                known = Signal()
                m.d.comb += known.eq(req.cmd.matches(*(int(c) for c in Command)))
                accept = Signal()
                dup = last_valid & (req.seq == last_seq)
                with m.If(~crc.match_detected):
                    m.d.sync += req.verdict.eq(Status.BAD_CRC)
                with m.Elif(~known):
                    m.d.sync += req.verdict.eq(Status.UNKNOWN_COMMAND)
                with m.Elif(~length_ok):
                    m.d.sync += req.verdict.eq(Status.BAD_LENGTH)
                with m.Elif(dup):
                    m.d.comb += accept.eq(1)
                    m.d.sync += req.verdict.eq(Status.OK)
                with m.Elif((is_load | is_infer) & ~space_ok):
                    m.d.sync += req.verdict.eq(Status.BUSY)
                with m.Elif(is_infer & ~self.core_ready):
                    m.d.sync += req.verdict.eq(Status.NOT_LOADED)
                with m.Else():
                    m.d.comb += accept.eq(1)
                    m.d.sync += req.verdict.eq(Status.OK)
                m.d.sync += [accepted.eq(accept), req.dup.eq(dup),
                             state.eq(DecoderState.APPLY)]
            with m.Case(DecoderState.APPLY):
                m.d.comb += [queue.commit.eq(accepted & (is_load | is_infer) & ~req.dup),
                             queue.rollback.eq(~queue.commit)]
                m.d.sync += [request.valid.eq(1), state.eq(DecoderState.HOLD)]
                with m.If(accepted):
                    m.d.sync += [last_seq.eq(req.seq), last_valid.eq(1)]
            with m.Case(DecoderState.HOLD):
                with m.If(request.ready):
                    m.d.sync += [request.valid.eq(0), state.eq(DecoderState.HUNT)]

        # Frame timeout: idle cycles inside a frame; on expiry the frame is rolled back and
        # answered with TIMEOUT (this overrides whatever the state above did this cycle).
        with m.If(in_frame & ~rx.valid):
            m.d.sync += idle.eq(idle + 1)
        with m.Else():
            m.d.sync += idle.eq(0)
        with m.If(in_frame & (idle == self.timeout_cycles - 1)):
            m.d.comb += queue.rollback.eq(1)
            m.d.sync += [req.verdict.eq(Status.TIMEOUT), req.dup.eq(0), request.valid.eq(1),
                         state.eq(DecoderState.HOLD)]
        return m

    @staticmethod
    def _segment(m, queue, byte, space_ok, seg_state, seg_left, seg_more, seg_bad):
        """One INFER payload byte: a segment header byte, or data written to the queue with
        `last` on the final byte of an input (the last segment without `more`)."""
        with m.Switch(seg_state):
            with m.Case(SegmentState.HEADER_LO):
                m.d.sync += [seg_left[:8].eq(byte), seg_state.eq(SegmentState.HEADER_HI)]
            with m.Case(SegmentState.HEADER_HI):
                m.d.sync += [seg_left[8:].eq(byte[:7]), seg_more.eq(byte[7]),
                             seg_state.eq(SegmentState.DATA)]
                with m.If(Cat(seg_left[:8], byte[:7]) == 0):
                    m.d.sync += seg_bad.eq(1)
            with m.Case(SegmentState.DATA):
                m.d.comb += [queue.en.eq(space_ok), queue.last.eq((seg_left == 1) & ~seg_more)]
                m.d.sync += seg_left.eq(seg_left - 1)
                with m.If(seg_left == 1):
                    m.d.sync += seg_state.eq(SegmentState.HEADER_LO)
