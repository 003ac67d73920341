"""Fashion-MNIST: the IDX reader, the seeded validation splits, the model shapes and their exports.

Fast: synthetic IDX files, a handful of the shipped test images, tiny training runs.
"""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from pysim import data, golden, torch_int
from pysim.data import (
    DatasetError,
    DatasetMissing,
    digits_split,
    digits_train_val,
    fashion_load,
    fashion_pixels,
    fashion_test,
    fashion_train_val,
    read_idx,
    split_validation,
    write_idx,
)
from pysim.evaluate import mismatches
from pysim.torch_models import (
    VARIANTS,
    CheckpointError,
    build_model,
    fashion_config,
    load_export,
)
from pysim.train import Interrupted, checkpoint_dir, train_variant

# ---- IDX files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["a-idx3-ubyte", "a-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    array = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.dtype == np.uint8 and back.shape == (2, 3, 5)
    np.testing.assert_array_equal(back, array)


def test_idx_big_endian_int32(tmp_path):
    values = np.array([1, -2, 70000], dtype=">i4")
    (tmp_path / "x.idx").write_bytes(bytes([0, 0, 0x0C, 1]) + (3).to_bytes(4, "big")
                                     + values.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), [1, -2, 70000])


def test_idx_errors_name_the_file(tmp_path):
    with pytest.raises(DatasetMissing, match="nothing.gz does not exist"):
        read_idx(tmp_path / "nothing.gz")
    write_idx(tmp_path / "t.idx", np.zeros((4, 2, 2), np.uint8))
    raw = (tmp_path / "t.idx").read_bytes()
    (tmp_path / "short.idx").write_bytes(raw[:-1])
    with pytest.raises(DatasetError, match=r"short\.idx: holds 31 bytes.*needs 32"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "magic.idx").write_bytes(b"\x01" + raw[1:])
    with pytest.raises(DatasetError, match=r"magic\.idx: not an IDX file"):
        read_idx(tmp_path / "magic.idx")
    (tmp_path / "code.idx").write_bytes(raw[:2] + b"\x07" + raw[3:])
    with pytest.raises(DatasetError, match="type code 0x07"):
        read_idx(tmp_path / "code.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DatasetError, match=r"bad\.gz: cannot read"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "cut.gz").write_bytes(gzip.compress(raw)[:-12])
    with pytest.raises(DatasetError, match=r"cut\.gz"):
        read_idx(tmp_path / "cut.gz")


def _fake_fashion(folder, n: int, seed: int = 0, split: str = "train"):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    image_name, label_name = data.FASHION_FILES[split]
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / image_name, images)
    write_idx(folder / label_name, labels)
    return images, labels


def test_missing_files_name_both_ways_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(data.FASHION_ENV, raising=False)
    with pytest.raises(DatasetMissing) as error:
        fashion_load("train", tmp_path / "empty")
    message = str(error.value)
    assert "apt-get install dataset-fashion-mnist" in message
    assert "FASHION_MNIST_DIR" in message and str(tmp_path / "empty") in message
    monkeypatch.setenv(data.FASHION_ENV, str(tmp_path / "also-empty"))
    monkeypatch.setattr(data, "DEBIAN_FASHION_DIR", tmp_path / "no-debian")
    with pytest.raises(DatasetMissing, match="also-empty.*no-debian"):
        fashion_load("train")


def test_environment_variable_names_the_folder(tmp_path, monkeypatch):
    images, labels = _fake_fashion(tmp_path / "fm", 30)
    monkeypatch.setenv(data.FASHION_ENV, str(tmp_path / "fm"))
    x, y = fashion_load("train")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)
    assert not x.flags.writeable


def test_label_count_must_match(tmp_path):
    _fake_fashion(tmp_path, 12)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", np.zeros(11, np.uint8))
    with pytest.raises(DatasetError, match=r"\(11,\) labels for 12 images"):
        fashion_load("train", tmp_path)


def test_shipped_test_split():
    x, y = fashion_test()
    assert x.shape == (10000, 28, 28) and x.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10
    assert (data.SHIPPED_FASHION_DIR / "LICENSE").read_text().startswith("The MIT License")
    assert y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]


def test_pixels_are_quantized_and_column_padded():
    images = np.full((2, 28, 28), 255, np.uint8)
    images[0, 0, 0] = 16
    x = fashion_pixels(images)
    assert x.shape == (2, 28, 32) and x.max() == 15
    assert x[0, 0, 2] == 1 and not x[:, :, :2].any() and not x[:, :, 30:].any()
    assert fashion_pixels(images, bits=8, pad=0).max() == 255


# ---- validation splits --------------------------------------------------------------------------

def test_validation_split_is_seeded_stratified_and_disjoint(tmp_path):
    images, labels = _fake_fashion(tmp_path, 400)
    ids = np.arange(400)
    a = split_validation(ids, labels, 50, seed=3)
    b = split_validation(ids, labels, 50, seed=3)
    c = split_validation(ids, labels, 50, seed=4)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[2], c[2])
    x_train, y_train, x_val, y_val = a
    assert len(x_val) == 50 and len(x_train) == 350
    assert not set(x_train) & set(x_val) and set(x_train) | set(x_val) == set(ids)
    assert np.bincount(y_val).tolist() == [5] * 10
    np.testing.assert_array_equal(y_val, labels[x_val])
    x_train, y_train, x_val, y_val = fashion_train_val(seed=0, size=40, directory=tmp_path)
    assert len(x_val) == 40 and len(x_train) == 360
    with pytest.raises(ValueError, match="validation size"):
        split_validation(ids, labels, 400)


