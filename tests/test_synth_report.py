"""The derived fields of `build/synth/<board>/report.json`, on small synthetic tool outputs:
per-module resources from the flattened netlist, worst paths from nextpnr's log, lanes and
throughput (no Yosys or nextpnr run)."""

import dataclasses
import json
import math

import pytest

from hw.boards import get_board
from hw.config import ArrayConfig
from scripts import synth, throughput


def _cell(kind, **attributes):
    return {"type": kind, "attributes": attributes, "connections": {}}


#: A flattened ECP5 netlist as Yosys writes it for nextpnr: `$scopeinfo` cells for the
#: hierarchy, mapped cells named after the nets they drive.
NETLIST = {"modules": {
    "LUT4": {"attributes": {"blackbox": "00000000000000000000000000000001"}, "cells": {}},
    "top": {"attributes": {"top": "00000000000000000000000000000001"}, "cells": {
        "bridge": _cell("$scopeinfo", module_src=f"{synth.ROOT}/hw/boards/bridge.py:55"),
        "bridge.link": _cell("$scopeinfo", module_src=f"{synth.ROOT}/hw/host_link.py:152"),
        "bridge.link.core": _cell("$scopeinfo", module_src=f"{synth.ROOT}/hw/accelerator.py:1"),
        "bridge.link.core.pe": _cell("$scopeinfo", module_src=f"{synth.ROOT}/hw/pe.py:82"),
        "bridge.link.core.lif0": _cell("$scopeinfo", module_src=f"{synth.ROOT}/hw/lif.py:56"),
        "bridge.link.results": _cell("$scopeinfo", module_src="/x/.venv/lib/python3.11/"
                                                              "site-packages/amaranth/lib/fifo.py:2"),
        "bridge.link.core.pe.acc_TRELLIS_FF_Q": _cell("TRELLIS_FF"),
        "bridge.link.core.pe.acc_TRELLIS_FF_Q_1": _cell("TRELLIS_FF"),
        "bridge.link.core.pe.sum_LUT4_Z": _cell("LUT4"),
        "bridge.link.core.pe.sum_CCU2C_S0": _cell("CCU2C"),
        "bridge.link.core.lif0.v_LUT4_Z": _cell("LUT4"),
        "bridge.link.core.bank0.0.0": _cell("DP16KD"),  # a memory: its name is no scope
        "bridge.link.core.$signal$1_LUT4_Z": _cell("LUT4"),
        "bridge.link.state_TRELLIS_FF_Q": _cell("TRELLIS_FF"),
        "bridge.link.results.mem.0.0": _cell("DP16KD"),
        "$abc$123$unnamed": _cell("LUT4"),  # no hierarchical name: counted at the top
        "clk_buf": _cell("TRELLIS_IO"),
    }},
}}


def test_module_resources_attribute_every_cell_to_its_scope():
    rows = synth.module_resources(NETLIST, "ecp5")
    by_scope = {row["scope"]: row for row in rows}
    assert [row["scope"] for row in rows] == [
        "", "bridge", "bridge.link", "bridge.link.core", "bridge.link.core.lif0",
        "bridge.link.core.pe", "bridge.link.results"]
    pe = by_scope["bridge.link.core.pe"]
    assert pe["name"] == "pe" and pe["depth"] == 4 and pe["module"] == "hw/pe.py:82"
    assert pe["own"] == pe["total"] == {"lut": 3, "ff": 2, "lutram": 0, "bram": 0, "spram": 0,
                                        "dsp": 0}  # a CCU2C holds two LUT4s
    core = by_scope["bridge.link.core"]
    assert core["own"]["lut"] == 1 and core["own"]["bram"] == 1
    assert core["total"]["lut"] == 5 and core["total"]["ff"] == 2
    assert by_scope["bridge.link.results"]["module"] == "amaranth/lib/fifo.py:2"
    top = by_scope[""]
    assert top["name"] == "top" and top["own"]["lut"] == 1
    # The rows add up to the whole design: the same totals as `stat` of the flat netlist.
    assert top["total"] == synth.count_cells(
        {"LUT4": 4, "CCU2C": 1, "TRELLIS_FF": 3, "DP16KD": 2}, "ecp5")
    assert sum(row["own"]["lut"] for row in rows) == top["total"]["lut"]
    table = synth.module_table(rows)
    assert "        pe " in table and "hw/lif.py:56" in table


