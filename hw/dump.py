"""The trace dump: a pass's output words onto the results stream, for traced inputs.

`TraceDump(config)` reads `words` activation words from `base` on (one word at a time through
the row read port, which is idle between passes) and sends each as `word_bytes(lanes)`
little-endian bytes on `emit`, holding on back-pressure.

Its reference is the trace part of `pysim.hwref.Executor.run_batch` (the words `& valid`: the
memory's read port masks them).

Latency: `start` to `done` is `words * (2 + word_bytes)` cycles without back-pressure;
`done` is high in the cycle the last byte is taken.
Cost: an address counter, a down-counter of the words left, a word register and a
byte counter; no multipliers.
"""

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil
from .config import ArrayConfig


class TraceDump(wiring.Component):
    """See the module docstring. While `read_active`, the row read port reads `read_addr`;
    `read_word` is that port's column-0 word a cycle later."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        L = config.lanes
        AW = log2_ceil(config.act_depth * config.pe_cols)
        super().__init__({
            "start": In(1),
            "done": Out(1),
            "base": In(AW),
            "words": In(AW + 1),
            "read_active": Out(1),
            "read_addr": Out(AW),
            "read_word": In(L),
            "emit": Out(data.StructLayout({"valid": 1, "data": 8})),
            "emit_ready": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        WBY = isa.word_bytes(self.config.lanes)
        # The word's address runs on from `base`, and a down-counter of the words left
        # decides the last one, registered as it moves (a compare with a constant): no
        # adder sits between a register and `read_addr` or `done`.
        addr = Signal(len(self.base))
        left = Signal(len(self.words))
        last_word = Signal()
        word = Signal(self.config.lanes)
        byte = Signal(2)
        m.d.comb += self.read_addr.eq(addr)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [addr.eq(self.base), left.eq(self.words),
                                 last_word.eq(self.words == 1)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.read_active.eq(1)
                m.d.sync += byte.eq(0)
                m.next = "LATCH"
            with m.State("LATCH"):
                m.d.comb += self.read_active.eq(1)
                m.d.sync += word.eq(self.read_word)
                m.next = "EMIT"
            with m.State("EMIT"):
                m.d.comb += [self.emit.valid.eq(1),
                             self.emit.data.eq(word >> Cat(Const(0, 3), byte))]
                with m.If(self.emit_ready):
                    m.d.sync += byte.eq(byte + 1)
                    with m.If(byte == WBY - 1):
                        m.d.sync += [addr.eq(addr + 1), left.eq(left - 1),
                                     last_word.eq(left == 2)]
                        with m.If(last_word):
                            m.d.comb += self.done.eq(1)
                            m.next = "IDLE"
                        with m.Else():
                            m.next = "READ"
        return m
