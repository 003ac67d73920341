"""Estimated register-to-register paths of a mapped netlist, all at once.

nextpnr reports one worst path per clock, so closing timing by its report alone costs a full
place and route per path. This reads the netlist Yosys writes for nextpnr (`top.json` in a
`make synth` build folder) and estimates every endpoint's arrival with a fixed delay per cell
and per net: the ranking of paths, not their nanoseconds, is what it is for. It lists the
endpoints slower than a budget, grouped by (start, end) register or memory, so one synthesis
shows every path that a clock target would fail.

    python -m scripts.paths build/synth/icebreaker [--budget-ns 27.7] [--top 40]

Delay model (iCE40 UP5K-like, calibrated loosely on nextpnr's routed reports: about 1.5x
below them on a 96%-full UP5K): a LUT 0.5 ns, a carry step 0.15 ns along the chain and 0.4 ns
into it, a net between cells 1.5 ns (none from a carry to the next carry or to the LUT that
shares its logic cell), a block RAM or SPRAM read 2.5 ns from its clock, a flip-flop 0.8 ns
clock-to-out. Start and end points: flip-flops and memories (iCE40 and ECP5 names); every
other cell counts as a LUT, so on the ECP5 (carries, wide muxes) the ranking is rougher.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from scripts.synth import top_module

LUT_NS, NET_NS, CARRY_NS, CARRY_IN_NS, RAM_NS, FF_NS = 0.5, 1.5, 0.15, 0.4, 2.5, 0.8

REGISTERS_PREFIX = ("SB_DFF", "TRELLIS_FF")
MEMORIES = {"SB_RAM40_4K", "SB_SPRAM256KA", "DP16KD", "TRELLIS_DPR16X4"}


def _kind(cell_type: str) -> str:
    """"ff", "mem", "carry" (the iCE40 SB_CARRY) or "lut" (everything else)."""
    if cell_type.startswith(REGISTERS_PREFIX):
        return "ff"
    if cell_type in MEMORIES:
        return "mem"
    return "carry" if cell_type == "SB_CARRY" else "lut"


def analyse(netlist: dict, budget_ns: float) -> list[dict]:
    """Endpoints slower than `budget_ns`, each with its start point and estimated arrival."""
    cells = {name: c for name, c in top_module(netlist)["cells"].items()
             if c["type"] != "$scopeinfo"}
    driver: dict[int, tuple[str, str]] = {}
    for name, cell in cells.items():
        for port, direction in cell["port_directions"].items():
            if direction == "output":
                for bit in cell["connections"][port]:
                    if isinstance(bit, int):
                        driver[bit] = (name, port)
    arrival: dict[tuple[str, str], tuple[float, str]] = {}  # (cell, out port) -> (ns, start)
    through: dict[tuple[str, str], tuple[str, str]] = {}  # (cell, out port) -> its latest input
    visiting: set = set()

    def net_arrival(bit, sink_cell, sink_port) -> tuple[float, str]:
        if not isinstance(bit, int) or bit not in driver:
            return 0.0, "(constant or input)"
        name, port = driver[bit]
        ns, start = out_arrival(name, port)
        same_lc = (_kind(cells[name]["type"]) == "carry"
                   and (_kind(cells[sink_cell]["type"]) == "carry" and sink_port == "CI"
                        or _kind(cells[sink_cell]["type"]) == "lut" and sink_port == "I3"))
        return ns + (0.0 if same_lc else NET_NS), start

    def out_arrival(name, port) -> tuple[float, str]:
        key = (name, port)
        if key in arrival:
            return arrival[key]
        cell = cells[name]
        kind = _kind(cell["type"])
        if kind == "ff":
            result = (FF_NS, name)
        elif kind == "mem":
            result = (RAM_NS, name)
        elif key in visiting:  # a combinational loop: cut it
            return 0.0, "(loop)"
        else:
            visiting.add(key)
            best = (0.0, "(constant or input)")
            for in_port, direction in cell["port_directions"].items():
                if direction != "input":
                    continue
                for bit in cell["connections"][in_port]:
                    ns, start = net_arrival(bit, name, in_port)
                    if kind == "carry":
                        ns += CARRY_NS if in_port == "CI" else CARRY_IN_NS
                    else:
                        ns += LUT_NS
                    if (ns, start) > best:
                        best = (ns, start)
                        through[key] = driver.get(bit) if isinstance(bit, int) else None
            visiting.discard(key)
            result = best
        arrival[key] = result
        return result

    sys.setrecursionlimit(100_000)
    slow = []
    for name, cell in cells.items():
        if _kind(cell["type"]) not in ("ff", "mem"):
            continue
        for port, direction in cell["port_directions"].items():
            if direction != "input" or port in ("C", "CLK", "RCLK", "WCLK", "CLOCK"):
                continue
            for bit in cell["connections"][port]:
                ns, start = net_arrival(bit, name, port)
                if ns > budget_ns:
                    path, at = [], driver.get(bit) if isinstance(bit, int) else None
                    while (at is not None and _kind(cells[at[0]]["type"]) not in ("ff", "mem")
                           and at[0] not in path):  # (a combinational loop ends the walk)
                        path.append(at[0])
                        at = through.get(at)
                    slow.append({"start": start, "end": name, "pin": port, "ns": round(ns, 2),
                                 "levels": sum(_kind(cells[c]["type"]) == "lut" for c in path),
                                 "path": path[::-1]})
    return slow


def _register_name(cell: str) -> str:
    """A mapped cell's name cut back to the signal it was made from."""
    for marker in ("_SB_", "_TRELLIS_", "$"):
        if marker in cell:
            cell = cell.split(marker, 1)[0]
    return cell


def grouped(slow: list[dict]) -> list[dict]:
    groups: dict = defaultdict(lambda: {"ns": 0.0, "endpoints": 0, "pins": set()})
    for row in slow:
        g = groups[_register_name(row["start"]), _register_name(row["end"])]
        if row["ns"] > g["ns"]:
            g["levels"], g["path"] = row["levels"], row["path"]
        g["ns"] = max(g["ns"], row["ns"])
        g["endpoints"] += 1
        g["pins"].add(row["pin"])
    return sorted(({"start": s, "end": e, "ns": g["ns"], "endpoints": g["endpoints"],
                    "pins": sorted(g["pins"]), "levels": g["levels"], "path": g["path"]}
                   for (s, e), g in groups.items()),
                  key=lambda g: -g["ns"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.paths", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("build", type=Path, help="a make synth build folder (with top.json)")
    parser.add_argument("--budget-ns", type=float, default=27.7)
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--explain", type=int, default=0, metavar="N",
                        help="print the cells on the N slowest pairs' paths")
    args = parser.parse_args(argv)
    netlist = json.loads((args.build / "top.json").read_text())
    groups = grouped(analyse(netlist, args.budget_ns))
    print(f"{len(groups)} (start, end) pairs above {args.budget_ns} ns (estimated)")
    for g in groups[:args.top]:
        print(f"{g['ns']:6.1f} ns {g['levels']:3d} LUTs {g['endpoints']:4d} endpoints "
              f"{','.join(g['pins']):10s} {g['start']} -> {g['end']}")
    for g in groups[:args.explain]:
        print(f"\n{g['start']} -> {g['end']} ({g['ns']} ns):")
        for cell in g["path"]:
            print(f"    {cell}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
