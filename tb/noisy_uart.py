"""`make noisy` (issue 16): the iCEBreaker bridge over a noisy serial line, every logit checked.

    python -m tb.noisy_uart [--images 100] [--ber 1e-4] [--drop 1e-4] [--seed 0] [--retries 8]
                            [--out build/noisy/report.json]

The design under test is the iCEBreaker top's `hw.boards.bridge.UARTBridge` (UART receiver and
transmitter, host link, the 1x1x4 accelerator: the bitstream without PLL and pin buffers) in the
board's `ArrayConfig`, at the bridge's fastest baud divisor (4 cycles per bit; the board runs 12).
cocotbext-uart's `UartSource`/`UartSink` play the FTDI chip, as in `tests/test_uart_bridge.py`,
and a Unix socket carries their bytes to the host firmware (`firmware.host.AcceleratorClient`
over `SocketTransport`). Between the FTDI models and the design each direction of the wire
passes a `LineNoise` block (gateware of this test bench, not of the board): it follows the
8N1 characters on its line and inverts each of a character's ten bit cells (start, eight data
bits, stop) with probability `ber`, and drops a whole character (holds the line idle for it)
with probability `drop`, from seeded xorshift32 generators. So a hit start bit shifts the
receiver's framing, a hit stop bit is a framing error, exactly as on a real wire; the idle line
between characters is not hit.

The host loads the committed digits spikformer compiled for `hw/boards/icebreaker.json` and
infers the first `images` test images in batches with `retries` repeats per request; each
result is compared with `pysim.golden.run` and the busy-cycle counter with the cycle model (a
repeated INFER queued twice would show there). A request the host gives up on (`LinkError`,
or any other host error) ends the run and is reported with the results returned before it;
a run never passes with a result that differs. `build/noisy/report.json`: the noise settings,
bit cells, flipped bits, dropped characters and measured bit-error rate per direction, images
returned (all checked) and missing, mismatches (returned and wrong), retries (and requests by
the repeats each needed), the responses that answered none of the host's requests (rejections
of damaged frames, late answers) by status, the failure (if any), simulated cycles and wall
time. `ber` and `drop_rate` are pairs: host to device, device to host (`--ber-back`,
`--drop-back` set the second apart).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from amaranth import Module, Mux, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from hw.boards.bridge import LEDS, UARTBridge
from pysim import cli

ROOT = Path(__file__).resolve().parent.parent
CLOCK_NS = 10
DIVISOR = 4  #: uart.MIN_DIVISOR: the fastest line the bridge supports
TOP = "noisy_bridge"
CELLS = 10  #: bit cells of an 8N1 character: start, 8 data, stop
QUIET_STEP = 1 << 12  #: cycles simulated at a time while the line is quiet
DIRECTIONS = ("host_to_device", "device_to_host")


def xorshift32(x):
    """One step of Marsaglia's xorshift32 on a 32-bit Amaranth value (or int: the reference)."""
    if isinstance(x, int):
        x ^= (x << 13) & 0xFFFF_FFFF
        x ^= x >> 17
        return x ^ ((x << 5) & 0xFFFF_FFFF)
    x = x ^ (x << 13)[:32]
    x = x ^ (x >> 17)
    return x ^ (x << 5)[:32]


