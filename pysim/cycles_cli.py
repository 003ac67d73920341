"""`python -m pysim.cycles`: the cycle model's per-layer table for one model on one array.

    python -m pysim.cycles --model checkpoints/X.json [--config hw/configs/J.json] [--out F]

prints cycles and PE utilization per layer (`pysim.cycles.CycleReport.table`) and writes
`build/cycles/<model>-<config>.json` (`CycleReport.to_dict`). The command line lives here so
that the cycle model (`pysim/cycles.py`) stays a library the compiler imports; running
`python -m pysim.cycles` hands over to `main` below. An expected error is one line and exit
status 2 (`pysim/cli.py`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import cli

PROG = "python -m pysim.cycles"


@cli.entry_point(PROG)
def main(argv=None) -> int:
    """Per-layer table and build/cycles/<model>-<config>.json."""
    parser = argparse.ArgumentParser(prog=PROG,
                                     description="cycles and PE utilization per layer")
    parser.add_argument("--model", required=True,
                        help="exported model manifest (.json) or a variant in checkpoints/")
    parser.add_argument("--config", default=str(cli.ROOT / "hw/configs/default.json"),
                        help="ArrayConfig JSON (default: hw/configs/default.json)")
    parser.add_argument("--out", help="report JSON (default: build/cycles/<model>-<config>.json)")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    model = cli.load_model(args.model)
    config = ArrayConfig.load(args.config)
    report = compile_network(model, config).cycles
    print(f"{Path(args.model).stem} on {config.name} ({config.pe_rows}x{config.pe_cols} PEs, "
          f"{config.lanes} lanes), T = {model.T}, pack = {report.pack}")
    print(report.table())
    print(f"{report.total} cycles per inference = {config.clock_hz / report.total:,.0f} "
          f"inferences/s at {config.clock_hz / 1e6:g} MHz")
    out = Path(args.out) if args.out else (
        cli.ROOT / "build/cycles" / f"{Path(args.model).stem}-{config.name}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
