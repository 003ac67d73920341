"""The host link: frame decoder and response encoder around the accelerator core.

`HostLink` turns one byte stream in and one byte stream out into the protocol of
`firmware/PROTOCOL.md` (framing and CRC in `firmware/protocol.py`), and drives the core's
`load`, `tokens` and `results` streams. `HostLinkTop` gives it AXI4-Stream-named byte ports for
the Verilator cosimulation and board bridges; `generate()` writes that top as Verilog:

    python -m hw.host_link --config cfg.json -o build/top.v
"""

from __future__ import annotations

import argparse
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from firmware.protocol import LINK_VERSION, RESPONSE, SOF, STATUS_BYTES, Command
from hw.accelerator import STATUS_LAYOUT
from hw.config import ArrayConfig
from hw.status import Status

#: Layout of the core's three byte streams (the `last` bit marks the end of a record or input).
BYTE_LAST = data.StructLayout({"data": 8, "last": 1})
#: Layout of the core's status output.
CORE_STATUS = STATUS_LAYOUT


def core_signature() -> wiring.Signature:
    """The interface `HostLink` expects of a core (that of `hw.accelerator.Accelerator`)."""
    return wiring.Signature({
        "load": In(stream.Signature(BYTE_LAST)),
        "tokens": In(stream.Signature(BYTE_LAST)),
        "results": Out(stream.Signature(BYTE_LAST)),
        "status": Out(CORE_STATUS),
        "clear": In(1),
    })


def _crc16_terms() -> list[tuple[list[int], list[int]]]:
    """For each CRC bit after one byte: the old CRC bits and byte bits it is the XOR of."""
    # Run the bit-serial CRC on sets of symbols (XOR is symmetric difference), so the gateware
    # gets one flat XOR per bit instead of eight nested shift steps.
    crc = [frozenset([("c", i)]) for i in range(16)]
    for i in range(8):
        crc[8 + i] = crc[8 + i] ^ {("b", i)}
    for _ in range(8):
        top = crc[15]
        crc = [frozenset()] + crc[:15]
        for bit in range(16):
            if 0x1021 >> bit & 1:
                crc[bit] = crc[bit] ^ top
    return [(sorted(i for k, i in bit if k == "c"), sorted(i for k, i in bit if k == "b"))
            for bit in crc]


_CRC16_TERMS = _crc16_terms()


def _crc16_byte(crc, byte):
    """One byte of CRC-16/CCITT-FALSE as logic: 16 XOR trees of at most 10 inputs each."""
    bits = []
    for crc_bits, byte_bits in _CRC16_TERMS:
        terms = [crc[i] for i in crc_bits] + [byte[i] for i in byte_bits]
        value = terms[0]
        for term in terms[1:]:
            value = value ^ term
        bits.append(value)
    return Cat(*bits)


def _pow2_at_least(value: int) -> int:
    return 1 << (value - 1).bit_length()


