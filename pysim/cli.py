"""What every command line of the project shares: expected errors as one line and exit status 2.

Each entry point (`python -m tb.run_sim`, `firmware`, `pysim.evaluate`, `pysim.cycles`,
`hw.top`, `scripts.synth`, `scripts.explore`) decorates its `main(argv)` with `entry_point`:

    @entry_point("python -m pysim.cycles")
    def main(argv=None) -> int:
        parser = argparse.ArgumentParser(prog="python -m pysim.cycles")
        add_debug(parser)
        ...

An expected error prints one line on stderr, `<prog>: error: <what is wrong, what to do>`, and
`main` returns 2 (argparse's status for a bad argument). Expected are the errors a user can
cause and fix: a missing or unknown model (`ModelNotFound`: the message lists the variants in
`checkpoints/` and says `make train`), a corrupted export (`ExportError`), a configuration file
that is missing, not JSON or not a JSON object, or has a bad value (`ConfigError`, naming the
file and line), a model that does not fit the array (`DoesNotFit`), a serial port or socket
that does not open (`TransportError`), an error status of the device (`DeviceError`), a missing
file (`FileNotFoundError`), and `UsageError` for anything else a command checks. Anything else
is a bug and keeps its traceback. `--debug` on the command line, or `SPIKEFORMER_DEBUG=1` in the
environment, shows the traceback of expected errors too.

The error types are looked up in `sys.modules`: a module that was never imported cannot have
raised its error, so this module imports nothing heavy (no PyTorch, no Amaranth).
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
DEBUG_ENV = "SPIKEFORMER_DEBUG"
#: Exit status of an expected error (argparse's for a bad argument).
EXIT_ERROR = 2

#: (module, class name) of every expected error besides `UsageError` and `FileNotFoundError`.
EXPECTED = (
    ("pysim.intmodel", "ExportError"),
    ("hw.config", "ConfigError"),
    ("hw.compiler", "DoesNotFit"),
    ("firmware.transport", "TransportError"),
    ("firmware.host", "DeviceError"),
    ("pysim.torch_models", "CheckpointError"),
)


class UsageError(Exception):
    """An expected error of a command line; the message says what is wrong and what to do."""


class ModelNotFound(UsageError):
    """No exported model of that name or path; the message lists the ones that exist."""


def expected_errors() -> tuple[type[BaseException], ...]:
    types: list[type[BaseException]] = [UsageError, FileNotFoundError]
    for module, name in EXPECTED:
        if module in sys.modules and hasattr(sys.modules[module], name):
            types.append(getattr(sys.modules[module], name))
    return tuple(types)


def debug_requested(argv) -> bool:
    argv = sys.argv[1:] if argv is None else argv
    return "--debug" in argv or os.environ.get(DEBUG_ENV, "0") not in ("", "0")


def add_debug(parser) -> None:
    """The `--debug` flag (read by `entry_point`; the parser only has to accept it)."""
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of expected errors too (or {DEBUG_ENV}=1)")


def one_line(error: BaseException) -> str:
    """The message of `error` on one line."""
    text = " ".join(str(error).split()) or type(error).__name__
    if isinstance(error, FileNotFoundError) and error.filename and str(error.filename) not in text:
        text = f"{text}: {error.filename}"
    return text


def entry_point(prog: str):
    """Decorate `main(argv=None) -> int`: expected errors become one line on stderr and 2."""

    def decorate(main):
        @functools.wraps(main)
        def wrapper(argv=None):
            try:
                return main(argv)
            except expected_errors() as err:
                if debug_requested(argv):
                    raise
                print(f"{prog}: error: {one_line(err)}", file=sys.stderr, flush=True)
                return EXIT_ERROR

        return wrapper

    return decorate


def positive(text: str) -> int:
    """argparse type of a count that must be at least 1 (`--images`)."""
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive count (1 or more)")
    return value


def available_models(folder: Path | None = None) -> list[str]:
    """The variants exported in `folder` (default `checkpoints/`; a manifest and its arrays)."""
    folder = Path(folder) if folder is not None else CHECKPOINTS
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.json") if p.with_suffix(".npz").exists())


def shown(path: Path) -> str:
    """`path` relative to the working folder when it is inside it (messages stay short)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def missing_model(name: str, folder: Path | None = None) -> ModelNotFound:
    """The error for a model that is not there, listing the variants that are."""
    folder = Path(folder) if folder is not None else CHECKPOINTS
    there = available_models(folder)
    what = (f"no exported model at {name}" if model_path(name, folder) == Path(name)
            else f"no exported model {name!r}")
    listing = (f"the variants in {shown(folder)}/ are {', '.join(there)}" if there
               else f"{shown(folder)}/ holds no exported model")
    return ModelNotFound(f"{what}: {listing}; `make train` exports every variant (or give the "
                         "path of an exported .json)")


def model_path(name: str, folder: Path | None = None) -> Path:
    """`<folder>/<name>.json` (default `checkpoints/`) for a variant name, else `name` as a
    path (a `.json` manifest or its stem)."""
    if name.endswith(".json") or os.sep in name or "/" in name:
        return Path(name)
    return (Path(folder) if folder is not None else CHECKPOINTS) / f"{name}.json"


def load_model(name: str, folder: Path | None = None):
    """The `IntModel` of a variant name or an export's path; `ModelNotFound` lists the ones
    that exist when there is none (a corrupted export raises `ExportError`)."""
    from pysim.intmodel import IntModel

    path = model_path(name, folder)
    if not path.with_suffix(".json").exists():
        raise missing_model(name, folder)
    return IntModel.load(path)
