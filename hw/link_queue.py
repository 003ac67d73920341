"""The host link's buffers: the request payload queue to the core and the result buffer."""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.link_common import BYTE_LAST, QUEUE_WRITE


def _distance(m: Module, ahead, behind) -> Signal:
    """`ahead - behind` of two wrapping pointers, as an unsigned value of their width."""
    value = Signal(len(ahead))
    m.d.comb += value.eq(ahead - behind)
    return value


def _check_depth(name: str, depth: int) -> None:
    if depth & (depth - 1) or not 2 <= depth <= 0x8000:
        raise ValueError(f"{name} = {depth} is not allowed: a power of two, 2 .. 32768")


class LinkQueue(wiring.Component):
    """The payload queue between the frame decoder and the core's `load`/`tokens` streams.

    One memory of `depth` entries (data, `last`, destination). The decoder writes a frame's
    payload at a tentative pointer and then commits it (the committed pointer jumps to the
    tentative one) or rolls it back, so the core never sees a byte of a damaged frame. A
    forwarder pops committed entries in order into `load` or `tokens` by their destination bit,
    independently of the decoder: the host streams the next inputs while the core computes.
    `flush` empties everything (RESET); `hold` stops the forwarder for a cycle (test hook).

    Latency: a committed byte is valid on its stream 2 cycles after the commit (memory read).
    Throughput: one byte per cycle in and out. Cost: the memory (`depth` x 10 bits, block RAM),
    three pointers of log2(`depth`) + 1 bits, one output register bit; on the iCE40 at depth
    512: 2 block RAMs, 98 LUT4, 34 carries, 62 flip-flops.
    """

    def __init__(self, depth: int):
        _check_depth("queue_depth", depth)
        self.depth = depth
        super().__init__({
            "write": In(QUEUE_WRITE),
            "load": Out(stream.Signature(BYTE_LAST)),
            "tokens": Out(stream.Signature(BYTE_LAST)),
            "flush": In(1),
            "hold": In(1),
            "idle": Out(1),  #: nothing committed waits and nothing is in flight to the core
        })

    def elaborate(self, platform):
        # The write side owns the tentative pointer, the forwarder the read pointer; they meet
        # only at the committed pointer. Pointers carry one extra bit to tell full from empty.
        m = Module()
        bits = self.depth.bit_length()
        m.submodules.memory = mem = memory.Memory(shape=unsigned(10), depth=self.depth, init=[])
        wport = mem.write_port()
        rport = mem.read_port()
        write = self.write
        committed = Signal(bits)
        tentative = Signal(bits)
        rd = Signal(bits)
        m.d.comb += [
            write.free.eq(self.depth - _distance(m, committed, rd)),
            wport.addr.eq(tentative[:bits - 1]),
            wport.data.eq(Cat(write.data, write.last, write.tokens)),
            wport.en.eq(write.en),
        ]
        with m.If(self.flush):
            m.d.sync += [committed.eq(0), tentative.eq(0)]
        with m.Elif(write.rollback):
            m.d.sync += tentative.eq(committed)
        with m.Else():
            with m.If(write.en):
                m.d.sync += tentative.eq(tentative + 1)
            with m.If(write.commit):
                m.d.sync += committed.eq(tentative)

        out_valid = Signal()
        to_tokens = rport.data[9]
        taken = Signal()
        m.d.comb += taken.eq(out_valid & Mux(to_tokens, self.tokens.ready, self.load.ready))
        fetch = Signal()
        m.d.comb += [
            fetch.eq((rd != committed) & (~out_valid | taken) & ~self.hold & ~self.flush),
            rport.addr.eq(rd[:bits - 1]),
            rport.en.eq(fetch),
            self.idle.eq((rd == committed) & ~out_valid),
        ]
        for port, selected in ((self.load, ~to_tokens), (self.tokens, to_tokens)):
            m.d.comb += [port.payload.data.eq(rport.data[:8]), port.payload.last.eq(rport.data[8]),
                         port.valid.eq(out_valid & selected)]
        with m.If(self.flush):
            m.d.sync += [rd.eq(0), out_valid.eq(0)]
        with m.Elif(fetch):
            m.d.sync += [rd.eq(rd + 1), out_valid.eq(1)]
        with m.Elif(taken):
            m.d.sync += out_valid.eq(0)
        return m


