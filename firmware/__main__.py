"""Run a trained network on a board over its serial port and check it against the golden model.

    python -m firmware --board icebreaker --port /dev/ttyUSB1 [--model spikformer] [--images N]
    python -m firmware --config hw/boards/icebreaker.json --socket PATH   # a cosimulated bridge

Steps: load the model (`checkpoints/<model>.json`, or a path to any export), compile it for the
board's `ArrayConfig` (`hw/boards/<board>.json`, the one its bitstream was built with), open the
port (pyserial; `--port` also takes pyserial URLs such as `socket://host:port`), reset the
device, load the network, stream the digits test split through `firmware.host.AcceleratorClient` and
compare every input's logits with `pysim.golden.run`. The device's busy-cycle counter is checked
against the cycle model. Prints a summary, writes a JSON report, exits 1 on any mismatch. An
expected error (a missing model, a bad config, a port that does not open) is one line and exit
status 2 (`pysim.cli`; `--debug` shows the traceback). `compare` is the verdict of `make sim`
(`tb.run_sim`) too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from pysim import cli

ROOT = Path(__file__).resolve().parent.parent


def open_transport(port: str | None, socket_path: str | None, baud: int):
    """The transport for a serial port (or pyserial URL) or a cosimulation socket."""
    from firmware.transport import SerialTransport, SocketTransport

    if (port is None) == (socket_path is None):
        raise ValueError("give exactly one of --port (serial device or URL) and --socket")
    if socket_path is not None:
        return SocketTransport(socket_path, connect_timeout=120)
    return SerialTransport(port, baud)


def model_path(name: str) -> Path:
    """`checkpoints/<name>.json` for a variant name, else the path as given."""
    return cli.model_path(name)


def per_inference_cycles(compiled) -> int:
    """The cycle model's busy cycles of one inference of a compiled network."""
    return int(getattr(compiled.cycles, "per_inference", None) or compiled.cycles.total)


def run(transport, model, config, images, labels, timeout: float = 600.0,
        progress: bool = True, retries: int = 3, response_timeout: float | None = None) -> dict:
    """Load `model` compiled for `config` into the device behind `transport` and infer `images`;
    the report compares the device's logits and cycle count with the golden and cycle models."""
    from firmware.host import AcceleratorClient
    from hw.compiler import compile_network
    from pysim import golden

    compiled = compile_network(model, config)
    expected, _ = golden.run(model, images, record=False)
    with AcceleratorClient(transport, timeout=timeout, retries=retries,
                           response_timeout=response_timeout) as acc:
        acc.reset()
        if acc.max_payload != config.max_payload:
            raise cli.UsageError(
                f"the device's max_payload is {acc.max_payload}, the config's "
                f"{config.max_payload}: it was built from another configuration; give the "
                "--board or --config of its bitstream")
        start = time.monotonic()
        acc.load(compiled)
        load_seconds = time.monotonic() - start
        run = acc.measure(images, progress)
    model_cycles = per_inference_cycles(compiled)
    return {
        "model": model.model,
        "config": config.name,
        **compare(expected, run, labels, model_cycles),
        "clock_hz": config.clock_hz,
        "inferences_per_second_at_clock": config.clock_hz / model_cycles,
        "load_seconds": load_seconds,
        "inferences_per_second_wall": len(images) / run.seconds if run.seconds else 0.0,
        "device_error": run.error.name,
    }


def compare(expected, run, labels, model_cycles: int) -> dict:
    """The device's logits and counts (`MeasuredRun`) against the golden logits and the cycle
    model: what a run is judged by, on a board and in `make sim` (`tb.run_sim`) alike.
    `passed` is the verdict: every input's logits equal and the busy cycles the cycle model's."""
    got = np.asarray(run.logits)
    expected = np.asarray(expected)
    if got.shape != expected.shape:  # inputs lost: every one from the first missing differs
        padded = np.full(expected.shape, np.iinfo(np.int64).min, dtype=np.int64)
        rows = min(len(got), len(expected))
        padded[:rows] = got[:rows]
        got = padded
    mismatches = [int(i) for i in np.nonzero((got != expected).any(axis=1))[0]]
    cycle_model_equal = bool(run.results == len(expected)
                             and run.busy_cycles == model_cycles * run.results)
    return {
        "images": int(len(expected)),
        "accuracy_golden": float(np.mean(expected.argmax(1) == labels)),
        "accuracy_device": float(np.mean(got.argmax(1) == labels)),
        "mismatches": len(mismatches),
        "mismatching_inputs": mismatches[:50],
        "cycles_per_inference": run.cycles_per_inference,
        "cycles_per_inference_model": model_cycles,
        "cycle_model_equal": cycle_model_equal,
        "passed": not mismatches and cycle_model_equal,
    }


