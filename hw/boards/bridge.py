"""The serial bridge of every board: UART <-> `HostLink` <-> accelerator core.

This is the whole board design except clocking and pins, so the cosimulation of a board top
(`tests/test_boards_cosim.py`) runs exactly what the bitstream holds, with a faster baud rate.
"""

from __future__ import annotations

from amaranth import Module
from amaranth.back import verilog
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from hw.config import ArrayConfig
from hw.host_link import HostLink
from hw.uart import UARTRx, UARTTx

#: The three status LEDs every board shows.
LEDS = data.StructLayout({"ready": 1, "busy": 1, "error": 1})


class UARTBridge(wiring.Component):
    """Serial line in and out, host protocol and accelerator in between.

    `UARTRx` feeds request bytes to `HostLink`; response bytes leave through `UARTTx` (the
    frame's `last` marker is not needed on a serial line). The link decodes frames without
    waiting on the core, so the receiver's one-byte holding register never overruns.

    Latency: the UART's (9.5 bit times in, 10 per byte out) plus `HostLink`'s.
    Throughput: the line rate, one byte per `10 * divisor` cycles each way.
    Cost: `HostLink` and the core, plus about 70 flip-flops and 100 LUTs of UART.

    Ports
    -----
    rx : In(1)
        Serial line from the host (idle high).
    tx : Out(1)
        Serial line to the host (idle high).
    leds : Out(LEDS)
        `ready` (a program is loaded), `busy` (the core computes), `error` (the core's sticky
        error is not `Status.OK`).
    """

    def __init__(self, config: ArrayConfig, divisor: int, core: wiring.Component | None = None):
        self.config = config
        self.divisor = divisor
        self.link = HostLink(config, core)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "leds": Out(LEDS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.uart_rx = uart_rx = UARTRx(self.divisor)
        m.submodules.uart_tx = uart_tx = UARTTx(self.divisor)
        m.submodules.link = link = self.link
        wiring.connect(m, uart_rx.stream, link.rx)
        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            uart_tx.stream.payload.eq(link.tx.payload.data),
            uart_tx.stream.valid.eq(link.tx.valid),
            link.tx.ready.eq(uart_tx.stream.ready),
            self.leds.ready.eq(link.status.ready),
            self.leds.busy.eq(link.status.busy),
            self.leds.error.eq(link.status.error != 0),
        ]
        return m


def bridge_verilog(config: ArrayConfig, divisor: int, name: str = "uart_bridge") -> str:
    """Verilog of a `UARTBridge` (ports `clk`, `rst`, `rx`, `tx`, `leds`) for cosimulation."""
    return verilog.convert(UARTBridge(config, divisor), name=name)
