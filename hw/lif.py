"""The LIF unit: T accumulated inputs plus bias -> T spikes in one pass, no membrane memory.

Implements `pysim.hwref.lif_unit` exactly: the membrane keeps `lanes` fractional bits,
`B[t] = (V[t-1] + ((x[t] + bias) << lanes)) >> 1`, spike when `B[t] >= threshold`, hard reset
to 0; with `step` the membrane is reset every lane (a plain per-step compare). The compiler
passes `threshold = ceil(theta * 2^lanes / 2^shift)`, so the spikes equal the golden model's for
every T <= lanes and every threshold shift. The lanes hold groups of T time steps (other
positions when T < lanes): the membrane restarts at 0 on each lane set in `start` (every T-th
lane); lanes not in `valid` (from pack * T up) output 0.

The membrane runs through the lanes in order, so the lanes form a chain. It is cut into stages
of `ArrayConfig.lif_stage_lanes` lanes with a register between stages: the membrane, the
reset decision, the spikes so far, the biased inputs still to come and the threshold travel
together, so a new row enters every cycle. (Every unit of a drain registers the same threshold,
`step`, `start` and `valid`; Yosys merges those identical flip-flops into one copy.)

Latency: `config.lif_latency` = lanes / lif_stage_lanes - 1 cycles from the inputs to `spikes`
(0: combinational); `biased` is combinational.
Throughput: one column (all lanes) per cycle.
Cost: per lane an `acc_bits + 1` bias adder, a `membrane_bits` adder and comparator; per stage
boundary `membrane_bits + 1` bits of membrane, `acc_bits + 1` per lane still to come and one
per spike already decided; no multipliers.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .config import ArrayConfig


class LifUnit(wiring.Component):
    def __init__(self, config: ArrayConfig):
        self.config = config
        L = config.lanes
        self.latency = config.lif_latency
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
        S = self.config.lif_stage_lanes
        m.d.comb += [self.biased[t].eq(self.x[t] + self.bias) for t in range(L)]
        # What one stage hands the next: the inputs still to come and the chain's state.
        xs = [self.biased[t] for t in range(L)]
        thr, step, start, valid = self.threshold, self.step, self.start, self.valid
        b_prev, reset_prev, spikes = None, None, []
        for t in range(L):
            if t and t % S == 0:
                def reg(sig, name, t=t):
                    # (no reset: a stage's values are used only with the drain's valid row)
                    q = Signal.like(sig, name=f"{name}_s{t}", reset_less=True)
                    m.d.sync += q.eq(sig)
                    return q
                xs = [reg(x, f"x{i}") if i >= t else None for i, x in enumerate(xs)]
                thr, step = reg(thr, "thr"), reg(step, "step")
                start, valid = reg(start, "start"), reg(valid, "valid")
                b_prev, reset_prev = reg(b_prev, "b"), reg(reset_prev, "reset")
                spikes = [reg(s, f"spike{i}") for i, s in enumerate(spikes)]
            x = xs[t]
            b = Signal(signed(M), name=f"b{t}")
            alone = (x << L) >> 1  # the membrane from rest
            if b_prev is None:
                m.d.comb += b.eq(alone)
            else:
                carried = Signal(signed(M), name=f"carried{t}")
                m.d.comb += carried.eq((b_prev + (x << L)) >> 1)
                m.d.comb += b.eq(Mux(reset_prev | start[t], alone, carried))
            fired = Signal(name=f"fired{t}")
            spike = Signal(name=f"spike{t}")
            m.d.comb += [fired.eq(b >= thr), spike.eq(fired & valid[t])]
            spikes.append(spike)
            b_prev, reset_prev = b, Signal(name=f"reset{t}")
            m.d.comb += reset_prev.eq(fired | step)
        m.d.comb += self.spikes.eq(Cat(*spikes))
        return m
