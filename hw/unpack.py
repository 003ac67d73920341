"""The input unpacker: an input's pixels into bit-plane words of the activation memory.

`InputUnpacker(config)` reads one input's `n_pixels` pixels from the token input (by index,
data a cycle later) and writes pixel bit b of pixel i into plane b at `in_base + b * in_plane +
i // pack`, in lane group `i % pack` of that word (the T lanes of a group all carry the bit:
the input is the same at every time step). With lane packing a word's `pack` pixels are
gathered into its `pixel_bits` plane words (one pixel per cycle), then the planes are written
(one per cycle); without it one pixel's planes come straight from the pixel memory.

Its reference is the input loop of `pysim.hwref.Executor.run_batch`.

Latency: `start` to `done` is `1 + n_words * (pack + pixel_bits)` cycles with
`n_words = ceil(n_pixels / pack)` (`pysim.cycles` counts them); `done` is high in the cycle of
the last plane write, with `release` (the input's slot is free).
Cost: a pixel counter, `pixel_bits` gathered plane words of `lanes` bits (lane packing), a
plane counter and two address registers; no multipliers.
"""

from amaranth import Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .arith import log2_ceil
from .config import ArrayConfig
from .load import globals_layout


class InputUnpacker(wiring.Component):
    """See the module docstring. `write` is one word (column 0 of a run) at a flat address."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        L = config.lanes
        IAW = log2_ceil(config.input_depth)
        super().__init__({
            "start": In(1),
            "done": Out(1),
            "globals": In(globals_layout(config)),
            "lane_group": In(L),
            "rd_index": Out(IAW),
            "rd_data": In(8),
            "release": Out(1),
            "write": Out(data.StructLayout({
                "en": 1, "addr": log2_ceil(config.act_depth * config.pe_cols), "word": L})),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        L, PACKING = cfg.lanes, cfg.lane_packing
        AW = len(self.write.addr)
        g, wr = self.globals, self.write
        pixel = Signal(log2_ceil(cfg.input_depth) + 1)  # pixels read so far
        plane = Signal(4)
        in_group = Signal(range(L + 1))  # the pixel's lane group within its word
        group_mask = Signal(L)
        word_addr, plane_addr = Signal(AW), Signal(AW)
        planes = Signal(data.ArrayLayout(L, 8))

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [pixel.eq(0), plane.eq(0), word_addr.eq(g.in_base)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += self.rd_index.eq(pixel + 1)
                m.d.sync += [in_group.eq(0), group_mask.eq(self.lane_group)]
                m.next = "GATHER"
            with m.State("GATHER"):
                if PACKING:
                    m.d.comb += self.rd_index.eq(pixel + 2)
                    for b in range(8):
                        # A last word's groups past `n_pixels` read 0 (a hand-made program
                        # whose pixels do not fill whole words still ends and is defined).
                        bit = Mux(self.rd_data[b] & (pixel < g.n_pixels), group_mask, 0)
                        m.d.sync += planes[b].eq(Mux(in_group == 0, bit, planes[b] | bit))
                else:
                    # The pixel memory holds the pixel through the write cycles.
                    m.d.comb += self.rd_index.eq(pixel + 1)
                m.d.sync += [pixel.eq(pixel + 1), in_group.eq(in_group + 1),
                             group_mask.eq(group_mask << g.T)]
                with m.If(in_group == g.pack - 1):
                    m.d.sync += [plane.eq(0), plane_addr.eq(word_addr)]
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [wr.en.eq(1), wr.addr.eq(plane_addr)]
                if PACKING:
                    m.d.comb += self.rd_index.eq(pixel + 1)
                    with m.Switch(plane[:3]):  # a select, not an index (no multiplier)
                        for b in range(8):
                            with m.Case(b):
                                m.d.comb += wr.word.eq(planes[b])
                else:
                    m.d.comb += [self.rd_index.eq(pixel),
                                 wr.word.eq(Mux(self.rd_data.bit_select(plane[:3], 1),
                                                self.lane_group, 0))]
                m.d.sync += [plane.eq(plane + 1), plane_addr.eq(plane_addr + g.in_plane)]
                with m.If(plane == g.pixel_bits - 1):
                    m.d.sync += [word_addr.eq(word_addr + 1), in_group.eq(0),
                                 group_mask.eq(self.lane_group)]
                    # Without lane packing a word is one pixel: the count is met exactly.
                    with m.If(pixel >= g.n_pixels if PACKING else pixel == g.n_pixels):
                        m.d.comb += [self.done.eq(1), self.release.eq(1)]
                        m.next = "IDLE"
                    with m.Else():
                        m.next = "GATHER"
        return m
