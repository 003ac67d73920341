"""PyTorch models, the integer export and the PyTorch integer mode against the golden model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pysim import golden, torch_int
from pysim.data import digits_split, digits_test
from pysim.evaluate import mismatches
from pysim.intmodel import IntModel
from pysim.torch_models import (
    LIF,
    MS_VARIANTS,
    THETA_MAX,
    VARIANTS,
    SigmoidSpike,
    build_model,
    channel_theta,
    cifar_config,
    cifar_int_model,
    load_export,
    quantize_conv,
)


@pytest.fixture(scope="module")
def test_split():
    return digits_test()


# ---- bit-exactness: PyTorch integer mode == golden model -----------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_integer_mode_equals_golden_on_whole_test_split(variant, test_split):
    images, _ = test_split
    model = load_export(variant)
    gold_logits, gold = golden.run(model, images)
    logits, trace = torch_int.run(model, images)
    assert sorted(trace) == sorted(gold)
    for key, expected in gold.items():
        assert trace[key].shape == expected.shape, key
        assert trace[key].dtype == np.int64, key
        np.testing.assert_array_equal(trace[key], expected, err_msg=key)
    np.testing.assert_array_equal(logits, gold_logits)
    assert mismatches(trace, gold) == 0
    # Every layer is traced: each written tensor and each neuron's accumulator.
    written = {layer.output for layer in model.layers}
    accs = {f"{layer.name}.acc" for layer in model.layers
            if layer.kind in ("ssa", "sdsa") or (layer.kind == "conv" and layer.has_neuron)}
    assert set(trace) == written | accs


def _flip_weight_bit(model: IntModel, layer_name: str) -> IntModel:
    """A copy of `model` with bit 0 of one weight of `layer_name` flipped."""
    layers = []
    for layer in model.layers:
        if layer.name == layer_name:
            weight = layer.arrays["weight"].copy()
            flat = weight.reshape(-1)
            index = int(np.flatnonzero(np.abs(flat) < 127)[0])
            flat[index] ^= 1
            layer = dataclasses.replace(layer, arrays={**layer.arrays, "weight": weight})
        layers.append(layer)
    return dataclasses.replace(model, layers=tuple(layers))


@pytest.mark.parametrize("variant", ["spikformer", "sdt"])
def test_one_flipped_weight_bit_is_caught(variant, test_split):
    images, _ = test_split
    model = load_export(variant)
    first = model.layers[0].name
    _, gold = golden.run(model, images)
    _, trace = torch_int.run(_flip_weight_bit(model, first), images)
    assert mismatches(trace, gold) > 0
    assert not np.array_equal(trace[f"{first}.acc"], gold[f"{first}.acc"])
    # Flipped on the golden side instead: caught as well.
    _, gold_flipped = golden.run(_flip_weight_bit(model, first), images)
    _, trace = torch_int.run(model, images)
    assert mismatches(trace, gold_flipped) > 0


def test_mismatch_counts_missing_entries():
    a = {"x": np.zeros((2, 3), np.int64)}
    assert mismatches(a, {}) == 6
    assert mismatches(a, {"x": np.zeros((3, 2), np.int64)}) == 6
    assert mismatches(a, {"x": np.eye(2, 3, dtype=np.int64)}) == 2


# ---- the torch models -----------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_float_graph_matches_export_layers(variant):
    model = build_model(variant, seed=0)
    x_train = digits_split()[0][:4]
    logits, tensors = model(x_train, return_tensors=True)
    assert logits.shape == (4, 10)
    model.quantize(8)
    export = model.export()
    assert [layer.name for layer in export.layers] == [node.name for node in model.nodes]
    for name, spec in export.tensors.items():
        assert tuple(tensors[name].shape) == (4, 4, *spec.shape), name
    kinds = {spec.kind for spec in export.tensors.values()}
    if variant == "spikformer_iand":
        assert kinds == {"uint", "spike"}  # only the pixels are multi-bit
        assert all(s.kind == "spike" for n, s in export.tensors.items() if n != "image")
    elif variant in MS_VARIANTS:
        assert "int" in kinds
    else:
        assert "uint" in kinds and "int" not in kinds
    assert export.layers[0].name.startswith(("sps.conv0", "scs.conv0"))


def assert_same_model(a: IntModel, b: IntModel) -> None:
    """Every field, tensor, layer and array (values and dtype) of two integer models equal."""
    for name in ("model", "T", "weight_bits", "num_classes", "input", "output", "tensors",
                 "meta"):
        assert getattr(a, name) == getattr(b, name), name
    assert len(a.layers) == len(b.layers)
    for la, lb in zip(a.layers, b.layers, strict=True):
        assert (la.name, la.kind, tuple(la.inputs), la.output, la.params) == \
            (lb.name, lb.kind, tuple(lb.inputs), lb.output, lb.params), la.name
        assert sorted(la.arrays) == sorted(lb.arrays), la.name
        for role, array in la.arrays.items():
            assert array.dtype == lb.arrays[role].dtype, f"{la.name}.{role}"
            np.testing.assert_array_equal(array, lb.arrays[role], err_msg=f"{la.name}.{role}")


@pytest.mark.parametrize("variant", VARIANTS)
def test_committed_export_is_the_checkpoints_export(variant):
    """The committed `checkpoints/<v>.json/.npz` is exactly what the committed checkpoint's QAT
    model exports: a hand-edited export (even with its checksum recomputed) fails here."""
    from pysim.torch_models import load_checkpoint, load_qat_model

    meta = load_checkpoint(variant).get("meta", {})
    assert_same_model(load_export(variant), load_qat_model(variant).export(meta=meta))


def test_a_hand_edited_export_is_not_the_checkpoints(tmp_path):
    """Negative control: one weight changed by one and saved with a fresh checksum loads
    cleanly, and the comparison above refuses it."""
    from pysim.torch_models import load_checkpoint, load_qat_model

    edited = _flip_weight_bit(load_export("spikformer"), "block0.mlp.fc1")
    edited.save(tmp_path / "spikformer")
    reloaded = IntModel.load(tmp_path / "spikformer.json")
    meta = load_checkpoint("spikformer").get("meta", {})
    with pytest.raises(AssertionError, match=r"block0\.mlp\.fc1\.weight"):
        assert_same_model(reloaded, load_qat_model("spikformer").export(meta=meta))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fake_quantized_model_predicts_like_its_export(variant, test_split):
    images, _ = test_split
    model = load_export(variant)
    from pysim.torch_models import load_qat_model
    qat = load_qat_model(variant)
    with torch.no_grad():
        qat_pred = qat(images).argmax(dim=1).numpy()
    gold_pred = golden.run(model, images, record=False)[0].argmax(axis=1)
    # Float rounding may move a membrane sitting exactly at a threshold, nothing more.
    assert (qat_pred == gold_pred).mean() >= 0.98


def test_bn_folding_preserves_the_float_function():
    torch.manual_seed(0)
    model = build_model("spikingformer", seed=3)
    x = digits_split()[0][:64]
    model.train()
    model(x)  # give BatchNorm non-trivial running statistics
    model.eval()
    with torch.no_grad():
        _, before = model(x, return_tensors=True)
        for module in model.units.values():
            if hasattr(module, "fold"):
                module.fold()
        _, after = model(x, return_tensors=True)
    torch.testing.assert_close(after["sps.feat"], before["sps.feat"], rtol=1e-4, atol=1e-4)


def test_lif_module_is_the_models_md_recursion():
    rng = np.random.default_rng(0)
    x = rng.normal(0.6, 0.8, size=(6, 50))
    spikes = LIF(1.0)(torch.from_numpy(x)).numpy()
    for j in range(x.shape[1]):
        v = 0.0
        for t in range(x.shape[0]):
            h = v + (x[t, j] - v) / 2.0
            s = h >= 1.0
            assert spikes[t, j] == s
            v = 0.0 if s else h


def test_surrogate_gradient_is_sigmoid_alpha_4():
    x = torch.linspace(-2, 2, 11, dtype=torch.float64, requires_grad=True)
    SigmoidSpike.apply(x, 4.0).sum().backward()
    sig = torch.sigmoid(4.0 * x.detach())
    torch.testing.assert_close(x.grad, 4.0 * sig * (1 - sig))


def test_scales_follow_the_format():
    maxabs = torch.tensor([0.5, 1e-6, 300.0, 0.0, 127.0 / 3])
    assert channel_theta(maxabs, 8).tolist() == [254, THETA_MAX, 1, THETA_MAX, 3]
    weight = torch.tensor([[[[0.5]], [[-0.25]]], [[[300.0]], [[0.004]]]])
    w_int, b_int = quantize_conv(weight, torch.tensor([0.1, -2.6]), torch.tensor([254, 1]), 8)
    assert w_int.view(2, 2).tolist() == [[127, -64], [127, 0]]  # 300 clipped to qmax
    assert b_int.tolist() == [25, -3]
    with pytest.raises(ValueError, match="2 .. 16"):
        channel_theta(maxabs, 1)
    with pytest.raises(ValueError, match="2 .. 8"):
        build_model("spikformer").quantize(9)


@pytest.mark.parametrize("bits", [2, 4])
def test_low_weight_bits_export_stays_in_range(bits):
    model = build_model("spikformer_v2", seed=1)
    model.quantize(bits)
    export = model.export()
    qmax = (1 << (bits - 1)) - 1
    for layer in export.layers:
        if "weight" in layer.arrays:
            assert np.abs(layer.arrays["weight"]).max() <= qmax
    assert export.weight_bits == bits


def test_stream_writers_share_one_scale():
    model = build_model("sdt", seed=2)
    model.quantize(8)
    export = model.export()
    stream = [layer for layer in export.layers if layer.kind == "conv" and not layer.has_neuron]
    assert [layer.name for layer in stream] == [
        "sps.conv2", "sps.rpe", "block0.attn.proj", "block0.mlp.fc2"]
    thetas = {tuple(model.units[layer.name.replace(".", "_")].theta.tolist())
              for layer in stream}
    assert len(thetas) == 1
    theta = np.array(next(iter(thetas)))
    for layer in export.layers:
        if layer.kind == "lif":
            np.testing.assert_array_equal(layer.arrays["threshold"], theta)


# ---- CIFAR shapes ---------------------------------------------------------------------------

def test_cifar_shapes_are_the_published_ones():
    spikformer = cifar_config("spikformer")
    assert (spikformer.dim, spikformer.blocks, spikformer.heads, spikformer.mlp_hidden) == \
        (384, 4, 12, 1536)
    assert spikformer.tokens == 64
    sdt = cifar_config("sdt")
    assert (sdt.dim, sdt.blocks, sdt.heads, sdt.tokens) == (512, 2, 8, 64)


@pytest.mark.parametrize("variant", ["spikformer", "sdt"])
def test_cifar_int_model_is_valid(variant):
    model = cifar_int_model(variant, seed=1, calibration_images=2)
    assert model.input_spec.shape == (3, 32, 32) and model.input_spec.bits == 8
    last = model.tensors[model.layers[-2].output]
    assert last.shape == ((384 if variant == "spikformer" else 512), 8, 8)
    blocks = {layer.name.split(".")[0] for layer in model.layers
              if layer.name.startswith("block")}
    assert len(blocks) == (4 if variant == "spikformer" else 2)
    # The published sizes: Spikformer-4-384 9.32 M parameters, Spike-driven 2-512 10.28 M.
    published = 9.32e6 if variant == "spikformer" else 10.28e6
    assert abs(model.parameter_count() - published) / published < 0.02


def test_cifar_int_model_is_seeded():
    a = cifar_int_model("sdt", seed=1, calibration_images=2)
    b = cifar_int_model("sdt", seed=1, calibration_images=2)
    c = cifar_int_model("sdt", seed=2, calibration_images=2)
    for la, lb in zip(a.layers, b.layers, strict=True):
        for role in la.arrays:
            np.testing.assert_array_equal(la.arrays[role], lb.arrays[role])
    assert not np.array_equal(a.layers[0].arrays["weight"], c.layers[0].arrays["weight"])


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(8, 8), (2, 7, 8), (2, 3, 8, 8), (2, 1, 8, 8, 1)])
def test_wrong_image_shape_names_the_expected_shape(shape):
    images = np.zeros(shape, dtype=np.uint8)
    model = build_model("spikformer")
    with pytest.raises(ValueError, match=r"expected \(B, 8, 8\) or \(B, 1, 8, 8\)"):
        model(images)
    with pytest.raises(ValueError, match=r"expected \(B, 8, 8\)"):
        torch_int.run(load_export("spikformer"), images)


def test_pixels_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="0 .. 31"):
        torch_int.run(load_export("spikformer"), np.full((1, 8, 8), 40))
    with pytest.raises(ValueError, match="unknown model variant"):
        build_model("resnet")
    with pytest.raises(ValueError, match="unknown shape"):
        build_model("sdt", shape="imagenet")
