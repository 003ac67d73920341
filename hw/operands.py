"""Operand fetch (pipeline stage 2) and the max-pool OR: run words -> PE array operands.

`OperandFetch(config)` takes the two runs of `pe_cols` words read in stage 1 (already rotated
from bank order to column order and masked to the program's lanes) and the step's stage-2
fields, and forms the PE array's operands:

- column operand c: the column run's word c, or all ones on column `onehot` (`COL_ONEHOT`,
  transposes), with a 3x3 window's edge read shifted (`up`: lane groups up by T, from the
  previous band's last row; `dn`: down by T), masked (`mask`: grid end, zero padding);
- second column operand (paired steps): the row run's word c, with the same edges and masks;
- row operand r: all ones (`ROW_ONES`), or the row run's word r rotated by `rot` lanes,
  cyclically over the `used` lanes (attention aligning tokens of different bands).

`MaxPoolOr(config)` ORs the column operands of a chunk's run reads into its `k` outputs
(`isa.maxpool_chunk`): output k ORs run words j = 2k .. 2k + 2, j = seg * pe_cols + c.

Their reference is `pysim.hwref.Executor` (`run_words`, `rotate_groups`, `maxpool`).

Latency: OperandFetch is combinational (the PE array registers its operands); MaxPoolOr's
`result` is combinational from its inputs and its running OR (one register per output word).
Cost: per column two edge shifters and masks (`lanes` bits), per row a lane rotator (with
`lane_packing`); no adders, no multipliers.
"""

from amaranth import Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .arith import log2_ceil, or_all
from .config import ArrayConfig


def stage2_layout(config: ArrayConfig) -> data.StructLayout:
    """A step's fields in stage 2 (registered as it leaves stage 1)."""
    C, L = config.pe_cols, config.lanes
    LC = log2_ceil(C)
    return data.StructLayout({
        "valid": 1, "first": 1, "last": 1, "shift": isa.SHIFT_BITS, "neg": 1, "pair": 1,
        "shift2": isa.SHIFT_BITS, "neg2": 1, "onehot": LC,
        "mask": C, "up": C, "dn": C, "rot": log2_ceil(L), "seg": 2})


class OperandFetch(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        R, C, L = config.pe_rows, config.pe_cols, config.lanes
        members = {
            "col_words": In(data.ArrayLayout(L, C)),
            "row_words": In(data.ArrayLayout(L, C)),
            "step": In(stage2_layout(config)),
            "col_mode": In(1),
            "row_mode": In(1),
            "T": In(range(L + 1)),
            "used": In(range(L * L + 1)),
            "lane_valid": In(L),
            "colop": Out(data.ArrayLayout(L, C)),
            "rowop": Out(data.ArrayLayout(L, R)),
        }
        if config.paired_steps:
            members["colop2"] = Out(data.ArrayLayout(L, C))
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        s2, valid = self.step, self.lane_valid
        ones = (1 << L) - 1

        def edge(word, c):
            if not cfg.lane_packing:
                return word
            return Mux(s2.up[c], word << self.T, Mux(s2.dn[c], word >> self.T, word))

        for c in range(C):
            onehot = Mux(s2.onehot == c, ones, 0) if C > 1 else ones
            word = Mux(self.col_mode, onehot, edge(self.col_words[c], c))
            m.d.comb += self.colop[c].eq(Mux(s2.mask[c], word, 0) & valid)
            if cfg.paired_steps:
                # A paired step's second operand: the row run, with the same edges and masks.
                m.d.comb += self.colop2[c].eq(
                    Mux(s2.pair & s2.mask[c], edge(self.row_words[c], c), 0) & valid)
        if cfg.lane_packing:
            back = Signal(range(L * L + 1))
            m.d.comb += back.eq(self.used - s2.rot)
        for r in range(R):
            rw = self.row_words[r] if r < C else Const(ones, L)
            if cfg.lane_packing:
                # Lane-group rotation, cyclic over the used lanes (attention across bands).
                rotated = ((rw << s2.rot) | (rw >> back)) & valid
                rw = Mux(s2.rot == 0, rw, rotated)
            m.d.comb += self.rowop[r].eq(Mux(self.row_mode, rw, ones))
        return m


class MaxPoolOr(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        C, L = config.pe_cols, config.lanes
        K, _ = isa.maxpool_chunk(C)
        super().__init__({
            "words": In(data.ArrayLayout(L, C)),
            "valid": In(1),
            "first": In(1),
            "seg": In(2),
            "result": Out(data.ArrayLayout(L, K)),
        })

    def elaborate(self, platform):
        m = Module()
        C, L = self.config.pe_cols, self.config.lanes
        K, S = isa.maxpool_chunk(C)
        LC = log2_ceil(C) if C > 1 else 0
        running = Signal(data.ArrayLayout(L, K))
        for k in range(K):
            hits = []
            for c in range(C):
                if S == 1:
                    if 2 * k <= c <= 2 * k + 2:
                        hits.append(self.words[c])
                else:
                    j = (self.seg << LC) + c
                    hits.append(Mux((j >= 2 * k) & (j <= 2 * k + 2), self.words[c], 0))
            m.d.comb += self.result[k].eq(Mux(self.first, 0, running[k]) | or_all(hits, L))
        with m.If(self.valid):
            m.d.sync += running.eq(self.result)
        return m
