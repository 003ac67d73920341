"""PyTorch integer mode: runs an exported `IntModel` with torch ops, apart from the golden model.

This is the second, independent implementation of the integer semantics of `pysim/FORMAT.md`
(the first is the NumPy golden model, `pysim/golden.py`). Convolutions run as `torch.conv2d` on
float64 tensors holding exact integers (every value stays far below 2^53); the neuron, masks
and sums run on int64 tensors. It returns the same logits and the same trace (names, shapes,
values) as `pysim.golden.run`, so a test can demand bit-for-bit equality of the two.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from pysim.data import check_images
from pysim.intmodel import IntModel, Layer


def lif(x: torch.Tensor, threshold: torch.Tensor, shift: int) -> torch.Tensor:
    """Integer LIF over all T of `x` (B, T, C, H, W) int64; `threshold` (C,), shift `s`.

    Keeps `F = T + s` fractional bits so every halving is exact, and fires when the membrane
    reaches `threshold / 2^s`, i.e. `threshold << T` in membrane units.
    """
    steps = x.shape[1]
    frac = steps + shift
    limit = (threshold.to(torch.int64) << steps).view(1, -1, 1, 1)
    v = torch.zeros_like(x[:, 0])
    out = torch.empty_like(x)
    for t in range(steps):
        m = (v + (x[:, t] << frac)) >> 1
        s = m >= limit
        v = torch.where(s, torch.zeros_like(m), m)
        out[:, t] = s.to(torch.int64)
    return out


def _conv(x: torch.Tensor, weight: np.ndarray, bias: np.ndarray, kernel: int) -> torch.Tensor:
    b, t = x.shape[:2]
    y = F.conv2d(x.flatten(0, 1).double(), torch.from_numpy(weight.astype(np.float64)),
                 torch.from_numpy(bias.astype(np.float64)), padding=kernel // 2)
    return torch.round(y).to(torch.int64).view(b, t, *y.shape[1:])


def _ssa(q, k, v, heads):
    """`q k^T v` per time step and head, as integers (channel groups of C / heads)."""
    b, t, c, h, w = q.shape

    def split(a):  # (B, T, heads, N, C / heads) in float64 (exact small integers)
        return a.double().reshape(b, t, heads, c // heads, h * w).transpose(-1, -2)

    y = split(q) @ (split(k).transpose(-1, -2) @ split(v))
    return torch.round(y.transpose(-1, -2).reshape(b, t, c, h, w)).to(torch.int64)


def run(model: IntModel, images, record: bool = True):
    """Integer inference of `model` on `images` (B, H, W) or (B, C, H, W).

    Returns `(logits, trace)`: logits int64 (B, classes) as a NumPy array, and a dict mapping
    every tensor written by a layer, `<layer>.acc` (the neuron's integer input) for conv layers
    with a neuron and ssa/sdsa layers, and "logits" to int64 NumPy arrays (B, T, C, H, W).
    """
    spec = model.input_spec
    c, h, w = spec.shape
    array = check_images(images, (h, w), c, (1 << spec.bits) - 1)
    x = torch.from_numpy(array).unsqueeze(1).expand(-1, model.T, -1, -1, -1).contiguous()
    env = {model.input: x}
    trace = {}
    for layer in model.layers:
        out, acc = _layer(layer, [env[name] for name in layer.inputs])
        env[layer.output] = out
        if record:
            if acc is not None:
                trace[f"{layer.name}.acc"] = acc.numpy()
            trace[layer.output] = out.numpy()
    logits = env[model.output].numpy()
    return logits, trace


def _threshold(layer: Layer) -> torch.Tensor:
    return torch.from_numpy(layer.arrays["threshold"].astype(np.int64))


def _layer(layer: Layer, ins: list):
    """One layer: returns (output, pre-neuron accumulator or None)."""
    kind = layer.kind
    x = ins[0]
    if kind == "conv":
        acc = _conv(x, layer.arrays["weight"], layer.arrays["bias"], layer.params["kernel"])
        if layer.has_neuron:
            return lif(acc, _threshold(layer), layer.threshold_shift), acc
        return acc, None
    if kind == "lif":
        return lif(x, _threshold(layer), layer.threshold_shift), None
    if kind == "maxpool":
        b, t = x.shape[:2]
        y = F.max_pool2d(x.flatten(0, 1).double(), 3, 2, 1).to(torch.int64)
        return y.view(b, t, *y.shape[1:]), None
    if kind == "ssa":
        acc = _ssa(*ins, layer.params["heads"])
        return lif(acc, _threshold(layer), layer.threshold_shift), acc
    if kind == "sdsa":
        q, k, v = ins
        acc = (k & v).sum(dim=(3, 4), keepdim=True)
        gate = lif(acc, _threshold(layer), layer.threshold_shift)
        return q & gate, acc
    if kind in ("sew_add", "ms_add"):
        return ins[0] + ins[1], None
    if kind == "iand":
        branch, shortcut = ins
        return (1 - branch) & shortcut, None
    if kind == "head":
        weight = torch.from_numpy(layer.arrays["weight"].astype(np.int64))
        bias = torch.from_numpy(layer.arrays["bias"].astype(np.int64))
        total = x.sum(dim=(1, 3, 4))  # (B, C): sum over T and tokens
        return total @ weight.T + bias, None
    raise ValueError(f"layer {layer.name}: unknown kind {kind!r}")
