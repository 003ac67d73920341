"""Small seeded random integer networks that use every layer kind.

Tests of the golden model, the compiler and the RTL need networks that are small (fast to
simulate), varied (every layer kind, both residual families) and reproducible. A trained export is
one point; these give many. Weights are drawn so that neurons fire on a useful fraction of inputs.
"""

from __future__ import annotations

import numpy as np

from . import golden
from .golden import derive_tensor_specs
from .intmodel import IntModel, Layer, TensorSpec

FAMILIES = ("sew", "iand", "ms", "sdsa")


class _Builder:
    def __init__(self, rng: np.random.Generator, weight_bits: int, input_name: str,
                 input_spec: TensorSpec, T: int):
        self.rng = rng
        self.qmax = (1 << (weight_bits - 1)) - 1
        self.layers: list[Layer] = []
        self.channels = {input_name: input_spec.shape[0]}
        self.input_name, self.input_spec, self.T = input_name, input_spec, T
        # Calibration batch: thresholds are set from the accumulators it produces, so that
        # every neuron fires on a useful fraction of inputs (neither silent nor saturated).
        _, hi = input_spec.value_range()
        sample = self.rng.integers(0, hi + 1, size=(8,) + tuple(input_spec.shape))
        self.values = {input_name: np.repeat(sample[:, None], T, axis=1)}

    def _threshold(self, acc: np.ndarray) -> np.ndarray:
        # Per channel: the 30th percentile of the positive accumulator values (at least 1).
        per_channel = np.moveaxis(acc, 2, 0).reshape(acc.shape[2], -1)
        quant = [np.percentile(c[c > 0], 30) if (c > 0).any() else 1 for c in per_channel]
        jitter = self.rng.integers(0, 2, size=len(quant))
        return np.maximum(1, np.asarray(quant, np.int64) + jitter).astype(np.int32)

    def _add(self, layer: Layer):
        self.layers.append(layer)
        out, _ = golden.run_layer(layer, [self.values[n] for n in layer.inputs])
        self.values[layer.output] = out

    def conv(self, name, src, cout, kernel=3, neuron=True):
        cin = self.channels[src]
        w = self.rng.integers(-self.qmax, self.qmax + 1, size=(cout, cin, kernel, kernel))
        # Positive-leaning weights so that spikes are neither all 0 nor all 1.
        w = np.where(self.rng.random(w.shape) < 0.35, 0, w).astype(np.int8 if self.qmax < 128
                                                                    else np.int16)
        arrays = {"weight": w,
                  "bias": self.rng.integers(-self.qmax, self.qmax, size=cout).astype(np.int32)}
        params = {"kernel": kernel}
        if neuron:
            acc = golden.conv(self.values[src], w, arrays["bias"])
            arrays["threshold"] = self._threshold(acc)
            params["threshold_shift"] = 0
        self._add(Layer(name, "conv", (src,), name + ".out", params, arrays))
        self.channels[name + ".out"] = cout
        return name + ".out"

    def op(self, name, kind, inputs, **params):
        arrays = {}
        if kind in ("lif", "ssa", "sdsa"):
            c = self.channels[inputs[0]]
            params.setdefault("threshold_shift", 1 if kind == "sdsa" else 0)
            probe = Layer(name, kind, tuple(inputs), name + ".out", dict(params),
                          {"threshold": np.ones(c, np.int32)})
            _, acc = golden.run_layer(probe, [self.values[n] for n in inputs])
            acc = self.values[inputs[0]] if acc is None else acc
            arrays["threshold"] = self._threshold(acc)
        self._add(Layer(name, kind, tuple(inputs), name + ".out", params, arrays))
        self.channels[name + ".out"] = self.channels[inputs[0]]
        return name + ".out"

    def head(self, src, classes):
        c = self.channels[src]
        arrays = {"weight": self.rng.integers(-self.qmax, self.qmax + 1,
                                              size=(classes, c)).astype(np.int16),
                  "bias": self.rng.integers(-100, 100, size=classes).astype(np.int32)}
        self._add(Layer("head", "head", (src,), "logits", {}, arrays))

    def build(self, family: str, T: int, classes: int, weight_bits: int) -> IntModel:
        specs = derive_tensor_specs(self.input_name, self.input_spec, self.layers, T)
        return IntModel(model=f"random_{family}", T=T, weight_bits=weight_bits,
                        num_classes=classes, input=self.input_name, tensors=specs,
                        layers=tuple(self.layers), meta={"family": family})