def test_module_table_leaves_out_small_rows_but_keeps_memories():
    rows = synth.module_resources(NETLIST, "ecp5")
    table = synth.module_table(rows, min_share=0.5)
    assert "lif0" not in table and "results" in table and "pe" in table


def test_module_resources_needs_a_top():
    with pytest.raises(ValueError, match="no top module"):
        synth.module_resources({"modules": {}}, "ice40")


#: nextpnr's log, abridged: the routed report follows the placement one of the same clock (an
#: older nextpnr's "Setup <pin>" step, then 0.11's "setup ... Source <pin>").
NEXTPNR_LOG = """\
Info: Max frequency for clock '$glbnet$clk': 61.64 MHz (PASS at 24.00 MHz)

Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  0.52  0.52 Source bridge.link.core.pe.acc_TRELLIS_FF_Q.Q
Info:    routing  1.00  1.52 Net bridge.link.core.pe.acc[0] (1,1) -> (2,2)
Info:                          Sink bridge.link.core.lif0.v_LUT4_Z.A
Info:      setup  0.10  1.62 Setup bridge.link.core.lif0.v_LUT4_Z.A
Info: 0.6 ns logic, 1.0 ns routing

Info: Routing..
Info: Critical path report for clock '$glbnet$clk' (posedge -> posedge):
Info:       type curr  total name
Info:   clk-to-q  4.10  4.10 Source bridge.link.core.bank0.0.0.DOA0
Info:    routing  3.00  7.10 Net bridge.link.core.rd[0] (10,4) -> (12,9)
Info:                          Sink bridge.link.core.pe.sum_LUT4_Z.B
Info:                          Defined in:
Info:                               /work/main/hw/pe.py:120
Info:      logic  0.40  7.50 Source bridge.link.core.pe.sum_LUT4_Z.Z
Info:    routing  2.10  9.60 Net bridge.link.core.pe.sum (12,9) -> (14,9)
Info:                          Sink bridge.link.core.lif0.v_LUT4_Z.C
Info:      logic  0.40 10.00 Source bridge.link.core.lif0.v_LUT4_Z.Z
Info:    routing  1.50 11.50 Net bridge.link.core.lif0.v (14,9) -> (15,9)
Info:                          Sink bridge.link.core.pe.acc_TRELLIS_FF_Q.DI
Info:      setup  0.50 12.00 Source bridge.link.core.pe.acc_TRELLIS_FF_Q.DI
Info: 5.4 ns logic, 6.6 ns routing

Info: Critical path report for cross-domain path '<async>' -> 'posedge $glbnet$clk':
Info:       type curr  total name
Info:     source  0.00  0.00 Source pin_uart_0__rx.buf.buf.O
Info:    routing  1.24  1.24 Net uart_rx (3,0) -> (4,1)
Info:                          Sink bridge.uart_rx.sync_rx.stage0_TRELLIS_FF_Q.DI
Info: 0.0 ns logic, 1.2 ns routing

Info: Max frequency for clock '$glbnet$clk': 83.33 MHz (PASS at 24.00 MHz)
"""


def test_parse_critical_paths_keeps_the_routed_report():
    scopes = {"bridge", "bridge.link", "bridge.link.core", "bridge.link.core.pe",
              "bridge.link.core.lif0", "bridge.uart_rx", "bridge.uart_rx.sync_rx"}
    paths = synth.parse_critical_paths(NEXTPNR_LOG, scopes)
    assert len(paths) == 2
    clock, cross = paths
    assert clock["clock"] == "$glbnet$clk" and clock["edges"] == "posedge -> posedge"
    assert clock["source"] == "bridge.link.core.bank0.0.0.DOA0"
    assert clock["sink"] == "bridge.link.core.pe.acc_TRELLIS_FF_Q.DI"
    assert clock["total_ns"] == 12.0 and clock["logic_levels"] == 2
    assert (clock["logic_ns"], clock["routing_ns"], clock["routing_share"]) == (5.4, 6.6, 0.55)
    assert clock["source_module"] == "bridge.link.core"
    assert clock["sink_module"] == "bridge.link.core.pe"
    assert cross["from_clock"] == "<async>" and cross["to_clock"] == "posedge $glbnet$clk"
    assert cross["sink"] == "bridge.uart_rx.sync_rx.stage0_TRELLIS_FF_Q.DI"
    assert cross["source_module"] == "top" and cross["sink_module"] == "bridge.uart_rx.sync_rx"
    text = synth.paths_table(paths)
    assert "12.0 ns" in text and "55% routing" in text and "from bridge.link.core.bank0" in text


