"""Clock and reset for the board tops: an optional PLL, then a power-on reset.

`pll_ice40` and `pll_ecp5` search the divider settings of the iCE40 SB_PLL40 and the ECP5
EHXPLLL (the same searches as IceStorm's `icepll` and Trellis' `ecppll`); `ClockReset` makes the
`sync` domain from a board's oscillator, through the PLL when the wanted frequency differs.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth import (
    ClockDomain,
    ClockSignal,
    Const,
    Elaboratable,
    Instance,
    Module,
    ResetSignal,
    Signal,
)
from amaranth.lib import io
from amaranth.lib.cdc import FFSynchronizer

#: Largest relative error accepted between the wanted and the synthesised frequency.
MAX_PLL_ERROR = 0.01


@dataclass(frozen=True)
class PllSettings:
    """Divider settings of one PLL and the frequency they give."""

    family: str  #: "ice40" or "ecp5"
    f_in: float  #: reference clock (Hz)
    f_out: float  #: output clock the settings give (Hz)
    params: dict  #: the primitive's divider parameters

    def instance(self, clk_in, clk_out, locked) -> Instance:
        """The PLL primitive wired to `clk_in` (fabric clock), `clk_out` and `locked`."""
        p = self.params
        if self.family == "ice40":
            return Instance(
                "SB_PLL40_CORE",
                p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
                p_FILTER_RANGE=p["FILTER_RANGE"],
                i_REFERENCECLK=clk_in, i_RESETB=Const(1), i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk_out, o_LOCK=locked)
        return Instance(
            "EHXPLLL",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=(p["CLKOP_DIV"] - 1) // 2, p_CLKOP_FPHASE=0,
            p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["CLKFB_DIV"],
            i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, i_CLKFB=clk_out,
            i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
            i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
            i_ENCLKOP=Const(0), o_CLKOP=clk_out, o_LOCK=locked,
            a_FREQUENCY_PIN_CLKI=f"{self.f_in / 1e6:.6f}",
            a_FREQUENCY_PIN_CLKOP=f"{self.f_out / 1e6:.6f}")


def _best(candidates, f_in, f_out, family):
    best = min(candidates, key=lambda c: abs(c[0] - f_out), default=None)
    if best is None or abs(best[0] - f_out) / f_out > MAX_PLL_ERROR:
        got = f"closest {best[0] / 1e6:.3f} MHz" if best else "no valid setting"
        title = {"ice40": "iCE40", "ecp5": "ECP5"}[family]
        raise ValueError(f"the {title} PLL cannot make {f_out / 1e6:g} MHz from "
                         f"{f_in / 1e6:g} MHz within {MAX_PLL_ERROR:.0%} ({got})")
    return PllSettings(family, f_in, best[0], best[1])


def pll_ice40(f_in: float, f_out: float) -> PllSettings:
    """SB_PLL40 (simple feedback) settings: PFD 10-133 MHz, VCO 533-1066 MHz, out 16-275 MHz."""
    if not 16e6 <= f_out <= 275e6:
        raise ValueError(f"the iCE40 PLL output must be 16 .. 275 MHz, not {f_out / 1e6:g} MHz")
    candidates = []
    for divr in range(16):
        f_pfd = f_in / (divr + 1)
        if not 10e6 <= f_pfd <= 133e6:
            continue
        for divf in range(128):
            f_vco = f_pfd * (divf + 1)
            if not 533e6 <= f_vco <= 1066e6:
                continue
            for divq in range(1, 7):
                # Loop filter setting by PFD band, as IceStorm's icepll picks it.
                filter_range = 1 + sum(f_pfd >= top for top in (17e6, 26e6, 44e6, 66e6, 101e6))
                candidates.append((f_vco / 2 ** divq, {"DIVR": divr, "DIVF": divf, "DIVQ": divq,
                                                       "FILTER_RANGE": filter_range}))
    return _best(candidates, f_in, f_out, "ice40")


def pll_ecp5(f_in: float, f_out: float) -> PllSettings:
    """EHXPLLL settings (CLKOP feedback): PFD 3.125-400 MHz, VCO 400-800 MHz."""
    if not 3.125e6 <= f_out <= 400e6:
        raise ValueError(f"the ECP5 PLL output must be 3.125 .. 400 MHz, not {f_out / 1e6:g} MHz")
    candidates = []
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if not 3.125e6 <= f_pfd <= 400e6:
            continue
        for clkfb_div in range(1, 81):
            out = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                if 400e6 <= out * clkop_div <= 800e6:
                    candidates.append((out, {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div,
                                             "CLKOP_DIV": clkop_div}))
                    break
    return _best(candidates, f_in, f_out, "ecp5")


class ClockReset(Elaboratable):
    """Makes the `sync` domain: board oscillator -> optional PLL -> power-on reset.

    The reset holds for `por_cycles` after the PLL locks (iCE40 block RAMs read as zero for about
    3 us after configuration, so Amaranth's own iCE40 domain waits 15 us; this does the same)
    and while the optional `reset` input (a button) is pressed.

    Cost: the PLL (if any), a `por_cycles` counter and two synchronizer flip-flops.
    """

    def __init__(self, family: str, clk_resource: str, f_in: float, f_out: float,
                 reset: Signal | None = None, por_us: float = 15.0):
        if family not in ("ice40", "ecp5"):
            raise ValueError(f"family must be 'ice40' or 'ecp5', not {family!r}")
        self.family = family
        self.clk_resource = clk_resource
        self.f_in = f_in
        self.f_out = f_out
        self.pll = None
        if f_out != f_in:
            self.pll = (pll_ice40 if family == "ice40" else pll_ecp5)(f_in, f_out)
        self.reset = reset
        self.por_cycles = max(16, int(por_us * 1e-6 * self.frequency))

    @property
    def frequency(self) -> float:
        """The `sync` clock frequency the design gets (the PLL's, not the wanted one)."""
        return self.pll.f_out if self.pll else self.f_in

    def elaborate(self, platform) -> Module:
        m = Module()
        clk_io = platform.request(self.clk_resource, dir="-")
        m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_io)
        clk = Signal()
        locked = Signal(init=1)
        if self.pll is None:
            m.d.comb += clk.eq(clk_buf.i)
        else:
            pll_locked = Signal()
            m.submodules.pll = self.pll.instance(clk_buf.i, clk, pll_locked)
            m.d.comb += locked.eq(pll_locked)
            # Without a PLL the clock is the oscillator's net, which the board constrains.
            platform.add_clock_constraint(clk, self.frequency)

        # Power-on reset: a counter in a reset-less domain on the same clock.
        m.domains.por = ClockDomain(reset_less=True, local=True)
        m.domains.sync = ClockDomain()
        m.d.comb += [ClockSignal("por").eq(clk), ClockSignal("sync").eq(clk)]
        locked_s = Signal()
        m.submodules.lock_sync = FFSynchronizer(locked, locked_s, o_domain="por")
        timer = Signal(range(self.por_cycles + 1))
        with m.If(~locked_s):
            m.d.por += timer.eq(0)
        with m.Elif(timer != self.por_cycles):
            m.d.por += timer.eq(timer + 1)
        hold = timer != self.por_cycles
        if self.reset is not None:
            pressed = Signal()
            m.submodules.reset_sync = FFSynchronizer(self.reset, pressed, o_domain="por")
            hold = hold | pressed
        m.d.comb += ResetSignal("sync").eq(hold)
        return m
