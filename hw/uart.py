"""UART receiver and transmitter (8N1) with `lib.stream` byte ports.

The boards reach the host over a USB serial bridge (an FTDI chip on the iCEBreaker and the
ULX3S, a pin-header adapter on the OrangeCrab). These two blocks turn that serial line into the
8-bit byte streams that `hw.host_link.HostLink` speaks, so the host protocol is the same over a
real serial port and in cosimulation.

Both blocks count a fixed `divisor` of clock cycles per bit: `divisor = round(clk_hz / baud)`
(see `uart_divisor`, which refuses a clock/baud pair whose rounding error would eat the 8N1
timing margin).
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

#: Largest clock/baud rounding error accepted, as a fraction of a bit. An 8N1 receiver that
#: samples mid-bit tolerates about 5 % total mismatch over the 9.5 bits to the stop-bit sample;
#: giving each side at most 2 % leaves the rest to the other end's oscillator.
MAX_BAUD_ERROR = 0.02

#: Smallest divisor: the receiver needs a half-bit wait of at least two cycles.
MIN_DIVISOR = 4


def uart_divisor(clk_hz: float, baud: float) -> int:
    """Clock cycles per bit for `baud` at `clk_hz`, checked against `MAX_BAUD_ERROR`."""
    if clk_hz <= 0 or baud <= 0:
        raise ValueError(f"clock ({clk_hz} Hz) and baud rate ({baud}) must be positive")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud} is too high for a {clk_hz / 1e6:g} MHz clock: "
                         f"at most {clk_hz / MIN_DIVISOR:.0f} baud ({MIN_DIVISOR} cycles per bit)")
    error = abs(clk_hz / divisor - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud rate {baud} at {clk_hz / 1e6:g} MHz is off by {error:.1%} "
                         f"(divisor {divisor}); pick a rate within {MAX_BAUD_ERROR:.0%}")
    return divisor


def _check_divisor(block, divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool) or divisor < MIN_DIVISOR:
        block._MustUse__silence = True  # never elaborated: do not warn about it
        raise ValueError(f"divisor must be an integer >= {MIN_DIVISOR} (clock cycles per bit), "
                         f"got {divisor!r}")
    return divisor


class UARTRx(wiring.Component):
    """8N1 UART receiver: serial line in, one byte stream out.

    The line passes a two-flop synchronizer, so `rx` may come straight from a pin. A falling
    edge starts a frame; the start bit is checked half a bit later (a glitch shorter than half a
    bit is ignored), then the eight data bits (LSB first) and the stop bit are sampled mid-bit.
    The receiver is ready for the next start bit right after the stop-bit sample, half a bit
    early, which absorbs a sender that runs slightly fast.

    A serial line cannot wait, so a received byte sits in a one-byte holding register until the
    consumer takes it; the consumer has one whole frame time (10 bits) to do so. A byte that
    completes while the previous one is still waiting is dropped and `overrun` pulses; a low
    stop bit drops the byte, pulses `framing_error` and waits for the line to return high.

    Latency: a byte is valid `9.5 * divisor + 3` cycles after the falling edge of its start
    bit. Throughput: one byte per 10 bit times (the line rate).
    Cost: about 35 flip-flops (for divisor < 256) and 40-60 LUTs.

    Ports
    -----
    rx : In(1)
        Serial line, idle high.
    stream : Out(stream.Signature(8))
        Received bytes.
    overrun, framing_error : Out(1)
        One-cycle pulses when a byte is dropped.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "rx": In(1, init=1),
            "stream": Out(stream.Signature(8)),
            "overrun": Out(1),
            "framing_error": Out(1),
        })

    def elaborate(self, platform):
        # One down-counter serves both the half-bit wait after the start edge and the full-bit
        # waits between samples, so the block stays small on an iCE40.
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self.divisor))
        bit = Signal(range(8))
        shreg = Signal(8)
        tick = timer == 0

        with m.If(~tick):
            m.d.sync += timer.eq(timer - 1)
        with m.If(self.stream.ready):
            m.d.sync += self.stream.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(tick):
                    with m.If(line):
                        m.next = "IDLE"  # shorter than half a bit: a glitch, not a start bit
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(tick):
                    m.d.sync += [
                        shreg.eq(Cat(shreg[1:], line)),
                        timer.eq(self.divisor - 1),
                        bit.eq(bit + 1),
                    ]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(tick):
                    with m.If(~line):
                        m.d.comb += self.framing_error.eq(1)
                        m.next = "BREAK"
                    with m.Elif(self.stream.valid & ~self.stream.ready):
                        m.d.comb += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [self.stream.payload.eq(shreg), self.stream.valid.eq(1)]
                        m.next = "IDLE"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter: one byte stream in, serial line out.

    A byte is taken when the transmitter is idle and leaves as start bit, eight data bits (LSB
    first) and one stop bit, `divisor` cycles each. `tx` is driven from a flip-flop, so it is
    glitch-free at the pin.

    Latency: the start bit begins one cycle after the byte is accepted.
    Throughput: one byte per `10 * divisor + 1` cycles (`ready` is high for one idle cycle
    between frames when the next byte is already waiting).
    Cost: about 30 flip-flops (for divisor < 256) and 30-40 LUTs.

    Ports
    -----
    stream : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        Serial line, idle high.
    """

    def __init__(self, divisor: int):
        self.divisor = _check_divisor(self, divisor)
        super().__init__({
            "stream": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    def elaborate(self, platform):
        # A 10-bit frame shifted out LSB first; bit 0 of the shift register is the line.
        m = Module()
        timer = Signal(range(self.divisor))
        remaining = Signal(range(11))
        frame = Signal(10, init=0x3FF)

        m.d.comb += self.tx.eq(frame[0])
        with m.If(remaining == 0):
            m.d.comb += self.stream.ready.eq(1)
            with m.If(self.stream.valid):
                m.d.sync += [
                    frame.eq(Cat(Const(0, 1), self.stream.payload, Const(1, 1))),
                    timer.eq(self.divisor - 1),
                    remaining.eq(10),
                ]
        with m.Elif(timer == 0):
            m.d.sync += [
                frame.eq(Cat(frame[1:], Const(1, 1))),
                timer.eq(self.divisor - 1),
                remaining.eq(remaining - 1),
            ]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
        return m
