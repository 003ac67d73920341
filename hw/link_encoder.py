"""The host link's response encoder: a response descriptor in, a framed byte stream out."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal
from amaranth.lib import enum, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.protocol import LINK_CRC, LINK_VERSION, RESPONSE, SOF, STATUS_BYTES
from hw.link_common import BYTE_LAST, ResponseKind, response_layout


class EncoderState(enum.Enum, shape=4):
    SOF = 0  #: waiting for a response; its start marker goes out first
    CMD = 1
    SEQ = 2
    LEN0 = 3
    LEN1 = 4
    HEAD = 5  #: the payload bytes the descriptor holds (all of them but READ's data and ends)
    DATA = 6  #: READ: result bytes
    ENDS = 7  #: READ: the count of results that ended in them
    CRC0 = 8
    CRC1 = 9


class ResponseEncoder(wiring.Component):
    """Response encoder: frames one `response` descriptor onto `tx`.

    Sends `SOF | cmd | seq | len | payload | crc` (the request's command with bit 7 set and
    its sequence number), the payload chosen by the descriptor's kind:
    status byte; the 21-byte STATUS payload (its constant fields from the link's
    configuration); status and queue_free; or for READ status, queue_free, `read_n` bytes
    from `results` and the count of results that end in them. Takes the descriptor (`ready`)
    with the frame's last byte, so the descriptor's register is the only copy of its values.
    `tx.payload.last` marks the last byte of each frame.

    Latency: the start marker is valid the cycle the descriptor is. Throughput: one byte per
    cycle (READ data: as `results` delivers), but the CRC takes a byte a cycle after it was
    sent, so the first CRC byte waits a cycle when `tx` took the last payload byte at once.
    Cost: one `amaranth.lib.crc.Processor` (16 XOR trees, 16 flip-flops) and its 9-bit input
    register, a head-byte index, a data down-counter, an ends counter and the
    21-way multiplexer of the STATUS payload; on the iCE40 at max_payload 256: 326 LUT4,
    21 carries, 42 flip-flops.
    """

    def __init__(self, max_payload: int, queue_depth: int, result_depth: int):
        self.max_payload = max_payload
        self.queue_depth = queue_depth
        self.result_depth = result_depth
        super().__init__({
            "response": In(stream.Signature(response_layout(max_payload))),
            "results": In(stream.Signature(BYTE_LAST)),
            "tx": Out(stream.Signature(BYTE_LAST)),
        })

    def elaborate(self, platform):
        m = Module()
        resp = self.response.payload
        tx = self.tx
        state = Signal(EncoderState)
        crc = LINK_CRC.create()
        # Restarted by a synchronous reset between frames (cheaper than its `start` input).
        m.submodules.crc = ResetInserter(state == EncoderState.SOF)(crc)
        index = Signal(range(STATUS_BYTES))  # HEAD: payload byte being sent
        left = Signal(range(self.max_payload + 1))  # DATA: result bytes still to send
        ends = Signal(8)  # READ: results ending in the bytes sent so far (saturating)
        is_read = resp.kind == ResponseKind.READ
        length = Signal(range(self.max_payload + 1))  # the payload's
        head_last = Signal(range(STATUS_BYTES))  # index of the last HEAD byte
        with m.Switch(resp.kind):
            with m.Case(ResponseKind.STATUS_ONLY):
                m.d.comb += [length.eq(1), head_last.eq(0)]
            with m.Case(ResponseKind.STATUS):
                m.d.comb += [length.eq(STATUS_BYTES), head_last.eq(STATUS_BYTES - 1)]
            with m.Case(ResponseKind.QUEUE_FREE):
                m.d.comb += [length.eq(3), head_last.eq(2)]
            with m.Case(ResponseKind.READ):
                m.d.comb += [length.eq(resp.read_n + 4), head_last.eq(2)]

        def little(value, count):
            return [value[8 * i:8 * i + 8] for i in range(count)]

        # STATUS: error, flags, version, queue_free u16, results_level u16, results_done u32,
        # busy_cycles u32, max_payload u16, queue_depth u16, result_depth u16.
        constants = [Const(value >> (8 * i) & 0xFF, 8)
                     for value in (self.max_payload, self.queue_depth, self.result_depth)
                     for i in range(2)]
        status_payload = ([resp.status, resp.flags, Const(LINK_VERSION, 8)]
                          + little(resp.queue_free, 2) + little(resp.results_level, 2)
                          + little(resp.results_done, 4) + little(resp.busy_cycles, 4)
                          + constants)
        assert len(status_payload) == STATUS_BYTES
        short_payload = [resp.status] + little(resp.queue_free, 2)

        # The HEAD byte at `index`.
        head = Signal(8)
        with m.Switch(Cat(index, resp.kind == ResponseKind.STATUS)):
            for i, byte in enumerate(short_payload):
                with m.Case(i):
                    m.d.comb += head.eq(byte)
            for i, byte in enumerate(status_payload):
                with m.Case(1 << len(index) | i):
                    m.d.comb += head.eq(byte)

        sent = tx.valid & tx.ready
        # The CRC covers the bytes from the command to the last payload byte. It takes each
        # byte a cycle after it went out, from a register: the byte's multiplexers (state,
        # head index, the STATUS payload) and the CRC's XOR trees are two paths, not one.
        crc_byte, crc_take = Signal(8), Signal()
        m.d.sync += [
            crc_byte.eq(tx.payload.data),
            crc_take.eq(sent & ~state.as_value().matches(EncoderState.SOF, EncoderState.CRC0,
                                                         EncoderState.CRC1)),
        ]
        m.d.comb += [crc.data.eq(crc_byte), crc.valid.eq(crc_take)]
        with m.If(state == EncoderState.SOF):
            m.d.sync += [index.eq(0), ends.eq(0), left.eq(resp.read_n)]
        after_head = Mux(~is_read, EncoderState.CRC0,
                         Mux(resp.read_n == 0, EncoderState.ENDS, EncoderState.DATA))

        def send(byte, then, valid=1, last=0):
            m.d.comb += [tx.valid.eq(valid), tx.payload.data.eq(byte), tx.payload.last.eq(last)]
            with m.If(sent):
                m.d.sync += state.eq(then)

        with m.Switch(state):
            with m.Case(EncoderState.SOF):
                send(SOF, EncoderState.CMD, valid=self.response.valid)
            with m.Case(EncoderState.CMD):
                send(resp.cmd | RESPONSE, EncoderState.SEQ)
            with m.Case(EncoderState.SEQ):
                send(resp.seq, EncoderState.LEN0)
            with m.Case(EncoderState.LEN0):
                send(length[:8], EncoderState.LEN1)
            with m.Case(EncoderState.LEN1):
                send(length >> 8, EncoderState.HEAD)
            with m.Case(EncoderState.HEAD):
                send(head, EncoderState.HEAD)
                with m.If(sent):
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == head_last):
                        m.d.sync += state.eq(after_head)
            with m.Case(EncoderState.DATA):
                send(self.results.payload.data, EncoderState.DATA, valid=self.results.valid)
                m.d.comb += self.results.ready.eq(tx.ready)
                with m.If(sent):
                    m.d.sync += left.eq(left - 1)
                    with m.If(self.results.payload.last & (ends != 0xFF)):
                        m.d.sync += ends.eq(ends + 1)
                    with m.If(left == 1):
                        m.d.sync += state.eq(EncoderState.ENDS)
            with m.Case(EncoderState.ENDS):
                send(ends, EncoderState.CRC0)
            with m.Case(EncoderState.CRC0):
                # (not while the last payload byte is still going into the CRC)
                send(crc.crc[8:], EncoderState.CRC1, valid=~crc_take)
            with m.Case(EncoderState.CRC1):
                send(crc.crc[:8], EncoderState.SOF, last=1)
                m.d.comb += self.response.ready.eq(sent)
        return m
