"""Seeded random integer networks over the whole export format, for differential fuzzing.

`pysim/random_model.py` makes four well-behaved families of one shape each (8x8 grids, T = 4,
8-bit weights, calibrated thresholds). The fuzzer of `tb/fuzz.py` needs the rest of the format
too, so `fuzz_network(seed, config)` draws a random layer graph over every layer kind and
residual form of `pysim/FORMAT.md`:

- 3x3 and 1x1 convolutions with and without a neuron, on spikes, on the multi-bit pixels (the
  bit-serial first layer) and on unsigned SEW sums; max-pool; LIF on int and on uint tensors;
  SSA (any head count dividing the channels) and SDSA; SEW add (spike + spike, spike + uint,
  uint + uint), membrane-shortcut add (int + int) and IAND; the mean-pool head on spikes or
  uint; sometimes one tensor as several operands of a layer (`x + x`, `q = k = v`);
- weights at the extremes of the model's width (`+-(2^(b-1) - 1)`; the format has no
  `-2^(b-1)`, IntModel rejects it, so narrower powers `-2^k` stand in) mixed with random ones;
- biases from zero through "just fits the accumulator" to the int32 extremes;
- thresholds from 1 to `2^31 - 1`, calibrated ones exactly at observed accumulator values, and
  threshold shifts 0 .. 16 (the format's limit);
- int and uint tensors declared wider than their weights need, up to the array's accumulator
  width (bit-planes up to `acc_bits`);
- T = 1 .. lanes, grids 1 .. 16 on each side (non-powers of two included: the compiler refuses a
  3x3 conv on them today) and now and then a long side (24 .. 1000), pixels of 1 .. 8 bits,
  and rarely values beyond what the array takes (T > lanes, wider weights or pixels, inputs
  beyond the input slot) so that the refusals are exercised too.

A network is "interesting" (thresholds calibrated on a batch of inputs so that neurons fire on a
useful fraction), "extreme" (boundary values everywhere) or "mixed". Every network validates
(`IntModel`'s checks) and its declared bit widths hold for every input, so a disagreement
downstream is never the generator's fault. The same seed and config give the same network.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw.config import ArrayConfig

from . import golden
from .golden import derive_tensor_specs
from .intmodel import IntModel, Layer, TensorSpec

STYLES = ("interesting", "extreme", "mixed")
#: Largest threshold shift the format allows (`pysim/intmodel.py`).
MAX_SHIFT = 16
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
#: Inputs the thresholds are calibrated on.
CALIBRATION = 6


@dataclass(frozen=True)
class Limits:
    """What the generator aims at on one array: most draws fit it, a few step over on purpose."""

    lanes: int  #: largest T that fits
    weight_bits: int  #: widest model weights that fit
    acc_bits: int  #: accumulator width: int/uint tensors are declared up to this
    input_depth: int  #: bytes of an input slot (1 + pixels)

    @classmethod
    def of(cls, config: ArrayConfig) -> Limits:
        return cls(config.lanes, config.weight_bits, config.acc_bits, config.input_depth)


def weight_extremes(bits: int) -> np.ndarray:
    """The boundary values of signed `bits`-bit model weights: +-qmax, 0, +-1 and, for every
    narrower width k, `-2^(k-1)` and `2^(k-1) - 1` (the format itself stops at `-qmax`)."""
    qmax = (1 << (bits - 1)) - 1
    vals = {0, 1, -1, qmax, -qmax}
    for k in range(2, bits):
        vals.update({-(1 << (k - 1)), (1 << (k - 1)) - 1})
    return np.array(sorted(vals), np.int64)


def network_seed(run_seed: int, index: int) -> int:
    """The seed of network `index` of a fuzzing run seeded `run_seed` (what `--replay` takes)."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1, np.uint32)[0])


