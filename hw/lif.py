"""The LIF unit: T accumulated inputs plus bias -> T spikes in one pass, no membrane memory.

Implements `pysim.hwref.lif_unit` exactly: the membrane keeps `lanes` fractional bits,
`B[t] = (V[t-1] + ((x[t] + bias) << lanes)) >> 1`, spike when `B[t] >= threshold`, hard reset
to 0; with `step` the membrane is reset every lane (a plain per-step compare). The compiler
passes `threshold = ceil(theta * 2^lanes / 2^shift)`, so the spikes equal the golden model's for
every T <= lanes and every threshold shift. The lanes hold groups of T time steps (other
positions when T < lanes): the membrane restarts at 0 on each lane set in `start` (every T-th
lane); lanes not in `valid` (from pack * T up) output 0.

Latency: combinational (a chain of `lanes` add/select stages).
Throughput: one column (all lanes) per cycle.
Cost: per lane an `acc_bits + 1` bias adder, a `membrane_bits` adder and comparator; no
multipliers.
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig


class LifUnit(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        L = config.lanes
        super().__init__({
            "x": In(data.ArrayLayout(signed(config.acc_bits), L)),
            "bias": In(signed(config.acc_bits)),
            "threshold": In(signed(config.membrane_bits)),
            "start": In(L),
            "valid": In(L),
            "step": In(1),
            "spikes": Out(L),
            #: x + bias per lane: the drain writes these as bit-planes for raw outputs, so
            #: the bias adders are shared with the LIF.
            "biased": Out(data.ArrayLayout(signed(config.acc_bits + 1), L)),
        })

    def elaborate(self, platform):
        # Lane t's membrane is B[t-1] + X[t] halved, or X[t] halved after a reset (a spike, a
        # step-mode lane, a group's first lane). Both are formed and the reset picks one, so
        # lane t's adder starts from B[t-1] while lane t-1's comparator decides: the chain
        # through the lanes is an adder and a mux per lane, not an adder, a comparator and a
        # mux (the same logic, a shorter critical path).
        m = Module()
        L, M = self.config.lanes, self.config.membrane_bits
        b_prev, reset_prev = None, None
        for t in range(L):
            x = self.biased[t]
            m.d.comb += x.eq(self.x[t] + self.bias)
            b = Signal(signed(M), name=f"b{t}")
            alone = (x << L) >> 1  # the membrane from rest
            if b_prev is None:
                m.d.comb += b.eq(alone)
            else:
                carried = Signal(signed(M), name=f"carried{t}")
                m.d.comb += carried.eq((b_prev + (x << L)) >> 1)
                m.d.comb += b.eq(Mux(reset_prev | self.start[t], alone, carried))
            fired = Signal(name=f"fired{t}")
            m.d.comb += [fired.eq(b >= self.threshold),
                         self.spikes[t].eq(fired & self.valid[t])]
            b_prev, reset_prev = b, fired | self.step
        return m
