"""Train the models: float training, then quantization-aware fine-tuning, then export.

    python -m pysim.train --model spikformer                      # one digits variant
    python -m pysim.train --all                                   # all five (`make train`)
    python -m pysim.train --dataset fashion --model spikformer    # `make train DATASET=fashion`
    options: --weight-bits 2..8 (default 8), --epochs N (float stage), --qat-epochs N, --seed S,
             --lr A[,B,...] (several: each is trained and the best on validation is kept),
             --data-dir DIR (Fashion-MNIST IDX files), --fresh (ignore a resume state),
             --T N (time steps, default 4), --init-encoder FILE (start from a pre-trained
             encoder, `pysim.pretrain`), --suffix S (output name `<variant><S>`),
             --distill / --no-distill (Fashion-MNIST: learn from the float CNN teacher of
             `pysim.teacher` as well as the labels; on by default for the four variants
             without a stem, `FASHION["distill"]`)

Stage 1 trains the float network (Adam, cosine learning rate, BatchNorm in train mode). Stage 2
folds BatchNorm (running statistics) into the conv weights, fake-quantizes them with the scales of
`pysim/FORMAT.md` and a straight-through estimator, and fine-tunes. Training is deterministic:
seeded, one thread, `torch.use_deterministic_algorithms(True)`.

Hyperparameters are chosen on a validation split carved from the training set (seeded,
stratified: 144 of the 1,437 digits training images, 5,000 of the 60,000 Fashion-MNIST ones),
never on the test split: with several `--lr` values every candidate is trained and the one with
the best validation accuracy of its QAT model is kept. The test split is only measured, once, at
the end.

Resumable: after every epoch the whole training state (model, optimizer, schedule, random
generator, epoch, stage) goes to `build/train/<dataset>/<variant>-lr<lr>.resume.pt`; running the
same command again after a kill continues from the last finished epoch and gives the same
weights as an uninterrupted run. Each variant writes `<checkpoints>/<variant>.pt` (float and QAT
state and the metrics) and the integer export `<variant>.json` + `.npz`; checkpoints are
`checkpoints/` for digits and `checkpoints/fashion/` for Fashion-MNIST.

Fine-tuning and other time steps: `--init-encoder FILE` loads a masked-pre-trained encoder
(`python -m pysim.pretrain`, `make pretrain`) into the classifier before the float stage, which
then fine-tunes everything with the labels; QAT and export follow as usual. `--T N` trains and
exports a model of N time steps (1 .. 16). Either one changes the output name unless `--suffix`
is given: `_pt` for a pre-trained start and `_t<N>` for T != 4, e.g. `spikformer_v2_pt_t1.pt`,
so that the variants and their from-scratch baselines never overwrite the main checkpoint.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pysim import torch_int
from pysim.data import (
    digits_train_val,
    fashion_pixels,
    fashion_train_val,
    fit_images,
    test_split,
)
from pysim.torch_models import (
    DEFAULT_CHECKPOINTS,
    FASHION_PIXEL_BITS,
    VARIANTS,
    SpikingTransformer,
    build_model,
    checkpoint_paths,
    config_dict,
)

DATASETS = ("digits", "fashion")
ROOT = Path(__file__).resolve().parent.parent
RESUME_DIR = ROOT / "build" / "train"

#: Digits: float-stage epochs, QAT epochs, batch size and the learning-rate candidates (the
#: best on the validation split is kept).
EPOCHS = 60
QAT_EPOCHS = 15
BATCH = 32
LR = 5e-3
LR_CANDIDATES = (5e-3, 1e-2)
QAT_LR = 5e-4

#: Fashion-MNIST: about 40 minutes per variant on one idle thread.
#: `shift`: random shifts of up to that many pixels besides the left-right flips (0: flips only;
#: these small networks underfit in 12 epochs, and 2-pixel shifts cost validation accuracy).
#: `distill`: the variants trained against the teacher by default (`pysim.teacher`; chosen on
#: the validation split: it lifted spikformer's QAT validation accuracy from 84.78% to 87.18%,
#: left spikingformer's at 86.22% and lowered spikformer_v2's from 88.50% to 87.34%).
FASHION = {"epochs": 12, "qat_epochs": 2, "batch": 64, "lr": (3e-3,), "qat_lr": 3e-4,
           "shift": 0, "distill": ("spikformer", "spikingformer", "sdt", "spikformer_iand")}


def checkpoint_dir(dataset: str) -> Path:
    return DEFAULT_CHECKPOINTS if dataset == "digits" else DEFAULT_CHECKPOINTS / dataset


def set_deterministic(seed: int) -> None:
    """Seed everything and forbid non-deterministic kernels; one thread for fixed reductions."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def _shifted(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of up to one pixel (zero fill): cheap augmentation for 8x8 digits."""
    batch = images.shape[0]
    padded = F.pad(images, (1, 1, 1, 1))
    dy = torch.randint(0, 3, (batch,), generator=generator)
    dx = torch.randint(0, 3, (batch,), generator=generator)
    rows = (dy.view(-1, 1) + torch.arange(8)).view(batch, 8, 1)
    cols = (dx.view(-1, 1) + torch.arange(8)).view(batch, 1, 8)
    return padded[torch.arange(batch).view(-1, 1, 1), rows, cols]


