"""Accumulator bounds (`pysim.golden.layer_bound`), the one definition the compiler checks:
the golden model's accumulations stay inside them, SSA's and the head's reach them (so they are
tight), and the compiler refuses a network exactly when one exceeds the accumulator."""

import numpy as np
import pytest

from hw.compiler import DoesNotFit, compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.data import digits_test
from pysim.intmodel import IntModel, Layer
from pysim.random_model import random_images, random_int_model

CHECKPOINTS = ["checkpoints/spikformer.json", "checkpoints/sdt.json",
               "checkpoints/spikingformer.json"]


def accumulations(model, images) -> dict:
    """Per layer, the largest magnitude the golden model's accumulation reaches on `images`."""
    _, trace = golden.run(model, images)
    trace[model.input] = golden.prepare_input(model, images)
    out = {}
    for layer in model.layers:
        ins = [trace[name] for name in layer.inputs]
        if layer.kind in ("conv", "ssa", "sdsa"):
            acc = trace.get(f"{layer.name}.acc", trace[layer.output])
        elif layer.kind == "lif":
            acc = ins[0]
        elif layer.kind in ("sew_add", "ms_add"):
            acc = trace[layer.output]
        elif layer.kind == "iand":
            acc = ins[1] - ins[0]  # the compiler's shortcut - branch
        elif layer.kind == "head":
            acc = trace["logits"]
        else:
            continue
        out[layer.name] = int(np.abs(acc).max())
    return out


@pytest.mark.parametrize("family", ["sew", "ms", "iand", "sdsa"])
def test_golden_accumulations_stay_inside_the_bounds(family):
    model = random_int_model(family, seed=4, T=4)
    bounds = golden.layer_bounds(model)
    reached = accumulations(model, random_images(model, 16, seed=4))
    assert set(reached) == set(bounds)
    for name, value in reached.items():
        b = bounds[name]
        limit = b.logits if model.layer(name).kind == "head" else b.bound
        assert value <= limit, f"{name}: {value} > {limit}"


@pytest.mark.parametrize("path", CHECKPOINTS)
def test_trained_models_stay_inside_the_bounds(path):
    model = IntModel.load(path)
    images = digits_test()[0][:32]
    bounds = golden.layer_bounds(model)
    for name, value in accumulations(model, images).items():
        b = bounds[name]
        assert value <= (b.logits if model.layer(name).kind == "head" else b.bound), name


def test_ssa_bound_is_tokens_times_head_dim_and_reached():
    """All-ones q, k, v: every q k^T count is dh and q k^T v sums N of them, N * dh: the bound
    is reached, and N * N * dh (the previous golden figure) was N times too loose."""
    model = random_int_model("sew", seed=0, T=2)
    layer = next(la for la in model.layers if la.kind == "ssa")
    spec = model.tensors[layer.inputs[0]]
    N, heads = spec.positions, layer.params["heads"]
    dh = spec.channels // heads
    ones = np.ones((1, 2) + spec.shape, np.int64)
    acc, _ = golden.ssa(ones, ones, ones, heads, np.ones(spec.channels, np.int64))
    bound = golden.layer_bound(model, layer)
    assert bound.bound == N * dh == int(acc.max())
    assert bound.what == "attention count q k^T v"


def test_head_logit_bound_counts_every_token_and_step():
    """A head with |w| and no bias on inputs at their maximum: the largest logit equals the
    bound (every token and time step count, not only the words of one packed band)."""
    model = random_int_model("sew", seed=1, T=2)
    head = model.layers[-1]
    spec = model.tensors[head.inputs[0]]
    w, b = np.abs(head.arrays["weight"]), np.zeros_like(head.arrays["bias"])
    ones = np.ones((1, model.T) + spec.shape, np.int64)
    logits = golden.head(ones * spec.value_range()[1], w, b)
    flipped = Layer(head.name, "head", head.inputs, head.output, head.params,
                    {"weight": w, "bias": b})
    assert golden.layer_bound(model, flipped).logits == int(logits.max())


@pytest.mark.parametrize("family", ["sew", "sdsa"])
def test_compiler_refuses_exactly_beyond_the_bound(family):
    """For each accumulator width, compiling fails iff some layer's bound reaches
    2^(acc_bits - 1), and the message names the first such layer and its bound."""
    model = random_int_model(family, seed=2, T=4)
    bounds = golden.layer_bounds(model)
    base = ArrayConfig.load("hw/configs/default.json")
    refused = accepted = 0
    for acc_bits in range(12, 33):
        config = base.replace(acc_bits=acc_bits, membrane_bits=max(base.membrane_bits,
                                                                   acc_bits + 6))
        over = [name for name, b in bounds.items() if b.bound >= 1 << (acc_bits - 1)]
        if over:
            with pytest.raises(DoesNotFit) as err:
                compile_network(model, config)
            first = bounds[over[0]]
            assert f"layer {over[0]}: {first.what} may reach {first.bound}," in str(err.value)
            refused += 1
        else:
            compile_network(model, config)
            accepted += 1
    assert refused and accepted
