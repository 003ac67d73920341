"""Masked self-supervised pre-training of the spikformer_v2 encoder on Fashion-MNIST (no labels).

    python -m pysim.pretrain                               # the default recipe (`make pretrain`)
    python -m pysim.pretrain --epochs 20 --mask-ratio 0.75 --T 1
    options: --epochs N, --mask-ratio R, --T N (time steps), --batch B, --lr A, --seed S,
             --out PATH (encoder file), --data-dir DIR, --train-limit N, --fresh, --no-progress

Spikformer V2 pre-trains its encoder by masking and reconstruction in the style of MAE; this is
that recipe at the scale of the Fashion-MNIST model (28x32 padded images, 16 tokens):

- The image is cut into the token grid's patches (4x4 patches of 7x8 pixels: one patch per
  token). A seeded random `mask_ratio` of them (75% by default: 12 of 16) is masked per image.
- The spiking encoder (stem, tokenizer, relative-position conv, transformer blocks: everything of
  the classifier but the head) runs on the image with the masked patches set to zero. A dense
  conv stem cannot drop tokens the way a ViT encoder does (the paper's stem is convolutional
  too), so zeroing the masked pixels is how the masked patches are hidden: nothing of them
  reaches the encoder (tested).
- A light, non-spiking decoder (dropped after pre-training) averages the encoder's output over
  T, replaces the masked tokens by a learned mask token, adds a learned position embedding, runs
  one pre-norm transformer layer and predicts every patch's pixels.
- The loss is the mean squared error on the masked patches only, against per-patch normalized
  pixels (MAE's `norm_pix_loss`).
- AdamW (betas 0.9, 0.95; weight decay 0.05 on weights, none on biases, norms, embeddings),
  one warm-up epoch then a cosine learning rate; random left-right flips.

Pre-training uses the training split minus the seeded validation split of `pysim.train` (the
same 55,000 images the classifier trains on; validation and test images are never seen).
Deterministic: seeded, one thread, `torch.use_deterministic_algorithms(True)`; masks come from a
seeded generator whose state is part of the resume state. Resumable: after every epoch the whole
state goes to `build/pretrain/fashion/<name>.resume.pt`; running the same command again
continues from the last finished epoch and gives the same weights as an uninterrupted run.

The result is an encoder file (`checkpoints/fashion/pretrained/spikformer_v2-encoder.pt`, or
`spikformer_v2_t1-encoder.pt` for `--T 1`) holding the encoder's state dict and the recipe;
`python -m pysim.train --dataset fashion --model spikformer_v2 --init-encoder <file>` loads it
into the classifier before the float stage and fine-tunes with labels, then QAT and export.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from pysim.data import fit_images
from pysim.torch_models import (
    DEFAULT_CHECKPOINTS,
    ModelConfig,
    SpikingTransformer,
    config_dict,
    config_for,
)

ROOT = Path(__file__).resolve().parent.parent
RESUME_DIR = ROOT / "build" / "pretrain"
VARIANT = "spikformer_v2"
DATASET = "fashion"

#: The default recipe (`make pretrain`).
DEFAULTS = {"epochs": 10, "batch": 64, "lr": 1e-3, "weight_decay": 0.05, "mask_ratio": 0.75,
            "warmup_epochs": 1, "decoder_dim": 64, "decoder_heads": 4}
#: Added to a patch's variance before normalizing it (MAE's value).
NORM_EPS = 1e-6
#: State-dict keys of the classifier that are not part of the encoder.
HEAD_PREFIX = "units.head."


def encoder_name(T: int = 4, tokens: int = 16) -> str:
    """Output name of a pre-trained encoder: `spikformer_v2`, `spikformer_v2_t<T>`, with
    `_n64` for the 64-token shape (`spikformer_v2_t1_n64`)."""
    return (VARIANT + (f"_t{T}" if T != 4 else "") + (f"_n{tokens}" if tokens != 16 else ""))


def default_encoder_path(T: int = 4, tokens: int = 16) -> Path:
    return (DEFAULT_CHECKPOINTS / DATASET / "pretrained"
            / f"{encoder_name(T, tokens)}-encoder.pt")


# ---- patches and masks --------------------------------------------------------------------------

def token_grid(config: ModelConfig) -> tuple[int, int]:
    """Rows and columns of the encoder's token grid (after the tokenizer's pools)."""
    h, w = config.height, config.width
    for _ in config.pool_after:
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def patch_shape(config: ModelConfig) -> tuple[int, int]:
    """Pixels (rows, columns) of one patch: the image cut into the token grid."""
    gh, gw = token_grid(config)
    if config.height % gh or config.width % gw:
        raise ValueError(f"a {config.height}x{config.width} image does not split into the "
                         f"{gh}x{gw} token grid")
    return config.height // gh, config.width // gw


def make_masks(batch: int, patches: int, ratio: float, generator: torch.Generator
               ) -> torch.Tensor:
    """Boolean masks `(batch, patches)`, True = masked: `round(ratio * patches)` random patches
    per image (MAE's argsort of uniform noise), drawn from `generator` only."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must lie strictly between 0 and 1, got {ratio}")
    count = min(max(int(round(ratio * patches)), 1), patches - 1)
    noise = torch.rand(batch, patches, generator=generator)
    rank = noise.argsort(dim=1).argsort(dim=1)
    return rank < count


def patchify(images: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """(B, H, W) -> (B, patches, pixels per patch), patches in token order (row-major)."""
    gh, gw = token_grid(config)
    ph, pw = patch_shape(config)
    b = images.shape[0]
    return images.reshape(b, gh, ph, gw, pw).permute(0, 1, 3, 2, 4).reshape(b, gh * gw, ph * pw)


def pixel_mask(mask: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Patch masks (B, patches) -> pixel masks (B, H, W) of the same dtype."""
    gh, gw = token_grid(config)
    ph, pw = patch_shape(config)
    b = mask.shape[0]
    grid = mask.reshape(b, gh, 1, gw, 1).expand(b, gh, ph, gw, pw)
    return grid.reshape(b, gh * ph, gw * pw)


def hide(images: torch.Tensor, mask: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """The encoder's input: the masked patches' pixels set to zero (still valid pixels)."""
    return images * (~pixel_mask(mask, config)).to(images.dtype)


def normalized_targets(images: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """Per-patch normalized pixels (MAE's `norm_pix_loss`): zero mean, unit variance."""
    patches = patchify(images.float(), config)
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + NORM_EPS).sqrt()


def masked_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the masked patches only (visible ones do not count)."""
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    weight = mask.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum()


# ---- the model ----------------------------------------------------------------------------------

class MaskedAutoencoder(nn.Module):
    """The spiking classifier's encoder plus a light non-spiking reconstruction decoder.

    `encoder` is a whole `SpikingTransformer` (so its state dict has the classifier's keys); its
    head is computed but unused. `encoder_state()` is what fine-tuning loads.
    """

    def __init__(self, config: ModelConfig, decoder_dim: int = DEFAULTS["decoder_dim"],
                 decoder_heads: int = DEFAULTS["decoder_heads"]):
        super().__init__()
        if config.variant in ("spikingformer", "sdt"):
            raise ValueError("masked pre-training is for the SEW (spike-stream) variants")
        self.config = config
        self.encoder = SpikingTransformer(config)
        self.feature = self.encoder.nodes[-1].inputs[0]  # the head's input: the last stream
        self.patches = config.tokens
        ph, pw = patch_shape(config)
        self.embed = nn.Linear(config.dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.pos = nn.Parameter(torch.zeros(1, self.patches, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        self.block = nn.TransformerEncoderLayer(decoder_dim, decoder_heads, 2 * decoder_dim,
                                                dropout=0.0, batch_first=True, norm_first=True)
        self.norm = nn.LayerNorm(decoder_dim)
        self.pred = nn.Linear(decoder_dim, ph * pw)

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token features `(B, patches, D)`: the encoder's output stream averaged over T, run
        on the images with the masked patches zeroed."""
        _, env = self.encoder(hide(images, mask, self.config), return_tensors=True)
        feat = env[self.feature].mean(dim=0)  # (B, D, gh, gw)
        return feat.flatten(2).transpose(1, 2)

    def forward(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predicted (normalized) pixels of every patch, `(B, patches, pixels per patch)`."""
        tokens = self.embed(self.encode(images, mask))
        tokens = torch.where(mask.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        tokens = self.block(tokens + self.pos)
        return self.pred(self.norm(tokens))

    def loss(self, images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return masked_loss(self(images, mask), normalized_targets(images, self.config), mask)

    def encoder_state(self) -> dict:
        """The encoder's weights and BatchNorm statistics under the classifier's keys."""
        return {k: v.detach().clone() for k, v in self.encoder.state_dict().items()
                if not k.startswith(HEAD_PREFIX)}


# ---- encoder files ------------------------------------------------------------------------------

def save_encoder(model: MaskedAutoencoder, path: Path, meta: dict) -> Path:
    """Write the encoder file: variant, config, encoder state dict, recipe and loss history."""
    from pysim.train import _save_atomic
    _save_atomic({"variant": model.config.variant, "config": config_dict(model.config),
                  "encoder_state": model.encoder_state(), "meta": dict(meta)}, Path(path))
    return Path(path)


def file_digest(path: Path) -> str:
    """SHA-256 of a file (the fine-tuning resume key names the exact encoder it started from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_encoder(model: SpikingTransformer, path: Path) -> dict:
    """Load a pre-trained encoder file into a float classifier; returns the file's meta.

    The variant and every shape field must match (T may differ: the weights do not depend on
    it); the classifier's head stays as initialised. Raises ValueError naming the mismatch.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"encoder file {path} does not exist; create it with "
                                "`make pretrain` (or `python -m pysim.pretrain`)")
    if model.quantized:
        raise ValueError("load the encoder into the float model, before quantize()")
    saved = torch.load(path, map_location="cpu", weights_only=True)
    if saved.get("variant") != model.variant:
        raise ValueError(f"{path} holds a {saved.get('variant')!r} encoder, the model is "
                         f"{model.variant!r}")
    mine = config_dict(model.config)
    theirs = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items()}
    # A field added to ModelConfig after the file was written has its default there.
    defaults = {f.name: f.default for f in dataclasses.fields(model.config)}
    differ = [k for k in mine if k != "T" and mine[k] != theirs.get(k, defaults[k])]
    if differ:
        raise ValueError(f"{path}: the encoder's shape differs from the model's in "
                         f"{', '.join(differ)}")
    state = saved["encoder_state"]
    own = model.state_dict()
    wrong = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: tensor shapes differ for {', '.join(wrong)}")
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(HEAD_PREFIX)]
    if missing or result.unexpected_keys:
        raise ValueError(f"{path}: missing {missing}, unexpected {list(result.unexpected_keys)}")
    return dict(saved.get("meta", {}))


# ---- training -----------------------------------------------------------------------------------

def _optimizer(model: MaskedAutoencoder, lr: float, weight_decay: float):
    """AdamW; no weight decay on biases, BatchNorm/LayerNorm, the mask token and positions."""
    decay, rest = [], []
    for name, param in model.named_parameters():
        plain = param.ndim < 2 or name in ("mask_token", "pos")
        (rest if plain else decay).append(param)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95))


def _schedule(optimizer, warmup: int, total: int):
    """Linear warm-up over `warmup` steps, then cosine to zero at `total` steps."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(total - warmup, 1)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def training_images(seed: int = 0, data_dir=None) -> np.ndarray:
    """The Fashion training images minus `pysim.train`'s validation split, as network inputs
    (uint8, (55000, 28, 32)); the labels are dropped."""
    from pysim.train import dataset_split
    return dataset_split(DATASET, seed, data_dir)[0]


def resume_path(T: int, mask_ratio: float, tokens: int = 16) -> Path:
    return RESUME_DIR / DATASET / f"{encoder_name(T, tokens)}-m{mask_ratio:g}.resume.pt"


def pretrain(T: int = 4, epochs: int | None = None, mask_ratio: float | None = None,
             seed: int = 0, batch: int | None = None, lr: float | None = None,
             images: np.ndarray | None = None, data_dir=None, train_limit: int | None = None,
             resume: Path | None = None, stop_after: int | None = None, progress: bool = True,
             steps: int | None = None, tokens: int = 16):
    """Pre-train; returns `(model, history)` with one `{"epoch", "loss"}` record per epoch.

    `images` (uint8 network inputs, (N, 28, 32)) replaces the Fashion training split (tests);
    `steps` (tests) cuts every epoch after that many batches; `resume` names the resume file
    (None: none); `stop_after` raises `pysim.train.Interrupted` after that many epochs;
    `tokens` 64 pre-trains the 64-token shape (32x32 input, 64 patches of 4x4 pixels).
    """
    from pysim.train import Interrupted, _save_atomic, _shift_flip, model_shape, set_deterministic
    epochs = DEFAULTS["epochs"] if epochs is None else epochs
    mask_ratio = DEFAULTS["mask_ratio"] if mask_ratio is None else mask_ratio
    batch = DEFAULTS["batch"] if batch is None else batch
    lr = DEFAULTS["lr"] if lr is None else lr
    set_deterministic(seed)
    x_np = training_images(seed, data_dir) if images is None else np.asarray(images)
    if train_limit is not None:
        x_np = x_np[:train_limit]
    config = config_for(VARIANT, model_shape(DATASET, tokens), T)
    # Patches and masks live on the model's input grid (the 64-token shape's is 32x32).
    x_np = fit_images(x_np, (config.height, config.width))
    x = torch.from_numpy(x_np.astype(np.float32))
    model = MaskedAutoencoder(config)
    generator = torch.Generator().manual_seed(seed)
    per_epoch = (len(x) + batch - 1) // batch
    if steps is not None:
        per_epoch = min(per_epoch, steps)
    optimizer = _optimizer(model, lr, DEFAULTS["weight_decay"])
    scheduler = _schedule(optimizer, DEFAULTS["warmup_epochs"] * per_epoch, epochs * per_epoch)
    key = {"variant": VARIANT, "dataset": DATASET, "T": T, "epochs": epochs,
           "mask_ratio": mask_ratio, "seed": seed, "batch": batch, "lr": lr,
           "train_size": len(x), "steps": steps, "recipe": dict(DEFAULTS)}
    if tokens != 16:  # (only when set, so that the resume files of 16-token runs stay valid)
        key["tokens"] = tokens
    start, history = 0, []
    if resume is not None and Path(resume).exists():
        state = torch.load(resume, map_location="cpu", weights_only=False)
        if state.get("key") == key:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generator.set_state(state["generator"])
            start, history = state["epoch"], list(state["history"])
    done_this_run = 0
    model.train()
    for epoch in range(start, epochs):
        order = torch.randperm(len(x), generator=generator)
        bar = tqdm(total=per_epoch, desc=f"pretrain {epoch + 1}/{epochs}",
                   disable=not progress, leave=False, file=sys.stderr)
        total, count = 0.0, 0
        for first in range(0, per_epoch * batch, batch):
            index = order[first:first + batch]
            if not len(index):
                break
            imgs = _shift_flip(x[index], generator, 0)
            mask = make_masks(len(index), model.patches, mask_ratio, generator)
            loss = model.loss(imgs, mask)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(index)
            count += len(index)
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.close()
        history.append({"epoch": epoch + 1, "loss": total / max(count, 1)})
        if progress:
            print(f"pretrain epoch {epoch + 1}/{epochs}: masked-patch loss "
                  f"{history[-1]['loss']:.4f}", file=sys.stderr, flush=True)
        if resume is not None:
            _save_atomic({"key": key, "epoch": epoch + 1, "model": model.state_dict(),
                          "optimizer": optimizer.state_dict(),
                          "scheduler": scheduler.state_dict(),
                          "generator": generator.get_state(), "history": history},
                         Path(resume))
        done_this_run += 1
        if stop_after is not None and done_this_run >= stop_after:
            raise Interrupted(f"stopped after {done_this_run} epochs")
    model.eval()
    return model, history


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pysim.pretrain",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"])
    parser.add_argument("--mask-ratio", type=float, default=DEFAULTS["mask_ratio"],
                        help="fraction of the patches masked per image (default 0.75)")
    parser.add_argument("--T", type=int, default=4, help="time steps (1 .. 16)")
    parser.add_argument("--tokens", type=int, choices=(16, 64), default=16,
                        help="16 (28x32 input) or 64 (32x32 input, two pools; output name "
                             "_n64)")
    parser.add_argument("--batch", type=int, default=DEFAULTS["batch"])
    parser.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None,
                        help="encoder file (default checkpoints/fashion/pretrained/"
                             "spikformer_v2[_t<T>]-encoder.pt)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="folder of the Fashion-MNIST IDX files")
    parser.add_argument("--train-limit", type=int, default=None,
                        help="use only the first N training images (timing, smoke runs)")
    parser.add_argument("--fresh", action="store_true", help="ignore and overwrite the resume file")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if not 0.0 < args.mask_ratio < 1.0:
        parser.error(f"--mask-ratio must lie strictly between 0 and 1, got {args.mask_ratio}")
    if not 1 <= args.T <= 16:
        parser.error(f"--T must be 1 .. 16, got {args.T}")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    out = args.out or default_encoder_path(args.T, args.tokens)
    path = resume_path(args.T, args.mask_ratio, args.tokens)
    if args.train_limit is not None:
        path = path.with_name(path.name.replace(".resume", f"-n{args.train_limit}.resume"))
    if args.fresh:
        path.unlink(missing_ok=True)
    begin = time.monotonic()
    model, history = pretrain(args.T, args.epochs, args.mask_ratio, args.seed, args.batch,
                              args.lr, data_dir=args.data_dir, train_limit=args.train_limit,
                              resume=path, progress=not args.no_progress, tokens=args.tokens)
    minutes = (time.monotonic() - begin) / 60
    meta = {"dataset": DATASET, "T": args.T, "tokens": args.tokens, "epochs": args.epochs,
            "mask_ratio": args.mask_ratio, "batch": args.batch, "lr": args.lr,
            "seed": args.seed, "train_limit": args.train_limit, "recipe": dict(DEFAULTS),
            "history": history, "pretrain_minutes_this_run": round(minutes, 1)}
    save_encoder(model, out, meta)
    print(f"pretrained {encoder_name(args.T, args.tokens)} encoder: masked-patch loss "
          f"{history[0]['loss']:.4f} -> {history[-1]['loss']:.4f} over {args.epochs} epochs "
          f"({minutes:.1f} min this run) -> {out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
