"""`make sim`: a trained spiking transformer on the RTL, fed by the host firmware, checked bit
for bit against the golden model.

    python -m tb.run_sim --model spikformer [--dataset digits|fashion]
                         [--config hw/configs/default.json] [--images N] [--sim verilator|icarus]

Steps: load `checkpoints/<model>.json` (`checkpoints/fashion/` with `--dataset fashion`),
compile it for the configuration, build the Verilator (or, with `--sim icarus`, the Icarus)
model of `spikeformer_top` (host link + accelerator), stream the test split (digits or
Fashion-MNIST) through `firmware.host.AcceleratorClient` over the cosimulation socket,
compare every input's logits with `pysim.golden.run`, and read the busy-cycle counter to check
the cycle model. The verdict is the board runner's (`firmware.__main__.compare`): prints a
summary, writes `build/sim/report.json` (the mismatching inputs included), exits 1 on any
mismatch or cycle-model disagreement. An expected error (a missing model, a config that is not
a JSON object, a model that does not fit) is one line and exit status 2 (`pysim.cli`; `--debug`
shows the traceback).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from firmware.__main__ import compare, per_inference_cycles
from pysim import cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "hw" / "configs" / "default.json"

__all__ = ["DEFAULT_CONFIG", "ROOT", "main", "per_inference_cycles", "run", "summary"]


def _step(index: int, total: int, text: str) -> float:
    print(f"step {index}/{total}: {text}", flush=True)
    return time.monotonic()


def run(model_name: str, config_path: str | None, images: int | None, out: Path,
        progress: bool = True, simulator: str = "verilator", dataset: str = "digits") -> dict:
    from hw.compiler import compile_network
    from hw.config import ArrayConfig
    from pysim import golden
    from pysim.data import fit_images, test_split
    from tb.session import Session, build, build_name

    steps = 5
    folder = None if dataset == "digits" else cli.CHECKPOINTS / dataset
    t = _step(1, steps, f"load {cli.model_path(model_name, folder)} and the {dataset} test "
              "split")
    model = cli.load_model(model_name, folder)
    config = ArrayConfig.load(config_path or DEFAULT_CONFIG)
    x, y = test_split(dataset)
    x = fit_images(x, model.input_spec.shape)  # (64-token models read 32x32)
    if images is not None:
        x, y = x[:images], y[:images]
    print(f"  {len(x)} images, model {model.model} (T={model.T}), config {config.name}")

    t = _step(2, steps, "golden model")
    expected, _ = golden.run(model, x, record=False)

    t = _step(3, steps, f"compile for {config.name} ({config.pe_rows}x{config.pe_cols} PEs, "
              f"{config.lanes} lanes)")
    compiled = compile_network(model, config)
    model_cycles = per_inference_cycles(compiled)

    t = _step(4, steps, f"{simulator} build in build/cosim/{build_name(config)}")
    built = build(config, simulator=simulator)
    print(f"  built in {time.monotonic() - t:.1f} s")

    t = _step(5, steps, "cosimulate through the host firmware")
    with Session(built) as session:
        acc = session.accelerator(timeout=300)
        acc.reset()
        acc.load(compiled)
        measured_run = acc.measure(x, progress)
    stats = session.stats
    judged = compare(expected, measured_run, y, model_cycles)
    sim_cps = stats.get("cycles", 0) / stats["wall_seconds"] if stats.get("wall_seconds") else 0
    report = {
        "model": model_name,
        "dataset": dataset,
        "config": config.name,
        "config_values": json.loads(config.to_json()),
        **judged,
        "accuracy_rtl": judged["accuracy_device"],
        "pe_utilization": compiled.cycles.pe_utilization,
        "sim_cycles": stats.get("cycles"),
        "sim_wall_seconds": stats.get("wall_seconds"),
        "sim_cycles_per_second": sim_cps,
        "host_seconds": measured_run.seconds,
        "clock_hz": config.clock_hz,
        "inferences_per_second_at_clock": (config.clock_hz / judged["cycles_per_inference"]
                                           if judged["cycles_per_inference"] else 0.0),
        "cocotb_passed": session.passed,
        "simulator": simulator,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def summary(r: dict) -> str:
    return "\n".join([
        f"model {r['model']} on config {r['config']}, {r['images']} {r['dataset']} images",
        f"  accuracy          golden {r['accuracy_golden']:.2%}   RTL {r['accuracy_rtl']:.2%}",
        f"  mismatches        {r['mismatches']} inputs differ from the golden model"
        + (f" (first: {r['mismatching_inputs'][:10]})" if r["mismatches"] else ""),
        f"  cycles/inference  {r['cycles_per_inference']:.0f} measured, "
        f"{r['cycles_per_inference_model']} cycle model "
        f"({'equal' if r['cycle_model_equal'] else 'DIFFERENT'})",
        f"  PE utilization    {r['pe_utilization']:.1%}",
        f"  simulation        {r['simulator']}, {r['sim_cycles_per_second']:,.0f} cycles/s "
        f"({r['sim_cycles']:,} cycles in {r['sim_wall_seconds']:.1f} s)",
        f"  at {r['clock_hz'] / 1e6:g} MHz     {r['inferences_per_second_at_clock']:,.0f} "
        "inferences/s",
    ])


@cli.entry_point("python -m tb.run_sim")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tb.run_sim", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--model", default="spikformer",
                        help="variant in checkpoints/ or a path to an exported .json")
    parser.add_argument("--dataset", choices=("digits", "fashion"), default="digits",
                        help="test split, and checkpoints/ or checkpoints/fashion/ for --model")
    parser.add_argument("--config", help=f"ArrayConfig JSON (default {DEFAULT_CONFIG})")
    parser.add_argument("--images", type=cli.positive,
                        help="first N test images (default: all)")
    parser.add_argument("--out", default=str(ROOT / "build" / "sim" / "report.json"))
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--sim", choices=("verilator", "icarus"), default="verilator",
                        help="simulator (Icarus: Debian's iverilog, `make iverilog`)")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    report = run(args.model, args.config, args.images, Path(args.out),
                 progress=not args.no_progress, simulator=args.sim, dataset=args.dataset)
    print(summary(report))
    print(f"wrote {args.out}")
    ok = (report["mismatches"] == 0 and report["cycle_model_equal"]
          and report["accuracy_rtl"] == report["accuracy_golden"])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