def summary(r: dict) -> str:
    return "\n".join([
        f"model {r['model']} on config {r['config']}, {r['images']} images",
        f"  accuracy          golden {r['accuracy_golden']:.2%}   device "
        f"{r['accuracy_device']:.2%}",
        f"  mismatches        {r['mismatches']} inputs differ from the golden model"
        + (f" (first: {r['mismatching_inputs'][:10]})" if r["mismatches"] else ""),
        f"  cycles/inference  {r['cycles_per_inference']:.0f} measured, "
        f"{r['cycles_per_inference_model']} cycle model "
        f"({'equal' if r['cycle_model_equal'] else 'DIFFERENT'})",
        f"  throughput        {r['inferences_per_second_wall']:,.1f} inferences/s over the "
        f"link (core alone at {r['clock_hz'] / 1e6:g} MHz: "
        f"{r['inferences_per_second_at_clock']:,.0f}); load {r['load_seconds']:.1f} s",
    ])


@cli.entry_point("python -m firmware")
def main(argv=None) -> int:
    from hw.boards import BOARDS, get_board
    from hw.config import ArrayConfig
    from pysim.data import DATASETS, fit_images, test_split

    parser = argparse.ArgumentParser(prog="python -m firmware",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--board", choices=sorted(BOARDS),
                        help="the board (its config and baud rate)")
    parser.add_argument("--config", help="ArrayConfig JSON the bitstream was built with "
                        "(default: the board's)")
    parser.add_argument("--port", help="serial device (/dev/ttyUSB1) or pyserial URL")
    parser.add_argument("--socket", help="Unix socket of a cosimulated bridge instead")
    parser.add_argument("--baud", type=int, help="serial rate (default: the board's)")
    parser.add_argument("--model", default="spikformer",
                        help="variant in checkpoints/ or a path to an exported .json")
    parser.add_argument("--dataset", choices=DATASETS, default="digits",
                        help="test split, and checkpoints/ or checkpoints/fashion/ for --model")
    parser.add_argument("--images", type=cli.positive,
                        help="first N test images (default: the whole split)")
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for the next result")
    parser.add_argument("--response-timeout", type=float,
                        help="seconds to wait for a response before the request is sent again "
                             "(default: 2 on a serial port, --timeout on a simulation socket)")
    parser.add_argument("--retries", type=int, default=3,
                        help="times a request is sent again after a lost or damaged response")
    parser.add_argument("--out", default="build/board/report.json")
    parser.add_argument("--no-progress", action="store_true")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    if args.board is None and args.config is None:
        parser.error("give --board or --config")
    if (args.port is None) == (args.socket is None):
        parser.error("give exactly one of --port (serial device or URL) and --socket")
    board = get_board(args.board) if args.board else None
    config = ArrayConfig.load(args.config) if args.config else board.config()
    baud = args.baud or (board.baud if board else 115_200)
    folder = None if args.dataset == "digits" else cli.CHECKPOINTS / args.dataset
    model = cli.load_model(args.model, folder)
    x, y = test_split(args.dataset)
    x = fit_images(x, model.input_spec.shape)  # (64-token models read 32x32)
    if args.images is not None:
        x, y = x[:args.images], y[:args.images]
    print(f"{args.model} ({model.model}, T={model.T}) for {config.name} "
          f"({config.pe_rows}x{config.pe_cols}x{config.lanes}), {len(x)} images, "
          f"{args.port or args.socket}", flush=True)
    from firmware.transport import TransportError

    try:
        transport = open_transport(args.port, args.socket, baud)
    except TransportError as err:
        hint = ("is the cosimulation serving it?" if args.socket else
                "is the board plugged in, and does --port name its serial device "
                "(ls /dev/ttyUSB* /dev/ttyACM*)?")
        raise cli.UsageError(f"{err}; {hint}") from err
    report = run(transport, model, config, x, y, timeout=args.timeout,
                 progress=not args.no_progress, retries=args.retries,
                 response_timeout=args.response_timeout
                 or (args.timeout if args.socket else 2.0))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(summary(report))
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
