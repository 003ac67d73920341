"""Cycle model of the accelerator: cycles per pass, per layer and per inference.

Pure Python (no Amaranth), so sweeps can call it fast. It mirrors the sequencer in
`hw/accelerator.py` cycle for cycle and equals the RTL's busy-cycle count of an inference with
tracing off and the results stream always ready (tests/test_hw_accelerator.py checks this):

- unpack: `1 + words * (pack + pixel_bits)` cycles, `words = n_pixels / pack` (one cycle per
  pixel gathered into a word's lane groups, one per bit-plane word written);
- each pass: `len(DESC_FIELDS) + 1` cycles to load its descriptor, one start cycle, one
  end-of-pass cycle, and
  - array pass: tiles issue one reduction step per cycle (`steps * taps` per tile); the last
    step of a tile waits until the drain of the previous tile is idle (the pass ends one cycle
    after the last drain); a drain takes
    `1 + pe_rows * out_planes` cycles (head: `1 + pe_rows`, plus 4 per emitted logit) and
    starts 3 cycles after its tile's last step issues;
  - max-pool pass: 9 cycles per output word plus a 2-cycle tail;
- 1 cycle to return to idle.

Utilization = useful lane-operations / (pe_rows * pe_cols * lanes * cycles), where a conv or
linear layer's useful operations are its dense count `Cout * Cin * k * k * H * W * T`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw import isa

DESC_LOAD = len(isa.DESC_FIELDS) + 1
PASS_OVERHEAD = DESC_LOAD + 2  #: descriptor load, one start cycle, one end-of-pass cycle
PIPE = 3  #: cycles from issuing a tile's last step to the first drain cycle
MAXPOOL_PER_WORD = 9
MAXPOOL_TAIL = 2


@dataclass
class PassCycles:
    layer: str
    kind: str
    cycles: int
    useful: int
    utilization: float


def drain_cycles(config, desc: dict, last_ct: bool) -> int:
    R = config.pe_rows
    if desc["out_mode"] == isa.OUT_HEAD:
        return 1 + R + (4 * min(R, desc["rows"]) if last_ct else 0)
    return 1 + R * desc["out_planes"]


def head_emits(config, desc, rgl) -> int:
    return max(0, min(config.pe_rows, desc["rows"] - rgl * config.pe_rows))


def array_pass_cycles(config, desc: dict) -> int:
    """Cycles of one array pass after its descriptor is loaded, up to the drain's end."""
    K = desc["steps"] * desc["taps"]
    R = config.pe_rows
    t = 0  # cycle at which the next step would issue
    drain_free = 0  # first cycle at which the drain is idle
    end = 0
    head = desc["out_mode"] == isa.OUT_HEAD
    for _ in range(desc["groups"]):
        for rgl in range(desc["rgs"]):
            for ct in range(desc["cts"]):
                last = t + K - 1
                last = max(last, drain_free)
                last_ct = ct == desc["cts"] - 1
                if head:
                    d = 1 + R + (4 * head_emits(config, desc, rgl) if last_ct else 0)
                else:
                    d = 1 + R * desc["out_planes"]
                start = last + PIPE
                drain_free = start + d
                end = drain_free
                t = last + 1
    return end + 1


def maxpool_pass_cycles(desc: dict) -> int:
    return desc["groups"] * desc["mp_ho"] * desc["mp_wo"] * MAXPOOL_PER_WORD + MAXPOOL_TAIL


def pass_cycles(config, desc: dict) -> int:
    body = (maxpool_pass_cycles(desc) if desc["op"] == isa.OP_MAXPOOL
            else array_pass_cycles(config, desc))
    return PASS_OVERHEAD + body


@dataclass
class CycleReport:
    passes: list
    unpack: int
    total: int
    config_lanes: int

    def per_layer(self) -> dict:
        out = {}
        for p in self.passes:
            c, u = out.get(p.layer, (0, 0))
            out[p.layer] = (c + p.cycles, u + p.useful)
        return out

    def utilization(self, layer: str, config) -> float:
        c, u = self.per_layer()[layer]
        return u / (config.total_lanes * c) if c else 0.0

    @property
    def useful(self) -> int:
        return sum(p.useful for p in self.passes)


def cycle_report(net) -> CycleReport:
    """Cycles of one inference of compiled network `net` (trace off, results always ready)."""
    cfg = net.config
    g = net.globals
    unpack = 1 + g["n_pixels"] // g["pack"] * (g["pack"] + g["pixel_bits"])
    passes = []
    for p in net.passes:
        c = pass_cycles(cfg, p.desc)
        kind = "maxpool" if p.desc["op"] == isa.OP_MAXPOOL else {
            isa.OUT_HEAD: "head"}.get(p.desc["out_mode"], "array")
        passes.append(PassCycles(p.layer, kind, c, p.useful,
                                 p.useful / (cfg.total_lanes * c)))
    total = unpack + sum(p.cycles for p in passes) + 1
    return CycleReport(passes, unpack, total, cfg.lanes)


def synaptic_operations(net, trace: dict) -> int:
    """Synaptic operations of one inference: additions a spike actually triggers.

    `trace` is golden's trace of one input (arrays (T, C, H, W) or (1, T, C, H, W)). For every
    conv/head layer: sum over input spikes (bit-planes set) of the fan-out `Cout * k * k`.
    """
    total = 0
    for layer in net.model.layers:
        if layer.kind not in ("conv", "head"):
            continue
        name = layer.inputs[0]
        x = trace[name] if name in trace else None
        if x is None:
            continue
        spec = net.model.tensors[name]
        x = np.asarray(x)
        ones = sum(int(((x >> b) & 1).sum()) for b in range(1 if spec.kind == "spike"
                                                             else spec.bits))
        w = layer.arrays["weight"]
        fan = w.shape[0] * (w.shape[2] * w.shape[3] if w.ndim == 4 else 1)
        total += ones * fan
    return total
