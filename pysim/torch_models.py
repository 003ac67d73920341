"""The five spiking transformers in PyTorch, their quantization-aware form and the integer export.

Every model is a small graph of named nodes (`Node`) that mirrors the layers of the integer
export one to one: the float network, the quantization-aware (QAT) network and the exporter walk
the same list, so a layer name such as `block0.attn.q` means the same thing in a checkpoint, in
the export manifest, in the golden model's trace and in the hardware compiler's program.

Forward passes follow `../shared/reference/models.md` (tensors are `(T, B, C, H, W)`; linear
layers over tokens are 1x1 convolutions on the token grid, which is what Conv1d over tokens is):

- `spikformer`: SPS tokenizer (conv+BN+LIF, pooling, relative-position conv, SEW add), SSA
  (`q k^T v * 0.125`, neuron threshold 0.5), SEW residuals, mean-pool linear head.
- `spikformer_v2`: the same behind a Spiking Convolutional Stem (two conv+BN+LIF layers).
- `spikingformer`: membrane-shortcut (MS) residual stream; each branch begins with a LIF;
  projections and second MLP layers have no neuron; head neuron before the classifier.
- `sdt`: Spike-driven Transformer: SDSA (`sum_n k*v`, neuron 0.5, mask on q), MS residual, a
  relative-position conv added to the tokenizer's stream.
- `spikformer_iand`: Spikformer with every residual `x + f(x)` replaced by `(NOT f(x)) AND x`.

Quantization (`SpikingTransformer.quantize`) folds BatchNorm (running statistics) into the conv
weights and biases and fake-quantizes with a straight-through estimator, using exactly the scales
of the "Scales" section of `pysim/FORMAT.md`; `SpikingTransformer.export` then produces the
`IntModel` whose integers the fake-quantized network was computing with.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pysim import torch_int
from pysim.data import FASHION_PIXEL_BITS, check_images, fit_images
from pysim.golden import derive_tensor_specs
from pysim.intmodel import IntModel, Layer, TensorSpec

VARIANTS = ("spikformer", "spikformer_v2", "spikingformer", "sdt", "spikformer_iand")
#: Variants whose residual stream is a membrane shortcut (real-valued, `int` when exported).
MS_VARIANTS = ("spikingformer", "sdt")
SHAPES = ("digits", "fashion", "fashion64", "cifar10")

#: Largest per-channel weight scale (FORMAT.md, "Scales").
THETA_MAX = 4096
#: SSA: `q k^T v * 0.125` into a neuron of threshold 0.5 is a threshold of 4 on the raw count.
SSA_SCALE, SSA_THRESHOLD, SSA_THETA, SSA_SHIFT = 0.125, 0.5, 4, 0
#: SDSA: `sum_n k*v` into a neuron of threshold 0.5 is theta 1 with one shift bit.
SDSA_THRESHOLD, SDSA_THETA, SDSA_SHIFT = 0.5, 1, 1

DEFAULT_CHECKPOINTS = Path(__file__).resolve().parent.parent / "checkpoints"


# ---- configuration ------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelConfig:
    """Shape of one network. `digits_config` and `cifar_config` give the two shapes in use."""

    #: One of `VARIANTS`.
    variant: str
    #: Time steps; the image is repeated T times.
    T: int = 4
    #: Input channels, image height = width, and bits of an unsigned pixel.
    in_channels: int = 1
    image_size: int = 8
    pixel_bits: int = 5
    num_classes: int = 10
    #: Embedding dimension D (the tokenizer's last width), transformer blocks, attention heads.
    dim: int = 32
    blocks: int = 1
    heads: int = 2
    mlp_hidden: int = 64
    #: Widths of the Spiking Convolutional Stem (spikformer_v2 only), each conv3x3+BN+LIF.
    stem: tuple = ()
    #: Widths of the tokenizer's conv3x3 layers; the last one is `dim`.
    tokenizer: tuple = (8, 16, 32)
    #: Indices of tokenizer convs whose spikes are max-pooled (3x3, stride 2) afterwards.
    pool_after: tuple = (1,)
    #: Image width when it differs from the height `image_size` (0: square).
    image_width: int = 0
    #: Zero columns added on the left and on the right of narrower images by the input stage
    #: (`prepare`): images `2 * pad_width` columns narrower are accepted too (Fashion-MNIST:
    #: 28 -> 32 columns, so every grid width is a power of two).
    pad_width: int = 0
    #: Zero rows added above and below shorter images by the input stage, the same way
    #: (the 64-token Fashion-MNIST shape: 28 -> 32 rows, so every grid splits into lane bands).
    pad_height: int = 0

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown model variant {self.variant!r}; known: "
                             f"{', '.join(VARIANTS)}")
        if not 1 <= self.T <= 16:
            raise ValueError(f"T must be 1 .. 16, got {self.T}")
        if not self.tokenizer or self.tokenizer[-1] != self.dim:
            raise ValueError(f"the tokenizer's last width must equal dim={self.dim}")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads} must divide dim={self.dim}")
        last = len(self.tokenizer) - 1
        if self.variant in MS_VARIANTS and last in self.pool_after:
            raise ValueError("membrane-shortcut tokenizers pool spikes, so the last conv "
                             "(which writes the real-valued stream) cannot be pooled")
        if self.stem and self.variant != "spikformer_v2":
            raise ValueError("only spikformer_v2 has a convolutional stem")
        if not 0 <= 2 * self.pad_width < self.width:
            raise ValueError(f"pad_width={self.pad_width} leaves no image in {self.width} "
                             "columns")
        if not 0 <= 2 * self.pad_height < self.height:
            raise ValueError(f"pad_height={self.pad_height} leaves no image in {self.height} "
                             "rows")

    @property
    def height(self) -> int:
        return self.image_size

    @property
    def width(self) -> int:
        return self.image_width or self.image_size

    @property
    def tokens(self) -> int:
        h, w = self.height, self.width
        for _ in self.pool_after:
            h, w = (h + 1) // 2, (w + 1) // 2
        return h * w


def digits_config(variant: str, T: int = 4) -> ModelConfig:
    """The 8x8 digits shape: D=32, one block, 2 heads, MLP 64, 16 tokens."""
    stem, tokenizer = ((8, 8), (16, 32)) if variant == "spikformer_v2" else ((), (8, 16, 32))
    pool = (0,) if variant == "spikformer_v2" else (1,)
    return ModelConfig(variant=variant, T=T, stem=stem, tokenizer=tokenizer, pool_after=pool)


def fashion_config(variant: str, T: int = 4) -> ModelConfig:
    """Fashion-MNIST shape: 28x28 images plus 2 zero columns each side (28x32), 4-bit pixels.

    D = 32, one block, 2 heads, MLP 64; the tokenizer max-pools three times, 28x32 -> 14x16 ->
    7x8 -> 4x4 (16 tokens): convs 8 and 8 @ 28x32, conv 16 @ 14x16, conv 16 @ 7x8, conv 32 @
    4x4 (spikformer_v2: an 8-wide SCS conv, then convs 8, 16, 32 with the last one pooled).
    Two convs at full resolution before the first pool, as in Spikformer's SPS (whose first
    two convs are unpooled) and V2's SCS stem: a 3x3 conv on 4-bit pixels followed at once by
    a pool keeps little of the image (the one-conv stem trained to 84-86%).

    Why this shape, on the default array (hw/configs/default.json): a 3x3 conv needs a
    power-of-two grid width (28, 14, 7 are refused) while rows are free, so only the columns are
    padded: 896 instead of 784 positions in the first layers (+14% of their cycles and input
    words; nothing after the pools), and the 897-byte input (one header byte) fits the ECP5
    boards' 1,024-byte input slot, which a 32x32 pad (1,025 bytes) would not. The 8192-word
    weight memory holds about 32k weights, so D = 64 (about 90k weights) does not fit, and the
    16384-word activation memory refuses 56 tokens (7x8) at D = 32 (SSA temporaries) and the
    membrane-shortcut stream of 56 tokens, and a 16-wide second full-resolution conv: hence 16
    tokens and 8 + 8 channels at 28x32.
    """
    if variant == "spikformer_v2":
        stem, tokenizer, pools = (8,), (8, 16, 32), (0, 1, 2)
    else:
        stem, tokenizer, pools = (), (8, 8, 16, 16, 32), (1, 2, 3)
    return ModelConfig(variant=variant, T=T, in_channels=1, image_size=28, image_width=32,
                       pad_width=2, pixel_bits=FASHION_PIXEL_BITS, dim=32, blocks=1, heads=2,
                       mlp_hidden=64, stem=stem, tokenizer=tokenizer, pool_after=pools)


def fashion64_config(variant: str, T: int = 1) -> ModelConfig:
    """Fashion-MNIST with 64 tokens, the shape that lets T < lanes use the spare lanes.

    The 28x28 image gets 2 zero rows and 2 zero columns on each side (32x32) and the tokenizer
    pools twice, 32x32 -> 16x16 -> 8x8 (64 tokens); otherwise as `fashion_config` (D = 32,
    one block, 2 heads, MLP 64; spikformer_v2: an 8-wide SCS conv, then convs 8, 16, 32).

    Why: lane packing splits every grid into `pack` bands of whole rows, and a 3x3 conv's
    band must be a multiple of `pe_cols` positions. `fashion_config`'s 28-row image pools to
    7 rows and its 4x4 token grid is 16 positions, so nothing packs on the default array's 16
    columns; here every grid has a multiple of 8 rows and the 8x8 token grid splits into 4
    bands of 16 positions, so a T = 1 model runs 4 positions per word (`pack` = 4 on the
    default array and on the ECP5 boards' arrays). The input is 1,025 bytes with its header,
    so it needs a 2,048-byte input slot. At T = 4 the attention temporaries of 64 tokens do not
    fit the default array's activation memory: this shape is for T = 1 (and 2).
    """
    if variant == "spikformer_v2":
        stem, tokenizer, pools = (8,), (8, 16, 32), (0, 1)
    else:
        stem, tokenizer, pools = (), (8, 16, 16, 32), (0, 1)
    return ModelConfig(variant=variant, T=T, in_channels=1, image_size=32, image_width=32,
                       pad_width=2, pad_height=2, pixel_bits=FASHION_PIXEL_BITS, dim=32,
                       blocks=1, heads=2, mlp_hidden=64, stem=stem, tokenizer=tokenizer,
                       pool_after=pools)


def config_for(variant: str, shape: str = "digits", T: int = 4) -> ModelConfig:
    """The `ModelConfig` of `variant` for one of `SHAPES`."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")
    return {"digits": digits_config, "fashion": fashion_config, "fashion64": fashion64_config,
            "cifar10": cifar_config}[shape](variant, T)


