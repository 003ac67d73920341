"""`explore.synthesize` on one real point: a smallest array (1x1 PE, 2 lanes, 4-bit weights,
with the iCEBreaker's lean memories) on the iCE40 UP5K through Yosys and nextpnr's placer, as
`python -m scripts.explore --device ice40-up5k` runs it; the result is cached and read back.
About 3 minutes (Yosys 156 s, nextpnr 29 s on the shared 2-core machine at a load of 7)."""

from pathlib import Path

import pytest

from scripts import explore
from scripts.explore import Point

pytestmark = [pytest.mark.synth, pytest.mark.extended]

WORKLOAD = "spikformer_iand"
POINT = Point(1, 1, 2, 4)


def test_smallest_point_synthesizes_on_ice40(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the YoWASP tools see relative paths only
    task = explore.make_tasks([POINT], "ice40-up5k", [WORKLOAD], Path("explore"),
                              synth=True)[0]
    result = explore.evaluate(task)
    hw = result["hardware"]
    # Placed logic cells within the device; the weights and steps in the four SPRAMs as in
    # the board build (without the board's Yosys script they land in EBRs and do not place).
    assert hw["lut_available"] == 5280
    assert 3000 < hw["lut"] <= hw["lut_available"]
    assert hw["ff"] > 1000 and 0 < hw["bram"] <= 30 and hw["dsp"] == 0
    assert hw["synthesis"]["spram"] == 4
    assert 5 < hw["fmax_mhz"] < 200
    assert hw["seconds"]["yosys"] > 0 and hw["seconds"]["nextpnr"] > 0
    # T = 4 on 2 lanes: the cycle model's answer is the compiler's refusal, as in a sweep.
    assert result["workloads"][WORKLOAD] == explore.cycles_for(POINT, WORKLOAD)
    assert "exceeds the 2 time-step lanes" in result["workloads"][WORKLOAD]["note"]
    log = (tmp_path / task["work"] / task["key"] / "nextpnr.log").read_text()
    assert "Max frequency for clock" in log
    # The cache holds it: a second evaluation runs no tool.
    monkeypatch.setattr(explore, "synthesize", lambda *a: pytest.fail("synthesized again"))
    assert explore.evaluate(task) == result
