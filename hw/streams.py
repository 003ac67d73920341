"""Stream signatures shared by the core, the load parser and the host link, and a register
slice for them."""

from amaranth import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

#: A byte stream with a frame/chunk end marker on its final byte.
BYTE_STREAM = stream.Signature(data.StructLayout({"data": 8, "last": 1}))


class StreamRegister(wiring.Component):
    """A forward register slice: the payload and `valid` are registered, `ready` passes through
    (`i.ready = ~o.valid | o.ready`), so a block RAM's output feeding `i` is not on the same
    clock path as the logic that consumes `o`.

    Latency: 1 cycle. Throughput: one transfer per cycle. Cost: the payload's and `valid`'s
    flip-flops and one LUT for `ready`.
    """

    def __init__(self, signature: stream.Signature = BYTE_STREAM):
        super().__init__({"i": In(signature), "o": Out(signature)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.i.ready):
            m.d.sync += [self.o.valid.eq(self.i.valid), self.o.payload.eq(self.i.payload)]
        return m
