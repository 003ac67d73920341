"""Cycle model of the accelerator: cycles per pass, per layer and per inference.

Pure Python (no Amaranth), so sweeps can call it fast. It mirrors the sequencer in
`hw/accelerator.py` cycle for cycle and equals the RTL's busy-cycle count of an inference with
tracing off and the results stream always ready (tests/test_hw_accelerator.py checks this):

- unpack: `1 + words * (pack + pixel_bits)` cycles, `words = n_pixels / pack` (one cycle per
  pixel gathered into a word's lane groups, one per bit-plane word written);
- each pass: `1 + isa.desc_words()` cycles to load its descriptor (one program word of
  `isa.FIELDS_PER_WORD` fields per cycle), one start cycle, one end-of-pass cycle, and
  - array pass: one reduction step per cycle (`steps * taps` per tile) enters stage 1, the
    first the cycle after START; the last step of a tile waits there until the drain of the
    previous tile is over (single-buffered accumulators: the first step waits), and with
    double buffering the cycle after a tile's last step issues nothing (the PE array's
    capture); a drain issues one row (and bit-plane) per cycle, `1 + pe_rows * out_planes`
    cycles (head: `1 + pe_rows`, and after its last column tile `head_latency + 1` for the
    adder tree to settle plus 4 per emitted logit), and starts `pipe_latency` cycles (3 + 1
    with the issue stage + 1 with double buffering) after its tile's last step leaves stage 1
    (the issue stage, operand fetch, the PE array's operand register, its accumulate stage,
    its capture);
    the pass ends when the last drain is idle and its last issued row has been written
    (`1 + drain_write_latency` cycles after the issue: the parameter register, the LIF
    stages, with `drain_registers` the row and write registers);
  - max-pool pass: the array's loops without a drain: 3 row reads (x `reads`) per chunk of `k`
    outputs of one output row, with `(k, reads) = isa.maxpool_chunk(pe_cols)`
    (k = (pe_cols - 1) // 2, one read per row from pe_cols = 4 up), plus `maxpool_latency` =
    4 pipeline cycles (5 with the issue stage);
- 1 cycle to return to idle.

Utilization is reported two ways per layer (`CycleReport.layers`, `CycleReport.table`):
dense = synaptic MACs `Cout * Cin * k * k * H * W * T` / (pe_rows * pe_cols * lanes * cycles),
and array = lane-operations on real input bit-planes (zero padding excluded) / the capacity in
bit-plane operations (twice the lanes per cycle in a pass of paired steps, which read two
planes per cycle), so a bit-serial layer (pixels, SEW sums read as bit-planes) is explained
honestly;
each layer below 85% dense lists why (bit-planes, unused rows/columns/lanes, drain-bound raw
outputs, pass overhead).

    python -m pysim.cycles --model checkpoints/X.json [--config hw/configs/J.json]

prints the table and writes `build/cycles/<model>-<config>.json` (`pysim/cycles_cli.py`).
Imports nothing from the compiler: `hw.compiler` calls `cycle_report` on what it builds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw import isa

DESC_LOAD = 1 + isa.desc_words()  #: read the descriptor's program words, one per cycle
PASS_OVERHEAD = DESC_LOAD + 2  #: descriptor load, one start cycle, one end-of-pass cycle


def pipe_latency(config) -> int:
    """Cycles from a tile's last step in stage 1 to its drain's first cycle: the issue stage
    (`ArrayConfig.issue_stage`), stage 2 (operand fetch), the PE array's operand register, its
    accumulate stage and, with double buffering, its capture (`ArrayConfig.pe_latency`)."""
    return int(config.issue_stage) + 1 + config.pe_latency


def maxpool_latency(config) -> int:
    """Cycles from a max-pool pass's last step in stage 1 to the pass's end: the issue stage,
    stage 2, the OR's input register, the chunk's outputs are registered, then written."""
    return int(config.issue_stage) + 4


@dataclass
class PassCycles:
    layer: str
    kind: str
    cycles: int
    useful: int
    utilization: float
    array_ops: int = 0
    in_planes: int = 1
    desc: dict | None = None
    #: operands a step reads: 2 when the pass issues paired steps (two bit-planes per cycle)
    operands: int = 1


def head_emit_cycles(config, emits: int) -> int:
    """Cycles of a head tile's emission: its last row's sum settles through the adder tree's
    registers and the write-back (`head_latency + 1`, one more with the drain's row
    register), then 4 bytes per logit."""
    return config.head_latency + 1 + config.drain_row_latency + 4 * emits if emits else 0


def drain_cycles(config, desc: dict, emits: int = 0) -> int:
    """Cycles the drain is busy with one tile: its first cycle (the parameter read), one issue
    per row (and bit-plane; the head's rows are sums, one plane), then the head's emission of
    `emits` logits after its last column tile (`head_emits`)."""
    R = config.pe_rows
    if desc["out_mode"] == isa.OUT_HEAD:
        return 1 + R + head_emit_cycles(config, emits)
    return 1 + R * desc["out_planes"]


def head_emits(config, desc, rgl) -> int:
    """Logits a head pass emits after row group `rgl`'s last column tile."""
    return max(0, min(config.pe_rows, desc["rows"] - rgl * config.pe_rows))


def utilization(useful: int, config, cycles: int) -> float:
    """Dense PE utilization: `useful` lane-operations over the array's capacity in `cycles`
    (every lane of every PE, `ArrayConfig.total_lanes`, each cycle)."""
    return useful / (config.total_lanes * cycles) if cycles else 0.0


def array_pass_cycles(config, desc: dict, tile_steps=None):
    """Cycles of one array or max-pool pass after its START cycle, up to the drain's end.

    Steps enter stage 1 one per cycle (the first one the cycle after START). With double
    buffering a tile's last step waits in stage 1 until the previous tile's drain is over;
    without, its first step does. A drain starts `pipe_latency` cycles after its tile's last
    step leaves stage 1. A max-pool pass has no drain: it ends when its last step has left
    stage 2. `tile_steps` (an array whose last axis has one entry per tile, in loop order; any
    leading axes are evaluated at once) replaces each tile's `steps * taps`, for schemes that
    skip steps (`pysim.sparsity`); the result then has the leading axes' shape.
    """
    R = config.pe_rows
    maxpool = desc["op"] == isa.OP_MAXPOOL
    double = config.double_buffer
    head = desc["out_mode"] == isa.OUT_HEAD
    tiles = desc["groups"] * desc["rgs"] * desc["cts"]
    steps = (np.full(tiles, desc["steps"] * desc["taps"], np.int64) if tile_steps is None
             else np.asarray(tile_steps, np.int64))
    t = np.ones(steps.shape[:-1], np.int64)  # when the next step would enter stage 1
    drain_end = np.zeros_like(t)  # first cycle at which the drain is idle
    last = issue_end = np.zeros_like(t)
    i = 0
    for _ in range(desc["groups"]):
        for rgl in range(desc["rgs"]):
            for ct in range(desc["cts"]):
                first = t if double or maxpool else np.maximum(t, drain_end)
                last = first + steps[..., i] - 1
                i += 1
                if maxpool:
                    t = last + 1
                    continue
                if double:
                    last = np.maximum(last, drain_end)
                if head:
                    emits = head_emits(config, desc, rgl) if ct == desc["cts"] - 1 else 0
                    drain = drain_cycles(config, desc, emits)
                    # the cycle after the last issue
                    issue_end = last + pipe_latency(config) + 1 + R
                else:
                    drain = drain_cycles(config, desc)
                    issue_end = last + pipe_latency(config) + drain
                drain_end = last + pipe_latency(config) + drain
                # with double buffering, a gap cycle after a tile's last step (the capture)
                t = last + 1 + int(double)
    if maxpool:
        end = last + maxpool_latency(config)
    else:
        # The pass ends when the drain is idle and its last issued row has left the
        # write-back pipeline (the parameter register, the row register, the LIF units' stages,
        # the write register).
        end = np.maximum(drain_end, issue_end + 1 + config.drain_write_latency)
    return int(end) if tile_steps is None else end


def pass_cycles(config, desc: dict) -> int:
    return PASS_OVERHEAD + array_pass_cycles(config, desc)


@dataclass
class CycleReport:
    passes: list
    unpack: int
    total: int
    config_lanes: int
    config: object = None
    model: object = None
    pack: int = 1

    @property
    def per_inference(self) -> int:
        """Cycles of one inference (the same as `total`)."""
        return self.total

    def per_layer(self) -> dict:
        out = {}
        for p in self.passes:
            c, u = out.get(p.layer, (0, 0))
            out[p.layer] = (c + p.cycles, u + p.useful)
        return out

    def utilization(self, layer: str, config) -> float:
        c, u = self.per_layer()[layer]
        return utilization(u, config, c)

    @property
    def useful(self) -> int:
        return sum(p.useful for p in self.passes)

    @property
    def pe_utilization(self) -> float:
        """Dense utilization of the whole inference (synaptic MACs / lane capacity)."""
        return utilization(self.useful, self.config, self.total)

    def layers(self) -> list[dict]:
        """One row per layer: cycles, dense and array utilization, and why it falls short.

        dense = synaptic MACs (Cout Cin k k H W T) / (lanes of the array x cycles);
        array = lane-operations on real input bit-planes, padding excluded / the capacity in
        plane operations (lanes x cycles, times 2 in a pass of paired steps). A bit-serial
        layer (multi-bit input read as bit-planes) has array = planes x dense (/ 2 if paired).
        """
        cfg = self.config
        rows = []
        for name in dict.fromkeys(p.layer for p in self.passes):
            ps = [p for p in self.passes if p.layer == name]
            cycles = sum(p.cycles for p in ps)
            useful = sum(p.useful for p in ps)
            array = sum(p.array_ops for p in ps)
            array_cap = sum(cfg.total_lanes * p.cycles * p.operands for p in ps)
            layer = self.model.layer(name) if self.model is not None else None
            row = {"layer": name, "kind": layer.kind if layer else ps[0].kind,
                   "passes": len(ps), "cycles": cycles, "dense_macs": useful,
                   "array_ops": array,
                   "dense_utilization": (round(utilization(useful, cfg, cycles), 4)
                                         if useful else None),
                   "array_utilization": round(array / array_cap, 4) if array else None}
            if useful:
                row["shortfall"] = self._shortfall(ps[0], cycles, useful)
            rows.append(row)
        return rows

    def _shortfall(self, p, cycles: int, useful: int) -> list[str]:
        """Why a conv/linear/head layer's dense utilization is below 1, largest loss first."""
        cfg, d = self.config, p.desc
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        T = self.model.T if self.model is not None else L
        out = []
        if p.in_planes > 1:
            steps = (p.in_planes + 1) // 2 if p.operands == 2 else p.in_planes
            out.append(f"bit-serial input: {p.in_planes} bit-planes per value in {steps} "
                       f"step{'s' if steps > 1 else ''}")
        if d["rows"] % R:
            out.append(f"{d['rows']} output rows on {R} PE rows "
                       f"({d['rows'] / (d['rgs'] * R):.0%} used)")
        if d["cols"] % C:
            out.append(f"{d['cols']} positions on {C} PE columns "
                       f"({d['cols'] / (d['cts'] * C):.0%} used)")
        if self.pack * T < L:
            out.append(f"T = {T} fills {self.pack * T} of {L} lanes")
        K = d["steps"] * d["taps"]
        drain = drain_cycles(cfg, d)
        if not cfg.double_buffer:
            out.append(f"single-buffered accumulators: each tile waits for the previous "
                       f"tile's {drain}-cycle drain")
        elif drain + pipe_latency(cfg) > K and d["out_mode"] != isa.OUT_HEAD:
            out.append(f"drain-bound: {drain} drain cycles per tile (R x {d['out_planes']} "
                       f"output planes) vs {K} reduction steps")
        if d["out_mode"] == isa.OUT_HEAD:
            out.append(f"logit emission: 4 cycles per class ({d['rows']} classes)")
        tiles = d["groups"] * d["rgs"] * d["cts"]
        issue = tiles * K
        over = cycles - max(issue, 1)
        if over > 0.05 * cycles:
            out.append(f"pass overhead and pipeline: {over} of {cycles} cycles")
        return out

    def to_dict(self) -> dict:
        cfg = self.config
        return {
            "model": self.model.model if self.model is not None else None,
            "config": cfg.name, "pe_rows": cfg.pe_rows, "pe_cols": cfg.pe_cols,
            "lanes": cfg.lanes, "T": self.model.T if self.model is not None else None,
            "pack": self.pack, "cycles_per_inference": self.total, "unpack_cycles": self.unpack,
            "clock_hz": cfg.clock_hz,
            "inferences_per_second": round(cfg.clock_hz / self.total, 2),
            "dense_utilization": round(self.pe_utilization, 4),
            "layers": self.layers(),
        }

    def table(self) -> str:
        """The per-layer report as a fixed-width text table."""
        def pct(v):
            return "-" if v is None else f"{100 * v:5.1f}%"
        lines = [f"{'layer':<22} {'kind':<8} {'passes':>6} {'cycles':>7} {'dense':>7} "
                 f"{'array':>7}  falls short because"]
        for r in self.layers():
            why = "; ".join(r.get("shortfall", [])) if (r["dense_utilization"] or 1) < 0.85 \
                else ""
            lines.append(f"{r['layer']:<22} {r['kind']:<8} {r['passes']:>6} {r['cycles']:>7} "
                         f"{pct(r['dense_utilization']):>7} {pct(r['array_utilization']):>7}  "
                         f"{why}")
        lines.append(f"{'unpack':<22} {'':<8} {'':>6} {self.unpack:>7}")
        lines.append(f"{'total':<22} {'':<8} {len(self.passes):>6} {self.total:>7} "
                     f"{pct(self.pe_utilization):>7}")
        return "\n".join(lines)


def cycle_report(net) -> CycleReport:
    """Cycles of one inference of compiled network `net` (trace off, results always ready)."""
    cfg = net.config
    g = net.globals
    unpack = 1 + -(-g["n_pixels"] // g["pack"]) * (g["pack"] + g["pixel_bits"])
    passes = []
    for p in net.passes:
        c = pass_cycles(cfg, p.desc)
        kind = "maxpool" if p.desc["op"] == isa.OP_MAXPOOL else {
            isa.OUT_HEAD: "head"}.get(p.desc["out_mode"], "array")
        operands = 2 if any(step.pair for step in p.steps) else 1
        passes.append(PassCycles(p.layer, kind, c, p.useful,
                                 utilization(p.useful, cfg, c), p.array_ops, p.in_planes,
                                 p.desc, operands))
    total = unpack + sum(p.cycles for p in passes) + 1
    return CycleReport(passes, unpack, total, cfg.lanes, cfg, net.model, g["pack"])


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


if __name__ == "__main__":  # `python -m pysim.cycles`: the command line is pysim.cycles_cli
    from pysim.cycles_cli import main

    raise SystemExit(main())
