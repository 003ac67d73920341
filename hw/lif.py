"""The LIF unit: T accumulated inputs plus bias -> T spikes in one pass, no membrane memory.

Implements `pysim.hwref.lif_unit` exactly: the membrane keeps `lanes` fractional bits,
`B[t] = (V[t-1] + ((x[t] + bias) << lanes)) >> 1`, spike when `B[t] >= threshold`, hard reset
to 0; with `step` the membrane is reset every lane (a plain per-step compare). The compiler
passes `threshold = ceil(theta * 2^lanes / 2^shift)`, so the spikes equal the golden model's for
every T <= lanes and every threshold shift. The lanes hold groups of T time steps (other
positions when T < lanes): the membrane restarts at 0 on each lane set in `start` (every T-th
lane); lanes not in `valid` (from pack * T up) output 0.

Latency: combinational (a chain of `lanes` add/compare stages).
Throughput: one column (all lanes) per cycle.
Cost: `lanes` adders and comparators of `membrane_bits`, no multipliers.
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
        })

    def elaborate(self, platform):
        m = Module()
        L, M = self.config.lanes, self.config.membrane_bits
        v = Signal(signed(M), name="v0")
        m.d.comb += v.eq(0)
        for t in range(L):
            v = Mux(self.start[t], 0, v)
            x = Signal(signed(self.config.acc_bits + 1), name=f"x{t}")
            b = Signal(signed(M), name=f"b{t}")
            fired = Signal(name=f"fired{t}")
            nv = Signal(signed(M), name=f"v{t + 1}")
            m.d.comb += [
                x.eq(self.x[t] + self.bias),
                b.eq((v + (x << L)) >> 1),
                fired.eq(b >= self.threshold),
                self.spikes[t].eq(fired & self.valid[t]),
                nv.eq(Mux(fired | self.step, 0, b)),
            ]
            v = nv
        return m