def test_digits_validation_comes_from_the_training_split():
    x_train, y_train, x_test, _ = digits_split()
    tx, ty, vx, vy = digits_train_val(seed=0)
    assert len(vx) == 144 and len(tx) + len(vx) == len(x_train)
    rows = {bytes(im) for im in x_train}
    assert all(bytes(im) in rows for im in vx)
    # the held-out images are not the test images and not in the reduced training set
    train_rows = {bytes(im) for im in tx}
    test_rows = {bytes(im) for im in x_test}
    assert sum(bytes(im) in train_rows for im in vx) < 5  # (digits has a few duplicate images)
    assert not {bytes(im) for im in vx} - rows
    assert len({bytes(im) for im in vx} & test_rows) < 5
    np.testing.assert_array_equal(digits_train_val(seed=0)[2], vx)


# ---- model shapes and exports -------------------------------------------------------------------

def _fashion_export(variant):
    """The committed Fashion export of `variant`, or a tiny untrained model's export."""
    try:
        return load_export(variant, checkpoint_dir("fashion")), True
    except CheckpointError:
        model = build_model(variant, "fashion", seed=0)
        model.train()
        with torch.no_grad():  # calibrate BatchNorm so that neurons fire
            model(fashion_pixels(fashion_test()[0][:32]))
        model.quantize(8)
        return model.export(), False


@pytest.mark.parametrize("variant", VARIANTS)
def test_fashion_shapes_export_and_golden_equals_torch_int(variant):
    intmodel, _ = _fashion_export(variant)
    assert intmodel.tensors["image"].shape == (1, 28, 32)
    assert intmodel.tensors["image"].bits == 4 and intmodel.T == 4
    head_in = intmodel.layers[-1].inputs[0]
    assert intmodel.tensors[head_in].shape == (32, 4, 4)
    images = fashion_pixels(fashion_test()[0][:6])
    logits, trace = golden.run(intmodel, images)
    t_logits, t_trace = torch_int.run(intmodel, images)
    np.testing.assert_array_equal(logits, t_logits)
    assert mismatches(trace, t_trace) == 0
    assert any(trace[name].any() for name, spec in intmodel.tensors.items()
               if spec.kind == "spike" and name in trace)


@pytest.mark.parametrize("variant", VARIANTS)
def test_fashion_models_compile_on_the_default_array(variant):
    from pysim.evaluate import compile_results
    intmodel, _ = _fashion_export(variant)
    results = compile_results(intmodel, ("hw/configs/default.json",
                                         "hw/boards/icebreaker.json"))
    assert results["default"]["fits"] and results["default"]["cycles"] > 0
    # The boards' 128-byte input slots cannot hold a 28x32 image (897 bytes with its header).
    assert not results["icebreaker"]["fits"]
    assert "input slot" in results["icebreaker"]["reason"]


def test_input_stage_pads_28_to_32_columns():
    model = build_model("spikformer", "fashion", seed=1)
    model.eval()
    raw = fashion_pixels(fashion_test()[0][:3], pad=0)
    padded = fashion_pixels(fashion_test()[0][:3])
    torch.testing.assert_close(model(raw), model(padded), rtol=0, atol=0)
    assert fashion_config("sdt").tokens == 16


def test_committed_fashion_checkpoints():
    """What training measured on the 10,000 test images: the integer model within 0.5 points
    of the QAT model, and a floor under the float accuracy (the issue's target is 87%, which
    not every committed checkpoint reaches yet: see the README's Fashion table). Every
    variant has one: a missing checkpoint fails here."""
    for variant in VARIANTS:
        meta = load_export(variant, checkpoint_dir("fashion")).meta
        assert meta["dataset"] == "fashion"
        assert meta["float_accuracy"] >= 0.85, variant
        assert abs(meta["golden_accuracy"] - meta["qat_accuracy"]) <= 0.005, variant


# ---- training -----------------------------------------------------------------------------------

def test_fashion_training_resumes_to_the_same_weights(tmp_path):
    x = fashion_pixels(fashion_test()[0][:64])
    y = fashion_test()[1][:64]
    split = (x[:48], y[:48], x[48:], y[48:])
    kwargs = dict(epochs=2, qat_epochs=1, dataset="fashion", split=split, progress=False)
    _, q1, m1 = train_variant("spikingformer", **kwargs)
    path = tmp_path / "r.pt"
    for _ in range(2):
        with pytest.raises(Interrupted):
            train_variant("spikingformer", resume=path, stop_after=1, **kwargs)
    f2, q2, m2 = train_variant("spikingformer", resume=path, **kwargs)
    for key, value in q1.state_dict().items():
        assert torch.equal(value, q2.state_dict()[key]), key
    assert m1 == m2 and [h["stage"] for h in m2["history"]] == ["float", "float", "qat"]
    assert not f2.quantized