def cifar_config(variant: str, T: int = 4) -> ModelConfig:
    """Published CIFAR-10 shapes (32x32x3, 64 tokens).

    Spikformer-4-384 (and the Spikformer-derived variants): 4 blocks, D=384, 12 heads, MLP 4D,
    SPS widening D/8 -> D/4 -> D/2 -> D with max-pools after the last two convs. Spike-driven
    2-512: 2 blocks, D=512, 8 heads. The MS tokenizers pool spikes ahead of the last two convs
    (the export has no max-pool on real values), which keeps the 8x8 token grid.
    """
    if variant == "sdt":
        dim, blocks, heads = 512, 2, 8
    else:
        dim, blocks, heads = 384, 4, 12
    widths = (dim // 8, dim // 4, dim // 2, dim)
    stem = ()
    pools = (1, 2) if variant in MS_VARIANTS else (2, 3)
    if variant == "spikformer_v2":
        stem, widths, pools = (dim // 8, dim // 8), widths[1:], (1, 2)
    return ModelConfig(variant=variant, T=T, in_channels=3, image_size=32, pixel_bits=8,
                       dim=dim, blocks=blocks, heads=heads, mlp_hidden=4 * dim, stem=stem,
                       tokenizer=widths, pool_after=pools)


# ---- the neuron ---------------------------------------------------------------------------------

class SigmoidSpike(torch.autograd.Function):
    """Heaviside step (fire on >= 0) forward, sigmoid surrogate gradient backward."""

    @staticmethod
    def forward(ctx, x, alpha):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        sig = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * sig * (1.0 - sig), None


class LIF(nn.Module):
    """Multi-step LIF neuron of models.md on `(T, B, ...)` inputs.

    tau = 2 with decay_input and v_reset = 0: `H = V + (X - V) / 2 = (V + X) / 2`; fires on
    `H >= threshold`; hard reset to 0. The reset is detached (`detach_reset=True`) and the step's
    gradient is the sigmoid surrogate with `alpha` (4 by default).
    """

    def __init__(self, threshold: float = 1.0, alpha: float = 4.0):
        super().__init__()
        self.threshold = threshold
        self.alpha = alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = torch.zeros_like(x[0])
        spikes = []
        for t in range(x.shape[0]):
            h = (v + x[t]) * 0.5
            s = SigmoidSpike.apply(h - self.threshold, self.alpha)
            v = h * (1.0 - s.detach())
            spikes.append(s)
        return torch.stack(spikes)

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, alpha={self.alpha}"


# ---- quantization (FORMAT.md, "Scales") ---------------------------------------------------------

def qmax_of(bits: int) -> int:
    if not 2 <= bits <= 16:
        raise ValueError(f"weight bits must be 2 .. 16, got {bits}")
    return (1 << (bits - 1)) - 1


def channel_theta(maxabs: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel integer scale `clip(floor(qmax / max|w|), 1, 4096)` (int64)."""
    ratio = qmax_of(bits) / maxabs.detach().double()
    ratio = torch.where(maxabs > 0, ratio, torch.full_like(ratio, THETA_MAX))
    return torch.floor(ratio).clamp(1, THETA_MAX).to(torch.int64)


def quantize_conv(weight: torch.Tensor, bias: torch.Tensor, theta: torch.Tensor, bits: int):
    """Integer weight `round(w * theta)` clipped to +-qmax and bias `round(b * theta)` (float64)."""
    qmax = qmax_of(bits)
    th = theta.double()
    w_int = torch.round(weight.detach().double() * th.view(-1, 1, 1, 1)).clamp(-qmax, qmax)
    b_int = torch.round(bias.detach().double() * th)
    return w_int, b_int


def quantize_head(weight: torch.Tensor, bias: torch.Tensor, count: int, bits: int):
    """Per-tensor head scale `s = max|w| / qmax`; returns `(W, B, s)` with `B = b * count / s`.

    `count` is T times the number of tokens: the integer head sums where the float head averages.
    """
    qmax = qmax_of(bits)
    w = weight.detach().double()
    maxabs = float(w.abs().max())
    scale = maxabs / qmax if maxabs > 0 else 1.0
    w_int = torch.round(w / scale).clamp(-qmax, qmax)
    b_int = torch.round(bias.detach().double() * count / scale)
    return w_int, b_int, scale


def _ste(x: torch.Tensor, quantized: torch.Tensor) -> torch.Tensor:
    """Forward the quantized value, backward the identity (straight-through estimator)."""
    return x + (quantized.to(x.dtype) - x).detach()


class ConvBN(nn.Module):
    """A bias-free conv (kernel 3 with padding 1, or 1) followed by BatchNorm.

    After `fold()` the BatchNorm's running statistics live in `weight` and `bias`; when `theta`
    (per output channel) and `bits` are set, the forward pass uses the fake-quantized weights
    `round(w * theta) / theta` and biases `round(b * theta) / theta`.
    """

    def __init__(self, cin: int, cout: int, kernel: int):
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.empty(cout, cin, kernel, kernel))
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)  # nn.Conv2d's default initialisation
        self.bias = nn.Parameter(torch.zeros(cout))  # used only once BatchNorm is folded
        self.bn = nn.BatchNorm2d(cout)
        self.register_buffer("folded", torch.tensor(False))
        self.theta: torch.Tensor | None = None
        self.bits = 0

    def fold(self) -> None:
        """Fold BatchNorm (running statistics) into `weight` and `bias`."""
        if bool(self.folded):
            return
        with torch.no_grad():
            gain = self.bn.weight / torch.sqrt(self.bn.running_var + self.bn.eps)
            self.weight.mul_(gain.view(-1, 1, 1, 1))
            self.bias.copy_(self.bn.bias - self.bn.running_mean * gain)
        self.folded.fill_(True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps, batch = x.shape[:2]
        y = x.flatten(0, 1)
        pad = self.kernel // 2
        if not bool(self.folded):
            y = self.bn(F.conv2d(y, self.weight, None, padding=pad))
        else:
            weight, bias = self.weight, self.bias
            if self.theta is not None:
                w_int, b_int = quantize_conv(weight, bias, self.theta, self.bits)
                th = self.theta.double()
                weight = _ste(weight, w_int / th.view(-1, 1, 1, 1))
                bias = _ste(bias, b_int / th)
            y = F.conv2d(y, weight, bias, padding=pad)
        return y.view(steps, batch, *y.shape[1:])


class Head(nn.Module):
    """Mean over T and tokens, then a linear classifier (per-tensor scale when quantized)."""

    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, classes)
        self.bits = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        count = x.shape[0] * x.shape[3] * x.shape[4]
        feature = x.mean(dim=(0, 3, 4))
        weight, bias = self.fc.weight, self.fc.bias
        if self.bits:
            w_int, b_int, scale = quantize_head(weight, bias, count, self.bits)
            weight = _ste(weight, w_int * scale)
            bias = _ste(bias, b_int * scale / count)
        return F.linear(feature, weight, bias)


# ---- the graph ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Node:
    """One layer of the network; the same record drives the float forward pass and the export."""

    name: str
    kind: str  #: conv, lif, maxpool, ssa, sdsa, sew_add, ms_add, iand, head
    inputs: tuple
    output: str
    neuron: bool = False  #: conv only: followed by a threshold-1 LIF
    kernel: int = 0
    heads: int = 0

    @property
    def key(self) -> str:
        """Module key (nn.ModuleDict keys cannot contain dots)."""
        return self.name.replace(".", "_")


class _Builder:
    def __init__(self, cfg: ModelConfig):
        self.cfg = cfg
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.shapes = {"image": (cfg.in_channels, cfg.height, cfg.width)}

    def _add(self, node: Node, shape) -> str:
        self.nodes.append(node)
        self.shapes[node.output] = shape
        return node.output

    def conv(self, name, x, cout, kernel, neuron, out):
        cin, h, w = self.shapes[x]
        node = Node(name, "conv", (x,), out, neuron=neuron, kernel=kernel)
        self.modules[node.key] = ConvBN(cin, cout, kernel)
        return self._add(node, (cout, h, w))

    def lif(self, name, x, out):
        return self._add(Node(name, "lif", (x,), out), self.shapes[x])

    def pool(self, name, x, out):
        c, h, w = self.shapes[x]
        return self._add(Node(name, "maxpool", (x,), out), (c, (h + 1) // 2, (w + 1) // 2))

    def attention(self, kind, name, q, k, v, out):
        return self._add(Node(name, kind, (q, k, v), out, heads=self.cfg.heads), self.shapes[q])

    def merge(self, kind, name, a, b, out):
        return self._add(Node(name, kind, (a, b), out), self.shapes[a])

    def head(self, x):
        node = Node("head", "head", (x,), "logits")
        self.modules[node.key] = Head(self.shapes[x][0], self.cfg.num_classes)
        self.nodes.append(node)
        return "logits"


def _tokenizer(b: _Builder, x: str, ms: bool) -> str:
    """Stem (spikformer_v2) and tokenizer convs; returns the tokenizer's feature tensor."""
    cfg = b.cfg
    for i, cout in enumerate(cfg.stem):
        x = b.conv(f"scs.conv{i}", x, cout, 3, True, f"scs.s{i}")
    last = len(cfg.tokenizer) - 1
    for i, cout in enumerate(cfg.tokenizer):
        if ms and i == last:
            return b.conv(f"sps.conv{i}", x, cout, 3, False, "sps.feat")
        x = b.conv(f"sps.conv{i}", x, cout, 3, True, f"sps.s{i}")
        if i in cfg.pool_after:
            x = b.pool(f"sps.pool{i}", x, f"sps.p{i}")
    return x


def _sew_residual(b: _Builder, name, shortcut, branch, out, iand: bool) -> str:
    if iand:
        return b.merge("iand", name, branch, shortcut, out)
    return b.merge("sew_add", name, shortcut, branch, out)


def _build_sew(b: _Builder, iand: bool) -> None:
    cfg = b.cfg
    feat = _tokenizer(b, "image", ms=False)
    rpe = b.conv("sps.rpe", feat, cfg.dim, 3, True, "sps.r")
    x = _sew_residual(b, "sps.res", feat, rpe, "sps.out", iand)
    for i in range(cfg.blocks):
        p = f"block{i}"
        q = b.conv(f"{p}.attn.q", x, cfg.dim, 1, True, f"{p}.attn.qs")
        k = b.conv(f"{p}.attn.k", x, cfg.dim, 1, True, f"{p}.attn.ks")
        v = b.conv(f"{p}.attn.v", x, cfg.dim, 1, True, f"{p}.attn.vs")
        y = b.attention("ssa", f"{p}.attn.ssa", q, k, v, f"{p}.attn.ys")
        a = b.conv(f"{p}.attn.proj", y, cfg.dim, 1, True, f"{p}.attn.out")
        x = _sew_residual(b, f"{p}.attn.res", x, a, f"{p}.x1", iand)
        h = b.conv(f"{p}.mlp.fc1", x, cfg.mlp_hidden, 1, True, f"{p}.mlp.hs")
        m = b.conv(f"{p}.mlp.fc2", h, cfg.dim, 1, True, f"{p}.mlp.out")
        x = _sew_residual(b, f"{p}.mlp.res", x, m, f"{p}.x2", iand)
    b.head(x)


def _build_ms(b: _Builder, attention: str) -> None:
    cfg = b.cfg
    stream = _tokenizer(b, "image", ms=True)
    if attention == "sdsa":  # SDT: x = x_feat + rpe_bn(rpe_conv(rpe_lif(x_feat)))
        s = b.lif("sps.rpe_lif", stream, "sps.rpe_in")
        r = b.conv("sps.rpe", s, cfg.dim, 3, False, "sps.r")
        stream = b.merge("ms_add", "sps.res", stream, r, "sps.out")
    for i in range(cfg.blocks):
        p = f"block{i}"
        s = b.lif(f"{p}.attn.lif", stream, f"{p}.attn.in")
        q = b.conv(f"{p}.attn.q", s, cfg.dim, 1, True, f"{p}.attn.qs")
        k = b.conv(f"{p}.attn.k", s, cfg.dim, 1, True, f"{p}.attn.ks")
        v = b.conv(f"{p}.attn.v", s, cfg.dim, 1, True, f"{p}.attn.vs")
        y = b.attention(attention, f"{p}.attn.{attention}", q, k, v, f"{p}.attn.ys")
        a = b.conv(f"{p}.attn.proj", y, cfg.dim, 1, False, f"{p}.attn.out")
        stream = b.merge("ms_add", f"{p}.attn.res", stream, a, f"{p}.x1")
        s = b.lif(f"{p}.mlp.lif", stream, f"{p}.mlp.in")
        h = b.conv(f"{p}.mlp.fc1", s, cfg.mlp_hidden, 1, True, f"{p}.mlp.hs")
        m = b.conv(f"{p}.mlp.fc2", h, cfg.dim, 1, False, f"{p}.mlp.out")
        stream = b.merge("ms_add", f"{p}.mlp.res", stream, m, f"{p}.x2")
    x = b.lif("head_lif", stream, "head.in")
    b.head(x)


class SpikingTransformer(nn.Module):
    """One of the five variants; float, QAT (after `quantize`) and export share one graph.

    `forward(images)` takes pixels `(B, H, W)` or `(B, C, H, W)` (raw values, no normalisation),
    repeats them over T and returns logits `(B, classes)`; `return_tensors=True` also returns
    every named tensor `(T, B, C, H, W)`.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        builder = _Builder(config)
        if config.variant in MS_VARIANTS:
            _build_ms(builder, "sdsa" if config.variant == "sdt" else "ssa")
        else:
            _build_sew(builder, iand=config.variant == "spikformer_iand")
        self.nodes = tuple(builder.nodes)
        self.shapes = builder.shapes
        self.units = nn.ModuleDict(builder.modules)
        #: Convs without a neuron write the membrane-shortcut stream and share its scale.
        self.stream_writers = tuple(n.key for n in self.nodes if n.kind == "conv" and not n.neuron)
        self.lif = LIF(1.0)
        self.ssa_lif = LIF(SSA_THRESHOLD)
        self.sdsa_lif = LIF(SDSA_THRESHOLD)
        self.register_buffer("weight_bits", torch.tensor(0))

    @property
    def variant(self) -> str:
        return self.config.variant

    @property
    def quantized(self) -> bool:
        return int(self.weight_bits) > 0

    def parameter_count(self) -> int:
        """Parameters of the deployed network: conv weights and (folded) biases, the head."""
        total = 0
        for module in self.units.values():
            if isinstance(module, ConvBN):
                total += module.weight.numel() + module.bias.numel()
            else:
                total += module.fc.weight.numel() + module.fc.bias.numel()
        return total

    # ---- quantization --------------------------------------------------------------------------

    def quantize(self, bits: int = 8) -> None:
        """Fold BatchNorm and switch to fake-quantized weights of `bits` bits (2 .. 8)."""
        if not 2 <= bits <= 8:
            raise ValueError(f"weight bits must be 2 .. 8, got {bits}")
        for module in self.units.values():
            if isinstance(module, ConvBN):
                module.fold()
        self.weight_bits.fill_(bits)
        self.refresh_scales()

    def refresh_scales(self) -> None:
        """Recompute every conv's theta from the current weights (FORMAT.md, "Scales")."""
        bits = int(self.weight_bits)
        with torch.no_grad():
            for module in self.units.values():
                if isinstance(module, ConvBN):
                    module.bits = bits
                    module.theta = channel_theta(module.weight.abs().amax(dim=(1, 2, 3)), bits)
                else:
                    module.bits = bits
            if self.stream_writers:
                maxabs = torch.stack([self.units[k].weight.abs().amax(dim=(1, 2, 3))
                                      for k in self.stream_writers]).amax(dim=0)
                theta = channel_theta(maxabs, bits)
                for key in self.stream_writers:
                    self.units[key].theta = theta

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        if self.quantized:
            self.refresh_scales()
        return result

    # ---- forward -------------------------------------------------------------------------------

    def prepare(self, images) -> torch.Tensor:
        """Validate pixels and repeat them over T: returns float `(T, B, C, H, W)`."""
        cfg = self.config
        if isinstance(images, torch.Tensor):
            images = images.detach().cpu().numpy()
        # Images without the input stage's zero rows / columns get them (`fit_images`).
        shape = np.shape(images)
        if (np.ndim(images) in (3, 4)
                and shape[-2] in (cfg.height, cfg.height - 2 * cfg.pad_height)
                and shape[-1] in (cfg.width, cfg.width - 2 * cfg.pad_width)):
            images = fit_images(images, (cfg.height, cfg.width))
        array = check_images(images, (cfg.height, cfg.width), cfg.in_channels,
                             (1 << cfg.pixel_bits) - 1)
        x = torch.from_numpy(array).float()
        return x.unsqueeze(0).expand(cfg.T, *x.shape)

    def forward(self, images, return_tensors: bool = False):
        if self.quantized:
            self.refresh_scales()
        env = {"image": self.prepare(images)}
        for node in self.nodes:
            env[node.output] = self._run(node, [env[name] for name in node.inputs])
        if return_tensors:
            return env["logits"], env
        return env["logits"]

    def _run(self, node: Node, ins: list) -> torch.Tensor:
        kind = node.kind
        if kind == "conv":
            y = self.units[node.key](ins[0])
            return self.lif(y) if node.neuron else y
        if kind == "lif":
            return self.lif(ins[0])
        if kind == "maxpool":
            x = ins[0]
            y = F.max_pool2d(x.flatten(0, 1), 3, 2, 1)
            return y.view(*x.shape[:2], *y.shape[1:])
        if kind == "ssa":
            q, k, v = ins
            steps, batch, channels, h, w = q.shape
            heads = node.heads

            def split(t):  # (T, B, heads, N, C / heads)
                return t.reshape(steps, batch, heads, channels // heads, h * w).transpose(-1, -2)

            attn = split(q) @ split(k).transpose(-1, -2) * SSA_SCALE
            y = (attn @ split(v)).transpose(-1, -2).reshape(q.shape)
            return self.ssa_lif(y)
        if kind == "sdsa":
            q, k, v = ins
            kv = (k * v).sum(dim=(3, 4), keepdim=True)
            return q * self.sdsa_lif(kv)
        if kind in ("sew_add", "ms_add"):
            return ins[0] + ins[1]
        if kind == "iand":
            branch, shortcut = ins
            return (1.0 - branch) * shortcut
        if kind == "head":
            return self.units[node.key](ins[0])
        raise ValueError(f"unknown node kind {kind!r}")

    def integer_forward(self, images, record: bool = True):
        """Integer mode: export the quantized model and run it with torch integer ops.

        Returns `(logits, trace)` exactly like `pysim.golden.run` (see `pysim.torch_int`).
        """
        return torch_int.run(self.export(), images, record=record)

    # ---- export --------------------------------------------------------------------------------

    def export(self, meta: dict | None = None) -> IntModel:
        """The integer model (FORMAT.md) of the quantized network.

        Conv+BN+LIF become one `conv` layer with a neuron whose per-channel threshold is the
        weight scale theta; convs that write a membrane-shortcut stream have no neuron and share
        the stream's theta, which every `lif` reading the stream uses as its threshold. Bit
        widths are worst cases from the integer weights: `|bias| + sum |w| * max input` for int
        tensors (summed through `ms_add`), the largest possible sum for SEW tensors; the golden
        model's `derive_tensor_specs` computes them, so the two cannot disagree.
        """
        if not self.quantized:
            raise ValueError("export needs a quantized model: call quantize(bits) first")
        self.refresh_scales()
        cfg = self.config
        bits = int(self.weight_bits)
        w_dtype = np.int8 if bits <= 8 else np.int16
        #: theta of every int (membrane-shortcut) tensor: the threshold of a lif reading it.
        scale: dict[str, np.ndarray] = {}
        layers = []

        def int32(array, what):
            array = np.asarray(array, dtype=np.int64)
            if array.size and (array.min() < -(2**31) or array.max() >= 2**31):
                raise ValueError(f"{what} does not fit 32 bits; lower the weight bits")
            return array.astype(np.int32)

        for node in self.nodes:
            params, arrays = {}, {}
            x = node.inputs[0]
            if node.kind == "conv":
                module = self.units[node.key]
                w_int, b_int = quantize_conv(module.weight, module.bias, module.theta, bits)
                params["kernel"] = node.kernel
                arrays["weight"] = w_int.numpy().astype(w_dtype)
                arrays["bias"] = int32(b_int.numpy(), f"{node.name}.bias")
                theta = module.theta.numpy().astype(np.int64)
                if node.neuron:
                    arrays["threshold"] = int32(theta, f"{node.name}.threshold")
                    params["threshold_shift"] = 0
                else:
                    scale[node.output] = theta
            elif node.kind == "lif":
                arrays["threshold"] = int32(scale[x], f"{node.name}.threshold")
                params["threshold_shift"] = 0
            elif node.kind in ("ssa", "sdsa"):
                theta, shift = ((SSA_THETA, SSA_SHIFT) if node.kind == "ssa"
                                else (SDSA_THETA, SDSA_SHIFT))
                arrays["threshold"] = np.full(self.shapes[x][0], theta, dtype=np.int32)
                params["threshold_shift"] = shift
                if node.kind == "ssa":
                    params["heads"] = node.heads
            elif node.kind == "ms_add":
                a, b = node.inputs
                if not np.array_equal(scale[a], scale[b]):
                    raise ValueError(f"{node.name}: stream and branch have different scales")
                scale[node.output] = scale[a]
            elif node.kind == "head":
                _, h, w = self.shapes[x]
                head = self.units[node.key]
                w_int, b_int, _ = quantize_head(head.fc.weight, head.fc.bias, cfg.T * h * w,
                                                bits)
                arrays["weight"] = w_int.numpy().astype(w_dtype)
                arrays["bias"] = int32(b_int.numpy(), "head.bias")
            layers.append(Layer(node.name, node.kind, tuple(node.inputs), node.output, params,
                                arrays))
        image = TensorSpec("uint", cfg.pixel_bits, self.shapes["image"])
        tensors = derive_tensor_specs("image", image, layers, cfg.T)
        return IntModel(model=cfg.variant, T=cfg.T, weight_bits=bits,
                        num_classes=cfg.num_classes, input="image", tensors=tensors,
                        layers=tuple(layers), meta=dict(meta or {}))


# ---- construction and checkpoints ---------------------------------------------------------------

def build_model(variant: str, shape: str = "digits", T: int = 4, seed: int | None = None
                ) -> SpikingTransformer:
    """A freshly initialised model of `variant` for `shape` ("digits", "fashion", "cifar10")."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)}")
    config = config_for(variant, shape, T)
    if seed is not None:
        torch.manual_seed(seed)
    return SpikingTransformer(config)


def cifar_int_model(variant: str = "spikformer", seed: int = 0, weight_bits: int = 8,
                    T: int = 4, calibration_images: int = 4) -> IntModel:
    """A random-weight IntModel of a published CIFAR-10 shape, for performance modelling.

    Weights are seeded; BatchNorm statistics are calibrated on `calibration_images` seeded
    random images so that neurons fire at realistic rates instead of all or never.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(variant, "cifar10", T=T)
        for module in model.units.values():
            if isinstance(module, ConvBN):
                module.bn.momentum = None  # cumulative average over the calibration batch
        images = torch.randint(0, 256, (calibration_images, 3, 32, 32), generator=generator)
        model.train()
        with torch.no_grad():
            model(images)
        model.eval()
        model.quantize(weight_bits)
    return model.export(meta={"seed": seed, "shape": "cifar10", "weights": "random"})


class CheckpointError(FileNotFoundError):
    """A checkpoint or export is missing; the message says how to create it."""


def checkpoint_paths(variant: str, directory: str | Path | None = None) -> dict:
    directory = Path(directory) if directory is not None else DEFAULT_CHECKPOINTS
    return {"pt": directory / f"{variant}.pt", "json": directory / f"{variant}.json",
            "npz": directory / f"{variant}.npz"}


def _missing(path: Path, variant: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {path} does not exist; create it with `make train` "
                           f"(or `python -m pysim.train --model {variant}`)")


def is_model_name(name: str) -> bool:
    """A variant, or a variant and the suffix `pysim.train` adds (`_pt`, `_t1`, `_n64`, ...)."""
    return any(name == v or name.startswith(v + "_") for v in VARIANTS)


def load_checkpoint(variant: str, directory: str | Path | None = None) -> dict:
    """The raw checkpoint dictionary of `variant` (see `pysim.train.save_checkpoint`)."""
    if not is_model_name(variant):
        raise ValueError(f"unknown model variant {variant!r}; known: {', '.join(VARIANTS)} "
                         f"and the names `pysim.train` gives their derivatives (a variant "
                         f"and a suffix such as _pt, _t1, _n64)")
    path = checkpoint_paths(variant, directory)["pt"]
    if not path.exists():
        raise _missing(path, variant)
    return torch.load(path, map_location="cpu", weights_only=True)


def _from_state(checkpoint: dict, state_key: str) -> SpikingTransformer:
    config = checkpoint["config"]
    config = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()})
    model = SpikingTransformer(config)
    state = checkpoint[state_key]
    if int(state["weight_bits"]):
        model.quantize(int(state["weight_bits"]))
    model.load_state_dict(state)
    model.eval()
    return model


def load_float_model(variant: str, directory: str | Path | None = None) -> SpikingTransformer:
    """The float model (stage 1: BatchNorm, no quantization) from the committed checkpoint."""
    return _from_state(load_checkpoint(variant, directory), "float_state")


def load_qat_model(variant: str, directory: str | Path | None = None) -> SpikingTransformer:
    """The quantization-aware model (folded, fake-quantized) from the committed checkpoint."""
    return _from_state(load_checkpoint(variant, directory), "qat_state")


def load_export(variant: str, directory: str | Path | None = None) -> IntModel:
    """The committed integer export of `variant`; a missing file says how to create it."""
    paths = checkpoint_paths(variant, directory)
    for key in ("json", "npz"):
        if not paths[key].exists():
            raise _missing(paths[key], variant)
    return IntModel.load(paths["json"])


def config_dict(config: ModelConfig) -> dict:
    return dataclasses.asdict(config)