class _Gen:
    """State of one generation: the layers so far, their specs and calibration values."""

    def __init__(self, seed: int, limits: Limits):
        self.rng = rng = np.random.default_rng(seed)
        self.rng_side = np.random.default_rng([seed, 1])
        self.seed = seed
        self.limits = limits
        self.style = str(rng.choice(STYLES, p=[0.5, 0.2, 0.3]))
        self.extreme_p = {"interesting": 0.05, "extreme": 0.8, "mixed": 0.35}[self.style]
        # Rarely step over the array's limits so that each refusal is exercised.
        L = limits.lanes
        self.T = int(rng.integers(1, L + 1)) if rng.random() > 0.03 else int(
            rng.integers(L + 1, min(64, 2 * L) + 1))
        wmax = limits.weight_bits
        self.wbits = int(rng.integers(2, wmax + 1)) if rng.random() > 0.03 else int(
            rng.integers(wmax + 1, 17))
        self.qmax = (1 << (self.wbits - 1)) - 1
        self.acc_limit = 1 << (limits.acc_bits - 1)
        pixel_bits = int(rng.integers(1, 9)) if rng.random() > 0.03 else int(rng.integers(9, 13))
        H, W = self._grid(), self._grid()
        for _ in range(4):  # mostly grids whose input fits the array's input slot
            if H * W < limits.input_depth or rng.random() < 0.1:
                break
            H, W = self._grid(), self._grid()
        fit = max(1, (limits.input_depth - 1) // (H * W))
        cin = int(rng.integers(1, min(4, fit) + 1)) if rng.random() > 0.03 else int(
            rng.integers(1, 9))
        self.input = "image"
        self.input_spec = TensorSpec("uint", pixel_bits, (cin, H, W))
        self.layers: list[Layer] = []
        self.widen: dict[str, int] = {}
        self.specs = {self.input: self.input_spec}
        self.order = [self.input]  # tensors in the order they were written
        images = fuzz_images(self.input_spec, CALIBRATION, rng)
        self.values = {self.input: np.repeat(images[:, None], self.T, axis=1)}

    # ---- draws ---------------------------------------------------------------------------------
    def _grid(self) -> int:
        rng = self.rng
        # Now and then a long side (the compiler takes any grid its memories hold), drawn from
        # a stream of its own so that the other networks of a seed stay as they were.
        if self.rng_side.random() < 0.04:
            return int(self.rng_side.choice([24, 32, 64, 128, 256, 1000]))
        if rng.random() < 0.75:
            return int(rng.choice([1, 2, 4, 4, 8, 8, 16]))
        return int(rng.integers(1, 17))

    def channels(self) -> int:
        rng = self.rng
        return int(rng.choice([1, 2, 3, 4, 4, 6, 8, 8, 12, 16]))

    def extreme(self) -> bool:
        return bool(self.rng.random() < self.extreme_p)

    def weights(self, shape: tuple, xmax: int) -> np.ndarray:
        """Weights in [-qmax, qmax]: random, sparse, extreme, mixed, or a few +-1 (for wide
        inputs, so that a conv on an 18-bit tensor still fits the accumulator)."""
        rng, qmax = self.rng, self.qmax
        mode = rng.choice(["random", "sparse", "mixed", "extreme", "saturate", "tiny"],
                          p=[0.3, 0.2, 0.2, 0.1, 0.05, 0.15] if self.extreme() else
                          [0.45, 0.3, 0.15, 0.0, 0.0, 0.1])
        if xmax >= 1 << 12 and rng.random() < 0.8:
            mode = "tiny"
        w = rng.integers(-qmax, qmax + 1, size=shape)
        if mode == "sparse":
            w = np.where(rng.random(shape) < rng.uniform(0.3, 0.9), 0, w)
        elif mode == "mixed":
            w = np.where(rng.random(shape) < 0.3, rng.choice(weight_extremes(self.wbits), shape),
                         w)
        elif mode == "extreme":
            w = rng.choice(weight_extremes(self.wbits), shape)
        elif mode == "saturate":
            w = np.full(shape, qmax if rng.random() < 0.5 else -qmax)
        elif mode == "tiny":
            w = np.where(rng.random(shape) < 0.9, 0, rng.choice([-1, 1], shape))
            w.flat[rng.integers(0, w.size)] = rng.choice([-1, 1])
        dtype = np.int8 if self.wbits <= 8 else np.int16
        if rng.random() < 0.1:
            dtype = np.int32  # the format names int8/int16; any integer array loads
        return w.astype(dtype)

    def biases(self, n: int, weight_part: np.ndarray, raw: bool = False) -> np.ndarray:
        """Per-output biases. `weight_part[o]` is the largest |sum w x| of output o, so
        `acc_limit - 1 - weight_part` is the most a bias can add and still fit the array.
        With `raw` (the layer writes an int tensor) the sum stays within 32 bits, the widest
        tensor the format declares."""
        rng = self.rng
        # A raw (int) output usually leaves a layer that reads it room: a LIF or residual on
        # it needs its magnitude below 2^(acc_bits - 1) too.
        limit = self.acc_limit // 4 if raw and rng.random() < 0.7 else self.acc_limit
        room = np.maximum(0, limit - 1 - np.asarray(weight_part, np.int64))
        if not self.extreme():
            kind = rng.choice(["zero", "small", "room"], p=[0.15, 0.6, 0.25])
        else:
            kind = rng.choice(["zero", "small", "room", "edge", "int32"],
                              p=[0.1, 0.2, 0.35, 0.3, 0.05])
        sign = rng.choice([-1, 1], n)
        if kind == "zero":
            b = np.zeros(n, np.int64)
        elif kind == "small":
            q = max(self.qmax, 4)
            b = rng.integers(-q, q + 1, n)
        elif kind == "room":
            # log-uniform magnitudes up to what still fits
            b = sign * np.floor(np.exp(rng.uniform(0, np.log(room + 1.0)))).astype(np.int64)
            b = np.clip(b, -room, room)
        elif kind == "edge":
            b = sign * room  # exactly the largest bias that fits
        else:
            pick = rng.choice([INT32_MIN, INT32_MAX, 0], n)
            rand = sign * np.floor(np.exp(rng.uniform(0, np.log(2.0**31), n))).astype(np.int64)
            b = np.where(rng.random(n) < 0.5, pick, np.clip(rand, INT32_MIN, INT32_MAX))
        if raw:
            cap = np.maximum(0, INT32_MAX - np.asarray(weight_part, np.int64))
            b = np.clip(b, -cap, cap)
        return b.astype(np.int32)

    def shift(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.35:
            return 0
        if r < 0.55:
            return 1
        if r < 0.65:
            return MAX_SHIFT
        return int(rng.integers(0, MAX_SHIFT + 1))

    def thresholds(self, acc: np.ndarray, shift: int) -> np.ndarray:
        """Per-channel thresholds (axis 2 of `acc`, the pre-neuron integers of the calibration
        batch). Calibrated: the neuron at step 0 fires exactly when X >= an observed value (a
        percentile taken with `nearest`, so ties at the threshold occur); extreme: 1,
        `2^31 - 1` or log-uniform over the int32 range."""
        rng = self.rng
        C = acc.shape[2]
        per_channel = np.moveaxis(acc, 2, 0).reshape(C, -1)
        out = np.empty(C, np.int64)
        for c in range(C):
            if self.extreme() and rng.random() < 0.5:
                out[c] = rng.choice([1, INT32_MAX, int(np.exp(rng.uniform(0, np.log(2.0**31))))])
                continue
            pos = per_channel[c][per_channel[c] > 0]
            v = int(np.percentile(pos, rng.uniform(5, 95), method="nearest")) if pos.size else 1
            # H[0] = X / 2 >= theta / 2^s  <=>  X >= theta 2^(1 - s)
            theta = v << (shift - 1) if shift >= 1 else -(-v // 2)
            out[c] = theta + int(rng.integers(0, 2)) * (rng.random() < 0.3)
        return np.clip(out, 1, INT32_MAX).astype(np.int32)

    # ---- graph -------------------------------------------------------------------------------
    def spec(self, name: str) -> TensorSpec:
        return self.specs[name]

    def pick(self, cond, shape=None, grid=None) -> str | None:
        """A written tensor satisfying `cond(spec)` (and of `shape` / on `grid`), recent ones
        more likely; None if there is none."""
        names = [n for n in self.order if cond(self.specs[n])
                 and (shape is None or self.specs[n].shape == shape)
                 and (grid is None or self.specs[n].shape[1:] == grid)]
        if not names:
            return None
        p = np.arange(1, len(names) + 1, dtype=float) ** 2
        return names[int(self.rng.choice(len(names), p=p / p.sum()))]

    def add(self, kind: str, inputs, params=None, arrays=None) -> str:
        name = f"l{len(self.layers)}.{kind}"
        layer = Layer(name, kind, tuple(inputs), name + ".out", dict(params or {}),
                      dict(arrays or {}))
        out, _ = golden.run_layer(layer, [self.values[n] for n in inputs])
        self.layers.append(layer)
        self.values[layer.output] = out
        self.specs = derive_tensor_specs(self.input, self.input_spec, self.layers, self.T)
        spec = self.specs[layer.output]
        if spec.kind != "spike" and self.rng.random() < (0.6 if self.extreme() else 0.15):
            # A looser bound is still a bound: declare the tensor wider, up to what a layer
            # reading it can take (acc_bits - 1: its magnitude stays below the accumulator's
            # 2^(acc_bits - 1)), now and then one bit more (more bit-planes for its readers).
            top = self.limits.acc_bits - 1 + (1 if self.rng.random() < 0.05 else 0)
            if top > spec.bits:
                self.widen[layer.output] = int(self.rng.integers(spec.bits + 1, top + 1))
        for tensor, bits in self.widen.items():
            s = self.specs[tensor]
            self.specs[tensor] = TensorSpec(s.kind, max(bits, s.bits), s.shape)
        self.order.append(layer.output)
        return layer.output

    def conv(self, src: str, cout: int | None = None, kernel: int | None = None,
             neuron: bool | None = None) -> str:
        rng = self.rng
        x = self.spec(src)
        cout = cout or self.channels()
        kernel = kernel or int(rng.choice([1, 3]))
        neuron = bool(rng.random() < 0.7) if neuron is None else neuron
        xmax = x.value_range()[1]
        w = self.weights((cout, x.channels, kernel, kernel), xmax)
        part = np.abs(w.astype(np.int64)).sum(axis=(1, 2, 3)) * xmax
        while not neuron and part.max() >= 1 << 30:  # an int tensor of at most 32 bits
            w = (np.sign(w) * (np.abs(w) // 2)).astype(w.dtype)
            part = np.abs(w.astype(np.int64)).sum(axis=(1, 2, 3)) * xmax
        arrays = {"weight": w, "bias": self.biases(cout, part, raw=not neuron)}
        params = {"kernel": kernel}
        if neuron:
            acc = golden.conv(self.values[src], w, arrays["bias"])
            params["threshold_shift"] = self.shift()
            arrays["threshold"] = self.thresholds(acc, params["threshold_shift"])
        return self.add("conv", [src], params, arrays)

    def neuron_op(self, kind: str, inputs, **params) -> str:
        """lif, ssa or sdsa: calibrate the thresholds on the layer's own pre-neuron values."""
        shift = self.shift()
        C = self.spec(inputs[0]).channels
        probe = Layer("probe", kind, tuple(inputs), "probe", dict(params, threshold_shift=shift),
                      {"threshold": np.ones(C, np.int32)})
        _, acc = golden.run_layer(probe, [self.values[n] for n in inputs])
        acc = self.values[inputs[0]] if acc is None else acc
        return self.add(kind, inputs, dict(params, threshold_shift=shift),
                        {"threshold": self.thresholds(acc, shift)})

    def sum_fits(self, a: str, b: str) -> bool:
        """Whether `a + b` fits the 32-bit tensors of the format (declared ranges)."""
        (alo, ahi), (blo, bhi) = self.spec(a).value_range(), self.spec(b).value_range()
        if self.spec(a).kind == "int":
            return alo + blo >= INT32_MIN and ahi + bhi <= INT32_MAX
        return ahi + bhi < 1 << 32

    def spiking(self) -> str:
        """A spike tensor to build on (a new neuron conv on the image if there is none)."""
        s = self.pick(lambda t: t.kind == "spike")
        return s if s is not None else self.conv(self.input, neuron=True)

    # ---- macros: one step of the walk ----------------------------------------------------------
    def step(self):
        rng = self.rng
        ops = ["conv", "conv", "pool", "lif", "ssa", "sdsa", "sew", "iand", "ms"]
        getattr(self, "op_" + str(rng.choice(ops)))()

    def op_conv(self):
        src = self.pick(lambda t: t.kind in ("spike", "uint"))
        self.conv(src)

    def op_pool(self):
        self.add("maxpool", [self.spiking()])

    def op_lif(self):
        src = self.pick(lambda t: t.kind in ("int", "uint"))
        if src is None:
            src = self.conv(self.pick(lambda t: t.kind in ("spike", "uint")), neuron=False)
        self.neuron_op("lif", [src])

    def qkv(self, channels_ok=lambda c: True) -> list[str]:
        rng = self.rng
        s = self.spiking()
        # attention's temporaries grow with tokens^2 (and the golden model's too)
        while self.spec(s).positions > 16 and (self.spec(s).positions > 256
                                                 or rng.random() < 0.7):
            s = self.add("maxpool", [s])
        if rng.random() < 0.7:
            D = self.channels()
            while not channels_ok(D):
                D = self.channels()
            return [self.conv(s, D, 1, True) for _ in range(3)]
        shape = self.spec(s).shape
        return [self.pick(lambda t: t.kind == "spike", shape=shape) for _ in range(3)]

    def op_ssa(self):
        q, k, v = self.qkv()
        C = self.spec(q).channels
        heads = int(self.rng.choice([h for h in range(1, C + 1) if C % h == 0]))
        self.neuron_op("ssa", [q, k, v], heads=heads)

    def op_sdsa(self):
        self.neuron_op("sdsa", self.qkv())

    def op_sew(self):
        rng = self.rng
        a = self.pick(lambda t: t.kind in ("spike", "uint"))
        shape = self.spec(a).shape
        r = rng.random()
        if r < 0.6:
            src = self.pick(lambda t: t.kind in ("spike", "uint"), grid=shape[1:])
            b = self.conv(src, shape[0], None, True)
        elif r < 0.9:
            b = self.pick(lambda t: t.kind in ("spike", "uint"), shape=shape)
        else:
            b = a
        if not self.sum_fits(a, b):
            self.neuron_op("lif", [a] if self.spec(a).kind == "uint" else [b])
            return
        self.add("sew_add", [a, b] if rng.random() < 0.5 else [b, a])

    def op_iand(self):
        rng = self.rng
        a = self.spiking()
        shape = self.spec(a).shape
        r = rng.random()
        if r < 0.6:
            src = self.pick(lambda t: t.kind in ("spike", "uint"), grid=shape[1:])
            b = self.conv(src, shape[0], None, True)
        elif r < 0.9:
            b = self.pick(lambda t: t.kind == "spike", shape=shape)
        else:
            b = a
        self.add("iand", [b, a] if rng.random() < 0.7 else [a, b])

    def op_ms(self):
        """Membrane shortcut: stream + branch, the branch usually LIF(stream) -> raw conv."""
        rng = self.rng
        stream = self.pick(lambda t: t.kind == "int")
        if stream is None or rng.random() < 0.2:
            stream = self.conv(self.pick(lambda t: t.kind in ("spike", "uint")), neuron=False)
        shape = self.spec(stream).shape
        r = rng.random()
        if r < 0.6:
            s = self.neuron_op("lif", [stream])
            branch = self.conv(s, shape[0], None, False)
        elif r < 0.8:
            src = self.pick(lambda t: t.kind in ("spike", "uint"), grid=shape[1:])
            branch = self.conv(src, shape[0], None, False)
        elif r < 0.95:
            branch = self.pick(lambda t: t.kind == "int", shape=shape)
        else:
            branch = stream
        if not self.sum_fits(stream, branch):
            self.neuron_op("lif", [stream])
            return
        self.add("ms_add", [stream, branch])

    def finish(self) -> IntModel:
        rng = self.rng
        src = self.order[-1]
        if self.spec(src).kind == "int" or rng.random() < 0.25:
            src = self.pick(lambda t: t.kind in ("spike", "uint"))
            if src == self.input and rng.random() < 0.7:
                src = self.spiking()
        if self.spec(src).kind == "int":  # pick never returns int here; keep the head valid
            src = self.neuron_op("lif", [src])
        x = self.spec(src)
        classes = int(rng.integers(1, 17))
        xmax = x.value_range()[1]
        w = self.weights((classes, x.channels, 1, 1), xmax)[:, :, 0, 0]
        if rng.random() < 0.5:
            w = w.astype(np.int16)
        part = np.abs(w.astype(np.int64)).sum(axis=1) * xmax
        bias = self.biases(classes, part)
        self.layers.append(Layer("head", "head", (src,), "logits", {},
                                 {"weight": w, "bias": bias}))
        specs = {name: s for name, s in self.specs.items() if name != "logits"}
        meta = {"generator": "pysim.fuzz_model", "seed": self.seed, "style": self.style,
                "widened": dict(sorted(self.widen.items()))}
        return IntModel(model=f"fuzz_{self.seed}", T=self.T, weight_bits=self.wbits,
                        num_classes=classes, input=self.input, tensors=specs,
                        layers=tuple(self.layers), meta=meta)


def fuzz_network(seed: int, config: ArrayConfig | None = None) -> IntModel:
    """A random valid export for `config` (default: `ArrayConfig()`), the same for one seed.

    Draws T, weight width, pixel width, grid and input channels, then 1 .. 10 steps of a
    random walk over layer kinds (each step one layer or a small residual/attention block on
    tensors written so far), then the head.
    """
    gen = _Gen(int(seed), Limits.of(config or ArrayConfig()))
    for _ in range(int(gen.rng.integers(1, 11))):
        gen.step()
    return gen.finish()


def fuzz_images(spec: TensorSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` inputs for an input tensor `spec`, shaped (count, C, H, W): uniform random pixels,
    and from the third on also all-max, all-zero, sparse and checkerboard images."""
    _, hi = spec.value_range()
    shape = tuple(spec.shape)
    out = []
    for i in range(count):
        kind = i if i < 2 else int(rng.integers(0, 6))
        if kind in (0, 1):
            x = rng.integers(0, hi + 1, size=shape)
        elif kind == 2:
            x = np.full(shape, hi)
        elif kind == 3:
            x = np.zeros(shape, np.int64)
        elif kind == 4:
            x = np.where(rng.random(shape) < 0.15, rng.integers(0, hi + 1, size=shape), 0)
        else:
            yy, xx = np.indices(shape[1:])
            x = np.broadcast_to(((yy + xx) % 2) * hi, shape)
        out.append(np.asarray(x, np.int64))
    return np.stack(out)


def describe(model: IntModel) -> str:
    """One line: T, widths, grid and the layer kinds (for reports and failure messages)."""
    spec = model.input_spec
    kinds = []
    for layer in model.layers:
        k = layer.kind
        if k == "conv":
            k = f"conv{layer.params['kernel']}" + ("+lif" if layer.has_neuron else "")
        kinds.append(k)
    return (f"T={model.T} w{model.weight_bits} px{spec.bits} in{spec.shape} "
            f"{model.meta.get('style', '?')}: " + " ".join(kinds))


def features(model: IntModel) -> list[str]:
    """What of the format a network exercises (a coverage count over many networks): layer
    kinds with their operand kinds, T, widths, grid sides, threshold shifts, boundary weights,
    biases and thresholds, the widest multi-bit tensor a layer reads, repeated operands."""
    out = {f"T={model.T}", f"weight_bits={model.weight_bits}",
           f"pixel_bits={model.input_spec.bits}", f"H={model.input_spec.shape[1]}",
           f"W={model.input_spec.shape[2]}"}
    qmax = (1 << (model.weight_bits - 1)) - 1
    widest = 1
    for layer in model.layers:
        ins = [model.tensors[n] for n in layer.inputs]
        kinds = "+".join(t.kind for t in ins)
        name = layer.kind
        if layer.kind == "conv":
            name = f"conv{layer.params['kernel']}" + ("+lif" if layer.has_neuron else " raw")
            if layer.inputs[0] == model.input:
                name += " on pixels"
        out.add(f"layer {name} ({kinds})")
        if len(set(layer.inputs)) < len(layer.inputs):
            out.add(f"repeated operand ({layer.kind})")
        widest = max([widest] + [t.bits for t in ins if t.kind != "spike"])
        if "threshold" in layer.arrays:
            out.add(f"threshold_shift={layer.threshold_shift}")
            th = layer.arrays["threshold"]
            if (th == 1).any():
                out.add("threshold=1")
            if (th == INT32_MAX).any():
                out.add("threshold=2^31-1")
        if "weight" in layer.arrays:
            w = layer.arrays["weight"]
            if (w == qmax).any():
                out.add("weight=+qmax")
            if (w == -qmax).any():
                out.add("weight=-qmax")
            b = np.asarray(layer.arrays["bias"], np.int64)
            if (np.abs(b) >= 1 << 30).any():
                out.add("|bias|>=2^30")
    out.add("widest integer operand: " + ("<=8" if widest <= 8 else "9..16" if widest <= 16
                                          else "17..24" if widest <= 24 else ">24") + " bits")
    return sorted(out)
