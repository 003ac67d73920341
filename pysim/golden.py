"""The golden model: a bit-exact NumPy integer model of every layer kind.

This module is the definition of correct. The PyTorch integer mode and the RTL must agree with it
on every spike, every accumulator and every logit. It uses integer arithmetic only (int64), never
rounds, and does not import torch. `pysim/FORMAT.md` states the same semantics in words.

Arrays are `(B, T, C, H, W)`: a batch of B inputs, T time steps, C channels on an H x W grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .intmodel import IntModel, Layer, TensorSpec

__all__ = [
    "conv", "conv3x3", "conv1x1", "conv_multibit", "lif", "maxpool", "ssa", "sdsa", "sew_add",
    "ms_add", "iand", "head", "run", "derive_tensor_specs", "layer_bound", "layer_bounds",
    "AccumulatorBound", "prepare_input",
]


def _int(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


# ---- weight layers ---------------------------------------------------------------------------

def conv(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Convolution with stride 1 and zero padding `k // 2`; k = 1 is a linear layer over tokens.

    `acc[b, t, o, y, x] = sum_{i, dy, dx} w[o, i, dy, dx] * in[b, t, i, y + dy - p, x + dx - p]
    + bias[o]`, with p = k // 2 and out-of-grid inputs 0. The input may be spikes or unsigned
    multi-bit integers; the arithmetic is the same exact integer sum.
    """
    x, weight, bias = _int(x), _int(weight), _int(bias)
    B, T, C, H, W = x.shape
    cout, cin, k, k2 = weight.shape
    if cin != C or k != k2 or k % 2 == 0:
        raise ValueError(f"conv weight {weight.shape} does not fit input {x.shape}")
    pad = k // 2
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad), (pad, pad)))
    # im2col with columns ordered (i, dy, dx) to match weight.reshape(cout, -1).
    taps = [padded[..., dy:dy + H, dx:dx + W] for dy in range(k) for dx in range(k)]
    cols = np.stack(taps, axis=3).reshape(B, T, C * k * k, H * W)
    acc = np.einsum("ok,btkp->btop", weight.reshape(cout, -1), cols, optimize=True)
    return acc.reshape(B, T, cout, H, W) + bias[None, None, :, None, None]


def conv3x3(x, weight, bias):
    """3x3 convolution, stride 1, zero padding 1 (tokenizer and relative-position layers)."""
    if weight.shape[2:] != (3, 3):
        raise ValueError(f"conv3x3 needs a (Cout, Cin, 3, 3) weight, got {weight.shape}")
    return conv(x, weight, bias)


def conv1x1(x, weight, bias):
    """1x1 convolution, i.e. a linear layer applied to every token."""
    if weight.shape[2:] != (1, 1):
        raise ValueError(f"conv1x1 needs a (Cout, Cin, 1, 1) weight, got {weight.shape}")
    return conv(x, weight, bias)


def conv_multibit(x, weight, bias, bits: int):
    """The first layer on multi-bit pixels, computed over bit-planes as the hardware does.

    `sum_b 2^b * conv(plane_b(x))` equals `conv(x)` exactly for unsigned `x < 2^bits`; computing it
    the hardware's way here documents (and tests) that the bit-serial schedule is exact.
    """
    x = _int(x)
    if x.min(initial=0) < 0 or x.max(initial=0) >= 1 << bits:
        raise ValueError(f"conv_multibit input outside the unsigned {bits}-bit range")
    zero_bias = np.zeros_like(_int(bias))
    acc = sum(conv((x >> b) & 1, weight, zero_bias) << b for b in range(bits))
    return acc + _int(bias)[None, None, :, None, None]


# ---- neuron ----------------------------------------------------------------------------------

def lif(x: np.ndarray, threshold, shift: int = 0) -> np.ndarray:
    """LIF neuron over all T steps at once (tau = 2, hard reset to 0, fire on >=).

    Fires exactly where the float recursion `H = (V + X) / 2; S = H >= theta / 2^shift` does: the
    membrane keeps `F = T + shift` fractional bits, so every halving is exact. `threshold` is one
    integer per channel (axis 2) or a scalar.
    """
    x = _int(x)
    T = x.shape[1]
    frac = T + shift
    theta = _int(threshold)
    if theta.ndim == 1:
        theta = theta.reshape((1, -1) + (1,) * (x.ndim - 3))
    fire_at = theta << T
    membrane = np.zeros_like(x[:, 0])
    spikes = np.zeros_like(x)
    for t in range(T):
        membrane = (membrane + (x[:, t] << frac)) >> 1
        fired = membrane >= fire_at
        spikes[:, t] = fired
        membrane = np.where(fired, 0, membrane)
    return spikes


