"""The PE array: time-step-parallel AND/accumulate, no multipliers.

`PeArray` is `pe_rows x pe_cols` processing elements. Each PE has `lanes` accumulators, one per
time step; all lanes of a row share one weight. Per cycle with `valid`, lane l of PE (r, c) adds
`(-1)^neg * (weight[r] << shift)` when `rowop[r][l] AND colop[c][l]`, and, with
`ArrayConfig.paired_steps`, in the same cycle `(-1)^neg2 * (weight[r] << shift2)` when
`rowop[r][l] AND colop2[c][l]` (a *paired* step: two bit-planes or two operands per cycle;
`colop2` is zero on a single step):

- conv / linear: rowop all ones, colop = the input spikes (or one bit-plane of a multi-bit input,
  the weight shifted by the plane index);
- spike AND spike (q k^T, k AND v): rowop and colop are both spike words, weight 1;
- spike selects a multi-bit value ((q k^T) v): colop is bit-plane b of the multi-bit value,
  rowop the selecting spike, weight `1 << b`;
- paired: colop and colop2 are two planes of a multi-bit input (shift b and b + 1) or two
  operands of an elementwise sum, so a bit-serial layer takes half the cycles. Each lane picks
  one of 0, t, t2 and t + t2, precomputed once per row: still no multiplier.

A tile ends with `last`. With double-buffered accumulators the cycle after the last step's
accumulate is the tile's *capture*: the working accumulators' sums move into the shadow bank, so
a drain can read them while the next tile accumulates, and the working accumulators restart
from 0 (a synchronous reset of their flip-flops). No step may be presented in the cycle
after a `last` step: it would fall into the capture and be lost (`StepIssue` leaves that gap;
`pysim.cycles` counts it). Without `ArrayConfig.double_buffer`, `shadow` is the
working bank itself and `clear` (the drain's end) restarts it.

The spike gate is the accumulators' clock enable: lane l of PE (r, c) loads `acc + t` only when
`rowop AND colop` (or `colop2`) selects it, so a lane is an adder into its flip-flops (one LUT
or logic cell per accumulator bit) and one enable per lane, not an AND or a select per bit in
front of the adder; the capture's copy and restart are the shadow's enable and the working
registers' synchronous reset.

Two stages, so that a lane is only an adder on the clock's path:
- operand stage: each row's weight terms (`w << shift`, negated; `t + t2` when paired) are
  computed from the inputs and registered with the operand words, `valid` and `last`: the
  barrel shifter, the negation and the weight memory's read sit before a register;
- accumulate stage: per lane, with enable `gate OR gate2`, `acc += t`, `t2` or `t + t2`
  (paired: a 3-way select of the row's registered terms).
`last_out` is high in the cycle before a tile's sums are in `shadow` (the capture cycle with
double buffering, the last step's accumulate cycle without); `last_pending` also covers the
cycle before it (a last step accumulating), so the sequencer can hold the next tile's last
step while the shadow is about to be overwritten.

Latency (`latency`, `ArrayConfig.pe_latency`): 3 cycles with double buffering (shadow holds a
tile's sums three cycles after its `last` step is presented), 2 without.
Throughput: one reduction step per cycle, `pe_rows * pe_cols * lanes` lane operations, and one
gap cycle per tile with double buffering.
Cost: `2 * pe_rows * pe_cols * lanes` registers of `acc_bits` (working + shadow; half without
double buffering), `pe_rows * pe_cols * lanes` `acc_bits` adders and one enable each (plus a
3-way term select per bit when paired); per row one barrel shifter of `weight_bits` by
0 .. 31 and a conditional negation (two, and an adder for t + t2, when paired); operand
registers: `acc_bits` per row and term, `lanes` per row and column operand; no multipliers.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from . import isa
from .config import ArrayConfig


def acc_layout(config: ArrayConfig) -> data.ArrayLayout:
    """Accumulators of the whole array: [row][column][lane], signed `acc_bits`."""
    lane = data.ArrayLayout(signed(config.acc_bits), config.lanes)
    return data.ArrayLayout(data.ArrayLayout(lane, config.pe_cols), config.pe_rows)


class PeArray(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        R, C, L = config.pe_rows, config.pe_cols, config.lanes
        members = {
            "valid": In(1),
            "last": In(1),
            "weight": In(data.ArrayLayout(signed(config.weight_bits), R)),
            "shift": In(isa.SHIFT_BITS),
            "neg": In(1),
            "rowop": In(data.ArrayLayout(L, R)),
            "colop": In(data.ArrayLayout(L, C)),
            "shadow": Out(acc_layout(config)),
            "last_out": Out(1),
            "last_pending": Out(1),
        }
        if config.paired_steps:
            members.update(shift2=In(isa.SHIFT_BITS), neg2=In(1), colop2=In(data.ArrayLayout(L, C)))
        if not config.double_buffer:
            members["clear"] = In(1)
        super().__init__(members)

    @property
    def latency(self) -> int:
        """Cycles from a tile's last step at the inputs to its sums in `shadow`."""
        return self.config.pe_latency

    def elaborate(self, platform):
        m = Module()
        cfg = self.config
        R, C, L, A = cfg.pe_rows, cfg.pe_cols, cfg.lanes, cfg.acc_bits

        def term(name, shift, neg, r):
            """Row r's weight shifted and conditionally negated, once for the whole row."""
            shifted = Signal(signed(A), name=f"w{name}{r}")
            m.d.comb += shifted.eq(self.weight[r].as_signed() << shift)
            value = Signal(signed(A), name=f"t{name}{r}")
            m.d.comb += value.eq(Mux(neg, -shifted, shifted))
            return value

        # ---- operand stage: registered terms and operand words ----------------------------
        valid, last = Signal(), Signal()
        m.d.sync += [valid.eq(self.valid), last.eq(self.valid & self.last)]
        m.d.comb += self.last_out.eq(valid & last)
        rowop = Signal.like(self.rowop)
        colop = Signal.like(self.colop)
        m.d.sync += [rowop.eq(self.rowop), colop.eq(self.colop)]
        t1s, t2s, boths = [], [], []
        for r in range(R):
            t1c = term("", self.shift, self.neg, r)
            t1 = Signal(signed(A), name=f"t1_q{r}")
            m.d.sync += t1.eq(t1c)
            t1s.append(t1)
            if cfg.paired_steps:
                t2c = term("2_", self.shift2, self.neg2, r)
                t2, both = Signal(signed(A), name=f"t2_q{r}"), Signal(signed(A), name=f"t12_q{r}")
                m.d.sync += [t2.eq(t2c), both.eq(t1c + t2c)]
                t2s.append(t2)
                boths.append(both)
        if cfg.paired_steps:
            colop2 = Signal.like(self.colop2)
            m.d.sync += colop2.eq(self.colop2)

        # ---- accumulate stage ---------------------------------------------------------------
        acc = Signal(acc_layout(cfg))
        capture = Signal()  # the cycle after a tile's last step accumulated
        if cfg.double_buffer:
            m.d.sync += capture.eq(valid & last)
            m.d.comb += [self.last_out.eq(capture), self.last_pending.eq(capture | (valid & last))]
            # The capture: the sums move to the shadow (its enable), the working registers
            # restart (their synchronous reset); no step accumulates in this cycle.
            with m.If(capture):
                m.d.sync += self.shadow.eq(acc)
            restart = capture
        else:
            m.d.comb += [self.last_out.eq(valid & last), self.last_pending.eq(valid & last),
                         self.shadow.eq(acc)]
            restart = self.clear
        for r in range(R):
            for c in range(C):
                for lane in range(L):
                    gate = rowop[r][lane] & colop[c][lane]
                    add = t1s[r]
                    enable = gate
                    if cfg.paired_steps:
                        gate2 = rowop[r][lane] & colop2[c][lane]
                        add = Mux(gate2, Mux(gate, boths[r], t2s[r]), t1s[r])
                        enable = gate | gate2
                    a = acc[r][c][lane]
                    # The restart has priority over the enable (a reset, not a select per bit).
                    with m.If(restart):
                        m.d.sync += a.eq(0)
                    with m.Elif(valid & enable):
                        m.d.sync += a.eq(a + add)
        return m
