"""A stand-in core for tests and cost figures of the host link alone: it echoes every input.

`EchoCore` has the signature of `hw.accelerator.Accelerator` (`hw.host_link.core_signature`):
always ready, it takes any load bytes and returns every token byte (with its `last`) as a
result byte, so a link test can send inputs of any size and predict every result byte.
`EchoNet` is its host-side codec (what `hw.compiler.CompiledNetwork` is to the real core).
"""

import numpy as np
from amaranth.hdl import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from hw.link_common import BYTE_LAST, CORE_STATUS


class EchoCore(wiring.Component):
    """Test stand-in: always ready, returns every token byte (with its `last`) as a result.

    `busy` is high exactly in the cycles a byte passes, so the link's `busy_cycles` counts the
    bytes echoed (a figure a test can predict whatever the stalls).

    Latency: none (combinational pass-through). Cost: no flip-flops, one LUT.
    """

    def __init__(self, corrupt_byte: int | None = None):
        #: negative controls: flip bit 0 of the result byte with this index (from 0)
        self.corrupt_byte = corrupt_byte
        super().__init__()

    load: In(stream.Signature(BYTE_LAST))
    tokens: In(stream.Signature(BYTE_LAST))
    results: Out(stream.Signature(BYTE_LAST))
    status: Out(CORE_STATUS)
    clear: In(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.load.ready.eq(1),
            self.status.ready.eq(1),
            self.status.busy.eq(self.tokens.valid & self.results.ready),
            self.results.payload.eq(self.tokens.payload),
            self.results.valid.eq(self.tokens.valid),
            self.tokens.ready.eq(self.results.ready),
        ]
        if self.corrupt_byte is not None:
            count = Signal(range(self.corrupt_byte + 2))
            with m.If(self.results.valid & self.results.ready & (count <= self.corrupt_byte)):
                m.d.sync += count.eq(count + 1)
            with m.If(count == self.corrupt_byte):
                m.d.comb += self.results.payload.data.eq(self.tokens.payload.data ^ 1)
        return m


class EchoNet:
    """Host-side codec of the echo core: an input of `size` bytes comes back unchanged."""

    def __init__(self, size: int):
        self.size = size

    def encode_input(self, image, trace=False):
        return bytes(np.asarray(image, np.uint8))

    def result_bytes(self, trace):
        return self.size

    def decode_result(self, payload, trace):
        return np.frombuffer(payload, np.uint8).astype(np.int64), None
