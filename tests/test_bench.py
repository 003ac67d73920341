"""`make bench`'s report assembly, on tiny timings and hand-made board reports (no model runs
except the cycle model for a board report without throughput fields)."""

import dataclasses
import itertools
import json

import pytest

from hw.boards import get_board
from scripts import bench


def test_rate_repeats_until_the_time_is_up():
    ticks = itertools.count(0.0, 0.5)  # each clock read is half a second later
    calls = []
    per_s = bench.rate(calls.append, [[1], [2], [3]], seconds=1.0, clock=lambda: next(ticks))
    # One warm-up call, then passes over the three batches until 1 s has passed: two passes
    # (0.5 s after the first), 6 inputs in 1.0 s.
    assert calls == [[1]] + [[1], [2], [3]] * 2 and per_s == 6.0


def test_bench_images_are_seeded():
    a, b = bench.bench_images(8, seed=1), bench.bench_images(8, seed=1)
    assert a.shape == (8, 8, 8) and (a == b).all()
    assert bench.bench_images(400, seed=0).shape[0] == 400  # beyond the split: with replacement


def _write_report(folder, board, fmax, variants=None):
    config = get_board(board).config()
    report = {"board": board, "config": dataclasses.asdict(config), "fmax_mhz": fmax,
              "required_mhz": config.clock_hz / 1e6, "meets_timing": True}
    if variants is not None:
        report["variants"] = variants
    (folder / board).mkdir(parents=True)
    (folder / board / "report.json").write_text(json.dumps(report))


def test_board_rates_read_the_reports(tmp_path):
    _write_report(tmp_path, "ulx3s-85f", 20.0, {
        "spikformer": {"fits": True, "inferences_per_s": 1000.0},
        "sdt": {"fits": False, "reason": "layer x: too big"}})
    _write_report(tmp_path, "icebreaker", 13.0)  # an older report: the cycle model fills in
    boards = bench.board_rates(["spikformer", "sdt"], tmp_path)
    assert boards["orangecrab-25f"] == {"built": False,
                                        "why": f"no {tmp_path}/orangecrab-25f/report.json"}
    ulx, cfg = boards["ulx3s-85f"], get_board("ulx3s-85f").config()
    assert ulx["built"] and ulx["fmax_mhz"] == 20.0
    assert ulx["array"] == f"{cfg.pe_rows}x{cfg.pe_cols}x{cfg.lanes}"
    assert ulx["variants"] == {"spikformer": 1000.0, "sdt": None}
    ice = boards["icebreaker"]["variants"]
    assert ice["sdt"] is None and 10 < ice["spikformer"] < 100  # 13 MHz / ~600k cycles


def test_assemble_and_markdown():
    cpu = {"spikformer": {"torch_batch1_per_s": 200.0, "torch_batched_per_s": 2000.0,
                          "golden_per_s": 500.0},
           "sdt": {"torch_batch1_per_s": 100.0, "torch_batched_per_s": 1000.0,
                   "golden_per_s": 250.0}}
    boards = {"icebreaker": {"built": False, "why": "no report"},
              "ulx3s-85f": {"built": True, "array": "4x8x4", "fmax_mhz": 20.0,
                            "variants": {"spikformer": 1000.0, "sdt": None}}}
    settings = {"batch": 256, "threads": 2}
    machine = {"cpus": 2, "torch": "2.13.0", "loadavg_before": 1.0, "loadavg_after": 2.0}
    report = bench.assemble(cpu, boards, settings, machine)
    cell = report["variants"]["spikformer"]["boards"]["ulx3s-85f"]
    assert cell == {"built": True, "fits": True, "inferences_per_s": 1000.0,
                    "vs_torch_batch1": 5.0, "vs_torch_batched": 0.5}
    assert report["variants"]["sdt"]["boards"]["ulx3s-85f"]["fits"] is False
    assert report["variants"]["sdt"]["boards"]["icebreaker"] == {"built": False}
    assert "variants" not in report["boards"]["ulx3s-85f"]
    table = bench.to_markdown(report)
    lines = table.splitlines()
    assert lines[0].startswith("| model | PyTorch float, batch 1 | PyTorch float, batch 256 |")
    assert "ulx3s-85f (4x8x4, 20.0 MHz)" in lines[0]
    assert lines[2] == "| spikformer | 200 | 2,000 | 500 | not built | 1,000 (x5.00 / x0.50) |"
    assert lines[3] == "| sdt | 100 | 1,000 | 250 | not built | does not fit |"
    assert "2 thread(s); load average 1.0 before, 2.0 after" in table


def test_bad_arguments_are_one_line(capsys):
    assert bench.main(["--threads", "0"]) == 2
    assert "--threads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--model", "nope"])
