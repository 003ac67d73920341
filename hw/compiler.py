"""Compiler: an exported `IntModel` plus an `ArrayConfig` -> the accelerator's load image.

Every layer becomes one or more passes (see `hw/isa.py`):

| layer | passes |
|---|---|
| conv 3x3 / 1x1 | one: weights from memory, a step per input plane-channel, 9 or 1 taps |
| lif, sew_add, ms_add, iand | one depthwise pass: identity weights, a step per (row, plane) |
| maxpool | one pass: the array's loops and reads, an OR instead of the PE array |
| ssa | transpose v; A^T = k^T q per head (multi-bit); y = LIF(A^T-planes AND v^T) |
| sdsa | k AND v; transpose; per-channel sum + LIF (gate); q AND gate |
| head | a 1x1 pass whose drain sums columns and lanes into logits |

Multi-bit inputs (pixels, SEW sums, membrane-shortcut streams) are bit-planes; a step over plane
b shifts the weight by b (negated for the sign plane of an int tensor).

When T < lanes, `pack` lane groups share a word (positions `p + g * band`): every pass then
covers `positions / pack` words per channel-plane, a 3x3 window crossing a band edge reads the
neighbouring band (edge reads), and attention sums over all `pack` rotations of the row
operand's lane groups so that tokens of different bands meet.

Activation memory is allocated best-fit by liveness; multi-plane streams from the top. A
residual sum is written in place over an operand that dies with it (the tensor was allocated
at the sum's size), which is what lets the membrane-shortcut models fit the default config.

The compiler proves from the weights and the declared tensor ranges that no accumulator can
overflow, and raises `DoesNotFit` naming the layer and the limit otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pysim import golden
from pysim.cycles import cycle_report
from pysim.intmodel import IntModel, Layer, TensorSpec

from . import isa
from .config import ArrayConfig


class DoesNotFit(ValueError):
    """The model cannot run on this array configuration; the message names layer and limit."""


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _planes(spec: TensorSpec) -> int:
    return 1 if spec.kind == "spike" else spec.bits


@dataclass
class Pass:
    """One descriptor plus its reduction steps and parameters (before address assignment)."""
    layer: str
    desc: dict
    steps: list  #: `isa.Step`s
    params: list  #: (bias, threshold) per parameter entry
    weights: list = field(default_factory=list)  #: pe_rows-long integer lists
    #: dense lane-operations the pass performs usefully (conv/linear: Cout*Cin*k*k*P*T)
    useful: int = 0
    dump: str | None = None  #: tensor dumped after this pass when tracing
    #: lane-operations on real input bit-planes, zero padding excluded (conv/linear/head:
    #: the dense count times the input's bit-planes, minus the taps that fall on padding)
    array_ops: int = 0
    #: input bit-planes per value (1 for spikes): why a bit-serial layer's dense count is low
    in_planes: int = 1


class _Allocator:
    """First-fit allocation of the flat activation space, freed by liveness."""

    def __init__(self, size: int):
        self.size = size
        self.free = [(0, size)]
        self.high = 0
        self.used = 0
        self.peak = 0  #: most words in use at once

    def alloc(self, words: int, what: str, top: bool = False) -> int:
        """Best fit (the smallest free block that holds `words`), from the block's low end,
        or from its high end with `top` (multi-plane streams live long: keeping them at the
        top leaves the low end to the short-lived spike tensors, so holes stay few)."""
        fits = [(length, i) for i, (_, length) in enumerate(self.free) if length >= words]
        if fits:
            _, i = min(fits, key=lambda f: (f[0], -f[1] if top else f[1]))
            start, length = self.free[i]
            if top:
                self.free[i] = (start, length - words)
                start += length - words
            else:
                self.free[i] = (start + words, length - words)
            self.high = max(self.high, start + words)
            self.used += words
            self.peak = max(self.peak, self.used)
            return start
        raise DoesNotFit(f"{what}: needs {words} activation words; the "
                         f"{self.size}-word activation memory (act_depth x pe_cols) is full")

    def release(self, start: int, words: int):
        self.used -= words
        self.free.append((start, words))
        self.free.sort()
        merged = []
        for s, n in self.free:
            if merged and merged[-1][0] + merged[-1][1] == s:
                merged[-1] = (merged[-1][0], merged[-1][1] + n)
            else:
                merged.append((s, n))
        self.free = merged


class CompiledNetwork:
    """The load image and the host-side codecs of one model on one configuration."""

    def __init__(self, model: IntModel, config: ArrayConfig, pack: int | None = None,
                 pair: bool | None = None):
        if pair and not config.paired_steps:
            raise ValueError(f"pair = True needs an array with paired_steps; {config.name} has "
                             "none")
        self.model = model
        self.config = config
        self.requested_pack = pack
        self.pair = config.paired_steps if pair is None else pair
        self.passes: list[Pass] = []
        self.weights: list[list[int]] = []
        self.params: list[tuple[int, int]] = []
        self.steps: list[tuple] = []
        self.tensors: dict[str, tuple[int, TensorSpec]] = {}
        self.globals: dict = {}
        self.activation_words = 0
        _Builder(self).build()
        self.cycles = cycle_report(self)

    # ---- load image ------------------------------------------------------------------------
    def records(self) -> list[bytes]:
        """Every load record in order, the commit record last (layouts in `hw/isa.py`)."""
        recs = [isa.record(isa.REC_GLOBAL, isa.GLOBAL_LAYOUT.pack(self.globals))]
        weight = isa.weight_layout(self.config.pe_rows)
        entries = (
            (isa.REC_WEIGHT, self.weights,
             lambda word: weight.pack({f.name: w for f, w in zip(weight, word, strict=True)})),
            (isa.REC_PARAM, self.params,
             lambda p: isa.PARAM_LAYOUT.pack({"bias": p[0], "threshold": p[1]})),
            (isa.REC_STEP, self.steps, lambda step: isa.pack_step(*step)))
        n = isa.MAX_RECORD_ENTRIES
        for kind, items, pack in entries:
            for start in range(0, len(items), n):
                chunk = items[start:start + n]
                recs.append(isa.record(kind, b"".join(map(pack, chunk)), addr=start,
                                       count=len(chunk)))
        for index, p in enumerate(self.passes):
            recs.append(isa.record(isa.REC_DESC, isa.DESC_LAYOUT.pack(p.desc), index=index))
        recs.append(isa.commit_record(len(self.passes), recs))
        return recs

    def load_chunks(self, max_bytes: int) -> list[bytes]:
        """The load image as chunks of whole records, each at most `max_bytes` long."""
        chunks, current = [], b""
        for rec in self._split_records(max_bytes):
            if current and len(current) + len(rec) > max_bytes:
                chunks.append(current)
                current = b""
            current += rec
        chunks.append(current)
        return chunks

    def _split_records(self, max_bytes: int) -> list[bytes]:
        recs = self.records()
        sizes = {isa.REC_WEIGHT: self.config.pe_rows, isa.REC_PARAM: isa.PARAM_BYTES,
                 isa.REC_STEP: isa.STEP_BYTES}
        biggest = max(len(r) for r in recs if r[0] not in sizes)
        if max_bytes < biggest:
            raise ValueError(f"max_bytes = {max_bytes} is below the largest fixed record "
                             f"({biggest} bytes)")
        out = []
        head = 1 + isa.ENTRIES_HEADER.nbytes
        for rec in recs[:-1]:
            if len(rec) <= max_bytes or rec[0] not in sizes:
                out.append(rec)
                continue
            kind, header, body = isa.split_record(rec)
            size = sizes[kind]
            per = max(1, (max_bytes - head) // size)
            for first in range(0, header["count"], per):
                n = min(per, header["count"] - first)
                out.append(isa.record(kind, body[first * size:(first + n) * size],
                                      addr=header["addr"] + first, count=n))
        # The commit's record count and checksum describe the records as sent.
        out.append(isa.commit_record(len(self.passes), out))
        return out

    # ---- inputs and results ----------------------------------------------------------------
    @property
    def input_bytes(self) -> int:
        return 1 + self.globals["n_pixels"]

    def encode_input(self, image: np.ndarray, trace: bool = False) -> bytes:
        spec = self.model.input_spec
        x = np.asarray(image)
        if x.shape == spec.shape[1:] and spec.shape[0] == 1:
            x = x[None]
        if x.shape != spec.shape:
            raise ValueError(f"image shape {np.asarray(image).shape}, expected {spec.shape}")
        lo, hi = spec.value_range()
        if x.min() < lo or x.max() > hi:
            raise ValueError(f"pixels outside [{lo}, {hi}]")
        # Pixels in word order: channel, position within the band, lane group (band).
        k = self.globals["pack"]
        x = x.reshape(spec.channels, k, spec.positions // k).transpose(0, 2, 1)
        return bytes([1 if trace else 0]) + x.astype(np.uint8).tobytes()

    def trace_tensors(self) -> list[tuple[str, int, TensorSpec]]:
        return [(p.dump, *self.tensors[p.dump]) for p in self.passes if p.dump]

    def result_bytes(self, trace: bool) -> int:
        n = 4 * self.model.num_classes
        if trace:
            wb = isa.word_bytes(self.config.lanes)
            n += sum(p.desc["dump_words"] * wb for p in self.passes if p.dump)
        return n

    def decode_result(self, payload: bytes, trace: bool):
        if len(payload) != self.result_bytes(trace):
            raise ValueError(f"result has {len(payload)} bytes, expected "
                             f"{self.result_bytes(trace)}")
        T, L, k = self.model.T, self.config.lanes, self.globals["pack"]
        wb = isa.word_bytes(L)
        offset, traced = 0, None
        if trace:
            traced = {}
            for name, _, spec in self.trace_tensors():
                C, H, W = spec.shape
                planes = _planes(spec)
                n = planes * C * H * W // k
                raw = np.frombuffer(payload[offset:offset + n * wb], np.uint8)
                offset += n * wb
                words = raw.reshape(n, wb).astype(np.int64)
                words = sum(words[:, i] << (8 * i) for i in range(wb))
                bits = (words[:, None] >> np.arange(k * T)[None, :]) & 1  # (n, k T)
                # (planes, C, p, g, T) -> position g * band + p
                bits = bits.reshape(planes, C, H * W // k, k, T).transpose(0, 1, 3, 2, 4)
                bits = bits.reshape(planes, C, H * W, T)
                value = sum(bits[b] << b for b in range(planes))
                if spec.kind == "int":
                    value = value - (bits[planes - 1] << planes)
                traced[name] = value.transpose(2, 0, 1).reshape(T, C, H, W)
        logits = np.frombuffer(payload[offset:], "<i4").astype(np.int64)
        return logits, traced


def compile_network(model: IntModel, config: ArrayConfig, *,
                    pack: int | None = None, pair: bool | None = None) -> CompiledNetwork:
    """Compile `model` for `config`; raises `DoesNotFit` naming the layer and the limit.

    `pack` (lane groups per word) defaults to the most the lanes and grids allow (1 on an
    array without `lane_packing`); pass 1 to leave the spare lanes idle when T < lanes (for
    comparisons). `pair` (default: the array's `paired_steps`) issues two bit-planes or
    operands per reduction step where a layer has them (multi-bit inputs, elementwise sums);
    `pair=False` issues one per step (for comparisons)."""
    return CompiledNetwork(model, config, pack, pair)


# ---- the pass builder --------------------------------------------------------------------------

class _Builder:
    def __init__(self, net: CompiledNetwork):
        self.net = net
        self.cfg = net.config
        self.model = net.model
        self.R, self.C, self.L = self.cfg.pe_rows, self.cfg.pe_cols, self.cfg.lanes
        self.k = 1
        self.alloc = _Allocator(self.cfg.act_depth * self.C)
        self.acc_limit = 1 << (self.cfg.acc_bits - 1)
        self.mem_limit = (1 << (self.cfg.membrane_bits - 1)) - 1

    # -- helpers
    def fail(self, layer: str, what: str):
        raise DoesNotFit(f"layer {layer}: {what}")

    def tensor_words(self, spec: TensorSpec) -> int:
        return _planes(spec) * spec.channels * self.band(spec.positions)

    def band(self, positions: int) -> int:
        """Words per channel-plane of a tensor of `positions` (positions per lane group)."""
        return positions // self.k

    def choose_pack(self) -> int:
        """The most lane groups (`pack`, T lanes each) every layer's grid allows: every grid
        splits into `pack` bands of whole rows; a 3x3 conv's band is a multiple of pe_cols
        words (edge reads shift whole bank runs); a max-pool maps whole bands to bands."""
        model = self.model
        best = self.L // model.T if self.cfg.lane_packing else 1
        if self.net.requested_pack is not None:
            if not 1 <= self.net.requested_pack <= best:
                allowed = (f"1 .. lanes // T = {best}" if self.cfg.lane_packing
                           else "1 (the array has no lane_packing)")
                self.fail(model.layers[0].name, f"pack = {self.net.requested_pack} is not in "
                          f"{allowed}")
            best = self.net.requested_pack
        for k in range(best, 1, -1):
            ok = all(spec.positions % k == 0 for spec in model.tensors.values())
            for layer in model.layers:
                spec = model.tensors[layer.inputs[0]]
                H = spec.shape[1]
                if layer.kind == "conv" and layer.params.get("kernel") == 3:
                    ok &= H % k == 0 and (spec.positions // k) % self.C == 0
                elif layer.kind == "maxpool":
                    # whole output rows per band, and bands of whole bank runs (edge reads)
                    ok &= H % 2 == 0 and (H // 2) % k == 0 and (spec.positions // k) % self.C == 0
            if ok:
                return k
        return 1

    def new_tensor(self, name: str, spec: TensorSpec, layer: str, reuse=()) -> int:
        """Allocate tensor `name`; with `reuse`, write it in place over one of those input
        tensors that dies at this layer if its block is large enough (elementwise passes only:
        each tile writes exactly the words it has read, after reading them). A tensor that a
        wider residual sum will overwrite is allocated at that sum's size up front."""
        words = self.tensor_words(spec)
        net = self.net
        dying = [n for n in reuse if self.last_use.get(n) == self.index and n in net.tensors
                 and n not in self.adopted and self.held[n] >= words]
        if dying:
            cand = max(dying, key=lambda n: self.held[n])
            self.adopted.add(cand)
            base = net.tensors[cand][0]
            self.held[name] = self.held[cand]
            net.tensors[name] = (base, spec)
            return base
        held = max(words, self.reserve.get(name, 0))
        base = self.alloc.alloc(held, f"layer {layer} (tensor {name})", top=_planes(spec) > 1)
        self.held[name] = held
        net.tensors[name] = (base, spec)
        return base

    def temp(self, words: int, layer: str) -> int:
        base = self.alloc.alloc(words, f"layer {layer} (attention temporaries)")
        self.temps.append((base, words))
        return base

    def lif_threshold(self, theta: int, shift: int) -> int:
        # Fire iff 2^L H >= theta 2^(L - s); 2^L H is an integer for t <= L.
        thr = -(-(int(theta) << self.L) // (1 << shift))
        return min(thr, self.mem_limit)

    def step_threshold(self, value: int) -> int:
        return value << (self.L - 1)

    def check_acc(self, layer: Layer) -> golden.AccumulatorBound:
        """The layer's accumulator bound (`golden.layer_bound`); DoesNotFit beyond acc_bits."""
        b = golden.layer_bound(self.model, layer)
        if b.bound >= self.acc_limit:
            self.fail(layer.name, f"{b.what} may reach {b.bound}, beyond the "
                      f"{self.cfg.acc_bits}-bit accumulator (acc_bits = {self.cfg.acc_bits})")
        return b

    def desc(self, **fields) -> dict:
        d = {f: 0 for f in isa.DESC_FIELDS}
        d.update(op=isa.OP_ARRAY, groups=1, taps=1, out_planes=1, par_rg=self.R,
                 col_ct=self.C, out_ct=self.C)
        d.update(fields)
        if d["op"] == isa.OP_ARRAY:
            d["rgs"] = _ceil(d["rows"], self.R)
            d["cts"] = _ceil(d["cols"], self.C)
        return d

    def paired(self, ops, desc: dict) -> list[tuple]:
        """Reduction steps from single-operand ops (col_off, w_off, shift, neg): two ops of the
        same weight word share one paired step (the second read through the row port, whose
        run then follows the column run: the row strides copy the column strides)."""
        if not self.net.pair or desc["row_mode"] != isa.ROW_ONES \
                or desc["col_mode"] != isa.COL_RUN:
            return [(c, 0, w, s, n) for c, w, s, n in ops]
        steps, i = [], 0
        while i < len(ops):
            c, w, s, n = ops[i]
            if i + 1 < len(ops) and ops[i + 1][1] == w:
                c2, _, s2, n2 = ops[i + 1]
                steps.append((c, c2, w, s, n, 1, s2, n2))
                i += 2
            else:
                steps.append((c, 0, w, s, n))
                i += 1
        if len(steps) < len(ops):
            desc.update(row_base=desc["col_base"], row_g=desc["col_g"], row_rg=desc["col_rg"],
                        row_ct=desc["col_ct"])
        desc["steps"] = len(steps)
        return steps

    def add_pass(self, layer: Layer, desc: dict, steps, params, weights=(), useful=0,
                 dump=None, array_ops=0, in_planes=1):
        steps = [isa.Step(*s) for s in steps]
        for step in steps:
            try:
                entry = isa.pack_step(*step)
            except ValueError as exc:
                self.fail(layer.name, f"a reduction step does not encode: {exc}")
            # What the gateware will hold must be what was meant (no field cut short).
            held = isa.decode_step(entry, self.cfg)
            if (held["shift"], held["shift2"]) != (step.shift, step.shift2
                                                   if self.cfg.paired_steps else 0):
                self.fail(layer.name, f"step shift {step.shift}/{step.shift2} beyond the array's "
                          f"{isa.SHIFT_BITS}-bit shift field")
        self.net.passes.append(Pass(layer.name, desc, steps, list(params),
                                    [list(w) for w in weights], useful, dump, array_ops,
                                    in_planes))

    # -- network
    def build(self):
        net, model, cfg = self.net, self.model, self.cfg
        if model.T > self.L:
            self.fail(model.layers[0].name, f"T = {model.T} exceeds the {self.L} time-step "
                      "lanes (lanes)")
        if model.weight_bits > cfg.weight_bits:
            self.fail(model.layers[0].name, f"weight_bits = {model.weight_bits} exceeds the "
                      f"array's {cfg.weight_bits}-bit weights (weight_bits)")
        spec = model.input_spec
        if spec.bits > 8:
            self.fail(model.layers[0].name, f"input pixels have {spec.bits} bits; tokens carry "
                      "at most 8")
        n_pixels = spec.channels * spec.positions
        if 1 + n_pixels > cfg.input_depth:
            self.fail(model.layers[0].name, f"input needs {1 + n_pixels} bytes, more than the "
                      f"{cfg.input_depth}-byte input slot (input_depth)")
        self.k = self.choose_pack()
        self.T = model.T
        # Constant weight words: R identity rows, then an all-ones word.
        self.w_ident = 0
        self.w_ones = self.R
        self.weight_words = [[int(r == i) for r in range(self.R)] for i in range(self.R)]
        self.weight_words.append([1] * self.R)
        self.last_use = last_use = {}
        for i, layer in enumerate(model.layers):
            for name in layer.inputs:
                last_use[name] = i
        self.adopted = set()  # dying inputs whose words an in-place output took over
        self.held = {}  # words allocated per tensor
        self.reserve = {}  # words a residual sum written in place will need
        for i, layer in enumerate(model.layers):
            if layer.kind in ("ms_add", "sew_add"):
                need = self.tensor_words(model.tensors[layer.output])
                for name in layer.inputs:
                    if last_use[name] == i:
                        self.reserve[name] = max(self.reserve.get(name, 0), need)
        in_base = self.new_tensor(model.input, spec, "input")
        net.globals = dict(n_pixels=n_pixels, pixel_bits=spec.bits, T=model.T, in_base=in_base,
                           in_plane=spec.channels * self.band(spec.positions), pack=self.k)
        for i, layer in enumerate(model.layers):
            self.temps = []
            self.index = i
            getattr(self, "layer_" + layer.kind)(layer)
            for base, words in self.temps:
                self.alloc.release(base, words)
            for name in set(layer.inputs):
                if last_use[name] == i and name in net.tensors and name not in self.adopted:
                    self.alloc.release(net.tensors[name][0], self.held[name])
        self.assign_addresses()
        net.activation_words = self.alloc.peak

    def assign_addresses(self):
        net, cfg = self.net, self.cfg
        net.weights = list(self.weight_words)
        for p in net.passes:
            p.desc["w_base"] += len(net.weights) if p.weights else 0
            net.weights.extend(p.weights)
            p.desc["par_base"] = len(net.params)
            net.params.extend(p.params)
            p.desc["step_base"] = len(net.steps)
            net.steps.extend(p.steps)
        for what, used, limit in (("weight words", len(net.weights), cfg.weight_depth),
                                  ("parameter entries", len(net.params), cfg.param_depth),
                                  ("reduction steps", len(net.steps), cfg.step_depth),
                                  ("passes", len(net.passes), cfg.program_depth)):
            if used > limit:
                layer = net.passes[-1].layer
                name = {"weight words": "weight_depth", "parameter entries": "param_depth",
                        "reduction steps": "step_depth", "passes": "program_depth"}[what]
                raise DoesNotFit(f"layer {layer}: the program needs {used} {what}, more than "
                                 f"the {limit} the array holds ({name})")
        # The gateware range-checks every field at load; hold the compiler to the same table.
        limits = isa.field_limits(cfg)
        for p in net.passes:
            for name, value in p.desc.items():
                lo, hi = limits[name]
                if not lo <= value <= hi:
                    raise DoesNotFit(f"layer {p.layer}: descriptor field {name} = {value} is "
                                     f"outside {lo} .. {hi} on this array")

    # -- layer kinds
    def layer_conv(self, layer: Layer):
        m = self.model
        xin = m.tensors[layer.inputs[0]]
        out = m.tensors[layer.output]
        w = np.asarray(layer.arrays["weight"], np.int64)
        bias = np.asarray(layer.arrays["bias"], np.int64)
        cout, cin, k, _ = w.shape
        taps = k * k
        H, W = xin.shape[1:]
        P = self.band(H * W)
        planes = _planes(xin)
        if k == 3 and W & (W - 1):
            self.fail(layer.name, f"a 3x3 conv needs a power-of-two grid width, got {W}")
        self.check_acc(layer)
        src, _ = self.net.tensors[layer.inputs[0]]
        dst = self.new_tensor(layer.output, out, layer.name)
        ops = [((b * cin + ch) * P, ch * taps, b, 0) for ch in range(cin) for b in range(planes)]
        weights = []
        for rg in range(_ceil(cout, self.R)):
            for ch in range(cin):
                for t in range(taps):
                    weights.append([int(w[o, ch, t // k, t % k]) if o < cout else 0
                                    for o in range(rg * self.R, rg * self.R + self.R)])
        if layer.has_neuron:
            shift = layer.threshold_shift
            params = [(int(b), self.lif_threshold(t, shift))
                      for b, t in zip(bias, layer.arrays["threshold"], strict=True)]
            mode, oplanes = isa.OUT_LIF, 1
        else:
            params = [(int(b), 0) for b in bias]
            mode, oplanes = isa.OUT_RAW, out.bits
        d = self.desc(rows=cout, cols=P, steps=len(ops), taps=taps, pad=int(k == 3),
                      # The band's last grid row starts at P - W; only 3x3 padding reads it
                      # (a band of a 1x1 conv may hold less than one grid row).
                      width=W, lastrow=max(0, P - W), band=P if self.k > 1 else 0,
                      out_mode=mode,
                      out_planes=oplanes,
                      col_base=src, w_rg=cin * taps, out_base=dst, out_rg=self.R * P,
                      out_row=P, out_plane=cout * P,
                      dump_base=dst, dump_words=self.tensor_words(out))
        steps = self.paired(ops, d)
        self.add_pass(layer, d, steps, params, weights,
                      useful=cout * cin * taps * xin.positions * m.T, dump=layer.output,
                      array_ops=cout * cin * planes * m.T * (
                          (3 * H - 2) * (3 * W - 2) if k == 3 else H * W),
                      in_planes=planes)

    def layer_head(self, layer: Layer):
        m = self.model
        xin = m.tensors[layer.inputs[0]]
        w = np.asarray(layer.arrays["weight"], np.int64)
        bias = np.asarray(layer.arrays["bias"], np.int64)
        classes, cin = w.shape
        P = self.band(xin.positions)
        planes = _planes(xin)
        total = self.check_acc(layer).logits
        if total >= 1 << 31:
            self.fail(layer.name, f"logits may reach {total}, beyond 32 bits")
        src, _ = self.net.tensors[layer.inputs[0]]
        ops = [((b * cin + ch) * P, ch, b, 0) for ch in range(cin) for b in range(planes)]
        weights = [[int(w[o, ch]) if o < classes else 0
                    for o in range(rg * self.R, rg * self.R + self.R)]
                   for rg in range(_ceil(classes, self.R)) for ch in range(cin)]
        params = [(int(b), 0) for b in bias]
        if int(np.abs(bias).max()) >= self.acc_limit:
            self.fail(layer.name, f"bias beyond the {self.cfg.acc_bits}-bit accumulator")
        d = self.desc(rows=classes, cols=P, steps=len(ops), out_mode=isa.OUT_HEAD,
                      col_base=src, w_rg=cin)
        steps = self.paired(ops, d)
        self.add_pass(layer, d, steps, params, weights,
                      useful=classes * cin * xin.positions * m.T,
                      array_ops=classes * cin * planes * xin.positions * m.T, in_planes=planes)

    def layer_maxpool(self, layer: Layer):
        xin = self.model.tensors[layer.inputs[0]]
        out = self.model.tensors[layer.output]
        src, _ = self.net.tensors[layer.inputs[0]]
        dst = self.new_tensor(layer.output, out, layer.name)
        C, H, W = xin.shape
        band = self.band(H * W)
        # Per band: input rows H / pack, output rows Ho / pack; a chunk of K outputs of a row
        # per tile, S run reads per window row (see isa.OP_MAXPOOL).
        K, S = isa.maxpool_chunk(self.C)
        Wo = out.shape[2]
        chunks = _ceil(Wo, K)
        steps = [isa.maxpool_step(ky, seg, W, self.C) for ky in range(3) for seg in range(S)]
        act = self.cfg.act_depth * self.C
        d = self.desc(op=isa.OP_MAXPOOL, groups=C, rgs=out.shape[1] // self.k, cts=chunks,
                      steps=len(steps), col_base=(src - W - 1) % act, col_g=band,
                      col_rg=2 * W, col_ct=2 * K, out_base=dst,
                      out_g=self.band(out.positions), out_rg=Wo, out_ct=K,
                      mp_last=Wo - (chunks - 1) * K,
                      mp_odd=(H // self.k) % 2 | (W % 2) << 1,
                      band=band if self.k > 1 else 0, dump_base=dst,
                      dump_words=self.tensor_words(out))
        self.add_pass(layer, d, steps, [], dump=layer.output)

    def depthwise(self, layer: Layer, operands, mode, oplanes, params, out_name, out_base,
                  channels, P, row=None, dump=True):
        """A pass where row r of a tile reads only channel r of each operand (identity
        weights): elementwise sums, LIF on an int tensor, IAND and AND masks."""
        first = operands[0][0]
        ops = []
        for s in range(self.R):
            for base, spec, negate in operands:
                planes = _planes(spec)
                for b in range(planes):
                    neg = int(negate or (spec.kind == "int" and b == planes - 1))
                    if negate and spec.kind != "spike":
                        raise AssertionError("negated operands are spikes")
                    ops.append((base - first + (b * channels + s) * P, self.w_ident + s, b, neg))
        fields = dict(rows=channels, cols=P, steps=len(ops), out_mode=mode,
                      out_planes=oplanes, col_base=first, col_rg=self.R * P, w_base=0,
                      out_base=out_base, out_rg=self.R * P, out_row=P,
                      out_plane=channels * P)
        if row is not None:
            fields.update(row_mode=isa.ROW_RUN, row_base=row, row_rg=self.R)
        if dump:
            fields.update(dump_base=out_base, dump_words=oplanes * channels * P)
        d = self.desc(**fields)
        steps = self.paired(ops, d)
        self.add_pass(layer, d, steps, params, dump=out_name if dump else None)

    def layer_lif(self, layer: Layer):
        xin = self.model.tensors[layer.inputs[0]]
        out = self.model.tensors[layer.output]
        self.check_acc(layer)
        src, _ = self.net.tensors[layer.inputs[0]]
        dst = self.new_tensor(layer.output, out, layer.name)
        params = [(0, self.lif_threshold(t, layer.threshold_shift))
                  for t in layer.arrays["threshold"]]
        self.depthwise(layer, [(src, xin, False)], isa.OUT_LIF, 1, params, layer.output, dst,
                       xin.channels, self.band(xin.positions))

    def _residual(self, layer: Layer, negate_first: bool, mode, oplanes, thr):
        specs = [self.model.tensors[n] for n in layer.inputs]
        out = self.model.tensors[layer.output]
        self.check_acc(layer)
        bases = [self.net.tensors[n][0] for n in layer.inputs]
        # Residual streams are the largest tensors: write the sum over a dying operand.
        dst = self.new_tensor(layer.output, out, layer.name, reuse=layer.inputs)
        ops = [(bases[0], specs[0], negate_first), (bases[1], specs[1], False)]
        params = [(0, thr)] * out.channels
        self.depthwise(layer, ops, mode, oplanes, params, layer.output, dst, out.channels,
                       self.band(out.positions))

    def layer_sew_add(self, layer: Layer):
        self._residual(layer, False, isa.OUT_RAW, self.model.tensors[layer.output].bits, 0)

    def layer_ms_add(self, layer: Layer):
        self._residual(layer, False, isa.OUT_RAW, self.model.tensors[layer.output].bits, 0)

    def layer_iand(self, layer: Layer):
        # (NOT branch) AND shortcut == (shortcut - branch >= 1)
        self._residual(layer, True, isa.OUT_STEP, 1, self.step_threshold(1))

    def transpose(self, layer: Layer, src: int, channels: int, P: int) -> int:
        """Spike tensor (channels x P) -> (P x channels): rows are positions of the source,
        columns its channels, a one-hot column per step."""
        if self.R > self.C:
            self.fail(layer.name, f"attention needs pe_rows <= pe_cols, got {self.R} > {self.C}")
        dst = self.temp(channels * P, layer.name)
        steps = [(s, s * P, self.w_ones, 0, 0) for s in range(self.C)]
        d = self.desc(rows=P, cols=channels, steps=len(steps), col_mode=isa.COL_ONEHOT,
                      row_mode=isa.ROW_RUN, out_mode=isa.OUT_STEP, row_base=src,
                      row_rg=self.R, row_ct=self.C * P, out_base=dst, out_rg=self.R * channels,
                      out_row=channels, out_plane=channels * P)
        self.add_pass(layer, d, steps, [(0, self.step_threshold(1))] * P)
        return dst

    def rot(self, groups: int) -> int:
        """Row-offset bits that rotate the row operand's lane groups up by `groups`."""
        return (groups * self.T) << isa.ROT_SHIFT

    def layer_ssa(self, layer: Layer):
        q, k, v = (self.net.tensors[n][0] for n in layer.inputs)
        spec = self.model.tensors[layer.inputs[0]]
        out = self.model.tensors[layer.output]
        D, N = spec.channels, spec.positions
        B, K = self.band(N), self.k
        heads = layer.params["heads"]
        dh = D // heads
        abits = max(1, dh.bit_length())
        self.check_acc(layer)
        dst = self.new_tensor(layer.output, out, layer.name)
        vt = self.transpose(layer, v, D, B)
        # A^T = k^T q per head, one slice per lane-group rotation r: lane group g of slice r,
        # row m, column n holds A^T[m + ((g - r) mod pack) band, n + g band].
        slice_words = abits * heads * B * B
        at = self.temp(K * slice_words, layer.name)
        for r in range(K):
            steps = [(j * B, j * B | self.rot(r), self.w_ones, 0, 0) for j in range(dh)]
            d = self.desc(groups=heads, rows=B, cols=B, steps=len(steps), row_mode=isa.ROW_RUN,
                          out_mode=isa.OUT_RAW, out_planes=abits, col_base=q, col_g=dh * B,
                          row_base=k, row_g=dh * B, row_rg=self.R, par_g=B,
                          out_base=at + r * slice_words, out_g=B * B, out_rg=self.R * B,
                          out_row=B, out_plane=heads * B * B)
            self.add_pass(layer, d, steps, [(0, 0)] * (heads * B))
        # y = A v: rotating v^T's lane groups by r pairs each slice with the right tokens.
        steps = [(r * slice_words + (b * heads * B + m) * B, m * D | self.rot(r), self.w_ones,
                  b, 0) for m in range(B) for r in range(K) for b in range(abits)]
        params = [(0, self.lif_threshold(t, layer.threshold_shift))
                  for t in layer.arrays["threshold"]]
        d = self.desc(groups=heads, rows=dh, cols=B, steps=len(steps), row_mode=isa.ROW_RUN,
                      out_mode=isa.OUT_LIF, col_base=at, col_g=B * B, row_base=vt, row_g=dh,
                      row_rg=self.R, par_g=dh, out_base=dst, out_g=dh * B, out_rg=self.R * B,
                      out_row=B, out_plane=D * B, dump_base=dst, dump_words=D * B)
        self.add_pass(layer, d, steps, params, dump=layer.output)

    def layer_sdsa(self, layer: Layer):
        q, k, v = (self.net.tensors[n][0] for n in layer.inputs)
        spec = self.model.tensors[layer.inputs[0]]
        out = self.model.tensors[layer.output]
        D, N = spec.channels, spec.positions
        B, K = self.band(N), self.k
        self.check_acc(layer)
        dst = self.new_tensor(layer.output, out, layer.name)
        kv = self.temp(D * B, layer.name)
        self.depthwise(layer, [(k, spec, False), (v, spec, False)], isa.OUT_STEP, 1,
                       [(0, self.step_threshold(2))] * D, None, kv, D, B, dump=False)
        kvt = self.transpose(layer, kv, D, B)
        # Gate: row r = channel c0 + r sums column c of the transposed AND over the tokens
        # (a row-operand run); one column, per-channel thresholds. Summing every lane-group
        # rotation gives each group the sum over all tokens, so the gate is replicated.
        gate = self.temp(D, layer.name)
        steps = [(0, n * D | self.rot(r), self.w_ones, 0, 0) for n in range(B) for r in range(K)]
        params = [(0, self.lif_threshold(t, layer.threshold_shift))
                  for t in layer.arrays["threshold"]]
        d = self.desc(rows=D, cols=1, steps=len(steps), col_mode=isa.COL_ONEHOT,
                      row_mode=isa.ROW_RUN, out_mode=isa.OUT_LIF, row_base=kvt,
                      row_rg=self.R, out_base=gate, out_rg=self.R, out_row=1, out_plane=D)
        self.add_pass(layer, d, steps, params)
        self.depthwise(layer, [(q, spec, False)], isa.OUT_STEP, 1,
                       [(0, self.step_threshold(1))] * D, layer.output, dst, D, B, row=gate)
