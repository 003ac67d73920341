"""Host side of the cosimulation: build `spikeformer_top` with Verilator, run it, connect.

    with Session.open(config) as session:
        acc = session.accelerator()          # firmware.host.AcceleratorClient on the simulated RTL
        acc.load(compiled); acc.infer(images)

One build folder per configuration under `build/cosim/<name>_<hash>/` (`build_name`: the
config's name and a short hash of its JSON, so two configurations of one name never share a
build) holds the generated Verilog and the Verilator model, built and run through the cocotb
runner (`tb.runner.VerilatorRunner`); a rebuild with unchanged Verilog skips Verilator and
`make` has nothing to do. `WAVES=1` in the environment builds into `sim_waves/` and records an
FST trace (`dump.fst` there).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from firmware.host import AcceleratorClient
from firmware.transport import SocketTransport, TransportError
from hw.config import ArrayConfig
from tb.runner import (
    DEFAULT_SIMULATOR,
    SLOWDOWN,
    build_name,
    make_runner,
    sim_folder,
    verilator_on_path,
    waves_enabled,
)

__all__ = ["Build", "Session", "build", "build_name", "verilator_on_path", "waves_enabled"]

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "cosim"
TOP = "spikeformer_top"


@dataclass
class Build:
    """One Verilated `spikeformer_top`: its folder, Verilog, the model's folder (`sim/`, or
    `sim_waves/` under `WAVES=1`), the build's wall time and whether Verilator ran."""

    name: str
    directory: Path
    verilog: Path
    seconds: float
    sim_dir: Path | None = None
    verilated: bool = True  # whether the simulator's compiler ran (Verilator or iverilog)
    simulator: str = DEFAULT_SIMULATOR


def build(config: ArrayConfig, name: str | None = None, core=None,
          simulator: str = DEFAULT_SIMULATOR, **link_args) -> Build:
    """Generate the top's Verilog and Verilate it in `build/cosim/<name>/sim` (or `sim_waves`)
    through the cocotb runner (`tb.runner.VerilatorRunner`); `name` defaults to
    `build_name(config)`. `simulator="icarus"` compiles it with Icarus Verilog instead, in
    `sim_icarus` (`tb.runner.IcarusRunner`, `tb.runner.sim_folder`).

    `core` replaces the accelerator (tests of the link alone); `link_args` go to `HostLink`.
    Only the top's ports are public to VPI, so Verilator keeps optimising the inside. The
    Verilog is rewritten only when it changes, and an unchanged design skips Verilator and
    `make` finds nothing to do: a rebuild takes a few seconds (the Amaranth elaboration).
    """
    from hw.host_link import generate

    name = name or build_name(config)
    directory = BUILD / name
    sim_dir = directory / sim_folder(simulator)
    verilog = directory / f"{TOP}.v"
    start = time.monotonic()
    # The cosimulation always has the link's stall hooks (tied low unless a test stresses
    # them), so the stress tests and `make sim` share one build per configuration. Requests
    # arrive back to back here, so a frame times out after 16k cycles instead of 64k.
    generate(config, verilog, core=core,
             **{"test_hooks": True, "timeout_cycles": 1 << 14, **link_args})
    runner = make_runner(simulator)
    runner.build(sources=[verilog], hdl_toplevel=TOP, build_dir=sim_dir,
                 timescale=("1ns", "1ps"), log_file=directory / log_name("build", simulator))
    return Build(name, directory, verilog, time.monotonic() - start, sim_dir, runner.rebuilt,
                 simulator)


def log_name(kind: str, simulator: str) -> str:
    """`build.log`/`sim.log` for Verilator (as before), `build_icarus.log`/`sim_icarus.log`."""
    return f"{kind}.log" if simulator == DEFAULT_SIMULATOR else f"{kind}_{simulator}.log"


class Session:
    """A running simulation of one build, serving the host firmware on a Unix socket.

    `idle`, `backpressure` and `stall` are the probabilities of `tb.bench.TB`. Closing the
    session disconnects the host, which ends the cocotb test; `stats` then holds the bridge's
    figures (simulated cycles, wall seconds) and `passed` whether cocotb saw the test pass.
    Every wall-clock timeout here (`timeout`, `accelerator(timeout)`) is given for Verilator
    and multiplied by the build's simulator's `tb.runner.SLOWDOWN`.
    """

    def __init__(self, built: Build, idle: float = 0.0, backpressure: float = 0.0,
                 stall: float = 0.0, seed: int = 0, timeout: float = 60.0):
        self.built = built
        self.slowdown = SLOWDOWN[built.simulator]
        self.timeout = timeout = timeout * self.slowdown
        self.tmp = tempfile.mkdtemp(prefix="cosim-")
        self.socket = os.path.join(self.tmp, "link.sock")
        self.stats_path = os.path.join(self.tmp, "stats.json")
        self.stats: dict = {}
        self.passed: bool | None = None
        self.error: BaseException | None = None
        waves = waves_enabled()
        env = {"TB_SOCKET": self.socket, "TB_STATS": self.stats_path, "TB_IDLE": str(idle),
               "TB_BACKPRESSURE": str(backpressure), "TB_STALL": str(stall),
               "TB_SEED": str(seed), "PYTHONPATH": str(ROOT) + os.pathsep
               + os.environ.get("PYTHONPATH", "")}
        runner = make_runner(built.simulator)
        sim_dir = built.sim_dir or built.directory / sim_folder(built.simulator)
        self.log = built.directory / log_name("sim", built.simulator)
        self.results_xml = sim_dir / f"results_{os.getpid()}_{id(self)}.xml"

        def run():
            try:
                runner.test(test_module="tb.serve", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                            build_dir=sim_dir,
                            test_dir=sim_dir, extra_env=env, waves=waves, seed=seed,
                            results_xml=str(self.results_xml), log_file=self.log)
            except BaseException as err:  # reported to the host thread on close
                self.error = err

        self.thread = threading.Thread(target=run, name=f"cosim-{built.name}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.transport = SocketTransport(self.socket, connect_timeout=0.5)
                break
            except TransportError:
                if not self.thread.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"the simulation of {built.name} is not serving "
                                       f"({self.error or 'no socket'}); see "
                                       f"{self.log}") from self.error

    @classmethod
    def open(cls, config: ArrayConfig, name: str | None = None, core=None, link_args=None,
             simulator: str = DEFAULT_SIMULATOR, **session_args) -> Session:
        return cls(build(config, name, core, simulator, **(link_args or {})), **session_args)

    def accelerator(self, timeout: float = 60.0) -> AcceleratorClient:
        # An empty READ waits a little (wall time) before the next one, so the simulator runs
        # the core at full speed instead of spending its cycles on poll frames.
        return AcceleratorClient(self.transport, timeout=timeout * self.slowdown,
                                 poll_interval=0.002)

    def close(self) -> None:
        self.transport.close()
        self.thread.join(self.timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"simulation of {self.built.name} did not end after the host "
                               f"disconnected; see {self.log}")
        if os.path.exists(self.stats_path):
            with open(self.stats_path) as f:
                self.stats = json.load(f)
        self.passed = self._read_results()
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.error is not None:
            raise RuntimeError(f"simulation of {self.built.name} failed: {self.error}") \
                from self.error

    def _read_results(self) -> bool:
        if not self.results_xml.exists():
            return False
        root = ET.parse(self.results_xml).getroot()
        self.results_xml.unlink()
        cases = list(root.iter("testcase"))
        return bool(cases) and not any(case.find("failure") is not None
                                       or case.find("error") is not None for case in cases)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
