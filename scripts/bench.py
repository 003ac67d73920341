"""The accelerator against the CPU on this machine (`make bench`).

    python -m scripts.bench                 # build/bench/report.json and report.md
    python -m scripts.bench --threads 1 --batch 128 --seconds 2

In one run, for every committed digits variant:
- PyTorch on the CPU, the float model (`load_float_model`, eval mode, `torch.inference_mode`),
  `--threads` intra-op threads (2 by default): inferences/s one image at a time (batch 1) and in
  batches of `--batch` (256);
- the NumPy golden model (`pysim.golden.run`, no trace) in batches of `--batch`;
- each board's inferences/s at its routed clock, from `build/synth/<board>/report.json` when a
  build left one there (its `variants` field, or the cycle model at its `fmax_mhz` for a report
  written before that field existed), else "not built"; and the ratio accelerator / CPU for
  batch 1 and batched.

Inputs are `--batch` digits test images drawn with `--seed`; a batch-1 run goes through them one
by one. Each measurement runs one warm-up call, then repeats until `--seconds` have passed (at
least once through the images for batch 1, at least one batch otherwise). The report records
the machine (cores, load average before and after: other jobs on the machine slow the CPU
figures, not the boards', which are computed from the routed clock and the cycle model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from pysim import cli
from scripts import throughput

ROOT = Path(__file__).resolve().parent.parent
BOARD_NAMES = ("icebreaker", "orangecrab-25f", "ulx3s-85f")


def bench_images(count: int, seed: int) -> np.ndarray:
    """`count` digits test images drawn with `seed` (with replacement only beyond 360)."""
    from pysim.data import digits_test

    images = digits_test()[0]
    rng = np.random.default_rng(seed)
    return images[rng.choice(len(images), size=count, replace=count > len(images))]


def rate(run, batches: list, seconds: float, clock=time.perf_counter) -> float:
    """Inputs per second of `run(batch)`: one warm-up call, then the batches in turn until all
    have run once and `seconds` have passed."""
    run(batches[0])
    done = 0
    start = clock()
    while True:
        for batch in batches:
            run(batch)
            done += len(batch)
        elapsed = clock() - start
        if elapsed >= seconds:
            return done / elapsed


def cpu_rates(variant: str, images: np.ndarray, threads: int, seconds: float,
              single: int) -> dict:
    """PyTorch float (batch 1 over the first `single` images, batched) and golden rates."""
    import torch

    from pysim import golden
    from pysim.torch_models import load_export, load_float_model

    torch.set_num_threads(threads)
    model = load_float_model(variant).eval()
    intmodel = load_export(variant)

    def torch_run(batch):
        with torch.inference_mode():
            model(batch)

    ones = [images[i:i + 1] for i in range(min(single, len(images)))]
    return {
        "torch_batch1_per_s": rate(torch_run, ones, seconds),
        "torch_batched_per_s": rate(torch_run, [images], seconds),
        "golden_per_s": rate(lambda b: golden.run(intmodel, b, record=False), [images], seconds),
    }


def board_rates(variants, synth_dir: Path, boards=BOARD_NAMES) -> dict:
    """{board: {"built": bool, ...}} from `synth_dir/<board>/report.json`: the routed and
    required clock, the report's date, and per variant inferences/s at the routed clock (None
    when the variant does not fit)."""
    from hw.config import ArrayConfig

    out = {}
    for board in boards:
        path = synth_dir / board / "report.json"
        if not path.exists():
            out[board] = {"built": False, "why": f"no {path}"}
            continue
        report = json.loads(path.read_text())
        if not report.get("fmax_mhz"):
            out[board] = {"built": False, "why": f"{path} has no routed clock (did not fit?)"}
            continue
        config = ArrayConfig.from_dict(report["config"])
        entry = {"built": True, "report": str(path),
                 "report_time": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                     path.stat().st_mtime)),
                 "array": f"{config.pe_rows}x{config.pe_cols}x{config.lanes}",
                 "fmax_mhz": report["fmax_mhz"], "required_mhz": report.get("required_mhz"),
                 "meets_timing": report.get("meets_timing"), "variants": {}}
        known = report.get("variants") or {}
        for variant in variants:
            row = known.get(variant)
            if row is None:  # a report from before the throughput fields: the cycle model
                row = throughput.variant_throughput(
                    throughput.load_variant(variant), config, report["fmax_mhz"] * 1e6,
                    None, None)
            entry["variants"][variant] = row.get("inferences_per_s") if row.get("fits") else None
        out[board] = entry
    return out


def assemble(cpu: dict, boards: dict, settings: dict, machine: dict) -> dict:
    """The report: per variant the CPU rates and, per built board, inferences/s and the ratios
    accelerator / CPU (batch 1 and batched)."""
    variants = {}
    for variant, rates in cpu.items():
        row = {key: round(value, 1) for key, value in rates.items()}
        row["boards"] = {}
        for board, entry in boards.items():
            if not entry["built"]:
                row["boards"][board] = {"built": False}
                continue
            per_s = entry["variants"].get(variant)
            cell = {"built": True, "fits": per_s is not None, "inferences_per_s": per_s}
            if per_s is not None:
                cell["vs_torch_batch1"] = round(per_s / rates["torch_batch1_per_s"], 3)
                cell["vs_torch_batched"] = round(per_s / rates["torch_batched_per_s"], 3)
            row["boards"][board] = cell
        variants[variant] = row
    return {"settings": settings, "machine": machine,
            "boards": {b: {k: v for k, v in e.items() if k != "variants"}
                       for b, e in boards.items()},
            "variants": variants}


def to_markdown(report: dict) -> str:
    """The markdown table made from the report."""
    s, m = report["settings"], report["machine"]
    boards = report["boards"]
    head = ["model", "PyTorch float, batch 1", f"PyTorch float, batch {s['batch']}",
            f"golden (NumPy), batch {s['batch']}"]
    for board, entry in boards.items():
        head.append(f"{board} ({entry['array']}, {entry['fmax_mhz']} MHz)" if entry["built"]
                    else board)
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for variant, row in report["variants"].items():
        cells = [variant, f"{row['torch_batch1_per_s']:,.0f}",
                 f"{row['torch_batched_per_s']:,.0f}", f"{row['golden_per_s']:,.0f}"]
        for board in boards:
            cell = row["boards"][board]
            if not cell["built"]:
                cells.append("not built")
            elif not cell["fits"]:
                cells.append("does not fit")
            else:
                cells.append(f"{cell['inferences_per_s']:,.0f} (x{cell['vs_torch_batch1']:.2f} "
                             f"/ x{cell['vs_torch_batched']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    load = m.get("loadavg_before"), m.get("loadavg_after")
    lines += ["", f"Inferences/s; boards at their routed clock (cycle model), in brackets "
              f"accelerator / CPU at batch 1 / batched. CPU: {m['cpus']} cores, PyTorch "
              f"{m['torch']}, {s['threads']} thread(s); load average "
              f"{load[0]} before, {load[1]} after."]
    return "\n".join(lines)


def machine_info(threads: int) -> dict:
    import torch

    return {"cpus": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "torch_threads": threads,
            "loadavg_before": round(os.getloadavg()[0], 2)}


@cli.entry_point("python -m scripts.bench")
def main(argv=None) -> int:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="python -m scripts.bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    parser.add_argument("--batch", type=int, default=256, help="batch size (and images drawn)")
    parser.add_argument("--single", type=int, default=32,
                        help="images run one at a time for batch 1")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="least time per measurement")
    parser.add_argument("--seed", type=int, default=0, help="seed of the image draw")
    parser.add_argument("--model", action="append", choices=throughput.VARIANTS,
                        help="variant (repeatable; default: all five)")
    parser.add_argument("--synth-dir", default=str(ROOT / "build/synth"),
                        help="folder of the board builds")
    parser.add_argument("--out", default=str(ROOT / "build/bench/report.json"))
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    if args.threads < 1 or args.batch < 1 or args.single < 1 or args.seconds <= 0:
        raise cli.UsageError("--threads, --batch and --single take integers >= 1 and "
                             "--seconds a positive number")
    variants = args.model or list(throughput.VARIANTS)
    start = time.monotonic()
    machine = machine_info(args.threads)
    images = bench_images(args.batch, args.seed)
    cpu = {}
    for variant in tqdm(variants, desc="CPU", unit="model"):
        cpu[variant] = cpu_rates(variant, images, args.threads, args.seconds, args.single)
    machine["loadavg_after"] = round(os.getloadavg()[0], 2)
    boards = board_rates(variants, Path(args.synth_dir))
    settings = {"batch": args.batch, "single": min(args.single, args.batch),
                "seconds": args.seconds, "seed": args.seed, "threads": args.threads,
                "images": "digits test split", "date": time.strftime("%Y-%m-%d %H:%M")}
    report = assemble(cpu, boards, settings, machine)
    report["seconds"] = round(time.monotonic() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    table = to_markdown(report)
    out.with_suffix(".md").write_text(table + "\n")
    print(table)
    print(f"wrote {out} and {out.with_suffix('.md')} ({report['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