# ---- spike-only layers -----------------------------------------------------------------------

def maxpool(x: np.ndarray) -> np.ndarray:
    """3x3 max-pool, stride 2, padding 1, on spikes: a logical OR over each window."""
    x = _int(x)
    if x.min(initial=0) < 0 or x.max(initial=0) > 1:
        raise ValueError("maxpool is defined on spikes (0/1) only")
    B, T, C, H, W = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (0, 0), (1, 1), (1, 1)))
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    out = np.zeros((B, T, C, Ho, Wo), dtype=np.int64)
    for dy in range(3):
        for dx in range(3):
            out |= padded[..., dy:dy + 2 * Ho:2, dx:dx + 2 * Wo:2]
    return out


def ssa(q, k, v, heads: int, threshold, shift: int = 0):
    """Spikformer self-attention without softmax: `LIF(q k^T v)` per time step and head.

    Returns `(acc, spikes)`; `acc` is the integer `q k^T v` (equal to `q (k^T v)`), before the
    attention neuron.
    """
    q, k, v = _int(q), _int(k), _int(v)
    B, T, C, H, W = q.shape
    dh = C // heads
    # (B, T, heads, N, dh)
    def split(a):
        return a.reshape(B, T, heads, dh, H * W).swapaxes(-1, -2)
    qh, kh, vh = split(q), split(k), split(v)
    attn = qh @ kh.swapaxes(-1, -2)  # (B, T, heads, N, N): q k^T counts
    y = attn @ vh  # (B, T, heads, N, dh)
    acc = y.swapaxes(-1, -2).reshape(B, T, C, H, W)
    return acc, lif(acc, threshold, shift)


def sdsa(q, k, v, threshold, shift: int = 1):
    """Spike-driven self-attention as in its authors' code.

    `kv[c] = sum_n k[c, n] AND v[c, n]`, `g = LIF(kv)`, output `q AND g` (a channel mask on q).
    Returns `(kv, spikes)` with `kv` shaped `(B, T, C, 1, 1)`.
    """
    q, k, v = _int(q), _int(k), _int(v)
    kv = (k & v).sum(axis=(3, 4), keepdims=True)
    gate = lif(kv, threshold, shift)
    return kv, q & gate


def sew_add(a, b):
    """Spike-element-wise ADD residual: an integer sum of spikes (Spikformer)."""
    return _int(a) + _int(b)


def ms_add(stream, branch):
    """Membrane-shortcut residual: the stream plus a branch's membrane input, same scale."""
    return _int(stream) + _int(branch)


def iand(branch, shortcut):
    """IAND residual: `(NOT branch) AND shortcut`, bitwise per time step."""
    return (1 - _int(branch)) & _int(shortcut)


def head(x, weight, bias):
    """Mean over tokens and T, then a linear classifier, as exact integers.

    `logits[o] = sum_{t, n, i} w[o, i] * x[t, i, n] + bias[o]`: the mean's factor 1 / (T N) is
    folded into the logit scale (argmax unchanged) and `bias` already includes T N.
    """
    pooled = _int(x).sum(axis=(1, 3, 4))  # (B, C)
    return pooled @ _int(weight).T + _int(bias)[None, :]


# ---- network ---------------------------------------------------------------------------------

def prepare_input(model: IntModel, images) -> np.ndarray:
    """Check a batch of images against the model's input and repeat it over T.

    Accepts `(B, H, W)` for single-channel inputs, `(B, C, H, W)`, or one image without the batch
    axis. Returns `(B, T, C, H, W)` int64.
    """
    spec = model.input_spec
    x = np.asarray(images)
    if not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"images must be integers (pixel values), got dtype {x.dtype}")
    shape = tuple(spec.shape)
    if x.shape == shape or (shape[0] == 1 and x.shape == shape[1:]):
        x = x[None]
    if x.ndim == 3 and shape[0] == 1:
        x = x[:, None]
    if x.ndim != 4 or x.shape[1:] != shape:
        raise ValueError(f"images have shape {np.asarray(images).shape}; {model.model} expects "
                         f"(B, {', '.join(map(str, shape))})"
                         + (f" or (B, {shape[1]}, {shape[2]})" if shape[0] == 1 else ""))
    lo, hi = spec.value_range()
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"pixel values must lie in [{lo}, {hi}] ({spec.bits}-bit unsigned), "
                         f"got [{x.min()}, {x.max()}]")
    return np.repeat(_int(x)[:, None], model.T, axis=1)