class ResultBuffer(wiring.Component):
    """The result buffer between the core's `results` stream and the response encoder.

    One memory of `depth` entries (data, `last`). `read` streams the bytes in order from the
    read cursor; the bytes it has handed out stay in the memory until `commit` releases them
    (the committed pointer moves to the cursor), and `rewind` puts the cursor back to the
    committed pointer, so a READ response can be sent again. `level` counts the bytes not yet
    handed out, and the core is held back only when committed-but-unread plus unreleased bytes
    fill the memory (`depth - 1` of them: the room check is registered). Counters:
    `results_done` (results whose `last` byte arrived) and `busy_cycles` (cycles with `busy`
    high), both mod 2^32, cleared by `flush`.

    Latency: a byte from the core is on `read` 2 cycles later (memory write, read). Throughput:
    one byte per cycle each way. Cost: the memory (`depth` x 9 bits, block RAM), four pointers
    of log2(`depth`) + 1 bits, two 32-bit counters; on the iCE40 at depth 512: 2 block RAMs,
    185 LUT4, 103 carries, 124 flip-flops.
    """

    def __init__(self, depth: int):
        _check_depth("result_depth", depth)
        self.depth = depth
        super().__init__({
            "write": In(stream.Signature(BYTE_LAST)),
            "read": Out(stream.Signature(BYTE_LAST)),
            "commit": In(1),
            "rewind": In(1),
            "flush": In(1),
            "hold": In(1),  #: refuse the core's byte this cycle (test hook)
            "busy": In(1),
            "level": Out(16),
            "results_done": Out(32),
            "busy_cycles": Out(32),
        })

    def elaborate(self, platform):
        m = Module()
        bits = self.depth.bit_length()
        m.submodules.memory = mem = memory.Memory(shape=unsigned(9), depth=self.depth, init=[])
        wport = mem.write_port()
        rport = mem.read_port()
        wr = Signal(bits)
        committed = Signal(bits)
        rd = Signal(bits)  # the next entry to fetch into the output register
        out_valid = Signal()
        cursor = Signal(bits)  # the next entry `read` hands out
        m.d.comb += cursor.eq(rd - out_valid)

        write = self.write
        push = Signal()
        # Room for the core's byte, registered: a cycle ago at least two entries were free,
        # so one is now (one push per cycle; `committed` only moves on). The buffer holds
        # `depth - 1` bytes, and the core's stream waits on a flip-flop, not on a pointer
        # subtraction and compare.
        room = Signal()
        m.d.sync += room.eq(_distance(m, wr, committed) < self.depth - 1)
        m.d.comb += [
            write.ready.eq(room & ~self.hold & ~self.flush),
            push.eq(write.valid & write.ready),
            wport.addr.eq(wr[:bits - 1]),
            wport.data.eq(Cat(write.payload.data, write.payload.last)),
            wport.en.eq(push),
            self.level.eq(_distance(m, wr, cursor)),
        ]
        with m.If(self.flush):
            m.d.sync += wr.eq(0)
        with m.Elif(push):
            m.d.sync += wr.eq(wr + 1)

        read = self.read
        taken = read.valid & read.ready
        fetch = Signal()
        restart = self.flush | self.rewind
        m.d.comb += [
            fetch.eq((rd != wr) & (~out_valid | taken) & ~restart),
            rport.addr.eq(rd[:bits - 1]),
            rport.en.eq(fetch),
            read.valid.eq(out_valid),
            read.payload.data.eq(rport.data[:8]),
            read.payload.last.eq(rport.data[8]),
        ]
        with m.If(self.flush):
            m.d.sync += [rd.eq(0), committed.eq(0), out_valid.eq(0)]
        with m.Elif(self.rewind):
            m.d.sync += [rd.eq(committed), out_valid.eq(0)]
        with m.Else():
            with m.If(self.commit):
                m.d.sync += committed.eq(cursor)
            with m.If(fetch):
                m.d.sync += [rd.eq(rd + 1), out_valid.eq(1)]
            with m.Elif(taken):
                m.d.sync += out_valid.eq(0)

        with m.If(self.flush):
            m.d.sync += [self.results_done.eq(0), self.busy_cycles.eq(0)]
        with m.Else():
            with m.If(push & write.payload.last):
                m.d.sync += self.results_done.eq(self.results_done + 1)
            with m.If(self.busy):
                m.d.sync += self.busy_cycles.eq(self.busy_cycles + 1)
        return m
