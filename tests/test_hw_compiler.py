"""Compiler + NumPy executor (`pysim/hwref.py`) against the golden model, and the fit checks."""

import json
from pathlib import Path

import numpy as np
import pytest

from hw import isa
from hw.compiler import DoesNotFit, compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.data import digits_test
from pysim.hwref import Executor
from pysim.intmodel import IntModel
from pysim.random_model import FAMILIES, random_images, random_int_model

CONFIG_DIR = Path(__file__).resolve().parents[1] / "hw/configs"
CONFIGS = [ArrayConfig(name="tiny", pe_rows=4, pe_cols=4, lanes=4),
           ArrayConfig(name="wide", pe_rows=8, pe_cols=16, lanes=8, membrane_bits=32)]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_executor_equals_golden(family, config):
    model = random_int_model(family, seed=7, T=4 if config.lanes >= 4 else config.lanes)
    net = compile_network(model, config)
    for image in random_images(model, 2, seed=11):
        logits, trace = golden.run(model, image[None])
        payload = Executor(net).run(image, trace=True)
        assert len(payload) == net.result_bytes(True)
        got, traced = net.decode_result(payload, trace=True)
        np.testing.assert_array_equal(got, logits[0])
        assert set(traced) == {layer.output for layer in model.layers if layer.kind != "head"}
        for name, value in traced.items():
            np.testing.assert_array_equal(value, trace[name][0], err_msg=name)
        plain = Executor(net).run(image, trace=False)
        np.testing.assert_array_equal(net.decode_result(plain, False)[0], logits[0])


@pytest.mark.parametrize("family", FAMILIES)
def test_paired_steps_are_bit_exact_and_cut_cycles(family):
    """Two bit-planes or operands per step (multi-bit inputs, 3x3 edges and padding included,
    elementwise sums) give the same spikes and logits as one per step, in fewer cycles."""
    config = CONFIGS[0]
    model = random_int_model(family, seed=12)
    paired, single = compile_network(model, config), compile_network(model, config, pair=False)
    assert any(step[5] for step in paired.steps) and not any(step[5] for step in single.steps)
    assert len(paired.steps) < len(single.steps)
    images = random_images(model, 2, seed=3)
    logits, trace = golden.run(model, images)
    for net in (paired, single):
        for i, payload in enumerate(Executor(net).run_batch(images, trace=True)):
            got, traced = net.decode_result(payload, True)
            np.testing.assert_array_equal(got, logits[i])
            for name, value in traced.items():
                np.testing.assert_array_equal(value, trace[name][i], err_msg=name)
    assert paired.cycles.total < single.cycles.total


def test_t_below_lanes():
    model = random_int_model("iand", seed=2, T=2)
    net = compile_network(model, ArrayConfig(pe_rows=4, pe_cols=4, lanes=4))
    image = random_images(model, 1, seed=1)[0]
    got, _ = net.decode_result(Executor(net).run(image), False)
    np.testing.assert_array_equal(got, golden.run(model, image[None])[0][0])


def test_executor_detects_a_wrong_weight():
    model = random_int_model("iand", seed=3)
    image = random_images(model, 1, seed=5)[0]
    good = Executor(compile_network(model, CONFIGS[0])).run(image, trace=True)
    net = compile_network(model, CONFIGS[0])
    net.weights[net.passes[0].desc["w_base"]][0] += 5
    assert Executor(net).run(image, trace=True) != good


def test_load_chunks_whole_records_and_commit():
    model = random_int_model("sew", seed=4)
    net = compile_network(model, CONFIGS[0])
    chunks = net.load_chunks(200)
    assert all(len(c) <= 200 for c in chunks)
    assert chunks[-1][-7] == isa.REC_COMMIT
    stream = b"".join(chunks)
    assert stream[0] == isa.REC_GLOBAL


@pytest.mark.parametrize("changes, message", [
    ({"lanes": 2}, "T = 4 exceeds the 2 time-step lanes"),
    ({"act_depth": 64}, "activation memory"),
    ({"acc_bits": 12, "membrane_bits": 20}, "accumulator"),
    ({"weight_depth": 64}, "weight_depth"),
    ({"step_depth": 16}, "step_depth"),
    ({"program_depth": 4}, "program_depth"),
])
def test_does_not_fit_names_layer_and_limit(changes, message):
    model = random_int_model("sew", seed=5)
    base = dict(pe_rows=4, pe_cols=4, lanes=4)
    base.update(changes)
    with pytest.raises(DoesNotFit, match=message) as err:
        compile_network(model, ArrayConfig(**base))
    assert "layer " in str(err.value)


