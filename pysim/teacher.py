"""A float CNN teacher for knowledge distillation of the Fashion-MNIST spiking models.

    python -m pysim.teacher                  # train it (minutes on one thread)
    python -m pysim.train --dataset fashion --model spikformer --distill   # use it

The spiking networks the default array holds (about 26k weights, 16 tokens) are trained from
one-hot labels by default. With `--distill`, `pysim.train` adds the teacher's softened class
probabilities to the loss (Hinton et al. 2015): loss = (1 - alpha) * CE(student, label)
+ alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau)). The teacher is an
ordinary ReLU CNN (`TeacherCNN`, 34k parameters, no spikes); it reads the same 4-bit 28x32
inputs as the students and never runs on the accelerator.

The teacher sees exactly the images the student sees: the Fashion-MNIST augmentation is a
random left-right flip only, so the teacher's logits for every training image, plain and
flipped, are computed once (`teacher_logits`) and looked up per batch. Training is seeded,
one thread and deterministic; the teacher is chosen on the validation split of `pysim.train`
(the same seeded 5,000 images) and the test split is only measured. The weights and their
metrics go to `checkpoints/fashion/teacher.pt`; the logits cache to `build/teacher/`.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
TEACHER_PATH = ROOT / "checkpoints" / "fashion" / "teacher.pt"
CACHE_DIR = ROOT / "build" / "teacher"

#: Teacher recipe: AdamW with a one-cycle schedule, batch 128, left-right flips, 10 epochs.
EPOCHS = 10
BATCH = 128
LR = 2e-3
WEIGHT_DECAY = 5e-4
PIXEL_MAX = 15.0  # 4-bit inputs (`pysim.torch_models.FASHION_PIXEL_BITS`)

#: Distillation defaults (`pysim.train --distill`): the weight of the teacher's term and the
#: softening temperature.
ALPHA = 0.7
TAU = 4.0


class TeacherCNN(nn.Module):
    """conv 16 @ 28x32, pool, conv 32 @ 14x16, pool, conv 64 @ 7x8, pool, linear 10:
    3x3 convs with BatchNorm and ReLU, dropout before the classifier (34k parameters, 2.2M
    multiply-accumulates per image)."""

    def __init__(self):
        super().__init__()
        layers, cin = [], 1
        for cout in (16, 32, 64):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.classifier = nn.Linear(64 * 4 * 4, 10)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(images).float().unsqueeze(1) / PIXEL_MAX
        x = self.features(x).flatten(1)
        return self.classifier(self.dropout(x))


def train_teacher(split, seed: int = 0, epochs: int = EPOCHS, progress: bool = True
                  ) -> tuple[TeacherCNN, dict]:
    """Train the teacher on `split` (`pysim.train.dataset_split`'s tuple); returns the model
    (eval mode) and its validation metrics."""
    from pysim.train import _shift_flip, accuracy, set_deterministic

    set_deterministic(seed)
    x_train, y_train, x_val, y_val = split
    x = torch.from_numpy(np.asarray(x_train, dtype=np.float32))
    y = torch.from_numpy(np.array(y_train, dtype=np.int64))
    generator = torch.Generator().manual_seed(seed)
    model = TeacherCNN()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    steps = epochs * ((len(x) + BATCH - 1) // BATCH)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, LR, total_steps=steps)
    history = []
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        bar = tqdm(range(0, len(x), BATCH), desc=f"teacher {epoch + 1}/{epochs}",
                   disable=not progress, leave=False, file=sys.stderr)
        for first in bar:
            index = order[first:first + BATCH]
            loss = F.cross_entropy(model(_shift_flip(x[index], generator, shift=0)), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        history.append({"epoch": epoch + 1, "val_accuracy": accuracy(model, x_val, y_val)})
        if progress:
            print(f"teacher epoch {epoch + 1}/{epochs}: validation "
                  f"{history[-1]['val_accuracy']:.2%}", file=sys.stderr, flush=True)
    model.eval()
    return model, {"seed": seed, "epochs": epochs, "batch": BATCH, "lr": LR,
                   "weight_decay": WEIGHT_DECAY, "val_accuracy": history[-1]["val_accuracy"],
                   "history": history}


def state_digest(model: nn.Module) -> str:
    """SHA-256 of the teacher's weights (the logits cache and the student's resume key name
    the exact teacher)."""
    buffer = io.BytesIO()
    for name, tensor in sorted(model.state_dict().items()):
        buffer.write(name.encode())
        buffer.write(tensor.detach().cpu().contiguous().numpy().tobytes())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def load_teacher(path: Path = TEACHER_PATH) -> TeacherCNN:
    """The committed teacher in eval mode; raises FileNotFoundError saying how to make it."""
    if not Path(path).exists():
        raise FileNotFoundError(f"{path} does not exist; train the teacher with "
                                "`python -m pysim.teacher`")
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = TeacherCNN()
    model.load_state_dict(saved["state"])
    model.eval()
    return model


def teacher_logits(model: TeacherCNN, x_train) -> torch.Tensor:
    """(N, 2, 10) teacher logits of every training image, plain ([:, 0]) and left-right
    flipped ([:, 1]); cached in `build/teacher/` under digests of the teacher's weights and of
    the images."""
    images = np.ascontiguousarray(x_train)
    key = (f"{state_digest(model)[:16]}-{hashlib.sha256(images.tobytes()).hexdigest()[:16]}"
           f"-n{len(images)}")
    path = CACHE_DIR / f"fashion-logits-{key}.pt"
    if path.exists():
        return torch.load(path, map_location="cpu")
    from pysim.train import predict_logits

    x = torch.from_numpy(images)
    logits = torch.stack([predict_logits(model, x, 1000), predict_logits(model, x.flip(-1), 1000)],
                         dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(logits, tmp)
    tmp.replace(path)
    return logits


def distill_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                 alpha: float = ALPHA, tau: float = TAU) -> torch.Tensor:
    """(1 - alpha) * cross-entropy + alpha * tau^2 * KL(teacher || student) at temperature
    tau (Hinton et al.'s scaling keeps the soft term's gradients comparable across tau)."""
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(F.log_softmax(student / tau, dim=1), F.log_softmax(teacher / tau, dim=1),
                    reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * tau * tau * soft


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysim.teacher",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the Fashion-MNIST IDX files (default: $FASHION_MNIST_DIR "
                             "or /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--out", type=Path, default=TEACHER_PATH)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from pysim.train import accuracy, dataset_split, dataset_test

    start = time.monotonic()
    split = dataset_split("fashion", args.seed, args.data_dir)
    model, meta = train_teacher(split, args.seed, args.epochs, not args.no_progress)
    x_test, y_test = dataset_test("fashion")
    meta["test_accuracy"] = accuracy(model, x_test, y_test)
    meta["parameters"] = sum(p.numel() for p in model.parameters())
    meta["train_minutes"] = round((time.monotonic() - start) / 60, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": model.state_dict(), "meta": meta}, args.out)
    print(f"teacher: validation {meta['val_accuracy']:.2%}, test {meta['test_accuracy']:.2%}, "
          f"{meta['parameters']:,} parameters, {meta['train_minutes']} min -> {args.out}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
