"""The golden model against independent, deliberately naive references, and the export format."""

import dataclasses
import json
from fractions import Fraction

import numpy as np
import pytest

from pysim import golden
from pysim.intmodel import ExportError, IntModel, TensorSpec
from pysim.random_model import FAMILIES, random_images, random_int_model

RNG_SEEDS = range(6)


def naive_conv(x, w, b):
    B, T, C, H, W = x.shape
    cout, _, k, _ = w.shape
    p = k // 2
    out = np.zeros((B, T, cout, H, W), dtype=np.int64)
    for o in range(cout):
        for y in range(H):
            for xx in range(W):
                total = np.full((B, T), int(b[o]), dtype=np.int64)
                for i in range(C):
                    for dy in range(k):
                        for dx in range(k):
                            yy, xs = y + dy - p, xx + dx - p
                            if 0 <= yy < H and 0 <= xs < W:
                                total += int(w[o, i, dy, dx]) * x[:, :, i, yy, xs]
                out[:, :, o, y, xx] = total
    return out


@pytest.mark.parametrize("seed", RNG_SEEDS)
@pytest.mark.parametrize("kernel", [1, 3])
def test_conv_matches_naive_loops(seed, kernel):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=(2, 3, 3, 5, 4))
    w = rng.integers(-127, 128, size=(4, 3, kernel, kernel))
    b = rng.integers(-500, 500, size=4)
    np.testing.assert_array_equal(golden.conv(x, w, b), naive_conv(x, w, b))


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_bit_serial_first_layer_equals_direct_conv(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 17, size=(2, 4, 1, 8, 8))
    w = rng.integers(-127, 128, size=(8, 1, 3, 3))
    b = rng.integers(-99, 99, size=8)
    np.testing.assert_array_equal(golden.conv_multibit(x, w, b, bits=5), golden.conv3x3(x, w, b))
    with pytest.raises(ValueError, match="5-bit"):
        golden.conv_multibit(x + 16, w, b, bits=5)


def float_lif(x, theta):
    """models.md's recursion in exact rational arithmetic, one element at a time."""
    v, out = Fraction(0), []
    for xt in x:
        h = v + (Fraction(int(xt)) - v) / 2
        fired = h >= theta
        out.append(int(fired))
        v = Fraction(0) if fired else h
    return out


@pytest.mark.parametrize("seed", range(20))
def test_lif_equals_rational_recursion(seed):
    rng = np.random.default_rng(seed)
    T = int(rng.integers(1, 9))
    shift = int(rng.integers(0, 3))
    theta = rng.integers(1, 40, size=3)
    # Mix of random inputs, sub-threshold runs and inputs placed exactly at threshold.
    x = rng.integers(-60, 80, size=(5, T, 3, 2, 2))
    x[0] = 0
    x[1] = (theta // 2)[None, :, None, None]
    x[2, 0] = (2 * theta[:, None, None] + (1 if shift == 0 else 0)) // (1 << shift)
    spikes = golden.lif(x, theta, shift)
    for b in range(5):
        for c in range(3):
            for p in range(4):
                expect = float_lif(x[b, :, c].reshape(T, -1)[:, p],
                                   Fraction(int(theta[c]), 1 << shift))
                assert spikes[b, :, c].reshape(T, -1)[:, p].tolist() == expect


def test_lif_fires_exactly_at_threshold():
    # Constant input 2*theta reaches H = theta at t = 1: fires on >=, not on >.
    x = np.full((1, 4, 1, 1, 1), 10)
    assert golden.lif(x, np.array([5]))[0, :, 0, 0, 0].tolist() == [1, 1, 1, 1]
    assert golden.lif(x - 1, np.array([5]))[0, :, 0, 0, 0].tolist() == [0, 1, 0, 1]


def test_maxpool_matches_naive():
    rng = np.random.default_rng(3)
    x = rng.integers(0, 2, size=(2, 2, 3, 7, 8))
    out = golden.maxpool(x)
    assert out.shape == (2, 2, 3, 4, 4)
    for y in range(4):
        for xx in range(4):
            window = x[..., max(0, 2 * y - 1):2 * y + 2, max(0, 2 * xx - 1):2 * xx + 2]
            np.testing.assert_array_equal(out[..., y, xx], window.max(axis=(-1, -2)))
    with pytest.raises(ValueError, match="spikes"):
        golden.maxpool(x * 2)


@pytest.mark.parametrize("seed", RNG_SEEDS)
def test_ssa_both_orders_match_loops(seed):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.integers(0, 2, size=(1, 2, 4, 2, 3)) for _ in range(3))
    acc, _ = golden.ssa(q, k, v, heads=2, threshold=np.full(4, 4))
    for t in range(2):
        for h in range(2):
            Q = q[0, t, 2 * h:2 * h + 2].reshape(2, -1).T  # (N, dh)
            K = k[0, t, 2 * h:2 * h + 2].reshape(2, -1).T
            V = v[0, t, 2 * h:2 * h + 2].reshape(2, -1).T
            expect = (Q @ K.T) @ V
            np.testing.assert_array_equal(expect, Q @ (K.T @ V))
            np.testing.assert_array_equal(acc[0, t, 2 * h:2 * h + 2].reshape(2, -1).T, expect)