def threshold(probability: float) -> int:
    """The 32-bit compare value of `LineNoise` for an event probability (0 .. 1)."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"probability {probability} is outside 0 .. 1")
    return min(round(probability * 2**32), 2**32 - 1)


class LineNoise(wiring.Component):
    """One direction of a noisy 8N1 serial line, in the test bench between a UART and its peer.

    Follows the characters of the clean line `line_in` (a falling edge while idle starts one;
    it lasts `10 * divisor` cycles) and drives `line_out`, the line as the receiver sees it:
    each bit cell of a character is inverted when a draw of the flip generator is below
    `flip_threshold` (probability `flip_threshold / 2^32`), and a whole character is dropped
    (the line held idle) when a draw of the drop generator is below `drop_threshold`. The two
    generators are xorshift32, loaded with `flip_seed` and `drop_seed` (both nonzero) in the
    first cycle after reset (a character that starts in that cycle passes untouched); the
    flip generator steps once per cell, the drop generator once per character. `characters`,
    `flips` (inverted cells, not counting dropped characters) and `drops` count what
    happened.

    Latency: one cycle (`line_out` is registered). The cells it inverts are the transmitter's,
    counted from the start edge of the clean line, so noise never shifts its own framing; the
    stop cell is followed for `divisor - 1` cycles (the next start edge can come right after).
    Cost: test-bench only (about 200 flip-flops: generators, counters, cell counter).
    """

    def __init__(self, divisor: int):
        if divisor < 2:
            raise ValueError(f"divisor {divisor}: a bit cell must last 2 cycles or more")
        self.divisor = divisor
        super().__init__({
            "line_in": In(1, init=1), "line_out": Out(1, init=1),
            "flip_seed": In(32), "drop_seed": In(32),
            "flip_threshold": In(32), "drop_threshold": In(32),
            "characters": Out(32), "flips": Out(32), "drops": Out(32),
        })

    def elaborate(self, platform):
        # The cell counter follows the clean line, not the noisy one: the transmitter's cells
        # are what a bit error hits. The window ends one cycle before the stop cell does, so a
        # start edge right after the stop cell is always seen.
        m = Module()
        div = self.divisor
        flip_rng = Signal(32)
        drop_rng = Signal(32)
        previous = Signal(init=1)
        busy = Signal()
        tick = Signal(range(div))
        cell = Signal(range(CELLS))
        flip = Signal()
        drop = Signal()

        # Before both generators hold their seeds (the first cycle after reset) a start edge
        # is not taken: it would draw the zero state, which is below every threshold.
        seeded = (flip_rng != 0) & (drop_rng != 0)
        start = seeded & ~busy & previous & ~self.line_in
        boundary = start | (busy & (tick == 0))
        flip_draw = flip_rng < self.flip_threshold
        drop_draw = drop_rng < self.drop_threshold
        drop_now = Mux(start, drop_draw, drop)
        flip_now = Mux(boundary, flip_draw, flip) & ~drop_now

        m.d.sync += previous.eq(self.line_in)
        with m.If(start | busy):
            m.d.sync += self.line_out.eq(drop_now | (self.line_in ^ flip_now))
        with m.Else():
            m.d.sync += self.line_out.eq(self.line_in)

        with m.If(start):
            m.d.sync += [busy.eq(1), tick.eq(1), cell.eq(0), drop.eq(drop_draw),
                         self.characters.eq(self.characters + 1),
                         self.drops.eq(self.drops + drop_draw)]
        with m.Elif(busy):
            with m.If(tick == div - 1):
                m.d.sync += [tick.eq(0), cell.eq(cell + 1)]
            with m.Else():
                m.d.sync += tick.eq(tick + 1)
            with m.If((cell == CELLS - 1) & (tick == div - 2)):
                m.d.sync += busy.eq(0)
        with m.If(boundary):
            m.d.sync += [flip.eq(flip_draw), self.flips.eq(self.flips + flip_now)]

        with m.If(flip_rng == 0):
            m.d.sync += flip_rng.eq(self.flip_seed)
        with m.Elif(boundary):
            m.d.sync += flip_rng.eq(xorshift32(flip_rng))
        with m.If(drop_rng == 0):
            m.d.sync += drop_rng.eq(self.drop_seed)
        with m.Elif(start):
            m.d.sync += drop_rng.eq(xorshift32(drop_rng))
        return m


class NoisyBridge(wiring.Component):
    """The iCEBreaker's `UARTBridge` with a `LineNoise` on each wire (test bench top).

    `rx` is the host's transmit line as the USB-serial chip drives it, `tx` the line it
    receives; the noise settings and counters of the host-to-device wire are `h2d_*`, of the
    device-to-host wire `d2h_*`. Latency: the bridge's plus one cycle each way.
    """

    def __init__(self, config, divisor: int = DIVISOR):
        self.config = config
        self.divisor = divisor
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "leds": Out(LEDS)}
        for side in ("h2d", "d2h"):
            for name in ("flip_seed", "drop_seed", "flip_threshold", "drop_threshold"):
                members[f"{side}_{name}"] = In(32)
            for name in ("characters", "flips", "drops"):
                members[f"{side}_{name}"] = Out(32)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.bridge = bridge = UARTBridge(self.config, self.divisor)
        m.submodules.h2d = h2d = LineNoise(self.divisor)
        m.submodules.d2h = d2h = LineNoise(self.divisor)
        m.d.comb += [h2d.line_in.eq(self.rx), bridge.rx.eq(h2d.line_out),
                     d2h.line_in.eq(bridge.tx), self.tx.eq(d2h.line_out),
                     self.leds.eq(bridge.leds)]
        for side, noise in (("h2d", h2d), ("d2h", d2h)):
            for name in ("flip_seed", "drop_seed", "flip_threshold", "drop_threshold"):
                m.d.comb += getattr(noise, name).eq(getattr(self, f"{side}_{name}"))
            for name in ("characters", "flips", "drops"):
                m.d.comb += getattr(self, f"{side}_{name}").eq(getattr(noise, name))
        return m


def both_ways(rate) -> tuple[float, float]:
    """A rate for both directions (host to device, device to host): one number or a pair."""
    if isinstance(rate, (int, float)):
        return float(rate), float(rate)
    there, back = rate
    return float(there), float(back)


def noise_settings(ber, drop, seed: int) -> dict:
    """The `NoisyBridge` inputs for a bit-error rate and a drop rate (each one number for both
    directions or a pair, host to device first), with four nonzero generator seeds drawn from
    `seed`."""
    rng = random.Random(seed)
    settings = {}
    for side, cell_rate, char_rate in zip(("h2d", "d2h"), both_ways(ber), both_ways(drop),
                                          strict=True):
        settings[f"{side}_flip_threshold"] = threshold(cell_rate)
        settings[f"{side}_drop_threshold"] = threshold(char_rate)
        settings[f"{side}_flip_seed"] = rng.getrandbits(32) | 1
        settings[f"{side}_drop_seed"] = rng.getrandbits(32) | 1
    return settings


if "COCOTB_TEST_MODULES" in os.environ:
    import logging

    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, Timer
    from cocotbext.uart import UartSink, UartSource

    @cocotb.test()
    async def serve_noisy_line(dut):
        """Set the noise, reset, then carry the socket NOISY_SOCKET's bytes over the serial
        line until the host leaves; write the noise counters to NOISY_STATS."""
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        settings = json.loads(os.environ["NOISY_SETTINGS"])
        for name, value in settings.items():
            getattr(dut, name).value = value
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        # The noise generators load their seeds in the first cycle after reset; simulated
        # time stands still until the host connects, whose first byte must come after that.
        await ClockCycles(dut.clk, 2)
        baud = 1e9 / (DIVISOR * CLOCK_NS)
        source = UartSource(dut.rx, baud=baud, bits=8, stop_bits=1)
        sink = UartSink(dut.tx, baud=baud, bits=8, stop_bits=1)
        for model in (source, sink):
            model.log.setLevel(logging.WARNING)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(os.environ["NOISY_SOCKET"])
        server.listen(1)
        server.settimeout(300)
        conn, _ = server.accept()
        conn.setblocking(False)
        # One poll per byte time while bytes move: the line cannot move faster than that.
        poll = Timer(CELLS * DIVISOR * CLOCK_NS, unit="ns")
        # A longer step while the line is quiet (the core computing, the host thinking), so
        # simulated time passes at about the same rate either way: the device's frame timeout
        # (2^16 cycles; 5.5 ms on the board, far below the host's grace before a retry) must
        # run out between the host's retries here too, or a retry can keep landing inside a
        # frame that a start marker in the previous attempt's bytes opened.
        quiet_step = Timer(QUIET_STEP * CLOCK_NS, unit="ns")
        waiting = False  # request bytes went out and no response byte has come back since
        try:
            while True:
                try:
                    data = conn.recv(65536)
                    if not data:
                        break
                    source.write_nowait(data)
                    waiting = True
                except BlockingIOError:
                    pass
                if sink.count():
                    conn.setblocking(True)
                    conn.sendall(bytes(sink.read_nowait()))
                    conn.setblocking(False)
                    waiting = False
                if not waiting and source.idle() and sink.idle():
                    # Line quiet. Core idle too: the host is thinking, wait for it a little in
                    # wall time (no busy loop); then a quiet step, unless it has sent bytes.
                    idle = not int(dut.leds.value) & 0b010
                    if not select.select([conn], [], [], 0.005 if idle else 0)[0]:
                        await quiet_step
                        continue
                await poll
        finally:
            conn.close()
            server.close()
            stats = {f"{side}_{name}": int(getattr(dut, f"{side}_{name}").value)
                     for side in ("h2d", "d2h") for name in ("characters", "flips", "drops")}
            stats["cycles"] = int(cocotb.utils.get_sim_time("ns")) // CLOCK_NS
            Path(os.environ["NOISY_STATS"]).write_text(json.dumps(stats))


def _counting_client():
    """`AcceleratorClient` that also counts its requests by how many repeats each needed."""
    from firmware.host import AcceleratorClient

    class CountingClient(AcceleratorClient):
        def __init__(self, *args, **kwargs):
            self.repeats = Counter()  # before the first STATUS in AcceleratorClient.__init__
            super().__init__(*args, **kwargs)

        def request(self, cmd, payload=b"", what=None):
            retried = self.retried
            try:
                return super().request(cmd, payload, what)
            finally:
                self.repeats[self.retried - retried] += 1

    return CountingClient


def build(config, folder: Path):
    """Verilate the `NoisyBridge` (only its ports public) into `folder/sim`."""
    from tb.runner import WARNING_FLAGS, VerilatorRunner, verilator_on_path, write_if_changed

    verilator_on_path()
    sim_dir = folder / "sim"
    sim_dir.mkdir(parents=True, exist_ok=True)
    source = folder / f"{TOP}.v"
    write_if_changed(source, verilog.convert(NoisyBridge(config), name=TOP))
    runner = VerilatorRunner()
    runner.build(sources=[source], hdl_toplevel=TOP, build_dir=sim_dir,
                 build_args=WARNING_FLAGS, timescale=("1ns", "1ps"))
    return runner, sim_dir


def _serve(runner, sim_dir: Path, env: dict, errors: list) -> None:
    try:
        runner.test(test_module="tb.noisy_uart", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                    build_dir=sim_dir, test_dir=sim_dir, seed=1,
                    extra_env={**env, "PYTHONPATH": str(ROOT)}, log_file=sim_dir / "sim.log")
    except BaseException as err:  # handed to the host thread
        errors.append(err)


def run(images: int = 100, ber=1e-4, drop=1e-4, seed: int = 0,
        retries: int = 8, model_name: str = "spikformer", batch: int = 10,
        load_retries: int | None = None,
        response_timeout: float = 4.0, poll_interval: float = 0.2,
        folder: Path | None = None, progress: bool = True, tamper: bool = False) -> dict:
    """Run the first `images` digits test images through the noisy bridge; return the report
    (see the module docstring). `ber` and `drop`: one rate for both directions or a pair (host
    to device, device to host). `load_retries` (default `retries`) replaces `retries` for
    the STATUS, RESET and LOAD before the inferences. `tamper` (a negative control for tests)
    changes one expected logit by one. Wall-clock times: `response_timeout` per attempt,
    `poll_interval` between READs that found no result (a faster poll only puts more requests
    on the noisy line)."""
    import numpy as np

    from firmware.__main__ import compare, per_inference_cycles
    from firmware.host import MeasuredRun
    from firmware.transport import SocketTransport
    from hw.boards import get_board
    from hw.compiler import compile_network
    from pysim import golden
    from pysim.data import digits_test
    from tb.soak import status_name

    config = get_board("icebreaker").config()
    model = cli.load_model(model_name)
    compiled = compile_network(model, config)
    x, labels = digits_test()
    x, labels = x[:images], labels[:images]
    expected, _ = golden.run(model, x, record=False)
    if tamper:
        expected[0, 0] += 1
    settings = noise_settings(ber, drop, seed)
    folder = folder or ROOT / "build" / "noisy"
    start = time.monotonic()
    runner, sim_dir = build(config, folder)
    build_seconds = time.monotonic() - start
    tmp = tempfile.mkdtemp(prefix="noisy-")
    env = {"NOISY_SOCKET": os.path.join(tmp, "line.sock"),
           "NOISY_STATS": os.path.join(tmp, "stats.json"),
           "NOISY_SETTINGS": json.dumps(settings)}
    errors: list = []
    thread = threading.Thread(target=_serve, args=(runner, sim_dir, env, errors), daemon=True)
    thread.start()
    start = time.monotonic()
    got = []
    failure = None
    retried = 0
    responses = Counter()
    repeats = Counter()
    load_seconds = None
    busy_cycles = results = 0
    transport = SocketTransport(env["NOISY_SOCKET"], connect_timeout=300)
    acc = None
    try:
        load_retries = retries if load_retries is None else load_retries
        acc = _counting_client()(transport, timeout=600, retries=load_retries,
                                response_timeout=response_timeout, poll_interval=poll_interval)
        acc.reset()
        acc.load(compiled)
        load_seconds = time.monotonic() - start
        acc.retries = retries
        before = acc.status()
        for first in range(0, images, batch):
            got.extend(acc.infer(x[first:first + batch]))
            if progress:
                print(f"\r{len(got)}/{images} images, {acc.retried} retries", end="", flush=True)
        after = acc.status()
        results = (after.results_done - before.results_done) % 2**32
        busy_cycles = (after.busy_cycles - before.busy_cycles) % 2**32
    except (OSError, RuntimeError, ValueError) as err:  # LinkError, DeviceError, ProtocolError..
        failure = f"{type(err).__name__}: {err}"
    finally:
        if acc is not None:
            retried = acc.retried
            repeats = acc.repeats
            responses = Counter(status_name(frame) for frame in acc.unsolicited)
        transport.close()
    if progress:
        print()
    run_seconds = time.monotonic() - start
    thread.join(120)
    if errors:
        raise RuntimeError(f"the cosimulation failed: {errors[0]}") from errors[0]
    stats = json.loads(Path(env["NOISY_STATS"]).read_text())
    measured = MeasuredRun(np.asarray(got, dtype=np.int64).reshape(-1, expected.shape[1]),
                           results, busy_cycles, run_seconds, None)
    verdict = compare(expected, measured, labels, per_inference_cycles(compiled))
    returned = len(got)
    wrong = np.nonzero((measured.logits != expected[:returned]).any(axis=1))[0]
    line = {}
    for side, direction, cell_rate, char_rate in zip(
            ("h2d", "d2h"), DIRECTIONS, both_ways(ber), both_ways(drop), strict=True):
        cells = stats[f"{side}_characters"] * CELLS
        line[direction] = {
            "ber": cell_rate, "drop_rate": char_rate,
            "characters": stats[f"{side}_characters"], "bit_cells": cells,
            "flipped_bits": stats[f"{side}_flips"], "dropped_characters": stats[f"{side}_drops"],
            "measured_ber": stats[f"{side}_flips"] / cells if cells else 0.0,
        }
    report = {
        "model": model_name, "config": config.name, "seed": seed,
        "ber": list(both_ways(ber)), "drop_rate": list(both_ways(drop)),
        "baud_divisor": DIVISOR, "retries_allowed": retries,
        "load_retries_allowed": load_retries,
        "response_timeout_s": response_timeout, "poll_interval_s": poll_interval,
        "line": line,
        "flipped_bits": sum(d["flipped_bits"] for d in line.values()),
        "dropped_characters": sum(d["dropped_characters"] for d in line.values()),
        "images": images, "images_returned": returned,
        "images_missing": images - returned,  # not returned: the run ended with `failure`
        "mismatches": len(wrong),  # returned, and different from the golden model's
        "mismatching_inputs": [int(i) for i in wrong[:50]],
        "cycle_model_equal": verdict["cycle_model_equal"],
        "cycles_per_inference": verdict["cycles_per_inference"],
        "cycles_per_inference_model": verdict["cycles_per_inference_model"],
        "accuracy_golden": verdict["accuracy_golden"],
        "retries": retried,
        "requests": sum(repeats.values()),
        "requests_by_repeats": {str(k): v for k, v in sorted(repeats.items())},
        "unmatched_responses_by_status": dict(sorted(responses.items())),
        "failure": failure,
        "simulated_cycles": stats["cycles"],
        "build_seconds": round(build_seconds, 1),
        "load_seconds": None if load_seconds is None else round(load_seconds, 1),
        "wall_seconds": round(run_seconds, 1),
    }
    report["passed"] = failure is None and verdict["passed"] and returned == images
    return report


@cli.entry_point("python -m tb.noisy_uart")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tb.noisy_uart",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=cli.positive, default=100)
    parser.add_argument("--ber", type=float, default=1e-4,
                        help="probability that a bit cell on the wire is inverted (each way)")
    parser.add_argument("--drop", type=float, default=1e-4,
                        help="probability that a character is lost on the wire (each way)")
    parser.add_argument("--ber-back", type=float,
                        help="bit-error rate device to host, if not --ber")
    parser.add_argument("--drop-back", type=float,
                        help="character drop rate device to host, if not --drop")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--retries", type=int, default=8,
                        help="times the host sends a request again (0: never)")
    parser.add_argument("--model", default="spikformer")
    parser.add_argument("--out", default="build/noisy/report.json")
    parser.add_argument("--no-progress", action="store_true")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    ber = (args.ber, args.ber if args.ber_back is None else args.ber_back)
    drop = (args.drop, args.drop if args.drop_back is None else args.drop_back)
    report = run(args.images, ber, drop, args.seed, args.retries, args.model,
                 progress=not args.no_progress)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in (
        "ber", "drop_rate", "images_returned", "mismatches", "flipped_bits",
        "dropped_characters", "retries", "failure", "wall_seconds", "passed")}))
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
