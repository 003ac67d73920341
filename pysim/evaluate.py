"""Evaluate the committed models on a test split: accuracy, bit-exactness, operations.

    python -m pysim.evaluate --out build/eval/report.json                     # `make eval`
    python -m pysim.evaluate --dataset fashion --out build/eval/fashion/report.json
                                                              # `make eval DATASET=fashion`

For every variant it loads the committed checkpoint and export and reports the float model's
accuracy (stage 1: BatchNorm, float weights), the QAT model's, the golden (integer) model's, the
number of values on which the PyTorch integer mode and the golden model disagree (every trace
entry, every test image: 360 digits, 10,000 Fashion-MNIST; 0 means bit-exact), the parameter
count, synaptic operations per inference and the seed papers' energy estimate. The JSON comes
first; `report.md` is a table made from it.

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
from pysim.data import fit_images
from pysim.intmodel import IntModel
from pysim.torch_models import (
    VARIANTS,
    checkpoint_paths,
    load_checkpoint,
    load_export,
    load_float_model,
    load_qat_model,
)
from pysim.train import DATASETS, accuracy, checkpoint_dir, dataset_test

DATASET_NAMES = {"digits": "sklearn digits, stratified 80/20 split, random_state=0",
                 "fashion": "Fashion-MNIST, the 10,000-image t10k test split"}
#: Images per golden / torch-int batch (bounds the memory of a full trace).
EVAL_BATCH = 400

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


def evaluate_variant(variant: str, directory=None, dataset: str = "digits",
                     limit: int | None = None) -> dict:
    """All figures of one variant from its committed checkpoint and export.

    The golden model and the integer mode run in batches of `EVAL_BATCH` images; counts and
    firing rates are averaged over all images. `limit` evaluates the first images only.
    """
    x_test, y_test = dataset_test(dataset)
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    directory = checkpoint_dir(dataset) if directory is None else directory
    start = time.monotonic()
    intmodel = load_export(variant, directory)
    x_test = fit_images(x_test, intmodel.input_spec.shape)  # (64-token models read 32x32)
    torch.set_num_threads(1)
    float_acc = accuracy(load_float_model(variant, directory), x_test, y_test)
    qat_acc = accuracy(load_qat_model(variant, directory), x_test, y_test)
    correct = bad = entries = 0
    sums = {"synaptic_ops": 0.0, "first_layer_macs": 0.0}
    per_layer: dict = {}
    rates: dict = {}
    for first in range(0, len(x_test), EVAL_BATCH):
        images = x_test[first:first + EVAL_BATCH]
        n = len(images)
        logits, trace = golden.run(intmodel, images)
        _, torch_trace = torch_int.run(intmodel, images)
        correct += int((logits.argmax(axis=1) == y_test[first:first + n]).sum())
        bad += mismatches(trace, torch_trace)
        entries = len(trace)
        ops = operation_counts(intmodel, images, trace)
        ann_macs = ops["ann_macs"]
        for key in sums:
            sums[key] += ops[key] * n
        for name, counts in ops["per_layer"].items():
            for key, value in counts.items():
                per_layer.setdefault(name, {}).setdefault(key, 0.0)
                per_layer[name][key] += value * n
        for name, spec in intmodel.tensors.items():
            if spec.kind == "spike" and name in trace:
                rates[name] = rates.get(name, 0.0) + float(trace[name].mean()) * n
    total = len(x_test)
    ops = {key: value / total for key, value in sums.items()}
    per_layer = {name: {k: v / total for k, v in counts.items()}
                 for name, counts in per_layer.items()}
    snn_pj = ops["synaptic_ops"] * E_AC_PJ + ops["first_layer_macs"] * E_MAC_PJ
    ann_pj = ann_macs * E_MAC_PJ
    meta = load_checkpoint(variant, directory).get("meta", {})
    return {
        "variant": variant,
        "T": intmodel.T,
        "weight_bits": intmodel.weight_bits,
        "float_accuracy": float_acc,
        "qat_accuracy": qat_acc,
        "golden_accuracy": correct / total,
        "bit_exact_mismatches": bad,
        "trace_entries": entries,
        "parameters": intmodel.parameter_count(),
        "synaptic_ops": ops["synaptic_ops"],
        "first_layer_macs": ops["first_layer_macs"],
        "ann_macs": ann_macs,
        "energy_snn_nj": snn_pj / 1000,
        "energy_ann_nj": ann_pj / 1000,
        "mean_firing_rate": float(np.mean([r / total for r in rates.values()])),
        "per_layer": per_layer,
        "training": {k: meta[k] for k in ("seed", "epochs", "qat_epochs", "lr", "batch",
                                          "val_float_accuracy", "val_qat_accuracy",
                                          "train_minutes_this_run") if k in meta},
        "seconds": round(time.monotonic() - start, 2),
    }


#: The array configurations every model is compiled for (`--compile`).
COMPILE_CONFIGS = ("hw/configs/default.json", "hw/boards/icebreaker.json",
                   "hw/boards/orangecrab-25f.json", "hw/boards/ulx3s-85f.json")


def compile_results(intmodel: IntModel, configs=COMPILE_CONFIGS) -> dict:
    """Compile `intmodel` for each array configuration: cycles per inference and inferences
    per second at the configuration's clock, or the compiler's `DoesNotFit` message."""
    from hw.compiler import DoesNotFit, compile_network
    from hw.config import ArrayConfig

    results = {}
    for path in configs:
        config = ArrayConfig.load(path)
        try:
            net = compile_network(intmodel, config)
        except DoesNotFit as error:
            results[config.name] = {"fits": False, "reason": str(error)}
            continue
        cycles = int(net.cycles.total)
        results[config.name] = {"fits": True, "cycles": cycles,
                                "activation_words": int(net.activation_words),
                                "inferences_per_s": config.clock_hz / cycles}
    return results


def to_markdown(report: dict) -> str:
    """The README table made from the JSON report."""
    title = "Fashion-MNIST" if report.get("dataset_key") == "fashion" else "Digits"
    mixed_T = report["T"] is None
    lines = [
        f"{title} test split ({report['test_images']} images), "
        + ("T per model" if mixed_T else f"T = {report['T']}") + ", "
        f"{report['weight_bits']}-bit weights. Energy: {E_AC_PJ} pJ per accumulate, "
        f"{E_MAC_PJ} pJ per MAC (45 nm).",
        "",
        "| model | " + ("T | " if mixed_T else "") + "float acc | QAT acc | golden acc | "
        "torch-int vs golden mismatches | params | "
        "synaptic ops / inf | first-layer MACs | SNN energy (nJ) | ANN MACs | "
        "ANN energy (nJ) | firing rate |",
        "|---|" + "---:|" * (12 if mixed_T else 11),
    ]
    for row in report["models"]:
        lines.append(
            f"| {row['variant']} | " + (f"{row['T']} | " if mixed_T else "") +
            f"{row['float_accuracy']:.2%} | {row['qat_accuracy']:.2%} | "
            f"{row['golden_accuracy']:.2%} | "
            f"{row['bit_exact_mismatches']} | {row['parameters']:,} | "
            f"{row['synaptic_ops']:,.0f} | {row['first_layer_macs']:,.0f} | "
            f"{row['energy_snn_nj']:.1f} | {row['ann_macs']:,} | {row['energy_ann_nj']:.1f} | "
            f"{row['mean_firing_rate']:.3f} |")
    compiled = [row for row in report["models"] if "compile" in row]
    if compiled:
        names = list(compiled[0]["compile"])
        lines += ["", "Compiler answer per array (cycles per inference, or where it does not fit):",
                  "", "| model | " + " | ".join(names) + " |",
                  "|---|" + "---|" * len(names)]
        for row in compiled:
            cells = []
            for name in names:
                result = row["compile"][name]
                cells.append(f"{result['cycles']:,} cycles" if result["fits"]
                             else f"DoesNotFit: {result['reason']}")
            lines.append(f"| {row['variant']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@cli.entry_point("python -m pysim.evaluate")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysim.evaluate",
                                     description="Evaluate the committed models.")
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--out", type=Path, default=None,
                        help="report path (default: build/eval/report.json for digits, "
                             "build/eval/<dataset>/report.json otherwise)")
    parser.add_argument("--models", nargs="+", default=None, metavar="MODEL",
                        help="committed models by file name: a variant (" + ", ".join(VARIANTS)
                             + ") or a trained derivative such as spikformer_v2_pt_t1_n64 "
                             "(default: the five variants; for Fashion-MNIST those with "
                             "checkpoints)")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="checkpoint folder (default: checkpoints/ or checkpoints/<dataset>/)")
    parser.add_argument("--limit", type=cli.positive, default=None,
                        help="first N test images only")
    parser.add_argument("--compile", action="store_true",
                        help="also compile each model for the default array and each board")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    out = args.out or (Path("build/eval/report.json") if args.dataset == "digits"
                       else Path("build/eval") / args.dataset / "report.json")
    folder = args.checkpoints or checkpoint_dir(args.dataset)
    models = args.models
    if models is None:
        models = [v for v in VARIANTS if args.dataset == "digits"
                  or (folder / f"{v}.json").exists()]
        if not models:
            parser.error(f"no checkpoints in {folder}; train with `make train "
                         f"DATASET={args.dataset}`")
    for variant in models:
        if not all(path.exists() for path in checkpoint_paths(variant, folder).values()):
            raise cli.missing_model(variant, folder)
    rows = []
    for variant in models:
        row = evaluate_variant(variant, folder, args.dataset, args.limit)
        if args.compile:
            row["compile"] = compile_results(load_export(variant, folder))
        print(f"{variant}: float {row['float_accuracy']:.2%}, QAT {row['qat_accuracy']:.2%}, "
              f"golden {row['golden_accuracy']:.2%}, mismatches {row['bit_exact_mismatches']}, "
              f"{row['synaptic_ops']:,.0f} synaptic ops ({row['seconds']} s)", flush=True)
        rows.append(row)
    x_test, _ = dataset_test(args.dataset)
    report = {"dataset": DATASET_NAMES[args.dataset], "dataset_key": args.dataset,
              "test_images": min(len(x_test), args.limit or len(x_test)),
              "T": rows[0]["T"] if len({r["T"] for r in rows}) == 1 else None,
              "weight_bits": rows[0]["weight_bits"], "energy_pj": {"ac": E_AC_PJ,
                                                                   "mac": E_MAC_PJ},
              "models": rows}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    markdown = out.with_suffix(".md")
    markdown.write_text(to_markdown(report))
    print(f"wrote {out} and {markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