class HostLink(wiring.Component):
    """Frame decoder + response encoder + token queue + result buffer around a core.

    Request path: a frame's payload is written tentatively into the *queue* (one memory of
    `queue_depth` entries of data, `last` and a destination bit) while its CRC runs; the write
    pointer is committed only when the CRC and the command check out, and rolled back
    otherwise, so the core never sees a byte of a bad frame (no half-loaded weights). A
    forwarder pops committed entries into the core's `load` or `tokens` stream in order, at one
    byte per cycle, independently of the decoder: the host streams the next inputs while the
    core computes, and the decoder never waits on the core (a LOAD waits for the queue to drain
    so that its response carries the core's verdict, bounded by `timeout_cycles`). Results from
    the core go into a FIFO of `result_depth` bytes that READ empties.

    Errors: a bad CRC, an unknown command, a length over `max_payload` (or wrong for the
    command), a full queue (BUSY), INFER before a program is ready (NOT_LOADED) and a frame that
    stops for `timeout_cycles` (TIMEOUT) each get a one-byte-status response; the frame is
    dropped and the decoder hunts for the next start marker.

    Latency: a response starts 2 cycles after the last CRC byte (LOAD: after the queue drains
    plus `settle_cycles`; RESET: after 4 clear cycles). Throughput: one byte per cycle on each
    stream. Cost: the queue (`queue_depth` x 10 bits) and result FIFO (`result_depth` x 9 bits)
    memories, two CRC-16 byte units, two 32-bit counters, about 300 flip-flops of control.

    `test_hooks` adds a `stall` input (bit 0: forwarder to the core, bit 1: results from the
    core) so test benches can throttle the internal streams too.
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
            if value & (value - 1) or value < self.max_payload or value > 0xFFFF:
                raise ValueError(f"{name} = {value} is not allowed: a power of two, at least "
                                 f"max_payload ({self.max_payload}) and below 65536")
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
        super().__init__(members)

    def elaborate(self, platform):
        # Design: the decoder owns the tentative write pointer, the forwarder the read pointer;
        # they meet only at the committed write pointer, so frames can be received while earlier
        # ones are still being forwarded. Pointers carry one extra bit to tell full from empty.
        m = Module()
        m.submodules.core = core = self.core
        stall = self.stall if self.test_hooks else Const(0, 2)
        max_payload = self.max_payload

        # ---- queue: tentative writes, commit/rollback, forwarder ------------------------------
        qbits = self.queue_depth.bit_length()  # log2(depth) + 1
        m.submodules.queue = queue = memory.Memory(
            shape=unsigned(10), depth=self.queue_depth, init=[])
        wport = queue.write_port()
        rport = queue.read_port()
        wr = Signal(qbits)  # committed write pointer
        wr_tmp = Signal(qbits)  # where the frame being received writes
        rd = Signal(qbits)
        used = Signal(qbits)
        m.d.comb += used.eq(wr - rd)
        queue_free = Signal(16)
        m.d.comb += queue_free.eq(self.queue_depth - used)

        flush = Signal()  # RESET: empty every queue
        out_valid = Signal()
        out_dest_tokens = rport.data[9]
        taken = Signal()
        m.d.comb += taken.eq(out_valid & ((out_dest_tokens & core.tokens.ready)
                                          | (~out_dest_tokens & core.load.ready)))
        fetch = Signal()
        m.d.comb += [
            fetch.eq((rd != wr) & (~out_valid | taken) & ~stall[0] & ~flush),
            rport.addr.eq(rd[:qbits - 1]),
            rport.en.eq(fetch),
            core.load.payload.data.eq(rport.data[:8]),
            core.load.payload.last.eq(rport.data[8]),
            core.tokens.payload.data.eq(rport.data[:8]),
            core.tokens.payload.last.eq(rport.data[8]),
            core.load.valid.eq(out_valid & ~out_dest_tokens),
            core.tokens.valid.eq(out_valid & out_dest_tokens),
        ]
        with m.If(flush):
            m.d.sync += [rd.eq(0), out_valid.eq(0)]
        with m.Elif(fetch):
            m.d.sync += [rd.eq(rd + 1), out_valid.eq(1)]
        with m.Elif(taken):
            m.d.sync += out_valid.eq(0)
        queue_idle = Signal()
        m.d.comb += queue_idle.eq((rd == wr) & ~out_valid)

        # ---- results: core -> FIFO, counters ---------------------------------------------------
        results = fifo.SyncFIFOBuffered(width=9, depth=self.result_depth)
        m.submodules.results = ResetInserter(flush)(results)
        push = Signal()
        m.d.comb += [
            core.results.ready.eq(results.w_rdy & ~stall[1] & ~flush),
            push.eq(core.results.valid & core.results.ready),
            results.w_data.eq(Cat(core.results.payload.data, core.results.payload.last)),
            results.w_en.eq(push),
        ]
        results_done = Signal(32)
        busy_cycles = Signal(32)
        with m.If(flush):
            m.d.sync += [results_done.eq(0), busy_cycles.eq(0)]
        with m.Else():
            with m.If(push & core.results.payload.last):
                m.d.sync += results_done.eq(results_done + 1)
            with m.If(core.status.busy):
                m.d.sync += busy_cycles.eq(busy_cycles + 1)
        m.d.comb += self.status.eq(core.status)

        # ---- decoder -----
        rx = self.rx
        byte = rx.payload
        # One CRC register and one byte unit for both directions: a response is only encoded
        # while the decoder waits for it (`crc_tx`: the byte is the one being sent).
        crc = Signal(16)
        crc_tx = Signal()
        crc_next = _crc16_byte(crc, Mux(crc_tx, self.tx.payload.data, byte))
        cmd = Signal(8)
        length = Signal(16)
        remaining = Signal((max_payload + 1).bit_length())  # a checked length: <= max_payload
        arg = Signal(16)  # the last two payload bytes, little-endian (READ's byte count)
        space_ok = Signal()
        # One counter for the frame timeout (idle cycles inside a frame) and the waits outside
        # frames (CLEAR, DRAIN, SETTLE): the decoder is in one or the other.
        idle = Signal(range(max(self.timeout_cycles, self.settle_cycles) + 1))
        wait = idle
        seg_left = Signal(15)
        seg_more = Signal()
        seg_state = Signal(2)  # 0: header low byte, 1: header high byte, 2: data
        seg_bad = Signal()
        verdict = Signal(8)
        kind = Signal(3)  # response payload: 0 status only, 1 STATUS, 2 queue free, 3 READ
        tx_start = Signal()
        tx_done = Signal()

        is_load = cmd == Command.LOAD
        is_infer = cmd == Command.INFER
        known = Signal()
        m.d.comb += known.eq((cmd == Command.RESET) | (cmd == Command.STATUS) | is_load
                             | is_infer | (cmd == Command.READ))
        length_ok = Signal()
        with m.Switch(cmd):
            with m.Case(Command.RESET, Command.STATUS):
                m.d.comb += length_ok.eq(length == 0)
            with m.Case(Command.READ):
                m.d.comb += length_ok.eq(length == 2)
            with m.Case(Command.LOAD):
                m.d.comb += length_ok.eq(length != 0)
            with m.Case(Command.INFER):
                m.d.comb += length_ok.eq((length >= 3) & (seg_state == 0) & ~seg_bad)

        write = Signal()
        write_last = Signal()
        m.d.comb += [
            wport.addr.eq(wr_tmp[:qbits - 1]),
            wport.data.eq(Cat(byte, write_last, is_infer)),
            wport.en.eq(write),
        ]
        with m.If(write):
            m.d.sync += wr_tmp.eq(wr_tmp + 1)

        in_frame = Signal()
        hunting = Signal()
        with m.If(in_frame & ~rx.valid):
            m.d.sync += idle.eq(idle + 1)
        with m.Elif(in_frame | hunting):
            m.d.sync += idle.eq(0)
        timed_out = in_frame & (idle == self.timeout_cycles - 1)

        def frame_state():
            # Every state inside a frame accepts bytes and drops the frame with a TIMEOUT
            # response when none arrives for `timeout_cycles`.
            m.d.comb += [rx.ready.eq(1), in_frame.eq(1)]
            with m.If(timed_out):
                m.d.sync += [verdict.eq(Status.TIMEOUT), kind.eq(0), wr_tmp.eq(wr)]
                m.next = "RESPOND"

        with m.FSM(name="decoder"):
            with m.State("HUNT"):
                m.d.comb += [rx.ready.eq(1), hunting.eq(1)]
                with m.If(rx.valid & (byte == SOF)):
                    m.d.sync += [crc.eq(0xFFFF), seg_state.eq(0), seg_bad.eq(0)]
                    m.next = "CMD"
            for state, target, action in (
                ("CMD", "LEN0", cmd.eq(byte)),
                ("LEN0", "LEN1", length[:8].eq(byte)),
            ):
                with m.State(state):
                    frame_state()
                    with m.If(rx.valid):
                        m.d.sync += [crc.eq(crc_next), action]
                        m.next = target
            with m.State("LEN1"):
                frame_state()
                full = Cat(length[:8], byte)
                with m.If(rx.valid):
                    m.d.sync += [crc.eq(crc_next), length[8:].eq(byte), remaining.eq(full),
                                 space_ok.eq(queue_free >= full)]
                    with m.If(full > max_payload):
                        m.d.sync += [verdict.eq(Status.BAD_LENGTH), kind.eq(0)]
                        m.next = "RESPOND"
                    with m.Elif(full == 0):
                        m.next = "CRC0"
                    with m.Else():
                        m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                frame_state()
                with m.If(rx.valid):
                    m.d.sync += [crc.eq(crc_next), remaining.eq(remaining - 1),
                                 arg.eq(Cat(arg[8:], byte))]
                    with m.If(remaining == 1):
                        m.next = "CRC0"
                    with m.If(is_load & space_ok):
                        m.d.comb += [write.eq(1), write_last.eq(remaining == 1)]
                    with m.If(is_infer):
                        with m.Switch(seg_state):
                            with m.Case(0):
                                m.d.sync += [seg_left[:8].eq(byte), seg_state.eq(1)]
                            with m.Case(1):
                                m.d.sync += [seg_left[8:].eq(byte[:7]), seg_more.eq(byte[7]),
                                             seg_state.eq(2)]
                                with m.If(Cat(seg_left[:8], byte[:7]) == 0):
                                    m.d.sync += seg_bad.eq(1)
                            with m.Case(2):
                                m.d.comb += [write.eq(space_ok),
                                             write_last.eq((seg_left == 1) & ~seg_more)]
                                m.d.sync += seg_left.eq(seg_left - 1)
                                with m.If(seg_left == 1):
                                    m.d.sync += seg_state.eq(0)
            with m.State("CRC0"):
                frame_state()
                with m.If(rx.valid):
                    m.d.sync += crc.eq(crc_next)
                    m.next = "CRC1"
            with m.State("CRC1"):
                frame_state()
                with m.If(rx.valid):
                    m.d.sync += crc.eq(crc_next)
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                accept = Signal()
                with m.If(crc != 0):
                    m.d.sync += verdict.eq(Status.BAD_CRC)
                with m.Elif(~known):
                    m.d.sync += verdict.eq(Status.UNKNOWN_COMMAND)
                with m.Elif(~length_ok):
                    m.d.sync += verdict.eq(Status.BAD_LENGTH)
                with m.Elif((is_load | is_infer) & ~space_ok):
                    m.d.sync += verdict.eq(Status.BUSY)
                with m.Elif(is_infer & ~core.status.ready):
                    m.d.sync += verdict.eq(Status.NOT_LOADED)
                with m.Else():
                    m.d.comb += accept.eq(1)
                    m.d.sync += verdict.eq(Status.OK)
                with m.If(accept & (is_load | is_infer)):
                    m.d.sync += wr.eq(wr_tmp)
                with m.Else():
                    m.d.sync += wr_tmp.eq(wr)
                m.d.sync += wait.eq(0)
                with m.If(~accept):
                    m.d.sync += kind.eq(0)
                    m.next = "RESPOND"
                with m.Elif(cmd == Command.RESET):
                    m.d.sync += kind.eq(0)
                    m.next = "CLEAR"
                with m.Elif(cmd == Command.STATUS):
                    m.d.sync += kind.eq(1)
                    m.next = "RESPOND"
                with m.Elif(is_load):
                    m.d.sync += kind.eq(2)
                    m.next = "DRAIN"
                with m.Elif(is_infer):
                    m.d.sync += kind.eq(2)
                    m.next = "RESPOND"
                with m.Else():
                    m.d.sync += kind.eq(3)
                    m.next = "RESPOND"
            with m.State("CLEAR"):
                # Hold the core's clear and the flush for a few cycles so that a result byte in
                # flight in the same cycle is dropped too.
                m.d.comb += [core.clear.eq(1), flush.eq(1)]
                m.d.sync += [wr.eq(0), wr_tmp.eq(0), wait.eq(wait + 1)]
                with m.If(wait == 3):
                    m.next = "RESPOND"
            with m.State("DRAIN"):
                # Wait until the core has taken the whole LOAD payload, then give it
                # `settle_cycles` to check the records, so the response carries its verdict.
                m.d.sync += wait.eq(wait + 1)
                with m.If(~queue_idle & (wait == self.timeout_cycles - 1)):
                    m.next = "RESPOND"
                with m.Elif(queue_idle):
                    m.d.sync += wait.eq(0)
                    m.next = "SETTLE"
            with m.State("SETTLE"):
                m.d.sync += wait.eq(wait + 1)
                with m.If(wait == self.settle_cycles - 1):
                    m.next = "RESPOND"
            with m.State("RESPOND"):
                m.d.comb += tx_start.eq(1)
                m.next = "WAIT_TX"
            with m.State("WAIT_TX"):
                with m.If(tx_done):
                    m.next = "HUNT"

        # ---- encoder -----
        tx = self.tx
        tcrc = crc
        # Response lengths and byte indices: at most a frame's payload.
        LW = (max_payload + 1).bit_length()
        resp_len = Signal(LW)
        pidx = Signal(LW)
        read_n = Signal(LW)
        ends = Signal(8)
        status_byte = Signal(8)
        # The response status: the decoder's verdict when it rejected the frame, else the
        # core's sticky error (OK when all is well).
        m.d.comb += status_byte.eq(verdict)
        with m.If(verdict == Status.OK):
            m.d.comb += status_byte.eq(core.status.error)
        flags = Cat(core.status.ready, core.status.busy, queue_idle, Const(0, 5))
        avail = Signal(16)
        m.d.comb += avail.eq(results.r_level)
        # A snapshot of the values a response reports, taken as it starts, so multi-byte
        # values cannot tear while the bytes go out (the constants are not stored).
        live = Cat(status_byte, flags, queue_free, avail, results_done, busy_cycles)
        resp = Signal(len(live))
        resp_bytes = [resp[8 * i:8 * i + 8] for i in range(len(live) // 8)]
        # STATUS: status, flags, version, queue_free u16, results_level u16, results_done u32,
        # busy_cycles u32, max_payload u16, queue_depth u16, result_depth u16.
        status_payload = (resp_bytes[:2] + [Const(LINK_VERSION, 8)] + resp_bytes[2:]
                          + [Const(v >> (8 * i) & 0xFF, 8)
                             for v in (max_payload, self.queue_depth, self.result_depth)
                             for i in range(2)])
        assert len(status_payload) == STATUS_BYTES
        # The other responses start: status, queue_free u16.
        short_payload = [resp_bytes[0]] + resp_bytes[2:4]
        limit = Signal(16)
        m.d.comb += limit.eq(max_payload - 4)
        n_expr = Signal(16)
        with m.If((arg <= limit) & (arg <= avail)):
            m.d.comb += n_expr.eq(arg)
        with m.Elif(limit <= avail):
            m.d.comb += n_expr.eq(limit)
        with m.Else():
            m.d.comb += n_expr.eq(avail)

        # One CRC unit for the whole response: it follows the bytes actually sent, from the
        # command to the last payload byte (`crc_on`), whatever state chose them.
        crc_on = Signal()
        m.d.comb += crc_tx.eq(crc_on)
        with m.If(crc_on & tx.valid & tx.ready):
            m.d.sync += tcrc.eq(crc_next)

        def send(value, nxt, last=0):
            m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(value), tx.payload.last.eq(last),
                         crc_on.eq(1)]
            with m.If(tx.ready):
                m.next = nxt

        with m.FSM(name="encoder"):
            with m.State("IDLE"):
                with m.If(tx_start):
                    m.d.sync += [tcrc.eq(0xFFFF), pidx.eq(0), ends.eq(0), read_n.eq(n_expr),
                                 resp.eq(live)]
                    with m.Switch(kind):
                        with m.Case(0):
                            m.d.sync += resp_len.eq(1)
                        with m.Case(1):
                            m.d.sync += resp_len.eq(STATUS_BYTES)
                        with m.Case(2):
                            m.d.sync += resp_len.eq(3)
                        with m.Case(3):
                            m.d.sync += resp_len.eq(n_expr + 4)
                    m.next = "SOF"
            with m.State("SOF"):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(SOF)]
                with m.If(tx.ready):
                    m.next = "CMD"
            with m.State("CMD"):
                send(cmd | RESPONSE, "LEN0")
            with m.State("LEN0"):
                send(resp_len[:8], "LEN1")
            with m.State("LEN1"):
                send(resp_len >> 8, "BODY")
            with m.State("BODY"):
                in_data = (kind == 3) & (pidx >= 3) & (pidx < read_n + 3)
                is_ends = (kind == 3) & (pidx == read_n + 3)
                value = Signal(8)
                ok = Signal()
                with m.If(in_data):
                    m.d.comb += [value.eq(results.r_data[:8]), ok.eq(results.r_rdy)]
                with m.Elif(is_ends):
                    m.d.comb += [value.eq(ends), ok.eq(1)]
                with m.Else():
                    m.d.comb += ok.eq(1)
                    with m.Switch(Cat(pidx[:5], kind == 1)):
                        for i, byte_ in enumerate(short_payload):
                            with m.Case(i):
                                m.d.comb += value.eq(byte_)
                        for i, byte_ in enumerate(status_payload):
                            with m.Case(32 + i):
                                m.d.comb += value.eq(byte_)
                m.d.comb += [tx.valid.eq(ok), tx.payload.data.eq(value), crc_on.eq(1)]
                with m.If(tx.ready & ok):
                    m.d.sync += pidx.eq(pidx + 1)
                    with m.If(in_data):
                        m.d.comb += results.r_en.eq(1)
                        with m.If(results.r_data[8] & (ends != 0xFF)):
                            m.d.sync += ends.eq(ends + 1)
                    with m.If(pidx == resp_len - 1):
                        m.next = "CRC0"
            with m.State("CRC0"):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(tcrc[8:])]
                with m.If(tx.ready):
                    m.next = "CRC1"
            with m.State("CRC1"):
                m.d.comb += [tx.valid.eq(1), tx.payload.data.eq(tcrc[:8]),
                             tx.payload.last.eq(1)]
                with m.If(tx.ready):
                    m.d.comb += tx_done.eq(1)
                    m.next = "IDLE"
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


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the host-link top as Verilog.")
    parser.add_argument("--config", help="ArrayConfig JSON (default: ArrayConfig())")
    parser.add_argument("-o", "--output", default="build/verilog/spikeformer_top.v")
    args = parser.parse_args(argv)
    config = ArrayConfig.load(args.config) if args.config else ArrayConfig()
    generate(config, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
