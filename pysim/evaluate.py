"""Evaluate the committed models on the digits test split: accuracy, bit-exactness, operations.

    python -m pysim.evaluate --out build/eval/report.json     # `make eval`

For every variant it loads the committed checkpoint and export and reports the float model's
accuracy (stage 1: BatchNorm, float weights), the QAT model's, the golden (integer) model's, the
number of values on which the PyTorch integer mode and the golden model disagree (every trace
entry, all 360 images; 0 means bit-exact), the parameter count, synaptic operations per
inference and the seed papers' energy estimate. The JSON comes first; `report.md` is a table
made from it.

Operation counts (per inference, averaged over the test split, all T time steps):

- Synaptic accumulates (AC, 0.9 pJ): what a spike-driven engine performs. A conv input of value
  `x` at a position that `f` output positions see costs `x * f * Cout` accumulates (a spike is
  one accumulate per fan-out; an SEW sum of `x` spikes is `x`). SSA counts `q (k^T v)`: each
  spike of `k` adds a row of `v`, each spike of `q` a row of `k^T v` (`C / heads` each). SDSA
  counts `sum_n k AND v`. The head counts `x * classes`. Neurons, pooling, masks and residual
  additions are not synaptic operations and are not counted (as in the seed papers).
- Multiply-accumulates (MAC, 4.6 pJ): the first layer reads multi-bit pixels, so its operations
  on non-zero pixels are MACs. The ANN baseline is the same network without time steps and
  with dense activations: every conv tap (`Cout Cin k^2 H W`), attention `2 N (C / heads) C`,
  SDSA `2 N C`, head `C classes`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pysim import cli, golden, torch_int
from pysim.data import digits_test
from pysim.intmodel import IntModel
from pysim.torch_models import (
    VARIANTS,
    checkpoint_paths,
    load_checkpoint,
    load_export,
    load_float_model,
    load_qat_model,
)
from pysim.train import accuracy

#: Energy per operation at 45 nm, as used by the seed papers.
E_AC_PJ = 0.9
E_MAC_PJ = 4.6


def _fanout(h: int, w: int, kernel: int) -> np.ndarray:
    """How many output positions of a stride-1, same-padded conv read each input position."""
    pad = kernel // 2
    rows = np.array([min(y + pad, h - 1) - max(y - pad, 0) + 1 for y in range(h)])
    cols = np.array([min(x + pad, w - 1) - max(x - pad, 0) + 1 for x in range(w)])
    return np.outer(rows, cols)


def operation_counts(model: IntModel, images: np.ndarray, trace: dict) -> dict:
    """Synaptic accumulates and first-layer MACs per inference (averaged over `images`).

    `trace` is the golden model's trace for `images`; returns per-layer and total counts and
    the dense ANN MAC count.
    """
    values = dict(trace)
    values[model.input] = golden.prepare_input(model, images)
    batch = len(values[model.input])
    per_layer = {}
    ac = mac = 0.0
    ann = 0
    for layer in model.layers:
        spec = model.tensors[layer.inputs[0]]
        c, h, w = spec.shape
        n = h * w
        x = values[layer.inputs[0]]
        if layer.kind == "conv":
            cout, _, k, _ = layer.arrays["weight"].shape
            fanout = _fanout(h, w, k)
            if layer.inputs[0] == model.input:  # one MAC per non-zero pixel and fan-out
                ops = ((x != 0).sum(axis=(1, 2)) * fanout).sum() * cout / batch
                mac += ops
                per_layer[layer.name] = {"mac": float(ops)}
            else:  # an input of value x is x spikes
                ops = (x.sum(axis=(1, 2)) * fanout).sum() * cout / batch
                ac += ops
                per_layer[layer.name] = {"ac": float(ops)}
            ann += cout * c * k * k * n
        elif layer.kind == "ssa":
            q, k_, _ = (values[name] for name in layer.inputs)
            dh = c // layer.params["heads"]
            ops = (q.sum() + k_.sum()) * dh / batch
            per_layer[layer.name] = {"ac": float(ops)}
            ac += ops
            ann += 2 * n * dh * c
        elif layer.kind == "sdsa":
            _, k_, v = (values[name] for name in layer.inputs)
            ops = (k_ & v).sum() / batch
            per_layer[layer.name] = {"ac": float(ops)}
            ac += ops
            ann += 2 * n * c
        elif layer.kind == "head":
            ops = x.sum() * model.num_classes / batch
            per_layer[layer.name] = {"ac": float(ops)}
            ac += ops
            ann += c * model.num_classes
    return {"synaptic_ops": float(ac), "first_layer_macs": float(mac), "ann_macs": int(ann),
            "per_layer": per_layer}


def mismatches(trace_a: dict, trace_b: dict) -> int:
    """Number of differing values between two traces (a missing or misshapen entry counts all)."""
    total = 0
    for key in sorted(set(trace_a) | set(trace_b)):
        a, b = trace_a.get(key), trace_b.get(key)
        if a is None or b is None or np.shape(a) != np.shape(b):
            total += int(np.size(a if a is not None else b))
        else:
            total += int(np.count_nonzero(np.asarray(a) != np.asarray(b)))
    return total


def evaluate_variant(variant: str, directory=None) -> dict:
    """All figures of one variant from its committed checkpoint and export."""
    x_test, y_test = digits_test()
    start = time.monotonic()
    intmodel = load_export(variant, directory)
    torch.set_num_threads(1)
    float_acc = accuracy(load_float_model(variant, directory), x_test, y_test)
    qat_acc = accuracy(load_qat_model(variant, directory), x_test, y_test)
    logits, trace = golden.run(intmodel, x_test)
    _, torch_trace = torch_int.run(intmodel, x_test)
    ops = operation_counts(intmodel, x_test, trace)
    snn_pj = ops["synaptic_ops"] * E_AC_PJ + ops["first_layer_macs"] * E_MAC_PJ
    ann_pj = ops["ann_macs"] * E_MAC_PJ
    spikes = [trace[name].mean() for name, spec in intmodel.tensors.items()
              if spec.kind == "spike" and name in trace]
    meta = load_checkpoint(variant, directory).get("meta", {})
    return {
        "variant": variant,
        "T": intmodel.T,
        "weight_bits": intmodel.weight_bits,
        "float_accuracy": float_acc,
        "qat_accuracy": qat_acc,
        "golden_accuracy": float((logits.argmax(axis=1) == y_test).mean()),
        "bit_exact_mismatches": mismatches(trace, torch_trace),
        "trace_entries": len(trace),
        "parameters": intmodel.parameter_count(),
        "synaptic_ops": ops["synaptic_ops"],
        "first_layer_macs": ops["first_layer_macs"],
        "ann_macs": ops["ann_macs"],
        "energy_snn_nj": snn_pj / 1000,
        "energy_ann_nj": ann_pj / 1000,
        "mean_firing_rate": float(np.mean(spikes)),
        "per_layer": ops["per_layer"],
        "training": {k: meta[k] for k in ("seed", "epochs", "qat_epochs") if k in meta},
        "seconds": round(time.monotonic() - start, 2),
    }


def to_markdown(report: dict) -> str:
    """The README table made from the JSON report."""
    lines = [
        f"Digits test split ({report['test_images']} images), T = {report['T']}, "
        f"{report['weight_bits']}-bit weights. Energy: {E_AC_PJ} pJ per accumulate, "
        f"{E_MAC_PJ} pJ per MAC (45 nm).",
        "",
        "| model | float acc | golden acc | torch-int vs golden mismatches | params | "
        "synaptic ops / inf | first-layer MACs | SNN energy (nJ) | ANN MACs | "
        "ANN energy (nJ) | firing rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["models"]:
        lines.append(
            f"| {row['variant']} | {row['float_accuracy']:.2%} | {row['golden_accuracy']:.2%} | "
            f"{row['bit_exact_mismatches']} | {row['parameters']:,} | "
            f"{row['synaptic_ops']:,.0f} | {row['first_layer_macs']:,.0f} | "
            f"{row['energy_snn_nj']:.1f} | {row['ann_macs']:,} | {row['energy_ann_nj']:.1f} | "
            f"{row['mean_firing_rate']:.3f} |")
    return "\n".join(lines) + "\n"


@cli.entry_point("python -m pysim.evaluate")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysim.evaluate",
                                     description="Evaluate the committed digits models.")
    parser.add_argument("--out", type=Path, default=Path("build/eval/report.json"))
    parser.add_argument("--models", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: checkpoints/)")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    folder = args.checkpoints if args.checkpoints is not None else cli.CHECKPOINTS
    for variant in args.models:
        if not all(path.exists() for path in checkpoint_paths(variant, folder).values()):
            raise cli.missing_model(variant, folder)
    rows = []
    for variant in args.models:
        row = evaluate_variant(variant, args.checkpoints)
        print(f"{variant}: float {row['float_accuracy']:.2%}, golden "
              f"{row['golden_accuracy']:.2%}, mismatches {row['bit_exact_mismatches']}, "
              f"{row['synaptic_ops']:,.0f} synaptic ops ({row['seconds']} s)")
        rows.append(row)
    x_test, _ = digits_test()
    report = {"dataset": "sklearn digits, stratified 80/20 split, random_state=0",
              "test_images": len(x_test), "T": rows[0]["T"],
              "weight_bits": rows[0]["weight_bits"], "energy_pj": {"ac": E_AC_PJ,
                                                                   "mac": E_MAC_PJ},
              "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    markdown = args.out.with_suffix(".md")
    markdown.write_text(to_markdown(report))
    print(f"wrote {args.out} and {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