def random_int_model(family: str = "sew", seed: int = 0, T: int = 4, size: int = 8,
                     in_channels: int = 1, dim: int = 8, heads: int = 2, classes: int = 4,
                     weight_bits: int = 8, pixel_bits: int = 5) -> IntModel:
    """A seeded random network of one residual family on a `size` x `size` input.

    Families: "sew" (Spikformer: SEW adds, uint sums into linear layers, SSA), "iand"
    (all-spike), "ms" (membrane shortcut, int stream, standalone LIFs, SSA) and "sdsa"
    (membrane shortcut with spike-driven attention).
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    rng = np.random.default_rng(seed)
    spec = TensorSpec("uint", pixel_bits, (in_channels, size, size))
    b = _Builder(rng, weight_bits, "image", spec, T)
    if family in ("sew", "iand"):
        x = b.conv("tok.conv0", "image", dim // 2)
        x = b.op("tok.pool", "maxpool", [x])
        feat = b.conv("tok.conv1", x, dim)
        rpe = b.conv("tok.rpe", feat, dim)
        res = "sew_add" if family == "sew" else "iand"
        x = b.op("tok.res", res, [feat, rpe] if res == "sew_add" else [rpe, feat])
        q = b.conv("attn.q", x, dim, kernel=1)
        k = b.conv("attn.k", x, dim, kernel=1)
        v = b.conv("attn.v", x, dim, kernel=1)
        a = b.op("attn.ssa", "ssa", [q, k, v], heads=heads)
        p = b.conv("attn.proj", a, dim, kernel=1)
        x = b.op("attn.res", res, [x, p] if res == "sew_add" else [p, x])
        h = b.conv("mlp.fc1", x, 2 * dim, kernel=1)
        m = b.conv("mlp.fc2", h, dim, kernel=1)
        x = b.op("mlp.res", res, [x, m] if res == "sew_add" else [m, x])
        b.head(x, classes)
    else:
        x = b.conv("tok.conv0", "image", dim // 2)
        x = b.op("tok.pool", "maxpool", [x])
        stream = b.conv("tok.conv1", x, dim, neuron=False)
        s = b.op("attn.lif", "lif", [stream])
        q = b.conv("attn.q", s, dim, kernel=1)
        k = b.conv("attn.k", s, dim, kernel=1)
        v = b.conv("attn.v", s, dim, kernel=1)
        if family == "ms":
            a = b.op("attn.ssa", "ssa", [q, k, v], heads=heads)
        else:
            a = b.op("attn.sdsa", "sdsa", [q, k, v])
        p = b.conv("attn.proj", a, dim, kernel=1, neuron=False)
        stream = b.op("attn.res", "ms_add", [stream, p])
        s = b.op("mlp.lif", "lif", [stream])
        h = b.conv("mlp.fc1", s, 2 * dim, kernel=1)
        m = b.conv("mlp.fc2", h, dim, kernel=1, neuron=False)
        stream = b.op("mlp.res", "ms_add", [stream, m])
        s = b.op("head.lif", "lif", [stream])
        b.head(s, classes)
    return b.build(family, T, classes, weight_bits)


def random_images(model: IntModel, count: int, seed: int = 0) -> np.ndarray:
    """Seeded random pixels in the model's input range, shaped (count, C, H, W)."""
    rng = np.random.default_rng(seed)
    _, hi = model.input_spec.value_range()
    return rng.integers(0, hi + 1, size=(count,) + tuple(model.input_spec.shape))