def _shift_flip(images: torch.Tensor, generator: torch.Generator, shift: int = 2,
                flips: list | None = None) -> torch.Tensor:
    """Fashion-MNIST augmentation: random left-right flips and shifts of up to `shift` pixels
    (zero fill) of (B, H, W) images. `flips`, when given, receives the flip mask (the
    distillation teacher's logits are looked up by it)."""
    batch, h, w = images.shape
    flip = torch.rand(batch, generator=generator) < 0.5
    if flips is not None:
        flips.append(flip)
    images = torch.where(flip.view(-1, 1, 1), images.flip(-1), images)
    if not shift:
        return images
    padded = F.pad(images, (shift, shift, shift, shift))
    dy = torch.randint(0, 2 * shift + 1, (batch,), generator=generator)
    dx = torch.randint(0, 2 * shift + 1, (batch,), generator=generator)
    rows = (dy.view(-1, 1) + torch.arange(h)).view(batch, h, 1)
    cols = (dx.view(-1, 1) + torch.arange(w)).view(batch, 1, w)
    return padded[torch.arange(batch).view(-1, 1, 1), rows, cols]


class Interrupted(RuntimeError):
    """Raised by the `stop_after` test hook after that many epochs of a run."""


def _save_atomic(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _Run:
    """Training state shared by the two stages; writes and reads the resume file."""

    def __init__(self, key: dict, path: Path | None, progress: bool, stop_after: int | None,
                 val=None):
        self.key = key
        self.path = path
        self.progress = progress
        self.stop_after = stop_after
        self.epochs_this_run = 0
        self.val = val
        self.history: list[dict] = []
        self.state = None
        if path is not None and path.exists():
            state = torch.load(path, map_location="cpu", weights_only=False)
            if state.get("key") == key:
                self.state = state
                self.history = list(state.get("history", []))

    def resume_point(self, stage: str):
        """(epochs done, saved dict) of `stage` when the resume file is in it or past it."""
        if self.state is None:
            return 0, None
        order = ("float", "qat")
        if order.index(self.state["stage"]) > order.index(stage):
            return None, self.state  # stage finished
        if self.state["stage"] == stage:
            return self.state["epoch"], self.state
        return 0, None

    def epoch_done(self, stage, epoch, model, optimizer, scheduler, generator, extra):
        record = {"stage": stage, "epoch": epoch + 1}
        if self.val is not None:
            record["val_accuracy"] = accuracy(model, *self.val)
            model.train()
        self.history.append(record)
        if self.path is not None:
            _save_atomic({"key": self.key, "stage": stage, "epoch": epoch + 1,
                          "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(),
                          "generator": generator.get_state(), "history": self.history,
                          **extra}, self.path)
        self.epochs_this_run += 1
        if self.stop_after is not None and self.epochs_this_run >= self.stop_after:
            raise Interrupted(f"stopped after {self.epochs_this_run} epochs")
        return record


def _stage(run: _Run, stage: str, model: SpikingTransformer, x: torch.Tensor, y: torch.Tensor,
           epochs: int, lr: float, batch: int, generator: torch.Generator, augment, desc: str,
           extra: dict, soft_targets: torch.Tensor | None = None) -> None:
    """Adam with a cosine learning-rate schedule on augmented images, cross-entropy; with
    `soft_targets` ((N, 2, classes) teacher logits of every image, plain and flipped,
    `pysim.teacher.teacher_logits`) the distillation loss of `pysim.teacher.distill_loss`."""
    if soft_targets is not None:
        from pysim.teacher import distill_loss  # (pysim.teacher imports this module)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    per_epoch = (len(x) + batch - 1) // batch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs * per_epoch, 1))
    start, saved = run.resume_point(stage)
    if start is None:  # the resume file is past this stage (float: its state is kept there)
        model.load_state_dict(saved["float_state"])
        model.eval()
        return
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
    model.train()
    for epoch in range(start, epochs):
        order = torch.randperm(len(x), generator=generator)
        bar = tqdm(total=per_epoch, desc=f"{desc} {epoch + 1}/{epochs}",
                   disable=not run.progress, leave=False, file=sys.stderr)
        for first in range(0, len(x), batch):
            index = order[first:first + batch]
            if soft_targets is None:
                loss = F.cross_entropy(model(augment(x[index], generator)), y[index])
            else:
                flips: list = []
                logits = model(augment(x[index], generator, flips))
                teacher = soft_targets[index, flips[0].long()]
                loss = distill_loss(logits, teacher, y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
        record = run.epoch_done(stage, epoch, model, optimizer, scheduler, generator, extra)
        if run.progress and "val_accuracy" in record:
            print(f"{desc} epoch {epoch + 1}/{epochs}: validation "
                  f"{record['val_accuracy']:.2%}", file=sys.stderr, flush=True)
    model.eval()


def predict_logits(model: torch.nn.Module, images, batch: int = 200) -> torch.Tensor:
    """The logits of a torch model (a student, float or QAT, or `pysim.teacher`'s CNN) in eval
    mode, `batch` images at a time."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(images[start:start + batch])
                          for start in range(0, len(images), batch)])


def accuracy(model: torch.nn.Module, images, labels, batch: int = 200) -> float:
    """Top-1 accuracy of a torch model in eval mode."""
    predicted = predict_logits(model, images, batch).argmax(dim=1).numpy()
    return float((predicted == np.asarray(labels)).mean())


def int_accuracy(intmodel, images, labels, batch: int = 500) -> float:
    """Top-1 accuracy of an export, computed by the golden model when it is available."""
    try:
        from pysim import golden
        run = golden.run
    except ImportError:
        run = torch_int.run
    correct = 0
    images = fit_images(images, intmodel.input_spec.shape)  # (the 64-token shape: 32x32)
    for start in range(0, len(images), batch):
        logits, _ = run(intmodel, images[start:start + batch], record=False)
        correct += int((np.asarray(logits).argmax(axis=1) == labels[start:start + batch]).sum())
    return correct / len(images)


def dataset_split(dataset: str, seed: int = 0, data_dir=None):
    """`(x_train, y_train, x_val, y_val)` as network inputs (uint8) and int64 labels."""
    if dataset == "digits":
        return digits_train_val(seed)
    x_train, y_train, x_val, y_val = fashion_train_val(seed, directory=data_dir)
    return (fashion_pixels(x_train, FASHION_PIXEL_BITS), y_train,
            fashion_pixels(x_val, FASHION_PIXEL_BITS), y_val)


def dataset_test(dataset: str):
    """The test split as network inputs (uint8) and labels (`pysim.data.test_split`)."""
    return test_split(dataset)


#: Fashion-MNIST token counts: `fashion_config`'s 16 (the default) or `fashion64_config`'s 64.
TOKENS = (16, 64)


def model_shape(dataset: str, tokens: int = 16) -> str:
    """The `pysim.torch_models` shape of `dataset` with `tokens` tokens."""
    if tokens not in TOKENS or (tokens != 16 and dataset != "fashion"):
        raise ValueError(f"tokens={tokens}: the {dataset} shape has "
                         + ("16 or 64 tokens" if dataset == "fashion" else "16 tokens"))
    return "fashion64" if tokens == 64 else dataset


def defaults(dataset: str) -> dict:
    if dataset == "digits":
        return {"epochs": EPOCHS, "qat_epochs": QAT_EPOCHS, "batch": BATCH,
                "lr": LR_CANDIDATES, "qat_lr": QAT_LR, "shift": 1}
    return dict(FASHION)


def train_variant(variant: str, weight_bits: int = 8, epochs: int | None = None,
                  qat_epochs: int | None = None, seed: int = 0, progress: bool = True,
                  train_limit: int | None = None, dataset: str = "digits",
                  lr: float | None = None, resume: Path | None = None,
                  stop_after: int | None = None, data_dir=None, split=None, T: int = 4,
                  init_encoder: Path | None = None, tokens: int = 16,
                  distill: bool | None = None):
    """Train one variant; returns `(float_model, qat_model, metrics)` (no checkpoint written).

    `metrics` holds the validation accuracies (float and QAT) and the per-epoch history; the
    test split is not looked at. `resume` names the resume file (None: no resume file);
    `stop_after` (tests) raises `Interrupted` after that many epochs of this call. `T` is the
    number of time steps; `init_encoder` names a pre-trained encoder file (`pysim.pretrain`)
    loaded into the float model before the float stage; `tokens` 64 picks Fashion-MNIST's
    64-token shape (`fashion64_config`; the 28x32 images get their 2 zero rows a side in the
    model's input stage). `distill` trains against the float CNN teacher of `pysim.teacher` as
    well as the labels (default: on for `FASHION["distill"]`'s variants at 16 tokens from
    scratch, off otherwise).
    """
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}")
    hp = defaults(dataset)
    epochs = hp["epochs"] if epochs is None else epochs
    qat_epochs = hp["qat_epochs"] if qat_epochs is None else qat_epochs
    lr = hp["lr"][0] if lr is None else lr
    set_deterministic(seed)
    x_train, y_train, x_val, y_val = split or dataset_split(dataset, seed, data_dir)
    if train_limit is not None:
        x_train, y_train = x_train[:train_limit], y_train[:train_limit]
    x = torch.from_numpy(x_train.astype(np.float32))
    y = torch.from_numpy(np.array(y_train))
    generator = torch.Generator().manual_seed(seed)
    model = build_model(variant, model_shape(dataset, tokens), T=T)
    pretrained = None
    if init_encoder is not None:
        from pysim.pretrain import file_digest, load_encoder
        pretrained = {"path": str(init_encoder), "sha256": file_digest(init_encoder),
                      "meta": load_encoder(model, init_encoder)}
    if distill is None:  # the recipe's default: its variants, at the 16-token T-any shape
        distill = (variant in hp.get("distill", ()) and tokens == 16 and init_encoder is None)
    soft_targets = None
    if distill:
        from pysim import teacher as teacher_module
        if dataset != "fashion" or hp["shift"] or tokens != 16:
            raise ValueError("distillation needs the Fashion-MNIST 16-token shape with flips "
                             "only (the teacher's logits are cached per image and flip)")
        teacher = teacher_module.load_teacher()
        soft_targets = teacher_module.teacher_logits(teacher, x_train)
    if dataset == "digits":
        augment = _shifted
    else:
        def augment(images, gen, flips=None):
            return _shift_flip(images, gen, hp["shift"], flips)
    key = {"dataset": dataset, "variant": variant, "weight_bits": weight_bits, "seed": seed,
           "epochs": epochs, "qat_epochs": qat_epochs, "lr": lr, "batch": hp["batch"],
           "qat_lr": hp["qat_lr"], "train_limit": train_limit, "train_size": len(x),
           "shift": hp["shift"], "config": config_dict(model.config)}
    if T != 4:  # (only when set, so that the resume files of T=4 runs stay valid)
        key["T"] = T
    if tokens != 16:
        key["tokens"] = tokens
    if pretrained is not None:
        key["init_encoder"] = pretrained["sha256"]
    if soft_targets is not None:
        key["distill"] = {"teacher": teacher_module.state_digest(teacher),
                          "alpha": teacher_module.ALPHA, "tau": teacher_module.TAU}
    run = _Run(key, resume, progress, stop_after, (x_val, y_val))
    _stage(run, "float", model, x, y, epochs, lr, hp["batch"], generator, augment,
           f"{variant} float", {}, soft_targets)
    float_model = copy.deepcopy(model)
    model.quantize(weight_bits)
    _stage(run, "qat", model, x, y, qat_epochs, hp["qat_lr"], hp["batch"], generator, augment,
           f"{variant} qat", {"float_state": float_model.state_dict()}, soft_targets)
    metrics = {
        "lr": lr,
        "augment": ("shifts of up to 1 pixel" if dataset == "digits" else
                    f"left-right flips, shifts of up to {hp['shift']} pixels"),
        "val_float_accuracy": accuracy(float_model, x_val, y_val),
        "val_qat_accuracy": accuracy(model, x_val, y_val),
        "history": run.history,
    }
    if T != 4:
        metrics["T"] = T
    if tokens != 16:
        metrics["tokens"] = tokens
    if pretrained is not None:
        metrics["init_encoder"] = pretrained
    if soft_targets is not None:
        metrics["distill"] = dict(key["distill"])
    return float_model, model, metrics


def save_checkpoint(variant: str, float_model: SpikingTransformer, qat_model: SpikingTransformer,
                    meta: dict, directory: str | Path | None = None, name: str | None = None
                    ) -> dict:
    """Write `<name>.pt` (config, float and QAT state, meta) and the integer export; `name`
    is the variant unless given (`output_name`)."""
    paths = checkpoint_paths(name or variant, directory)
    paths["pt"].parent.mkdir(parents=True, exist_ok=True)
    torch.save({"variant": variant, "config": config_dict(float_model.config),
                "float_state": float_model.state_dict(), "qat_state": qat_model.state_dict(),
                "meta": meta}, paths["pt"])
    qat_model.export(meta=meta).save(paths["json"].with_suffix(""))
    return paths


def resume_path(dataset: str, variant: str, lr: float) -> Path:
    """Resume file of one run; `variant` is the output name (`output_name`)."""
    return RESUME_DIR / dataset / f"{variant}-lr{lr:g}.resume.pt"


def output_name(variant: str, T: int = 4, pretrained: bool = False,
                suffix: str | None = None, tokens: int = 16) -> str:
    """Checkpoint and resume name: `<variant><suffix>`; without a suffix `_pt` marks a
    pre-trained start, `_t<T>` a T other than 4 and `_n<tokens>` a token count other than 16
    (`spikformer_v2_pt_t1`, `spikformer_v2_pt_t1_n64`)."""
    if suffix is None:
        suffix = (("_pt" if pretrained else "") + (f"_t{T}" if T != 4 else "")
                  + (f"_n{tokens}" if tokens != 16 else ""))
    return variant + suffix


def train_and_select(variant: str, dataset: str, lrs, weight_bits: int, epochs, qat_epochs,
                     seed: int, progress: bool, data_dir=None, use_resume: bool = True,
                     T: int = 4, init_encoder: Path | None = None, name: str | None = None,
                     tokens: int = 16, distill: bool | None = None):
    """Train every learning rate of `lrs` and keep the best QAT validation accuracy."""
    split = dataset_split(dataset, seed, data_dir)
    best, candidates = None, {}
    for lr in lrs:
        path = resume_path(dataset, name or variant, lr) if use_resume else None
        result = train_variant(variant, weight_bits, epochs, qat_epochs, seed, progress,
                               dataset=dataset, lr=lr, resume=path, split=split, T=T,
                               init_encoder=init_encoder, tokens=tokens, distill=distill)
        candidates[f"{lr:g}"] = result[2]["val_qat_accuracy"]
        print(f"{name or variant} lr {lr:g}: validation float "
              f"{result[2]['val_float_accuracy']:.2%}, "
              f"QAT {result[2]['val_qat_accuracy']:.2%}", flush=True)
        if best is None or result[2]["val_qat_accuracy"] > best[2]["val_qat_accuracy"]:
            best = result
    best[2]["lr_candidates"] = candidates
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysim.train", description=__doc__.split(
        "\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", choices=VARIANTS, help="train one variant")
    which.add_argument("--all", action="store_true", help="train all five variants")
    parser.add_argument("--dataset", choices=DATASETS, default="digits")
    parser.add_argument("--weight-bits", type=int, default=8, help="signed weight bits, 2 .. 8")
    parser.add_argument("--epochs", type=int, default=None, help="float-stage epochs")
    parser.add_argument("--qat-epochs", type=int, default=None, help="QAT epochs")
    parser.add_argument("--lr", default=None,
                        help="float-stage learning rate(s), comma-separated; with several the "
                             "best on the validation split is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="checkpoint folder (default: checkpoints/ or checkpoints/<dataset>/)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the Fashion-MNIST IDX files (default: $FASHION_MNIST_DIR "
                             "or /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--fresh", action="store_true", help="ignore and overwrite resume files")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--T", type=int, default=4, help="time steps, 1 .. 16 (default 4)")
    parser.add_argument("--init-encoder", type=Path, default=None,
                        help="pre-trained encoder file (`python -m pysim.pretrain`) loaded into "
                             "the model before the float stage; needs --model")
    parser.add_argument("--tokens", type=int, choices=TOKENS, default=16,
                        help="Fashion-MNIST tokens: 16 (28x32 input, three pools) or 64 (32x32 "
                             "input, two pools: lane packing at T = 1; output name _n64)")
    parser.add_argument("--distill", action=argparse.BooleanOptionalAction, default=None,
                        help="Fashion-MNIST: train against the float CNN teacher of "
                             "`python -m pysim.teacher` as well as the labels (default: on for "
                             "spikformer, spikingformer, sdt and spikformer_iand)")
    parser.add_argument("--suffix", default=None,
                        help="output name suffix: <variant><suffix>.pt/.json/.npz (default: "
                             "'_pt' with --init-encoder, '_t<T>' when T != 4, '_n64' with "
                             "--tokens 64, else none)")
    args = parser.parse_args(argv)
    if not 2 <= args.weight_bits <= 8:
        parser.error(f"--weight-bits must be 2 .. 8, got {args.weight_bits}")
    if not 1 <= args.T <= 16:
        parser.error(f"--T must be 1 .. 16, got {args.T}")
    if args.tokens != 16 and args.dataset != "fashion":
        parser.error("--tokens 64 is a Fashion-MNIST shape (--dataset fashion)")
    if args.init_encoder is not None:
        if args.model is None:
            parser.error("--init-encoder needs --model (the encoder's variant)")
        if not args.init_encoder.exists():
            parser.error(f"--init-encoder: {args.init_encoder} does not exist; create it with "
                         "`make pretrain` (or `python -m pysim.pretrain`)")
    hp = defaults(args.dataset)
    lrs = hp["lr"] if args.lr is None else tuple(float(v) for v in args.lr.split(","))
    out = args.out or checkpoint_dir(args.dataset)
    x_test, y_test = dataset_test(args.dataset)
    for variant in VARIANTS if args.all else (args.model,):
        start = time.monotonic()
        name = output_name(variant, args.T, args.init_encoder is not None, args.suffix,
                           args.tokens)
        if args.fresh:
            for lr in lrs:
                resume_path(args.dataset, name, lr).unlink(missing_ok=True)
        float_model, qat_model, metrics = train_and_select(
            variant, args.dataset, lrs, args.weight_bits, args.epochs, args.qat_epochs,
            args.seed, not args.no_progress, args.data_dir, T=args.T,
            init_encoder=args.init_encoder, name=name, tokens=args.tokens,
            distill=args.distill)
        metrics["float_accuracy"] = accuracy(float_model, x_test, y_test)
        metrics["qat_accuracy"] = accuracy(qat_model, x_test, y_test)
        metrics["golden_accuracy"] = int_accuracy(qat_model.export(), x_test, y_test)
        minutes = (time.monotonic() - start) / 60
        meta = {"dataset": args.dataset, "seed": args.seed,
                "epochs": hp["epochs"] if args.epochs is None else args.epochs,
                "qat_epochs": hp["qat_epochs"] if args.qat_epochs is None else args.qat_epochs,
                "weight_bits": args.weight_bits, "batch": hp["batch"],
                "train_minutes_this_run": round(minutes, 1), **metrics}
        if name != variant:
            meta["name"] = name
        paths = save_checkpoint(variant, float_model, qat_model, meta, out, name=name)
        print(f"{name}: test float {metrics['float_accuracy']:.2%}, QAT "
              f"{metrics['qat_accuracy']:.2%}, integer {metrics['golden_accuracy']:.2%} "
              f"(lr {metrics['lr']:g}, {minutes:.1f} min) -> {paths['pt']}, {paths['json']}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
