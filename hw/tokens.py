"""The token input: two input slots, so the host streams the next input while one computes.

`TokenInput(config)` takes each input on `tokens` (a flags byte, bit 0 = trace, then the
`n_pixels` pixel bytes, `last` on the final byte) into the free slot of a `2 * input_depth`
byte memory and marks the slot full when exactly `n_pixels` pixels arrived. The sequencer sees
the oldest full slot (`available`, its `trace` flag), reads its pixels by index (`rd_index` ->
`rd_data` one cycle later) and frees it with `release`.

Errors (reported with `error_set`, the input dropped, the block keeps serving): an input before
a committed program (`loaded` low) -> NOT_LOADED; an input of the wrong length -> BAD_INPUT.

Its reference is `hw.compiler.CompiledNetwork.encode_input` (the bytes of one input).

Latency: a slot is full the cycle after its last byte; `rd_data` one cycle after `rd_index`.
Throughput: one byte per cycle while a slot is free.
Cost: the byte memory (two slots), a byte counter, two full flags; no multipliers.
"""

from amaranth import Cat, Module, Signal, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ArrayConfig
from .status import Status
from .streams import BYTE_STREAM


class TokenInput(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        IAW = max(1, (config.input_depth - 1).bit_length())
        super().__init__({
            "tokens": In(BYTE_STREAM),
            "loaded": In(1),
            "n_pixels": In(isa.field_bits(config)["n_pixels"]),
            "available": Out(1),
            "trace": Out(1),
            "release": In(1),
            "rd_index": In(IAW),
            "rd_data": Out(8),
            "error": Out(8),
            "error_set": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        IAW = len(self.rd_index)
        m.submodules.pix = pix = Memory(shape=unsigned(8), depth=2 * self.config.input_depth,
                                        init=[])
        x_rd, x_wr = pix.read_port(), pix.write_port()
        full = Signal(2)
        trace_flag = Signal(2)
        wslot, rslot = Signal(), Signal()
        tcount = Signal(IAW + 1)
        tdrop = Signal()
        n = self.n_pixels
        tk = self.tokens
        m.d.comb += [tk.ready.eq(~full.bit_select(wslot, 1)),
                     self.available.eq(full.bit_select(rslot, 1)),
                     self.trace.eq(trace_flag.bit_select(rslot, 1)),
                     x_rd.addr.eq(Cat(self.rd_index, rslot)), self.rd_data.eq(x_rd.data)]

        def fail(code):
            m.d.comb += [self.error.eq(code), self.error_set.eq(1)]

        with m.If(tk.valid & tk.ready):
            m.d.sync += tcount.eq(tcount + 1)
            m.d.comb += [x_wr.addr.eq(Cat(tcount[:IAW], wslot)), x_wr.data.eq(tk.payload.data),
                         x_wr.en.eq(~tdrop & (tcount <= n))]
            with m.If(tcount == 0):
                m.d.sync += trace_flag.bit_select(wslot, 1).eq(tk.payload.data[0])
            with m.If(tk.payload.last):
                m.d.sync += [tcount.eq(0), tdrop.eq(0)]
                with m.If(~self.loaded):
                    fail(Status.NOT_LOADED)
                with m.Elif(~tdrop & (tcount == n)):
                    m.d.sync += [full.bit_select(wslot, 1).eq(1), wslot.eq(~wslot)]
                with m.Elif(~tdrop):
                    fail(Status.BAD_INPUT)
            with m.Elif(~tdrop & (tcount >= n)):
                m.d.sync += tdrop.eq(1)
                fail(Status.BAD_INPUT)
        with m.If(self.release):
            m.d.sync += [full.bit_select(rslot, 1).eq(0), rslot.eq(~rslot)]
        return m