def test_parse_critical_paths_without_reports():
    assert synth.parse_critical_paths("Info: Routing..\nInfo: Program finished normally.\n") == []


def test_lane_figures():
    config = ArrayConfig(pe_rows=4, pe_cols=4, lanes=4)
    figures = throughput.lane_figures(config, 14906, 31.25e6)
    assert figures["lanes"] == 64 and figures["lut_per_lane"] == 232.9
    assert figures["peak_lane_ops_per_s"] == 64 * 31.25e6 and figures["peak_gops"] == 2.0
    assert throughput.lane_figures(config, None, None)["peak_lane_ops_per_s"] is None


def test_board_throughput_at_the_routed_and_required_clock():
    config = get_board("icebreaker").config()
    rows = throughput.board_throughput(config, 13.18e6, 12e6,
                                       variants=("spikformer_iand", "spikingformer"))
    iand = rows["spikformer_iand"]
    assert iand["fits"] is True
    cycles = iand["cycles_per_inference"]
    from hw.compiler import compile_network
    assert cycles == compile_network(throughput.load_variant("spikformer_iand"),
                                     config).cycles.total
    assert math.isclose(iand["inferences_per_s"], 13.18e6 / cycles, abs_tol=0.05)
    assert math.isclose(iand["inferences_per_s_required"], 12e6 / cycles, abs_tol=0.05)
    sops = throughput.synaptic_ops("spikformer_iand")
    assert iand["synaptic_ops_per_inference"] == round(sops) and sops > 0
    assert math.isclose(iand["gsop_per_s"], sops * 13.18e6 / cycles / 1e9, abs_tol=1e-4)
    # Spikingformer needs more activation memory than the UP5K's EBRs leave.
    assert rows["spikingformer"]["fits"] is False
    assert "activation" in rows["spikingformer"]["reason"]
    assert "does not fit" in throughput.throughput_table(rows)


def test_synaptic_ops_are_make_evals_count():
    from pysim import golden
    from pysim.evaluate import operation_counts

    images = throughput.sop_images(4, seed=3)
    assert len(images) == 4
    model = throughput.load_variant("sdt")
    _, trace = golden.run(model, images)
    assert throughput.synaptic_ops("sdt", 4, 3) == operation_counts(
        model, images, trace)["synaptic_ops"]


def test_board_throughput_records_an_unreadable_export(tmp_path):
    rows = throughput.board_throughput(ArrayConfig(), 50e6, variants=("spikformer",),
                                       directory=tmp_path)
    assert rows["spikformer"]["fits"] is None and "spikformer" in rows["spikformer"]["error"]


def test_refresh_adds_the_derived_fields_to_an_existing_report(tmp_path):
    build = tmp_path / "orangecrab-25f"
    build.mkdir()
    config = get_board("orangecrab-25f").config()
    report = {"board": "orangecrab-25f", "config": dataclasses.asdict(config),
              "resources": {"lut": {"used": 12800, "available": 24288}},
              "fmax_mhz": 32.0, "required_mhz": 24.0, "clock": {"sync_mhz": 24.0}}
    (build / "report.json").write_text(json.dumps(report))
    (build / "top.json").write_text(json.dumps(NETLIST))
    (build / "top.tim").write_text(NEXTPNR_LOG)
    out = synth.refresh_report(build)
    assert out == json.loads((build / "report.json").read_text())
    lanes = config.total_lanes
    assert out["lanes"] == lanes and out["lut_per_lane"] == round(12800 / lanes, 1)
    assert out["peak_lane_ops_per_s"] == lanes * 32e6
    assert out["modules"][0]["total"]["lut"] == 6
    assert out["critical_paths"][0]["sink_module"] == "bridge.link.core.pe"
    assert set(out["variants"]) == set(throughput.VARIANTS)
    spikformer = out["variants"]["spikformer"]
    assert math.isclose(spikformer["inferences_per_s"] / spikformer["inferences_per_s_required"],
                        32 / 24, rel_tol=1e-3)
    text = synth.summary(out)
    assert f"{lanes} lanes, {12800 / lanes:.1f} LUT per lane" in text and "spikformer_iand" in text


def test_refresh_needs_a_report(tmp_path):
    assert synth.main(["--board", "icebreaker", "--out", str(tmp_path), "--refresh"]) == 2
