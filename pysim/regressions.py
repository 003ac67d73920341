"""Minimal networks of faults found once, kept as regressions for every later core.

Each builder returns a small `IntModel` whose golden logits are known by hand; the tests run
them through `pysim.hwref` and the RTL (`tests/test_regressions.py`), and the fuzzer's report
refers to them by name.

- `wide_shift_network`: an 18-bit integer tensor read bit-serially by a LIF, so its planes
  shift the weight by 16 and 17. The gateware once read step shifts as 4 bits (a shift of 17
  became 1 with the sign set): the golden model never fires, the RTL fired everywhere.
- `stale_lane_networks`: a T = 4 network that fills the activation memory with all-ones words,
  then a T = 3 network with one 3x3 conv that looks only at the pixel below. A 3x3 window's
  bottom padding row reads the word below and shifts it down by T lanes; with the previous
  program's ones in the unused lane 3, the bottom row fired at t = 0 (logits [4, 0] instead of
  [0, 0] on all-zero images).
"""

from __future__ import annotations

import numpy as np

from .golden import derive_tensor_specs
from .intmodel import IntModel, Layer, TensorSpec


def _model(name: str, T: int, spec: TensorSpec, layers: list[Layer], classes: int) -> IntModel:
    tensors = derive_tensor_specs("image", spec, layers, T)
    return IntModel(model=name, T=T, weight_bits=8, num_classes=classes, input="image",
                    tensors=tensors, layers=tuple(layers))


def _head(src: str, channels: int, classes: int) -> Layer:
    weight = np.zeros((classes, channels), np.int8)
    weight[0] = 1
    return Layer("head", "head", (src,), "logits", {},
                 {"weight": weight, "bias": np.zeros(classes, np.int32)})


def wide_shift_network() -> IntModel:
    """T = 1, a 1x4x4 image, a 1x1 conv (weight 1, bias -100000, no neuron: an 18-bit int
    tensor), a LIF with threshold 1 reading it, the head: every logit is 0."""
    spec = TensorSpec("uint", 1, (1, 4, 4))
    layers = [
        Layer("conv", "conv", ("image",), "acc", {"kernel": 1},
              {"weight": np.ones((1, 1, 1, 1), np.int8),
               "bias": np.array([-100000], np.int32)}),
        Layer("lif", "lif", ("acc",), "spikes", {"threshold_shift": 0},
              {"threshold": np.ones(1, np.int32)}),
        _head("spikes", 1, 2),
    ]
    return _model("regression_wide_shift", 1, spec, layers, 2)


def stale_lane_networks(lanes: int = 4) -> tuple[IntModel, IntModel]:
    """(filler, victim). The filler (T = `lanes`) writes all-ones spikes over its 3x3 conv's
    output; the victim (T = `lanes` - 1) convolves a 1-channel image with a kernel that only
    sees the pixel below. On all-zero images the victim's logits are all 0."""
    # 4x4: the victim's whole grid is one column tile, so its bottom row reads the word below
    # before the tile's drain writes anything there.
    size = 4
    spec = TensorSpec("uint", 1, (1, size, size))
    fill = Layer("fill", "conv", ("image",), "ones", {"kernel": 3, "threshold_shift": 0},
                 {"weight": np.zeros((4, 1, 3, 3), np.int8), "bias": np.full(4, 5, np.int32),
                  "threshold": np.ones(4, np.int32)})
    filler = _model("regression_stale_filler", lanes, spec, [fill, _head("ones", 4, 2)], 2)
    below = np.zeros((1, 1, 3, 3), np.int8)
    below[0, 0, 2, 1] = 1
    # Threshold 1 / 2: one input spike fires the neuron at once (tau = 2 halves it).
    conv = Layer("below", "conv", ("image",), "spikes", {"kernel": 3, "threshold_shift": 1},
                 {"weight": below, "bias": np.zeros(1, np.int32),
                  "threshold": np.ones(1, np.int32)})
    victim = _model("regression_stale_victim", lanes - 1, spec, [conv, _head("spikes", 1, 2)],
                    2)
    return filler, victim
