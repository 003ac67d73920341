"""The cycle model's single definitions (utilization, drain cycles) and the library modules'
shape: no import cycle between the compiler and the cycle model, no command line inside the
libraries (`python -m pysim.cycles` still works, through `pysim/cycles_cli.py`)."""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import cycles
from pysim.random_model import random_int_model

ROOT = Path(__file__).resolve().parents[1]
#: Library modules: imported by others, never run as a command.
LIBRARIES = ("hw.isa", "hw.compiler", "hw.load", "hw.host_link", "hw.accelerator",
             "hw.sequencer", "hw.actmem", "hw.config", "pysim.cycles", "pysim.hwref",
             "pysim.golden", "pysim.intmodel", "pysim.coreref")


def project_imports(module: str) -> set[str]:
    """Project modules `module` imports anywhere in its file (functions included), except
    under `if __name__ == "__main__":`."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            node.body = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[:-node.level] + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if (ROOT / (name.replace(".", "/") + ".py")).exists():
                found.add(name)
    return found


def test_library_modules_import_no_cycle():
    """From the compiler, the cycle model and the references, following every project import:
    no module comes back to itself (hw.compiler -> pysim.cycles, never the other way)."""
    graph, todo = {}, list(LIBRARIES)
    while todo:
        name = todo.pop()
        if name not in graph:
            graph[name] = project_imports(name)
            todo.extend(graph[name])
    assert "pysim.cycles" in graph["hw.compiler"]
    state = {}

    def visit(name, path):
        if state.get(name) == "open":
            raise AssertionError(" -> ".join(path + [name]))
        if state.get(name) is None:
            state[name] = "open"
            for dep in graph[name]:
                visit(dep, path + [name])
            state[name] = "done"

    for name in graph:
        visit(name, [])


@pytest.mark.parametrize("module", LIBRARIES)
def test_library_modules_have_no_command_line(module):
    source = (ROOT / (module.replace(".", "/") + ".py")).read_text()
    tree = ast.parse(source)
    assert "argparse" not in source
    assert not [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "main"]


def test_python_m_pysim_cycles_still_works(tmp_path):
    model = random_int_model("iand", seed=5, T=2)
    path, _ = model.save(tmp_path / "m")
    out = tmp_path / "r.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-m", "pysim.cycles", "--model", str(path),
                          "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    report = compile_network(model, ArrayConfig.load(ROOT / "hw/configs/default.json")).cycles
    assert f"{report.total} cycles per inference" in run.stdout
    assert json.loads(out.read_text())["cycles_per_inference"] == report.total


def test_utilization_is_one_definition():
    """Whole inference, per layer and per pass: useful lane-operations / (lanes x cycles)."""
    config = ArrayConfig()
    report = compile_network(random_int_model("sew", seed=3), config).cycles
    assert report.pe_utilization == report.useful / (config.total_lanes * report.total)
    for p in report.passes:
        assert p.utilization == cycles.utilization(p.useful, config, p.cycles)
    for row in report.layers():
        if row["dense_macs"]:
            assert row["dense_utilization"] == round(
                report.utilization(row["layer"], config), 4)
    assert cycles.utilization(5, config, 0) == 0.0


def test_explore_reports_the_cycle_models_utilization():
    from scripts import explore

    point = explore.Point(2, 4, 4, 8)
    got = explore.cycles_for(point, "spikformer")
    model = explore.workload_model("spikformer")
    net = compile_network(model, explore.modelling_config(point, model.weight_bits))
    assert got == {"cycles": net.cycles.total,
                   "utilization": round(net.cycles.pe_utilization, 4)}


def test_head_drain_emits_only_its_row_groups_logits():
    """A head of 6 classes on 4 PE rows: the second row group's last tile emits 2 logits, not
    4 (the pass timing and `drain_cycles` agree, one formula)."""
    config = ArrayConfig()
    R = config.pe_rows
    desc = {f: 0 for f in isa.DESC_FIELDS}
    desc.update(op=isa.OP_ARRAY, groups=1, rows=6, rgs=2, cols=config.pe_cols, cts=1, steps=40,
                taps=1, out_mode=isa.OUT_HEAD, out_planes=1)
    assert cycles.head_emits(config, desc, 1) == 6 - R
    assert cycles.drain_cycles(config, desc, 2) == 1 + R + cycles.head_emit_cycles(config, 2)
    assert cycles.drain_cycles(config, desc) == 1 + R
    fewer = dict(desc, rows=5)  # one logit fewer: 4 cycles fewer
    assert cycles.array_pass_cycles(config, desc) - cycles.array_pass_cycles(config, fewer) == 4