def test_cycle_model_counts_every_pass():
    model = random_int_model("iand", seed=6)
    net = compile_network(model, ArrayConfig())
    report = net.cycles
    assert len(report.passes) == len(net.passes)
    assert report.total == report.unpack + sum(p.cycles for p in report.passes) + 1
    assert all(0 < p.utilization <= 1 for p in report.passes if p.useful)


CHECKPOINTS = sorted((Path(__file__).resolve().parents[1] / "checkpoints").glob("*.json"))


@pytest.mark.parametrize("path", CHECKPOINTS, ids=lambda p: p.stem)
def test_trained_checkpoints_fit_default_and_run_bit_exact_on_the_test_split(path):
    """Every trained variant compiles for the default configuration and the executor's logits
    equal the golden model's on all 360 test images."""
    model = IntModel.load(path)
    net = compile_network(model, ArrayConfig.load(CONFIG_DIR / "default.json"))
    assert net.activation_words <= net.config.act_depth * net.config.pe_cols
    images, _ = digits_test()
    logits, _ = golden.run(model, images, record=False)
    got = np.stack([net.decode_result(p, False)[0] for p in Executor(net).run_batch(images)])
    np.testing.assert_array_equal(got, logits)


def test_residual_sum_is_written_in_place():
    """The membrane-shortcut sum takes over a dying operand's words (no new allocation)."""
    model = random_int_model("ms", seed=8)
    net = compile_network(model, CONFIGS[0])
    res = next(layer for layer in model.layers if layer.kind == "ms_add")
    assert net.tensors[res.output][0] in {net.tensors[n][0] for n in res.inputs}


@pytest.mark.parametrize("T", [1, 2])
def test_spare_lanes_pack_positions_and_cut_cycles(T):
    """T < lanes: lanes / T positions share a word; bit-exact, and fewer cycles than leaving
    the spare lanes idle (pack = 1)."""
    config = ArrayConfig(pe_rows=4, pe_cols=4, lanes=4)
    model = random_int_model("sdsa", seed=9, T=T)
    packed, idle = compile_network(model, config), compile_network(model, config, pack=1)
    assert packed.globals["pack"] == 4 // T and idle.globals["pack"] == 1
    image = random_images(model, 1, seed=2)[0]
    logits, trace = golden.run(model, image[None])
    for net in (packed, idle):
        got, traced = net.decode_result(Executor(net).run(image, trace=True), True)
        np.testing.assert_array_equal(got, logits[0])
        for name, value in traced.items():
            np.testing.assert_array_equal(value, trace[name][0], err_msg=name)
    assert packed.cycles.total < 0.75 * idle.cycles.total
    with pytest.raises(DoesNotFit, match="pack = 8"):
        compile_network(model, config, pack=8)


def test_cycle_report_gives_dense_and_array_utilization(tmp_path):
    from pysim.cycles_cli import main

    model = random_int_model("sew", seed=10)
    report = compile_network(model, ArrayConfig()).cycles
    rows = {r["layer"]: r for r in report.layers()}
    assert sum(r["cycles"] for r in rows.values()) + report.unpack + 1 == report.total
    conv0 = rows["tok.conv0"]  # 5-bit pixels: bit-serial, the array is busier than dense
    assert conv0["array_utilization"] > 1.5 * conv0["dense_utilization"]
    assert any("5 bit-planes per value in 3 steps" in why for why in conv0["shortfall"])
    single = compile_network(model, ArrayConfig(), pair=False).cycles
    conv0 = next(r for r in single.layers() if r["layer"] == "tok.conv0")
    assert conv0["array_utilization"] > 3 * conv0["dense_utilization"]
    assert any("5 bit-planes per value in 5 steps" in why for why in conv0["shortfall"])
    assert rows["tok.pool"]["dense_utilization"] is None
    out = tmp_path / "r.json"
    path, _ = model.save(tmp_path / "m")
    assert main(["--model", str(path), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["cycles_per_inference"] == compile_network(model, ArrayConfig()).cycles.total
    assert {"dense_utilization", "array_utilization"} <= set(data["layers"][0])
