"""The one configuration object of the accelerator.

`ArrayConfig` is frozen and validated; it round-trips through JSON. The same object feeds the
Amaranth elaboration (`hw/`), the compiler, the cycle model (`pysim/cycles.py`), the cocotb
parameters (`tb/`) and the design-space sweeps (`scripts/`). This module imports nothing from
Amaranth so that the NumPy side can use it without the HDL installed.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from pathlib import Path


class ConfigError(ValueError):
    """An ArrayConfig file or value is not valid; the message names the file, line or field."""


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class ArrayConfig:
    #: Name used for build folders and reports.
    name: str = "default"
    #: PE rows: output channels (or query tokens) computed in parallel.
    pe_rows: int = 4
    #: PE columns: output positions computed in parallel; a power of two (activation banks).
    #: A wide array drains a tile's raw integer outputs (one row of `pe_cols` words per cycle
    #: and bit-plane) in fewer cycles than a square one of the same size.
    pe_cols: int = 16
    #: Time-step lanes per PE: the largest T computed in parallel; a power of two.
    lanes: int = 4
    #: Signed weight width in bits.
    weight_bits: int = 8
    #: Per-lane accumulator width in bits (signed).
    acc_bits: int = 20
    #: LIF membrane width in bits (signed), fractional bits included.
    membrane_bits: int = 28
    #: Words per activation bank (one word = `lanes` bits of one position of one channel/plane).
    act_depth: int = 1024
    #: Words of weight memory (one word = `pe_rows` weights).
    weight_depth: int = 8192
    #: Entries of per-channel parameter memory (bias and threshold).
    param_depth: int = 1024
    #: Layer descriptors the program memory holds.
    program_depth: int = 64
    #: Entries of reduction micro-program memory (one entry = one input plane-channel step).
    step_depth: int = 4096
    #: Bytes of one input slot (flags byte + pixels); two slots double-buffer the tokens.
    input_depth: int = 1024
    #: Largest frame payload the host link accepts, in bytes.
    max_payload: int = 256
    #: Target clock frequency in Hz (used for inferences per second in reports).
    clock_hz: int = 50_000_000
    #: Paired reduction steps: a second operand run through the row port per step (two
    #: bit-planes of a multi-bit input, or two operands of an elementwise sum, per cycle).
    #: Off, every PE lane selects one operand instead of one of three, and bit-serial layers
    #: take one step per plane: a smaller array (about one LUT per accumulator bit) that is
    #: slower on multi-bit inputs.
    paired_steps: bool = True
    #: Lane packing: when T < lanes, the spare lanes of a word carry other positions of the
    #: same channel (edge reads across bands, lane-group rotation in attention). Off, they idle,
    #: and the edge-read and rotation logic is not built.
    lane_packing: bool = True
    #: Double-buffered accumulators: a tile's sums move to a shadow bank that the drain reads
    #: while the next tile accumulates. Off, the drain reads the working accumulators and the
    #: next tile waits for it: one register per accumulator bit less (on iCE40 one logic cell
    #: less), a drain's cycles more per tile.
    double_buffer: bool = True
    #: Time-step lanes per LIF pipeline stage (a power of two, at most `lanes`): the membrane
    #: runs through the lanes one after another, so a stage of fewer lanes is a shorter clock
    #: path; each stage boundary costs registers (membrane, the lanes still to come) and a
    #: drain one cycle longer at the end of each pass. `lanes`: one combinational stage.
    lif_stage_lanes: int = 1
    #: A register stage between the step's address arithmetic (from the step memory's word)
    #: and the activation banks' address decoding, and on the weight memory's output: two
    #: block-RAM-to-block-RAM paths become two shorter ones, for one cycle more per tile in
    #: the pipeline (`pysim.cycles.pipe_latency`) and about 2 * 14 + 3 * pe_cols + 8 *
    #: pe_rows flip-flops. Off on a small FPGA whose clock is not limited there.
    issue_stage: bool = True
    #: Two register stages in the drain: the shadow row it selects (a `pe_rows`:1 select of
    #: `pe_cols * lanes` sums) before the LIF units, and the write (spikes or raw bit-planes)
    #: before the activation banks' write port: the row select, the membrane arithmetic and
    #: the write's route to the banks (spread over the device on a wide array) become three
    #: paths, for two cycles more at the end of each pass (`drain_write_latency`), one more
    #: per head emission and `pe_cols * (lanes * (acc_bits + 1) + 1)` + an address's
    #: flip-flops. With one PE row there is no row select, and only the write register is
    #: built (one cycle more per pass). Off on a small FPGA whose clock is not limited there.
    drain_registers: bool = True

    def __post_init__(self):
        def need(cond: bool, field: str, allowed: str):
            if not cond:
                raise ConfigError(
                    f"ArrayConfig.{field} = {getattr(self, field)!r} is not allowed: {allowed}"
                )

        for f in fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                need(isinstance(value, bool), f.name, "true or false")
            elif f.name != "name":
                need(isinstance(value, int) and not isinstance(value, bool), f.name,
                     "an integer")
        need(isinstance(self.name, str) and self.name.isidentifier(), "name",
             "an identifier (letters, digits, underscore)")
        need(1 <= self.pe_rows <= 64, "pe_rows", "1 .. 64")
        need(_is_pow2(self.pe_cols) and self.pe_cols <= 64, "pe_cols", "a power of two, 1 .. 64")
        need(_is_pow2(self.lanes) and self.lanes <= 16, "lanes", "a power of two, 1 .. 16")
        need(2 <= self.weight_bits <= 8, "weight_bits", "2 .. 8")
        need(self.weight_bits + 4 <= self.acc_bits <= 32, "acc_bits",
             f"{self.weight_bits + 4} .. 32 (at least weight_bits + 4)")
        need(self.acc_bits + self.lanes + 2 <= self.membrane_bits <= 48, "membrane_bits",
             f"{self.acc_bits + self.lanes + 2} .. 48 (acc_bits + lanes + 2 fractional/sign bits)")
        need(_is_pow2(self.act_depth) and 64 <= self.act_depth <= 65536, "act_depth",
             "a power of two, 64 .. 65536")
        need(_is_pow2(self.weight_depth) and 64 <= self.weight_depth <= 65536, "weight_depth",
             "a power of two, 64 .. 65536")
        need(_is_pow2(self.param_depth) and 16 <= self.param_depth <= 65536, "param_depth",
             "a power of two, 16 .. 65536")
        need(1 <= self.program_depth <= 1024, "program_depth", "1 .. 1024")
        need(_is_pow2(self.step_depth) and 16 <= self.step_depth <= 65536, "step_depth",
             "a power of two, 16 .. 65536")
        need(_is_pow2(self.input_depth) and 16 <= self.input_depth <= 65536, "input_depth",
             "a power of two, 16 .. 65536")
        need(16 <= self.max_payload <= 65535, "max_payload", "16 .. 65535 bytes")
        need(_is_pow2(self.lif_stage_lanes) and self.lif_stage_lanes <= self.lanes,
             "lif_stage_lanes", f"a power of two, 1 .. lanes ({self.lanes})")
        need(1_000_000 <= self.clock_hz <= 1_000_000_000, "clock_hz", "1 MHz .. 1 GHz")

    @property
    def pes(self) -> int:
        """Processing elements in the array."""
        return self.pe_rows * self.pe_cols

    @property
    def lif_latency(self) -> int:
        """Pipeline registers inside a LIF unit (`hw.lif.LifUnit.latency`)."""
        return self.lanes // self.lif_stage_lanes - 1

    @property
    def pe_latency(self) -> int:
        """Cycles from a tile's last step at the PE array's inputs to its sums in the shadow
        (`hw.pe.PeArray`): the operand register, the accumulate, with double buffering the
        capture."""
        return 2 + int(self.double_buffer)

    @property
    def drain_row_latency(self) -> int:
        """Cycles from a drained row's registered command (the drain's stage D1) to its sums
        at the LIF units and the head's adder tree: the row register if built. With one PE
        row there is no row select to cut from the LIF units, so `drain_registers` builds
        only the write register."""
        return int(self.drain_registers and self.pe_rows > 1)

    @property
    def drain_write_latency(self) -> int:
        """Cycles from a drained row's registered command (the drain's stage D1) to its
        write into the activation banks: the row register, the LIF stages, the write
        register (`drain_registers`)."""
        return self.lif_latency + self.drain_row_latency + int(self.drain_registers)

    @property
    def head_latency(self) -> int:
        """Pipeline registers in the head's adder tree over one PE row (`pe_cols * lanes`
        sums): one after every two adder levels, none after the last (the logit's own add)."""
        levels = max(0, (self.pe_cols * self.lanes - 1).bit_length())
        return max(0, (levels - 1) // 2)

    @property
    def total_lanes(self) -> int:
        """AND/accumulate lanes in the array (PEs x time-step lanes)."""
        return self.pes * self.lanes

    def replace(self, **changes) -> ArrayConfig:
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, values: dict) -> ArrayConfig:
        known = {f.name for f in fields(cls)}
        if not isinstance(values, dict):
            kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
                type(values), "a number")
            raise ConfigError(f"an ArrayConfig is a JSON object of fields such as "
                              f'{{"pe_rows": 4, "pe_cols": 16}}, not {kind}')
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"ArrayConfig has no field(s) {', '.join(unknown)}; "
                              f"known fields: {', '.join(sorted(known))}")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ArrayConfig:
        try:
            values = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"line {err.lineno} column {err.colno}: not valid JSON "
                              f"({err.msg})") from err
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | Path) -> ArrayConfig:
        """The configuration in a JSON file; any error names the file (and the line)."""
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError as err:
            raise ConfigError(f"config file {path} does not exist (shipped ones: "
                              "hw/configs/*.json, hw/boards/*.json)") from err
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"config file {path} cannot be read ({err})") from err
        try:
            return cls.from_json(text)
        except ConfigError as err:
            raise ConfigError(f"config file {path}: {err}") from err

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json())
