"""Verilog of the accelerator core with AXI4-Stream port names, or of the host link's top.

    python -m hw.top generate --config hw/configs/default.json [-o build/accel_default.v]
    python -m hw.top link [--config cfg.json] [-o build/verilog/spikeformer_top.v]

`generate`: the core alone (`AxisTop`). `link`: the host link around the core
(`hw.host_link.HostLinkTop`, module `spikeformer_top`, what the cosimulation builds).

Ports: `s_axis_load_*` and `s_axis_tokens_*` (tdata[7:0], tvalid, tready, tlast),
`m_axis_results_*`, `status_ready`, `status_busy`, `status_error[7:0]`, `clear`, `clk`, `rst`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from pysim import cli

from .accelerator import Accelerator
from .config import ArrayConfig


class AxisTop(wiring.Component):
    """The core with flat AXI4-Stream-named ports (a wrapper: no logic, no latency, no cost)."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        ports = {}
        for name, direction in (("s_axis_load", In), ("s_axis_tokens", In),
                                ("m_axis_results", Out)):
            flip = Out if direction is In else In
            ports[f"{name}_tdata"] = direction(8)
            ports[f"{name}_tlast"] = direction(1)
            ports[f"{name}_tvalid"] = direction(1)
            ports[f"{name}_tready"] = flip(1)
        ports.update(status_ready=Out(1), status_busy=Out(1), status_error=Out(8),
                     clear=In(1))
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = Accelerator(self.config)
        for name, port in (("s_axis_load", core.load), ("s_axis_tokens", core.tokens)):
            m.d.comb += [port.payload.data.eq(getattr(self, f"{name}_tdata")),
                         port.payload.last.eq(getattr(self, f"{name}_tlast")),
                         port.valid.eq(getattr(self, f"{name}_tvalid")),
                         getattr(self, f"{name}_tready").eq(port.ready)]
        m.d.comb += [self.m_axis_results_tdata.eq(core.results.payload.data),
                     self.m_axis_results_tlast.eq(core.results.payload.last),
                     self.m_axis_results_tvalid.eq(core.results.valid),
                     core.results.ready.eq(self.m_axis_results_tready),
                     self.status_ready.eq(core.status.ready),
                     self.status_busy.eq(core.status.busy),
                     self.status_error.eq(core.status.error),
                     core.clear.eq(self.clear)]
        return m


def generate(config: ArrayConfig, name: str = "accel_top") -> str:
    return verilog.convert(AxisTop(config), name=name)


@cli.entry_point("python -m hw.top")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hw.top", description=__doc__.split("\n")[0])
    cli.add_debug(parser)
    sub = parser.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("generate", help="write Verilog of the core")
    gen.add_argument("--config", required=True, help="ArrayConfig JSON file")
    gen.add_argument("-o", "--output", help="output .v file (default: stdout)")
    link = sub.add_parser("link", help="write Verilog of the host link around the core")
    link.add_argument("--config", help="ArrayConfig JSON file (default: ArrayConfig())")
    link.add_argument("-o", "--output", default="build/verilog/spikeformer_top.v")
    args = parser.parse_args(argv)
    if args.action == "link":
        from .host_link import generate as generate_link

        config = ArrayConfig.load(args.config) if args.config else ArrayConfig()
        generate_link(config, args.output)
        print(f"wrote {args.output}")
        return 0
    config = ArrayConfig.load(args.config)
    text = generate(config)
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
