"""Every command line answers an expected error with one line and exit status 2 (`pysim.cli`).

Expected errors: a missing model (the message lists the variants and says `make train`), a
corrupted export, a config file that is not JSON (file and line named) or is a JSON array, a
model that does not fit the array, a serial port that does not open, a non-positive image
count. The traceback appears only with `--debug` or `SPIKEFORMER_DEBUG=1`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hw.config import ArrayConfig, ConfigError
from pysim import cli

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["sdt", "spikformer", "spikformer_iand", "spikformer_v2", "spikingformer"]


def _main(module: str):
    if module == "tb.run_sim":
        from tb.run_sim import main
    elif module == "firmware":
        from firmware.__main__ import main
    elif module == "pysim.evaluate":
        from pysim.evaluate import main
    elif module == "pysim.cycles":
        from pysim.cycles_cli import main
    elif module == "hw.top":
        from hw.top import main
    elif module == "scripts.synth":
        from scripts.synth import main
    elif module == "scripts.explore":
        from scripts.explore import main
    return main


def one_error_line(capsys, module: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f"python -m {module}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


@pytest.fixture
def files(tmp_path):
    """Broken inputs: a config that is not JSON (line 3), one that is a JSON array, one
    without a name, one too small for the digits models, and a corrupted export."""
    not_json = tmp_path / "not_json.json"
    not_json.write_text('{\n  "pe_rows": 4,\n  oops\n}\n')
    array = tmp_path / "array.json"
    array.write_text("[4, 16, 4]\n")
    tiny = tmp_path / "tiny.json"
    tiny.write_text('{"name": "tiny", "act_depth": 64, "weight_depth": 64, "step_depth": 64}\n')
    for suffix in (".json", ".npz"):
        shutil.copy(ROOT / "checkpoints" / f"spikformer{suffix}", tmp_path)
    npz = tmp_path / "spikformer.npz"
    blob = bytearray(npz.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    npz.write_bytes(bytes(blob))
    return {"not_json": str(not_json), "array": str(array), "tiny": str(tiny),
            "corrupted": str(tmp_path / "spikformer.json")}


# ---- the shared pieces ------------------------------------------------------------------------

def test_missing_model_lists_the_variants_and_says_make_train(tmp_path):
    with pytest.raises(cli.ModelNotFound) as info:
        cli.load_model("spikformr")
    message = str(info.value)
    assert "'spikformr'" in message and "make train" in message
    assert all(v in message for v in VARIANTS)
    assert set(VARIANTS) <= set(cli.available_models())
    with pytest.raises(cli.ModelNotFound, match="holds no exported model.*make train"):
        cli.load_model("spikformer", tmp_path)
    with pytest.raises(cli.ModelNotFound, match=r"no exported model at build/none\.json"):
        cli.load_model("build/none.json")
    assert cli.load_model("spikformer").model == "spikformer"


def test_config_file_errors_name_the_file_and_line(files):
    with pytest.raises(ConfigError, match=rf"{files['not_json']}: line 3 column 3: not valid"):
        ArrayConfig.load(files["not_json"])
    with pytest.raises(ConfigError, match=rf"{files['array']}: .*JSON object.*not an array"):
        ArrayConfig.load(files["array"])
    with pytest.raises(ConfigError, match="nope.json does not exist"):
        ArrayConfig.load("nope.json")


@pytest.mark.parametrize("text", ["0", "-1", "x"])
def test_positive_counts_only(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        cli.positive(text)
    assert cli.positive("3") == 3


def test_unexpected_errors_keep_their_traceback():
    @cli.entry_point("python -m demo")
    def main(argv=None):
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        main([])


def test_debug_shows_the_traceback(monkeypatch):
    @cli.entry_point("python -m demo")
    def main(argv=None):
        raise cli.UsageError("expected")

    assert main([]) == 2
    with pytest.raises(cli.UsageError):
        main(["--debug"])
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(cli.UsageError):
        main([])


# ---- each entry point ---------------------------------------------------------------------------

CASES = [
    # (module, argv, what the one line says)
    ("tb.run_sim", ["--model", "nope"], "no exported model 'nope': the variants in"),
    ("tb.run_sim", ["--config", "{not_json}", "--images", "1"], "{not_json}: line 3"),
    ("tb.run_sim", ["--config", "{array}", "--images", "1"], "not an array"),
    ("tb.run_sim", ["--config", "{tiny}", "--images", "1"], "activation memory"),
    ("tb.run_sim", ["--model", "{corrupted}", "--images", "1"], "sha256"),
    ("firmware", ["--board", "icebreaker", "--port", "/dev/ttyNOPE", "--images", "1"],
     "cannot open serial port /dev/ttyNOPE"),
    ("firmware", ["--board", "icebreaker", "--port", "loop://", "--model", "nope"],
     "make train"),
    ("firmware", ["--config", "{array}", "--port", "loop://"], "not an array"),
    ("firmware", ["--board", "icebreaker", "--port", "loop://", "--model", "{corrupted}"],
     "sha256"),
    ("pysim.evaluate", ["--checkpoints", "{empty}", "--models", "sdt"],
     "holds no exported model; `make train`"),
    ("pysim.cycles", ["--model", "nope"], "make train"),
    ("pysim.cycles", ["--model", "{corrupted}"], "sha256"),
    ("pysim.cycles", ["--model", "spikformer", "--config", "{not_json}"], "line 3 column 3"),
    ("pysim.cycles", ["--model", "spikformer", "--config", "{array}"], "not an array"),
    ("pysim.cycles", ["--model", "spikformer", "--config", "{tiny}"], "layer sps."),
    ("hw.top", ["generate", "--config", "{not_json}"], "{not_json}: line 3"),
    ("hw.top", ["generate", "--config", "{array}"], "not an array"),
    ("scripts.synth", ["--board", "icebreaker", "--config", "{array}"], "not an array"),
    ("scripts.synth", ["--board", "icebreaker", "--config", "{not_json}"], "line 3"),
]


@pytest.mark.parametrize("module, argv, expected", CASES,
                         ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(CASES)])
def test_expected_error_is_one_line_and_status_2(module, argv, expected, files, tmp_path,
                                                 capsys):
    names = {**files, "empty": str(tmp_path / "empty")}
    argv = [a.format(**names) for a in argv]
    out = str(tmp_path / "out" / "report.json")
    if module in ("tb.run_sim", "firmware", "pysim.cycles"):
        argv += ["--out", out]
    assert _main(module)(argv) == 2
    assert expected.format(**names) in one_error_line(capsys, module)
    assert not Path(out).exists()


def test_explore_missing_model_and_bad_arguments(monkeypatch, tmp_path, capsys):
    main = _main("scripts.explore")
    monkeypatch.setattr(cli, "CHECKPOINTS", tmp_path)
    assert main(["--workloads", "sdt", "--no-synth", "--out", "explore_none"]) == 2
    assert "holds no exported model; `make train`" in one_error_line(capsys, "scripts.explore")
    for argv in (["--workloads", "resnet"], ["--jobs", "0"], ["--rows", "8", "--cols", "4"]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2
        assert "usage: python -m scripts.explore" in capsys.readouterr().err


@pytest.mark.parametrize("module", ["tb.run_sim", "firmware"])
@pytest.mark.parametrize("images", ["0", "-1"])
def test_non_positive_image_counts_are_refused(module, images, capsys):
    argv = ["--images", images] + (["--board", "icebreaker", "--port", "loop://"]
                                   if module == "firmware" else [])
    with pytest.raises(SystemExit) as info:
        _main(module)(argv)
    assert info.value.code == 2
    assert "is not a positive count" in capsys.readouterr().err


def test_synth_usage_names_the_module(capsys):
    with pytest.raises(SystemExit):
        _main("scripts.synth")([])
    assert capsys.readouterr().err.startswith("usage: python -m scripts.synth")


def test_a_config_without_a_name_has_its_own_build_folder(tmp_path):
    """Such a config takes the name `default`; its build must not be the shipped default's."""
    from tb.runner import build_name

    shipped = ArrayConfig.load(ROOT / "hw" / "configs" / "default.json")
    unnamed = tmp_path / "unnamed.json"
    unnamed.write_text('{"pe_rows": 2, "pe_cols": 16}\n')
    other = ArrayConfig.load(unnamed)
    assert other.name == shipped.name == "default"
    assert build_name(other) != build_name(shipped)
    assert build_name(other).startswith("default_")
    assert build_name(ArrayConfig.load(ROOT / "hw" / "configs" / "default.json")) == \
        build_name(shipped)  # the same content: the same folder, so builds are reused


# ---- as the user runs them ------------------------------------------------------------------

def run_module(*args, env=None):
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})},
                          timeout=120)


def test_as_a_command_one_line_then_the_traceback_on_request():
    plain = run_module("pysim.cycles", "--model", "nope")
    assert plain.returncode == 2
    lines = plain.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "python -m pysim.cycles: error: no exported model 'nope': the variants in checkpoints/ "
        "are sdt, spikformer, ")
    assert lines[0].endswith("; `make train` exports every variant (or give the path of an "
                             "exported .json)")
    for debug in (run_module("pysim.cycles", "--model", "nope", "--debug"),
                  run_module("pysim.cycles", "--model", "nope", env={cli.DEBUG_ENV: "1"})):
        assert debug.returncode == 1
        assert "Traceback" in debug.stderr and "ModelNotFound" in debug.stderr
