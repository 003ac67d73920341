"""What a built array delivers: lanes, LUT per lane, peak lane-operations/s, and per variant the
cycles, inferences/s and GSOP/s at a clock (no tool runs; the cycle model and the golden model).

    from scripts.throughput import board_throughput
    board_throughput(ArrayConfig.load("hw/boards/orangecrab-25f.json"), 31.25e6)

`scripts/synth.py` puts these figures into `build/synth/<board>/report.json`; `scripts/bench.py`
compares them with the CPU.

- Cycles per inference: `compile_network(model, config).cycles.per_inference` (the cycle model
  `pysim.cycles`, equal to the RTL's busy cycles). A model the compiler refuses is recorded as
  not fitting, with the `DoesNotFit` message.
- Synaptic operations (SOP) per inference: the spike-triggered accumulates that `make eval`
  counts (`pysim.evaluate.operation_counts`: a conv input of value x at a position that f
  outputs read costs x f Cout, SSA q (k^T v), SDSA k AND v, the head x classes; the first
  layer's multiply-accumulates on pixels are not SOPs), averaged over `SOP_IMAGES` test images
  drawn with a fixed seed. They depend on the model and the input, not on the array, so they
  are computed once per variant. GSOP/s = SOP per inference x inferences/s / 1e9.
- Peak lane-operations/s = `ArrayConfig.total_lanes` x clock: one AND/accumulate per lane and
  cycle, what the array could do if every lane were busy.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np

from hw.config import ArrayConfig

ROOT = Path(__file__).resolve().parent.parent
CHECKPOINTS = ROOT / "checkpoints"
#: The committed digits variants (`pysim.torch_models.VARIANTS`, without importing PyTorch).
VARIANTS = ("spikformer", "spikformer_v2", "spikingformer", "sdt", "spikformer_iand")
#: Test images the synaptic operations are averaged over, and the seed that draws them.
SOP_IMAGES = 32
SOP_SEED = 0


def lane_figures(config: ArrayConfig, lut: int | None, fmax_hz: float | None) -> dict:
    """Lanes, whole-design LUTs (LCs on iCE40) per lane, peak lane-operations/s at `fmax_hz`."""
    lanes = config.total_lanes
    return {
        "lanes": lanes,
        "lut_per_lane": round(lut / lanes, 1) if lut is not None else None,
        "peak_lane_ops_per_s": lanes * fmax_hz if fmax_hz else None,
        "peak_gops": round(lanes * fmax_hz / 1e9, 3) if fmax_hz else None,
    }


def load_variant(variant: str, directory: Path | None = None):
    """The committed integer export `checkpoints/<variant>.json`."""
    from pysim.intmodel import IntModel

    return IntModel.load(Path(directory or CHECKPOINTS) / f"{variant}.json")


def sop_images(count: int = SOP_IMAGES, seed: int = SOP_SEED) -> np.ndarray:
    """`count` digits test images drawn without replacement with `seed` (in split order)."""
    from pysim.data import digits_test

    images = digits_test()[0]
    pick = np.sort(np.random.default_rng(seed).choice(len(images), size=min(count, len(images)),
                                                      replace=False))
    return images[pick]


@cache
def synaptic_ops(variant: str, count: int = SOP_IMAGES, seed: int = SOP_SEED,
                 directory: str | None = None) -> float:
    """Mean spike-triggered synaptic operations per inference of `variant` (`make eval`'s)."""
    from pysim import golden
    from pysim.evaluate import operation_counts

    model = load_variant(variant, Path(directory) if directory else None)
    images = sop_images(count, seed)
    _, trace = golden.run(model, images)
    return operation_counts(model, images, trace)["synaptic_ops"]


def variant_throughput(model, config: ArrayConfig, fmax_hz: float | None,
                       required_hz: float | None, sops: float | None) -> dict:
    """One variant on one array: cycles, inferences/s (routed and required clock), GSOP/s."""
    from hw.compiler import DoesNotFit, compile_network

    try:
        net = compile_network(model, config)
    except DoesNotFit as error:
        return {"fits": False, "reason": " ".join(str(error).split())}
    cycles = int(net.cycles.per_inference)
    row = {"fits": True, "cycles_per_inference": cycles,
           "inferences_per_s": round(fmax_hz / cycles, 1) if fmax_hz else None,
           "inferences_per_s_required": round(required_hz / cycles, 1) if required_hz else None,
           "synaptic_ops_per_inference": round(sops) if sops is not None else None}
    row["gsop_per_s"] = (round(sops * fmax_hz / cycles / 1e9, 4)
                         if sops is not None and fmax_hz else None)
    return row


def board_throughput(config: ArrayConfig, fmax_hz: float | None,
                     required_hz: float | None = None, *, variants=VARIANTS,
                     directory: str | Path | None = None, sop_count: int = SOP_IMAGES,
                     seed: int = SOP_SEED) -> dict:
    """Every variant on `config` at the routed clock `fmax_hz` (and the required clock,
    `config.clock_hz` unless given): {variant: figures}, see `variant_throughput`.

    A variant whose export cannot be read is recorded with its error instead of the figures.
    """
    from pysim.intmodel import ExportError

    required_hz = config.clock_hz if required_hz is None else required_hz
    out = {}
    for variant in variants:
        try:
            model = load_variant(variant, Path(directory) if directory else None)
            sops = synaptic_ops(variant, sop_count, seed, str(directory) if directory else None)
        except (OSError, ExportError) as error:
            out[variant] = {"fits": None, "error": " ".join(str(error).split())}
            continue
        out[variant] = variant_throughput(model, config, fmax_hz, required_hz, sops)
    return out


def throughput_table(variants: dict) -> str:
    """The per-variant figures as a fixed-width text table."""
    lines = [f"{'variant':<16} {'cycles/inf':>10} {'inf/s routed':>12} {'inf/s req.':>10} "
             f"{'SOP/inf':>9} {'GSOP/s':>8}"]
    for name, row in variants.items():
        if not row.get("fits"):
            lines.append(f"{name:<16} does not fit: {row.get('reason') or row.get('error')}")
            continue

        def num(value, spec):
            return "-" if value is None else format(value, spec)
        lines.append(f"{name:<16} {row['cycles_per_inference']:>10,} "
                     f"{num(row['inferences_per_s'], ',.1f'):>12} "
                     f"{num(row['inferences_per_s_required'], ',.1f'):>10} "
                     f"{num(row['synaptic_ops_per_inference'], ',d'):>9} "
                     f"{num(row['gsop_per_s'], '.4f'):>8}")
    return "\n".join(lines)
