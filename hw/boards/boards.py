"""Board tops for iCEBreaker, ULX3S 85F and OrangeCrab 25F, through amaranth-boards.

Every top is the same three parts: `ClockReset` (board oscillator, PLL when the array's
`clock_hz` differs from it, power-on reset), `UARTBridge` (UART <-> `HostLink` <-> core) on the
board's serial port, and three status LEDs. A `Board` says which pins and which `ArrayConfig`
(`hw/boards/<name>.json`) a board uses; `BOARDS` lists them by the name `make synth BOARD=...`
takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from amaranth import Elaboratable, Module
from amaranth.build import Attrs
from amaranth_boards.icebreaker import ICEBreakerPlatform
from amaranth_boards.orangecrab_r0_2 import OrangeCrabR0_2_25FPlatform
from amaranth_boards.resources import UARTResource
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from hw.config import ArrayConfig
from hw.uart import uart_divisor

from .bridge import UARTBridge
from .clocking import ClockReset

CONFIG_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Board:
    """What a board top needs to know about one board."""

    #: Name used by `make synth BOARD=...` and for build folders.
    name: str
    #: Human-readable board name for reports.
    title: str
    #: amaranth-boards platform class.
    platform_class: type
    #: "ice40" or "ecp5".
    family: str
    #: Oscillator resource and its frequency in Hz.
    clock: tuple[str, float]
    #: Serial rate of the host link.
    baud: int
    #: Requests the pins: returns (rx input, tx output, reset-button input or None).
    request_io: Callable
    #: Drives the status LEDs from the bridge's `leds` (platform, module, leds).
    drive_leds: Callable
    #: Extra resources to add to the platform before the build.
    extra_resources: tuple = ()
    #: Extra options for yosys' synth_<family> (e.g. "-dsp" for iCE40 SB_MAC16).
    synth_opts: str = ""
    #: Yosys commands right after synth_<family> (before the statistics are taken).
    after_synth: str = ""
    #: Yosys commands right after the design is read (before synth_<family>).
    after_read: str = ""
    #: Extra nextpnr options (after the seed/report/timing options `scripts/synth.py` gives).
    pnr_opts: str = ""
    #: How to put the bitstream on the board (for the README and the report).
    program: str = ""
    #: How the host reaches the serial port.
    serial: str = ""
    #: File the bitstream build produces, relative to the build folder.
    bitstream: str = "top.bin"

    @property
    def config_path(self) -> Path:
        return CONFIG_DIR / f"{self.name}.json"

    def config(self) -> ArrayConfig:
        """The array configuration this board is built with (`hw/boards/<name>.json`)."""
        return ArrayConfig.load(self.config_path)

    def platform(self):
        platform = self.platform_class()
        if self.extra_resources:
            platform.add_resources(list(self.extra_resources))
        return platform

    def clock_reset(self, config: ArrayConfig, reset=None) -> ClockReset:
        return ClockReset(self.family, self.clock[0], self.clock[1], float(config.clock_hz),
                          reset=reset)


class BoardTop(Elaboratable):
    """The bitstream top of one board: clock/reset, the UART bridge and the status LEDs.

    The UART divisor comes from the `sync` frequency the PLL actually makes and the board's baud
    rate (`uart_divisor` refuses pairs off by more than 2 %).
    """

    def __init__(self, board: Board, config: ArrayConfig | None = None, core=None):
        self.board = board
        self.config = config or board.config()
        self.core = core
        # Computed here (not in elaborate) so a bad clock/baud pair fails before the build.
        self.clocking = board.clock_reset(self.config)
        self.divisor = uart_divisor(self.clocking.frequency, board.baud)

    def elaborate(self, platform):
        m = Module()
        rx, tx, button = self.board.request_io(platform, m)
        self.clocking.reset = button
        m.submodules.clocking = self.clocking
        m.submodules.bridge = bridge = UARTBridge(self.config, self.divisor, self.core)
        m.d.comb += [bridge.rx.eq(rx), tx.eq(bridge.tx)]
        self.board.drive_leds(platform, m, bridge.leds)
        return m


# ---- iCEBreaker: FTDI FT2232H channel B is the UART; red/green LEDs on the board, a third
# (busy) on the snap-off PMOD, which ships attached. --------------------------------------------

def _icebreaker_io(platform, m):
    uart = platform.request("uart", 0)
    button = platform.request("button", 0)
    return uart.rx.i, uart.tx.o, button.i


def _icebreaker_leds(platform, m, leds):
    m.d.comb += [
        platform.request("led_g", 0).o.eq(leds.ready),
        platform.request("led_r", 0).o.eq(leds.error),
        platform.request("led_g", 1).o.eq(leds.busy),
    ]


# ---- ULX3S: FTDI FT231X; LEDs 0-2. ------------------------------------------------------------

def _ulx3s_io(platform, m):
    uart = platform.request("uart", 0)
    button = platform.request("button_fire", 0)
    return uart.rx.i, uart.tx.o, button.i


def _ulx3s_leds(platform, m, leds):
    m.d.comb += [
        platform.request("led", 0).o.eq(leds.ready),
        platform.request("led", 1).o.eq(leds.busy),
        platform.request("led", 2).o.eq(leds.error),
    ]


# ---- OrangeCrab r0.2: no USB serial chip (the ECP5 drives USB directly), so the UART is on the
# Feather header: pin 0 is RX (from the adapter's TX), pin 1 is TX. The button reloads the DFU
# bootloader (the board's usual convention), so a new bitstream goes on without unplugging. ----

_ORANGECRAB_UART = UARTResource(0, rx="0", tx="1", conn=("io", 0),
                                attrs=Attrs(IO_TYPE="LVCMOS33", PULLMODE="UP"))


def _orangecrab_io(platform, m):
    uart = platform.request("uart", 0)
    button = platform.request("button", 0)
    m.d.comb += platform.request("program", 0).o.eq(button.i)
    return uart.rx.i, uart.tx.o, None


def _orangecrab_leds(platform, m, leds):
    rgb = platform.request("rgb_led", 0)
    m.d.comb += [rgb.g.o.eq(leds.ready), rgb.b.o.eq(leds.busy), rgb.r.o.eq(leds.error)]


#: YoWASP Yosys 0.70's `synth_ecp5` always maps LUTs with ABC9, which trips an internal assertion
#: (rtlil.cc, connection widths, in ABC_OPS_REINTEGRATE) on the 4x8x4 array. The ECP5 boards
#: therefore run `synth_ecp5` up to its LUT mapping, map LUTs with classic ABC, and finish with
#: its cell mapping (`ECP5_LUT_MAPPING` goes after the first part).
_ECP5_SYNTH = "-run begin:map_luts"
ECP5_LUT_MAPPING = ("techmap -map +/lattice/latches_map.v; abc -lut 4 -dress; clean; "
                    "synth_ecp5 -top top -run map_cells:")
#: nextpnr-ecp5's router for the ULX3S. Its default router (router1) had not finished a 4x8x4
#: array after 38 min; router2 routed it in 287-323 s. The OrangeCrab keeps router1 (seed 1,
#: 4x4x4 at 24 MHz): on an earlier, larger core router1 reached 26.66 MHz and router2 only
#: 23.16 MHz; the current core routes with router1 in 6.5 min to 31.25 MHz.
_ECP5_PNR = "--router router2"

#: iCE40UP5K memories: the weights and the reduction steps go to SPRAM (single-port, 16 bits
#: wide: one block of 16K weight words, three side by side for the step words), the rest to
#: the 30 EBRs. Amaranth gives every memory a (zero) initial value and SPRAM has none; both are
#: always loaded before use, so their initial values are dropped, and the step memory (small
#: enough for EBRs, which Yosys would pick) is marked for SPRAM.
_ICE40_SPRAM = "; ".join(
    [rf"delete t:$meminit_v2 r:MEMID=\\{mem} %i" for mem in ("wmem", "smem")]
    + ['setattr -set ram_style "huge" m:smem'])

#: Read-before-write is what Amaranth's read ports promise on a same-cycle collision, and a
#: block RAM cannot keep that promise across ports, so Yosys emulates it with an address
#: comparator, a mux and registers per port (measured on ECP5: +60 LUT, +24 FF per bank and a
#: logic level on every read). No read in this design depends on a write in the same cycle:
#: the weight, parameter and step memories never read and write at once, and every activation
#: read that meets a drain write would already differ from `pysim.hwref` (which orders them by
#: the program), so the cosimulation shows there are none. So collisions are don't-care.
NO_COLLISION_EMULATION = r"setparam -set COLLISION_X_MASK 1 t:$memrd_v2"

BOARDS = {
    "icebreaker": Board(
        name="icebreaker", title="iCEBreaker (iCE40UP5K-SG48)",
        platform_class=ICEBreakerPlatform, family="ice40", clock=("clk12", 12e6),
        baud=1_000_000, request_io=_icebreaker_io, drive_leds=_icebreaker_leds,
        extra_resources=tuple(ICEBreakerPlatform.break_off_pmod),
        synth_opts="-dsp -spram",
        after_read=f"{_ICE40_SPRAM}; {NO_COLLISION_EMULATION}",
        program="iceprog build/synth/icebreaker/top.bin",
        serial="FTDI channel B: /dev/ttyUSB1 (Linux), 1 Mbaud 8N1",
    ),
    # hw/boards/ulx3s-85f.json: 4x8x4 without paired steps at the 25 MHz oscillator (an exact
    # 1 Mbaud divisor, no PLL); routed with router2, seed 1, to 52.0 MHz (2026-12-03). Larger
    # arrays of the same core did not converge in router2 (8x16x4: overuse rising after 19
    # iterations; 8x8x4: after 33), nor did the previous core's 4x16x4 at 15 MHz.
    "ulx3s-85f": Board(
        name="ulx3s-85f", title="ULX3S 85F (LFE5U-85F-6BG381C)",
        platform_class=ULX3S_85F_Platform, family="ecp5", clock=("clk25", 25e6),
        baud=1_000_000, request_io=_ulx3s_io, drive_leds=_ulx3s_leds,
        synth_opts=_ECP5_SYNTH, after_synth=ECP5_LUT_MAPPING, pnr_opts=_ECP5_PNR,
        after_read=NO_COLLISION_EMULATION,
        program="openFPGALoader -b ulx3s build/synth/ulx3s-85f/top.bit",
        serial="FTDI FT231X: /dev/ttyUSB0 (Linux), 1 Mbaud 8N1",
        bitstream="top.bit",
    ),
    "orangecrab-25f": Board(
        name="orangecrab-25f", title="OrangeCrab r0.2 25F (LFE5U-25F-8MG285C)",
        platform_class=OrangeCrabR0_2_25FPlatform, family="ecp5", clock=("clk", 48e6),
        baud=115_200, request_io=_orangecrab_io, drive_leds=_orangecrab_leds,
        extra_resources=(_ORANGECRAB_UART,), synth_opts=_ECP5_SYNTH,
        after_synth=ECP5_LUT_MAPPING, after_read=NO_COLLISION_EMULATION,
        program="hold the button while plugging in (DFU bootloader), then "
                "dfu-util -D build/synth/orangecrab-25f/top.bit",
        serial="a 3.3 V USB-serial adapter on the Feather header: adapter TX -> pin 0, "
               "adapter RX -> pin 1, GND -> GND; 115200 baud 8N1",
        bitstream="top.bit",
    ),
}


def get_board(name: str) -> Board:
    """The board called `name`; `ValueError` lists the known ones otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise ValueError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None
