"""Accuracy of the committed checkpoints, the evaluation report, and bad checkpoints/exports."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from pysim import evaluate, golden
from pysim.data import check_images, digits_split, digits_test
from pysim.intmodel import ExportError, IntModel
from pysim.torch_models import (
    VARIANTS,
    CheckpointError,
    checkpoint_paths,
    is_model_name,
    load_checkpoint,
    load_export,
    load_float_model,
)
from pysim.train import accuracy

#: SHA-256 of the digits split (x_train, y_train, x_test, y_test as int64 bytes).
SPLIT_SHA256 = "5f35bbe165d047946e683e1f24f7ea8be2573379103f13e4aca0700daebe92b8"


@pytest.mark.parametrize("variant", VARIANTS)
def test_committed_accuracy(variant):
    x_test, y_test = digits_test()
    float_acc = accuracy(load_float_model(variant), x_test, y_test)
    logits, _ = golden.run(load_export(variant), x_test, record=False)
    golden_acc = float((logits.argmax(axis=1) == y_test).mean())
    assert float_acc >= 0.97, f"{variant}: float accuracy {float_acc:.2%}"
    assert abs(golden_acc - float_acc) <= 0.01, \
        f"{variant}: golden {golden_acc:.2%} vs float {float_acc:.2%}"


def test_digits_split_is_fixed_and_stratified():
    x_train, y_train, x_test, y_test = digits_split()
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert x_train.dtype == np.uint8 and x_test.max() == 16 and x_test.min() == 0
    assert np.bincount(y_test).min() >= 35  # stratified: 10 classes of ~36
    # The split itself is pinned: a change of seed, order or stratification changes the digest
    # (and every accuracy in the README with it).
    digest = hashlib.sha256()
    for part in (x_train, y_train, x_test, y_test):
        digest.update(np.ascontiguousarray(part).astype(np.int64).tobytes())
    assert y_test[:10].tolist() == [7, 6, 3, 7, 7, 3, 2, 8, 9, 3]
    assert digest.hexdigest() == SPLIT_SHA256


@pytest.mark.parametrize("images", [np.zeros((8, 8)), np.zeros((3, 8, 9)),
                                    np.zeros((3, 2, 8, 8))])
def test_check_images_names_the_shape(images):
    with pytest.raises(ValueError, match=r"expected \(B, 8, 8\) or \(B, 1, 8, 8\)"):
        check_images(images)
    with pytest.raises(ValueError, match="integer"):
        check_images(np.full((1, 8, 8), 0.5))


# ---- the report -----------------------------------------------------------------------------

def test_fanout_and_dense_counts():
    np.testing.assert_array_equal(evaluate._fanout(3, 3, 3), [[4, 6, 4], [6, 9, 6], [4, 6, 4]])
    assert evaluate._fanout(4, 4, 1).sum() == 16
    model = load_export("spikformer")
    # All-ones pixels: the first conv's MACs are its dense count (over T) minus padding.
    images = np.ones((2, 8, 8), dtype=np.int64)
    _, trace = golden.run(model, images)
    ops = evaluate.operation_counts(model, images, trace)
    first = model.layers[0]
    cout = first.arrays["weight"].shape[0]
    assert ops["first_layer_macs"] == model.T * cout * evaluate._fanout(8, 8, 3).sum()
    assert ops["per_layer"][first.name] == {"mac": ops["first_layer_macs"]}
    assert ops["synaptic_ops"] == pytest.approx(
        sum(v.get("ac", 0.0) for v in ops["per_layer"].values()))
    # Pixel values do not matter to the MAC count, only whether they are zero.
    _, trace7 = golden.run(model, 7 * images)
    assert evaluate.operation_counts(model, 7 * images, trace7)["first_layer_macs"] == \
        ops["first_layer_macs"]
    # A spike-driven layer costs (input spikes x fan-out x Cout) accumulates.
    second = model.layers[1]
    spikes = trace[first.output].sum(axis=(1, 2))
    expected = (spikes * evaluate._fanout(8, 8, 3)).sum() * second.arrays["weight"].shape[0] / 2
    assert ops["per_layer"][second.name] == {"ac": expected}
    # Silent inputs cost nothing beyond what the biases make fire.
    zeros = np.zeros((2, 8, 8), dtype=np.int64)
    _, trace0 = golden.run(model, zeros)
    assert evaluate.operation_counts(model, zeros, trace0)["first_layer_macs"] == 0


def test_evaluate_writes_json_and_markdown(tmp_path):
    out = tmp_path / "eval" / "report.json"
    assert evaluate.main(["--out", str(out), "--models", "spikformer", "sdt"]) == 0
    report = json.loads(out.read_text())
    assert [row["variant"] for row in report["models"]] == ["spikformer", "sdt"]
    for row in report["models"]:
        assert row["bit_exact_mismatches"] == 0
        assert row["float_accuracy"] >= 0.97
        assert row["parameters"] > 10_000
        assert 0 < row["synaptic_ops"] and row["energy_snn_nj"] < row["energy_ann_nj"] * 10
        assert row["energy_ann_nj"] == pytest.approx(row["ann_macs"] * 4.6e-3)
    table = out.with_suffix(".md").read_text()
    assert "| spikformer |" in table and "| sdt |" in table


# ---- bad checkpoints and exports ------------------------------------------------------------

def test_derived_model_names_load_and_others_are_refused(tmp_path):
    """`pysim.train`'s names for derived models (a variant and a suffix) load like the
    variants; a name that starts with no variant is refused before any file is read."""
    assert is_model_name("spikformer_v2_pt_t1_n64") and is_model_name("sdt")
    assert not is_model_name("spikformerx") and not is_model_name("resnet_t1")
    with pytest.raises(ValueError, match="unknown model variant 'spikformerx'"):
        load_checkpoint("spikformerx")
    with pytest.raises(CheckpointError, match=r"spikformer_v2_t1\.pt does not exist"):
        load_float_model("spikformer_v2_t1", tmp_path)


def _report_row(variant, T):
    return {"variant": variant, "T": T, "float_accuracy": 0.5, "qat_accuracy": 0.5,
            "golden_accuracy": 0.5, "bit_exact_mismatches": 0, "parameters": 1,
            "synaptic_ops": 1.0, "first_layer_macs": 1.0, "energy_snn_nj": 1.0, "ann_macs": 1,
            "energy_ann_nj": 1.0, "mean_firing_rate": 0.1}


def test_report_table_gives_T_per_model_when_they_differ():
    base = {"dataset_key": "fashion", "test_images": 10, "weight_bits": 8}
    same = evaluate.to_markdown({**base, "T": 4, "models": [_report_row("a", 4)]})
    assert "T = 4," in same and "| model | float acc |" in same and "| a | 50.00% |" in same
    mixed = evaluate.to_markdown({**base, "T": None,
                                  "models": [_report_row("a", 4), _report_row("b_t1", 1)]})
    assert "T per model" in mixed and "| model | T | float acc |" in mixed
    assert "| a | 4 | 50.00% |" in mixed and "| b_t1 | 1 | 50.00% |" in mixed
    header, rule = mixed.splitlines()[2:4]
    assert header.count("|") == rule.count("|")  # the rule has one column per heading


def test_missing_checkpoint_says_how_to_create_it(tmp_path):
    with pytest.raises(CheckpointError, match=r"spikformer\.pt does not exist.*make train"):
        load_float_model("spikformer", tmp_path)
    with pytest.raises(CheckpointError, match=r"sdt\.json does not exist.*make train"):
        load_export("sdt", tmp_path)


@pytest.fixture
def export_copy(tmp_path):
    paths = checkpoint_paths("spikformer")
    for key in ("json", "npz"):
        shutil.copy(paths[key], tmp_path)
    return tmp_path / "spikformer.json"


def test_copied_export_loads(export_copy):
    assert IntModel.load(export_copy).model == "spikformer"


def test_corrupted_arrays_fail_the_checksum(export_copy):
    npz = export_copy.with_suffix(".npz")
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    npz.write_bytes(bytes(blob))
    with pytest.raises(ExportError, match="sha256"):
        IntModel.load(export_copy)


def test_wrong_format_version_is_named(export_copy):
    manifest = json.loads(export_copy.read_text())
    manifest["format_version"] = 2
    export_copy.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match="format_version"):
        IntModel.load(export_copy)


def test_wrong_tensor_shape_is_named(export_copy):
    manifest = json.loads(export_copy.read_text())
    manifest["tensors"]["sps.s0"]["shape"] = [9, 8, 8]
    export_copy.write_text(json.dumps(manifest))
    with pytest.raises(ExportError, match=r"sps\.conv0.*weight.*shape"):
        IntModel.load(export_copy)
