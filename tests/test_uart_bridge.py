"""The iCEBreaker top's UART bridge in cosimulation: a bit-exact inference over the serial line.

The design under test is `hw.boards.UARTBridge` in the iCEBreaker's `ArrayConfig`: everything
the bitstream holds except the PLL and the pin buffers (UART receiver and transmitter, host link,
accelerator). cocotbext-uart's `UartSource`/`UartSink` play the FTDI chip; a Unix socket carries
their bytes to the board runner `python -m firmware` (`firmware.host.AcceleratorClient` over
`SocketTransport`), which loads a compiled network and runs inferences through its serial
framing exactly as it does on the board. The logits must equal `pysim.golden.run`. The baud
divisor is 4 (clock/4) to keep the run short; the board uses 12 at 12 MHz (1 Mbaud).
"""

import os
import select
import socket
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_NS = 10
DIVISOR = 4
TOP = "uart_bridge"

if "COCOTB_TEST_MODULES" in os.environ:
    import logging

    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, Timer
    from cocotbext.uart import UartSink, UartSource

    @cocotb.test()
    async def serve_uart(dut):
        """Reset, then bridge the socket BRIDGE_SOCKET to the serial line until the host leaves."""
        Clock(dut.clk, CLOCK_NS, unit="ns").start()
        dut.rx.value = 1
        dut.rst.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        baud = 1e9 / (DIVISOR * CLOCK_NS)
        source = UartSource(dut.rx, baud=baud, bits=8, stop_bits=1)
        sink = UartSink(dut.tx, baud=baud, bits=8, stop_bits=1)
        for model in (source, sink):
            model.log.setLevel(logging.WARNING)
        path = os.environ["BRIDGE_SOCKET"]
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        server.settimeout(120)
        conn, _ = server.accept()
        conn.setblocking(False)
        # One poll per byte time: the line cannot move faster than that.
        poll = Timer(10 * DIVISOR * CLOCK_NS, unit="ns")
        waiting = False  # request bytes went out and the response has not fully come back
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
                if not waiting and source.idle() and not int(dut.leds.value) & 0b010:
                    # Host thinking, line quiet, core idle: wait in wall time, not sim time.
                    select.select([conn], [], [], 0.005)
                await poll
        finally:
            conn.close()
            server.close()


def _build(config):
    """Verilate the bridge (only its ports public) into build/cosim/uart_bridge_<name>/."""
    from hw.boards.bridge import bridge_verilog
    from tb.runner import WARNING_FLAGS, VerilatorRunner, verilator_on_path

    verilator_on_path()
    directory = ROOT / "build" / "cosim" / f"{TOP}_{config.name}"
    sim_dir = directory / "sim"
    sim_dir.mkdir(parents=True, exist_ok=True)
    verilog = directory / f"{TOP}.v"
    text = bridge_verilog(config, DIVISOR, name=TOP)
    if not verilog.exists() or verilog.read_text() != text:
        verilog.write_text(text)
    runner = VerilatorRunner()
    runner.build(sources=[verilog], hdl_toplevel=TOP, build_dir=sim_dir,
                 build_args=WARNING_FLAGS, timescale=("1ns", "1ps"))
    return runner, sim_dir


def _serve(runner, sim_dir: Path, socket_path: str, errors: list):
    try:
        runner.test(
            test_module="test_uart_bridge", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
            build_dir=sim_dir, test_dir=sim_dir, seed=1,
            extra_env={"BRIDGE_SOCKET": socket_path,
                       "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])},
            log_file=sim_dir / "sim.log")
    except BaseException as err:  # handed to the host thread
        errors.append(err)


def test_icebreaker_bridge_bit_exact_over_uart(tmp_path):
    """`python -m firmware` (the board runner) against the cosimulated bridge: bit-exact logits
    and the cycle model's count over the serial framing."""
    import json

    from firmware.__main__ import main
    from hw.boards import get_board
    from pysim.random_model import random_int_model

    config = get_board("icebreaker").config()
    # A small random network on the digits' 8x8 5-bit input: the trained ones take minutes a
    # weight load over the simulated line.
    model = random_int_model("sew", seed=2, size=8, dim=8)
    stem = tmp_path / "sew8"
    model.save(stem)

    runner, sim_dir = _build(config)
    tmp = tempfile.mkdtemp(prefix="uartbridge-")
    path = os.path.join(tmp, "line.sock")
    errors: list = []
    thread = threading.Thread(target=_serve, args=(runner, sim_dir, path, errors), daemon=True)
    thread.start()
    start = time.monotonic()
    out = tmp_path / "report.json"
    code = main(["--board", "icebreaker", "--socket", path, "--model", f"{stem}.json",
                 "--images", "2", "--timeout", "120", "--out", str(out), "--no-progress"])
    thread.join(120)
    assert not errors, errors
    assert not thread.is_alive()
    report = json.loads(out.read_text())
    assert code == 0
    assert report["images"] == 2 and report["mismatches"] == 0
    assert report["device_error"] == "OK"
    # the simulated cycles the core computed match the cycle model for both inputs
    assert report["cycle_model_equal"]
    assert report["config"] == config.name
    assert time.monotonic() - start < 600