def run_layer(layer: Layer, inputs: list) -> tuple[np.ndarray, np.ndarray | None]:
    """Compute one layer; returns `(output, pre-neuron accumulator or None)`."""
    a = layer.arrays
    kind = layer.kind
    if kind == "conv":
        acc = conv(inputs[0], a["weight"], a["bias"])
        if layer.has_neuron:
            return lif(acc, a["threshold"], layer.threshold_shift), acc
        return acc, None
    if kind == "maxpool":
        return maxpool(inputs[0]), None
    if kind == "lif":
        return lif(inputs[0], a["threshold"], layer.threshold_shift), None
    if kind == "ssa":
        acc, out = ssa(*inputs, layer.params["heads"], a["threshold"], layer.threshold_shift)
        return out, acc
    if kind == "sdsa":
        acc, out = sdsa(*inputs, a["threshold"], layer.threshold_shift)
        return out, acc
    if kind == "sew_add":
        return sew_add(*inputs), None
    if kind == "ms_add":
        return ms_add(*inputs), None
    if kind == "iand":
        return iand(*inputs), None
    if kind == "head":
        return head(inputs[0], a["weight"], a["bias"]), None
    raise ValueError(f"layer {layer.name}: unknown kind {kind!r}")


def run(model: IntModel, images, record: bool = True):
    """Run the integer network on a batch of images.

    Returns `(logits, trace)`: logits `(B, classes)` int64; `trace` (empty unless `record`) maps
    every tensor a layer writes to its `(B, T, C, H, W)` values, `"<layer>.acc"` to the
    pre-neuron integers of conv-with-neuron, ssa and sdsa layers, and `"logits"` to the logits.
    Every value is checked against the range the export declares for its tensor.
    """
    values = {model.input: prepare_input(model, images)}
    trace = {}
    for layer in model.layers:
        out, acc = run_layer(layer, [values[name] for name in layer.inputs])
        if layer.kind != "head":
            spec = model.tensors[layer.output]
            lo, hi = spec.value_range()
            if out.size and (out.min() < lo or out.max() > hi):
                raise RuntimeError(f"layer {layer.name}: values [{out.min()}, {out.max()}] "
                                   f"exceed the declared {spec.kind} {spec.bits}-bit range of "
                                   f"tensor {layer.output!r}; the export's bounds are wrong")
        values[layer.output] = out
        if record:
            trace[layer.output] = out
            if acc is not None:
                trace[f"{layer.name}.acc"] = acc
    logits = values[model.output]
    if record:
        trace["logits"] = logits
    return logits, trace


# ---- static bounds ---------------------------------------------------------------------------

def _bits_for(lo: int, hi: int, signed: bool) -> int:
    if not signed:
        return max(1, int(hi).bit_length())
    return 1 + max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0)