def test_sdsa_masks_q_by_token_sum():
    rng = np.random.default_rng(7)
    q, k, v = (rng.integers(0, 2, size=(1, 3, 4, 2, 2)) for _ in range(3))
    kv, out = golden.sdsa(q, k, v, threshold=np.ones(4, np.int64), shift=1)
    counts = (k & v).sum(axis=(3, 4))
    np.testing.assert_array_equal(kv[..., 0, 0], counts)
    gate = golden.lif(counts[..., None, None], np.ones(4, np.int64), 1)
    np.testing.assert_array_equal(out, q & gate)


def test_residuals_and_head():
    a = np.array([[[[[0, 1]]]]])
    b = np.array([[[[[1, 1]]]]])
    assert golden.iand(a, b).ravel().tolist() == [1, 0]
    assert golden.sew_add(a, b).ravel().tolist() == [1, 2]
    assert golden.ms_add(a * -5, b * 3).ravel().tolist() == [3, -2]
    x = np.ones((1, 2, 3, 2, 2), dtype=np.int64)
    w = np.array([[1, 2, 3], [-1, 0, 0]])
    np.testing.assert_array_equal(golden.head(x, w, np.array([10, 0])), [[58, -8]])


@pytest.mark.parametrize("family", FAMILIES)
def test_declared_bounds_hold_and_are_checked(family):
    model = random_int_model(family, seed=11)
    logits, trace = golden.run(model, random_images(model, 6, seed=2))
    assert logits.shape == (6, model.num_classes)
    for layer in model.layers:
        assert layer.output in trace
    # Shrinking a declared width below the computed values is an export bug the run catches.
    wide = [n for n, s in model.tensors.items() if s.kind in ("uint", "int") and s.bits > 2
            and n != model.input]
    if wide:
        name = wide[-1]
        tensors = dict(model.tensors)
        tensors[name] = dataclasses.replace(tensors[name], bits=1 if
                                            tensors[name].kind == "uint" else 2)
        broken = dataclasses.replace(model, tensors=tensors)
        with pytest.raises(RuntimeError, match=name):
            golden.run(broken, random_images(model, 64, seed=2))


def test_wrong_image_shape_is_named():
    model = random_int_model("iand", seed=0)
    with pytest.raises(ValueError, match=r"expects \(B, 1, 8, 8\)"):
        golden.run(model, np.zeros((2, 7, 8), dtype=np.int64))
    with pytest.raises(ValueError, match="pixel values"):
        golden.run(model, np.full((1, 8, 8), 99))


def test_export_round_trip(tmp_path):
    model = random_int_model("ms", seed=4)
    model.save(tmp_path / "net")
    again = IntModel.load(tmp_path / "net.json")
    assert again.tensors == model.tensors
    images = random_images(model, 5)
    for a, b in zip(golden.run(model, images)[1].values(), golden.run(again, images)[1].values(),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def _saved(tmp_path):
    model = random_int_model("sew", seed=4)
    json_path, npz_path = model.save(tmp_path / "net")
    return json_path, npz_path, json.loads(json_path.read_text())


def test_corrupted_arrays_file_is_detected(tmp_path):
    json_path, npz_path, _ = _saved(tmp_path)
    blob = bytearray(npz_path.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    npz_path.write_bytes(bytes(blob))
    with pytest.raises(ExportError, match="arrays.sha256"):
        IntModel.load(json_path)


@pytest.mark.parametrize("mutate, field", [
    (lambda m: m.update(format_version=2), "format_version"),
    (lambda m: m.update(format="something-else"), "format"),
    (lambda m: m.pop("T"), "'T'"),
    (lambda m: m["tensors"]["tok.conv1.out"].update(shape=[9, 4, 4]), "tok.conv1"),
    (lambda m: m["layers"][2].update(kind="deconv"), "kind"),
    (lambda m: m["layers"][3].update(inputs=["nowhere"]), "inputs"),
    (lambda m: m["layers"][0].update(weight="missing.weight"), "weight"),
])
def test_inconsistent_manifest_names_the_field(tmp_path, mutate, field):
    json_path, _, manifest = _saved(tmp_path)
    mutate(manifest)
    json_path.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=field):
        IntModel.load(json_path)


def test_missing_export_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="no export manifest"):
        IntModel.load(tmp_path / "absent.json")


def test_out_of_range_weight_is_rejected():
    model = random_int_model("iand", seed=1)
    layer = model.layers[0]
    w = layer.arrays["weight"].astype(np.int16).copy()
    w[0, 0, 0, 0] = 300
    bad = dataclasses.replace(layer, arrays={**layer.arrays, "weight": w})
    with pytest.raises(ExportError, match=r"weight' has values"):
        dataclasses.replace(model, layers=(bad,) + model.layers[1:])


def test_tensor_spec_ranges():
    assert TensorSpec("int", 4, (1, 1, 1)).value_range() == (-8, 7)
    assert TensorSpec("uint", 5, (1, 1, 1)).value_range() == (0, 31)