def _propagate(input_name: str, input_spec: TensorSpec, layers, T: int):
    """Per-channel worst-case (lo, hi) of every tensor, its shape and kind."""
    lo, hi = input_spec.value_range()
    C = input_spec.shape[0]
    ranges = {input_name: (np.full(C, lo, np.int64), np.full(C, hi, np.int64))}
    shapes = {input_name: input_spec.shape}
    kinds = {input_name: input_spec.kind}
    for layer in layers:
        ins = [ranges[n] for n in layer.inputs]
        shape = shapes[layer.inputs[0]]
        kind, out_range = "spike", None
        if layer.kind in ("conv", "head"):
            w = _int(layer.arrays["weight"])
            if w.ndim == 2:
                w = w[:, :, None, None]
            in_lo, in_hi = ins[0]
            # Padding contributes 0, which lies inside [lo, hi] for spike and uint inputs.
            per_tap_hi = np.maximum(w * in_hi[None, :, None, None], w * in_lo[None, :, None, None])
            per_tap_lo = np.minimum(w * in_hi[None, :, None, None], w * in_lo[None, :, None, None])
            scale = T * shape[1] * shape[2] if layer.kind == "head" else 1
            bias = _int(layer.arrays["bias"])
            acc_lo = per_tap_lo.sum(axis=(1, 2, 3)) * scale + bias
            acc_hi = per_tap_hi.sum(axis=(1, 2, 3)) * scale + bias
            shape = (w.shape[0],) + tuple(shape[1:])
            if layer.kind == "conv" and not layer.has_neuron:
                kind, out_range = "int", (acc_lo, acc_hi)
        elif layer.kind == "maxpool":
            shape = (shape[0], (shape[1] + 1) // 2, (shape[2] + 1) // 2)
        elif layer.kind in ("sew_add", "ms_add"):
            kind = "uint" if layer.kind == "sew_add" else "int"
            out_range = (ins[0][0] + ins[1][0], ins[0][1] + ins[1][1])
        if out_range is None:
            out_range = (np.zeros(shape[0], np.int64), np.ones(shape[0], np.int64))
        ranges[layer.output] = out_range
        shapes[layer.output] = tuple(shape)
        kinds[layer.output] = kind
    return ranges, shapes, kinds


def derive_tensor_specs(input_name: str, input_spec: TensorSpec, layers, T: int) -> dict:
    """Every tensor's kind, worst-case bit width and shape, from the integer weights.

    The exporter calls this to fill the manifest's `tensors`; the bounds hold for every input.
    """
    ranges, shapes, kinds = _propagate(input_name, input_spec, layers, T)
    specs = {}
    for name, (lo, hi) in ranges.items():
        if name == input_name:
            specs[name] = input_spec
            continue
        if any(layer.output == name and layer.kind == "head" for layer in layers):
            continue
        kind = kinds[name]
        bits = 1 if kind == "spike" else _bits_for(int(lo.min()), int(hi.max()), kind == "int")
        specs[name] = TensorSpec(kind, bits, shapes[name])
    return specs


@dataclass(frozen=True)
class AccumulatorBound:
    """The largest magnitude a layer's accumulation reaches for any input in the declared
    tensor ranges, per output value and time step (`what` says what it counts)."""

    bound: int  #: every partial sum, and the sum plus the bias, lies in -bound .. bound
    what: str
    #: the head only: the largest magnitude of a logit (a sum over every token and T, + bias)
    logits: int | None = None


def _magnitude(spec: TensorSpec) -> int:
    lo, hi = spec.value_range()
    return max(-lo, hi)


def layer_bound(model: IntModel, layer: Layer) -> AccumulatorBound | None:
    """The accumulator bound of one layer (None for max-pool, which only ORs spikes).

    From the declared ranges of its input tensors and its integer weights: conv
    `max_o sum |w_o| * max|x| + |bias_o|` (inputs are spikes or unsigned, so every partial sum
    of taps, channels and bit-planes lies inside); head the same per token and step, and
    `N T` times that plus the bias for a logit; lif `max|x|`; residual sums (SEW, membrane
    shortcut, IAND's difference) the sum of their operands' magnitudes; SSA `N * dh`
    (`q k^T` counts at most dh per token pair, times v's spikes summed over N tokens); SDSA
    `N` (k AND v over the tokens). `tests/test_golden_bounds.py` checks that the golden
    model's accumulations stay inside and that SSA's reaches its bound.
    """
    specs = [model.tensors[name] for name in layer.inputs]
    x = specs[0]
    if layer.kind in ("conv", "head"):
        w = np.abs(_int(layer.arrays["weight"]))
        fan = w.reshape(w.shape[0], -1).sum(axis=1) * _magnitude(x)
        bias = np.abs(_int(layer.arrays["bias"]))
        if layer.kind == "conv":
            return AccumulatorBound(int((fan + bias).max()), "accumulator")
        return AccumulatorBound(int(fan.max()), "accumulator",
                                int(fan.max()) * x.positions * model.T + int(bias.max()))
    if layer.kind == "lif":
        return AccumulatorBound(_magnitude(x), "accumulator")
    if layer.kind in ("sew_add", "ms_add", "iand"):
        return AccumulatorBound(sum(map(_magnitude, specs)), "accumulator")
    if layer.kind == "ssa":
        dh = x.channels // layer.params["heads"]
        return AccumulatorBound(x.positions * dh, "attention count q k^T v")
    if layer.kind == "sdsa":
        return AccumulatorBound(x.positions, "k AND v count")
    return None


def layer_bounds(model: IntModel) -> dict:
    """`layer_bound` of every layer that accumulates: {layer name: AccumulatorBound}. The
    compiler checks these against the array's accumulator and logit widths."""
    out = {}
    for layer in model.layers:
        bound = layer_bound(model, layer)
        if bound is not None:
            out[layer.name] = bound
    return out
