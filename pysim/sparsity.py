"""How much of the array's work is on zeros: the measurement behind spike-driven execution.

    python -m pysim.sparsity [--dataset digits|fashion] [--images N] [--out report.json]
                                                          # `make sparsity`: both data sets

For every committed variant, on the first N test images (digits 120, Fashion-MNIST 500), and
for arrays of 4, 8 and 16 PE columns (the default `ArrayConfig` with `pe_cols` changed and
`act_depth` scaled to keep the activation words; 16 is the default array itself), it measures
the work a design could skip, at three granularities:

- **bits**: the density of each array layer's input (spikes; multi-bit inputs per bit-plane),
  and the share of *zero words*, (channel, position[, plane]) words whose T time-step lanes are
  all zero, from the golden model's trace (`pysim.golden.run`);
- **reduction steps**: a step is one cycle of a tile: one input channel (or a pair of
  bit-planes) x one kernel tap, read as a run of `pe_cols` words (one per PE column) and
  broadcast to the `pe_rows` rows. It adds nothing when every word of its run is zero (after
  the padding and edge masks), or, where rows read a run of their own (attention `q k^T`, the
  transposes, `A v`), when either run is zero. The steps and tiles are the compiler's
  (`hw.compiler.compile_network`): each array pass's descriptor and reduction micro-program are
  executed by `pysim.hwref.Executor` (checked against the golden model on every traced
  tensor), and before each pass the words its steps will read are looked up in the executor's
  activation memory, with the same addresses, masks and edge reads as the sequencer;
- **cycles**: the cycle model (`pysim.cycles`) gives each pass's dense cycles; the same timing
  with each tile's step count replaced by the steps a scheme keeps (at least one: the tile
  still restarts its accumulators and drains) gives the cycles of:
  - *step skipping*: a sequencer that issues only steps whose operands are not all zero;
  - *bitmap step skipping*: the same with one nonzero bit per aligned block of `pe_cols` words
    (what a drain can write as it stores a row): a run that straddles two blocks is skipped
    only when both are zero, and steps whose columns all fall on padding are dropped statically;
  - *bitmap, 4 steps per cycle*: the same bitmap read for four steps at a time, so a tile
    takes at least a quarter of its dense steps;
  - *dual read*: no bitmap; the operand fetch reads the next two steps' runs per cycle through
    its two ports (the row port idles in passes without paired steps or row runs) and issues
    the first nonzero one, so a tile takes at least half its dense steps (other passes stay
    dense);
  - *word skipping per column*: each PE column skips its own zero words, the tile lasting as
    long as its busiest column (columns would need their own weight reads: an upper bound).

Every tile's drain stays, so a tile whose steps all vanish still costs its drain; `ideal`
figures (dense cycles minus skipped steps) ignore that and bound the saving from above.

The report (`build/sparsity/report.json`; Fashion-MNIST: `build/sparsity/fashion/report.json`)
holds every pass of every variant on every array; the printed table shows the zero-step
fraction per layer and the cycles saved.
Deterministic: the first N images of the fixed test split, no randomness.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import cli, cycles, data, golden, hwref
from pysim.intmodel import IntModel, TensorSpec

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "hw/configs/default.json"
#: The variants, in the README's order.
VARIANTS = ("spikformer", "spikformer_v2", "spikingformer", "sdt", "spikformer_iand")
DATASETS = {"digits": (cli.CHECKPOINTS, 120), "fashion": (cli.CHECKPOINTS / "fashion", 500)}
#: PE columns of the arrays measured (the default array's rows, lanes and memories).
COLUMNS = (4, 8, 16)
#: Images per executor batch (bounds the memory of the trace and the step tables).
BATCH = 100
#: What each pass of an attention layer computes, in the compiler's order (`layer_ssa`,
#: `layer_sdsa`); an SSA layer has one `q k^T` pass per lane-group rotation.
SCHEME_LABELS = {"step": "step skip", "bitmap": "bitmap", "bitmap4": "bitmap/4",
                 "dual_read": "dual read", "word": "per column"}
SSA_ROLES = ("v^T", "q k^T", "A v")
SDSA_ROLES = ("k AND v", "(k AND v)^T", "gate", "q AND gate")


def array_configs(columns=COLUMNS, base: ArrayConfig | None = None) -> list[ArrayConfig]:
    """The arrays measured: `base` (default: hw/configs/default.json) with `pe_cols` changed,
    `act_depth` scaled to keep the activation words (so what fits one fits all); the base
    itself where the columns are its own."""
    base = ArrayConfig.load(DEFAULT_CONFIG) if base is None else base
    words = base.act_depth * base.pe_cols
    out = []
    for c in columns:
        if c == base.pe_cols:
            out.append(base)
        else:
            out.append(base.replace(name=f"{base.name}_cols{c}", pe_cols=c,
                                    act_depth=max(64, words // c)))
    return out


def planes_of(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A (B, T, C, H, W) tensor as (B, planes, T, C, H, W) bit-planes, the way the array
    reads it: 1 plane for spikes, `bits` for uint, two's complement planes for int."""
    x = np.asarray(x, np.int64)
    n = 1 if spec.kind == "spike" else spec.bits
    return np.stack([(x >> b) & 1 for b in range(n)], axis=1)


def tensor_stats(x: np.ndarray, spec: TensorSpec) -> dict:
    """Bit density and zero words of one tensor (a word: the T lanes of one plane, channel and
    position), over all images."""
    bits = planes_of(x, spec)
    zero_words = ~bits.any(axis=2)
    return {"kind": spec.kind, "bits": spec.bits, "density": float(bits.mean()),
            "zero_word_fraction": float(zero_words.mean()), "words_per_image":
            int(zero_words[0].size)}


@dataclass
class PassActivity:
    """What the steps of one array pass read, per image and tile (tiles in the sequencer's
    order: group > row group > column tile)."""

    #: Steps (x taps) per tile: the dense count the cycle model issues.
    steps_per_tile: int
    #: (B, tiles) steps whose operands are not all zero (the rest add nothing).
    nonzero_steps: np.ndarray
    #: (B, tiles) steps a one-bit-per-aligned-block bitmap cannot prove zero.
    bitmap_steps: np.ndarray
    #: (B, tiles) nonzero words of the tile's busiest PE column.
    busiest_column: np.ndarray
    #: (B,) nonzero operand words over all tiles, steps and PE columns in use.
    nonzero_words: np.ndarray
    #: operand words read per image (PE columns in use x steps x tiles).
    words: int


def pass_activity(mem: np.ndarray, d: dict, steps: np.ndarray, config: ArrayConfig, T: int,
                  pack: int) -> PassActivity:
    """The operands of an array pass (descriptor `d`, decoded step table `steps`) in the
    activation memories `mem` (B, words), read as `pysim.hwref.Executor.array` reads them: the
    same run addresses, taps, padding masks, edge reads and used lanes. A ROW_RUN pass's rows
    read a run of `pe_rows` words (rows past `d["rows"]` are not drained and do not count)."""
    R, C, L = config.pe_rows, config.pe_cols, config.lanes
    size = mem.shape[1]
    used, _ = hwref.lane_masks(T, pack, L)
    mem = mem & used
    blocks = mem.reshape(len(mem), size // C, C).any(axis=2)  # the drain's nonzero bitmap
    st = steps[d["step_base"]:d["step_base"] + d["steps"]]
    taps, W = d["taps"], d["width"]
    ky, kx = (np.divmod(np.arange(9), 3) if taps == 9 else (np.ones(1, int), np.ones(1, int)))
    col_off = np.repeat(st[:, 0], taps)
    row_off = np.repeat(st[:, 1] & ((1 << isa.ROT_SHIFT) - 1), taps)
    pair = np.repeat(st[:, 5], taps).astype(bool) & (d["row_mode"] == isa.ROW_ONES)
    ky, kx = np.tile(ky, len(st)), np.tile(kx, len(st))
    tap = (ky - 1) * W + (kx - 1)
    K = len(col_off)

    def run(start, mask, pos):
        """(words (B, K, C) as the columns see them, bitmap (B, K): a touched block is set)."""
        addr = start[:, None] + tap[:, None] + np.arange(C)[None, :]
        up = dn = np.zeros(addr.shape, bool)
        if d["pad"]:
            up = (ky[:, None] == 0) & (pos[None, :] < W)
            dn = (ky[:, None] == 2) & (pos[None, :] >= d["lastrow"])
        addr = addr + d["band"] * (up.astype(int) - dn)
        words = mem[:, addr % size]
        words = np.where(up, words << T, np.where(dn, words >> T, words))
        words = np.where(mask, words, 0) & used
        # With one lane group the rows above and below the grid shift out whole: those
        # columns are padding, known to the compiler, not a bitmap lookup.
        live = mask & ~((up | dn) & (pack == 1))
        touched = blocks[:, (addr // C) % blocks.shape[1]] & live
        return words, touched.any(axis=2)

    nonzero, bitmap, busiest, words_nz = [], [], [], 0
    words = 0
    B = len(mem)
    for g in range(d["groups"]):
        for rgl in range(d["rgs"]):
            rows_ok = rgl * R + np.arange(R) < d["rows"]
            for ct in range(d["cts"]):
                col_t = d["col_base"] + g * d["col_g"] + rgl * d["col_rg"] + ct * d["col_ct"]
                row_t = d["row_base"] + g * d["row_g"] + rgl * d["row_rg"] + ct * d["row_ct"]
                pos = ct * C + np.arange(C)
                valid = pos < d["cols"]
                mask = np.broadcast_to(valid, (K, C))
                if d["pad"]:
                    x = pos & (W - 1)
                    mask = mask & ~((kx[:, None] == 0) & (x[None, :] == 0)) \
                        & ~((kx[:, None] == 2) & (x[None, :] == W - 1))
                if d["col_mode"] == isa.COL_ONEHOT:
                    hit = (np.arange(C)[None, :] == col_off[:, None]) & valid[None, :]
                    col_nz = np.broadcast_to(hit, (B, K, C))
                    col_map = col_nz.any(axis=2)
                else:
                    col_words, col_map = run(col_t + col_off, mask, pos)
                    col_nz = col_words != 0
                if pair.any():
                    second, second_map = run(row_t + row_off, mask, pos)
                    col_nz = col_nz | ((second != 0) & pair[None, :, None])
                    col_map = col_map | (second_map & pair[None, :])
                if d["row_mode"] == isa.ROW_RUN:
                    raddr = (row_t + row_off[:, None] + np.arange(R)[None, :]) % size
                    row_nz = ((mem[:, raddr] != 0) & rows_ok).any(axis=2)
                    row_map = (blocks[:, raddr // C] & rows_ok).any(axis=2)
                else:
                    row_nz = row_map = np.ones((B, K), bool)
                word_nz = col_nz & row_nz[:, :, None]
                nonzero.append(word_nz.any(axis=2).sum(axis=1))
                bitmap.append((col_map & row_map).sum(axis=1))
                busiest.append(word_nz.sum(axis=1).max(axis=1))
                words_nz = words_nz + word_nz[:, :, valid].sum(axis=(1, 2))
                words += K * int(valid.sum())
    return PassActivity(K, np.stack(nonzero, 1), np.stack(bitmap, 1), np.stack(busiest, 1),
                        np.asarray(words_nz), words)


#: The skipping schemes (see the module docstring), in the order of the table.
SCHEMES = ("step", "bitmap", "bitmap4", "dual_read", "word")


def kept_steps(act: PassActivity, scheme: str, row_port_free: bool) -> np.ndarray:
    """(B, tiles) steps each tile still issues under `scheme` (at least one: the step that
    restarts the accumulators and starts the drain). `row_port_free`: the pass reads no second
    run per step (no paired steps, rows all ones), so the row port can read ahead."""
    K = act.steps_per_tile
    if scheme == "step":
        kept = act.nonzero_steps
    elif scheme == "bitmap":
        kept = act.bitmap_steps
    elif scheme == "bitmap4":
        kept = np.maximum(act.bitmap_steps, -(-K // 4))
    elif scheme == "dual_read":
        kept = (np.maximum(act.nonzero_steps, -(-K // 2)) if row_port_free
                else np.full_like(act.nonzero_steps, K))
    elif scheme == "word":
        kept = act.busiest_column
    else:
        raise ValueError(f"unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return np.maximum(kept, 1)


def skipping_pass_cycles(config: ArrayConfig, desc: dict, tile_steps) -> np.ndarray:
    """Cycles of one array pass (`pysim.cycles.pass_cycles`) when tile i issues
    `tile_steps[..., i]` steps instead of `steps * taps` (the cycle model's own loop, over the
    leading axis: images)."""
    if desc["op"] != isa.OP_ARRAY:
        raise ValueError("only array passes issue reduction steps")
    tile_steps = np.asarray(tile_steps, np.int64)
    tiles = desc["groups"] * desc["rgs"] * desc["cts"]
    if tile_steps.shape[-1] != tiles:
        raise ValueError(f"{tile_steps.shape[-1]} tile step counts for {tiles} tiles")
    return cycles.PASS_OVERHEAD + cycles.array_pass_cycles(config, desc, tile_steps)


class _Probe(hwref.Executor):
    """The executor, looking at the operands of every array pass before running it."""

    def __init__(self, net):
        super().__init__(net)
        self.index = {id(d): i for i, d in enumerate(self.image.descs)}
        self.activity: dict[int, PassActivity] = {}

    def array(self, d):
        self.activity[self.index[id(d)]] = pass_activity(self.mem, d, self.steps, self.cfg,
                                                         self.T, self.pack)
        return super().array(d)


def pass_roles(net) -> list[str]:
    """A short name of what each pass computes: the layer kind, or the attention step."""
    roles, seen = [], {}
    kinds = {layer.name: layer.kind for layer in net.model.layers}
    for p in net.passes:
        i = seen[p.layer] = seen.get(p.layer, -1) + 1
        kind = kinds[p.layer]
        if kind == "ssa":
            n = sum(q.layer == p.layer for q in net.passes)
            roles.append(SSA_ROLES[0 if i == 0 else 2 if i == n - 1 else 1])
        elif kind == "sdsa":
            roles.append(SDSA_ROLES[i])
        else:
            roles.append(kind)
    return roles


def input_kind(spec: TensorSpec) -> str:
    return "spike" if spec.kind == "spike" else f"{spec.kind}{spec.bits}"


def pass_inputs(net, index: int) -> list[str]:
    """The model tensors a pass reads (attention temporaries are named by what they hold)."""
    p = net.passes[index]
    layer = net.model.layer(p.layer)
    if layer.kind in ("ssa", "sdsa"):
        q, k, v = layer.inputs
        role = pass_roles(net)[index]
        return {"v^T": [v], "q k^T": [q, k], "A v": ["A (q k^T counts)", v],
                "k AND v": [k, v], "(k AND v)^T": ["k AND v"], "gate": ["(k AND v)^T"],
                "q AND gate": [q, "gate"]}[role]
    return list(layer.inputs)


def test_images(dataset: str, model: IntModel, count: int) -> np.ndarray:
    """The first `count` test images of `dataset`, as `model`'s inputs."""
    if dataset == "digits":
        images = data.digits_test()[0]
    else:
        images = data.fit_images(data.fashion_pixels(data.fashion_test()[0],
                                                     model.input_spec.bits),
                                 model.input_spec.shape)
    if count > len(images):
        raise cli.UsageError(f"--images {count}: the {dataset} test split has {len(images)}")
    return images[:count]


def _check_against_golden(net, payloads, trace, first: int):
    """The executor's dumped tensors must be the golden model's (the measurement would
    otherwise be of the wrong values)."""
    for i, payload in enumerate(payloads):
        _, traced = net.decode_result(payload, True)
        for name, value in traced.items():
            if not np.array_equal(value, trace[name][i]):
                raise RuntimeError(f"{net.model.model} on {net.config.name}: tensor {name} of "
                                   f"image {first + i} differs from the golden model")


def measure_array(model: IntModel, images: np.ndarray, config: ArrayConfig,
                  batch: int = BATCH) -> dict:
    """Every pass of `model` compiled for `config`, its operands on `images`: zero steps,
    zero words and the cycles of each skipping scheme (means per inference)."""
    net = compile_network(model, config)
    report = net.cycles
    roles = pass_roles(net)
    n = len(images)
    sums: dict[int, dict] = {}
    totals = {k: np.zeros(n) for k in SCHEMES}
    static = {}
    ones = None
    for first in range(0, n, batch):
        chunk = images[first:first + batch]
        probe = _Probe(net)
        payloads = probe.run_batch(list(chunk), trace=True)
        _, trace = golden.run(model, chunk)
        _check_against_golden(net, payloads, {k: v for k, v in trace.items()}, first)
        if ones is None:
            ones = np.full((1, probe.mem.shape[1]), (1 << config.lanes) - 1, np.int64)
        for i, act in probe.activity.items():
            d = probe.image.descs[i]
            if i not in static:
                static[i] = pass_activity(ones, d, probe.steps, config, probe.T, probe.pack)
            desc = net.passes[i].desc
            s = sums.setdefault(i, {"nonzero_steps": 0, "bitmap_steps": 0, "nonzero_words": 0,
                                    **{k: 0.0 for k in SCHEMES}})
            p = net.passes[i]
            port_free = desc["row_mode"] == isa.ROW_ONES and not any(st[5] for st in p.steps)
            s["nonzero_steps"] += int(act.nonzero_steps.sum())
            s["bitmap_steps"] += int(act.bitmap_steps.sum())
            s["nonzero_words"] += int(act.nonzero_words.sum())
            for scheme in SCHEMES:
                c = skipping_pass_cycles(config, desc, kept_steps(act, scheme, port_free))
                s[scheme] += float(c.sum())
                totals[scheme][first:first + len(chunk)] += c
    passes = []
    for i, p in enumerate(net.passes):
        row = {"layer": p.layer, "role": roles[i], "pass": i,
               "inputs": pass_inputs(net, i),
               "input_kind": ("uint+spike" if roles[i] == "A v" else
                              input_kind(model.tensors[model.layer(p.layer).inputs[0]])),
               "dense_cycles": report.passes[i].cycles}
        if i in sums:
            s, act = sums[i], static[i]
            dense = act.steps_per_tile * act.nonzero_steps.shape[1]
            row.update(
                tiles=int(act.nonzero_steps.shape[1]), steps_per_tile=act.steps_per_tile,
                dense_steps=dense,
                zero_steps=dense - s["nonzero_steps"] / n,
                static_zero_steps=dense - int(act.nonzero_steps.sum()),
                bitmap_skipped_steps=dense - s["bitmap_steps"] / n,
                words=act.words, zero_words=act.words - s["nonzero_words"] / n,
                **{f"{k}_skip_cycles": s[k] / n for k in SCHEMES})
            row["zero_step_fraction"] = row["zero_steps"] / dense
        passes.append(row)
    fixed = report.total - sum(p["dense_cycles"] for p in passes if "dense_steps" in p)
    total = {"dense_cycles": report.total,
             "zero_steps": sum(p.get("zero_steps", 0) for p in passes),
             "dense_steps": sum(p.get("dense_steps", 0) for p in passes)}
    for scheme in SCHEMES:
        mean = float(fixed + totals[scheme].mean())
        total[f"{scheme}_skip_cycles"] = mean
        total[f"{scheme}_skip_saved"] = 1 - mean / report.total
    total["ideal_step_skip_saved"] = total["zero_steps"] / report.total
    return {"config": config.name, "pe_rows": config.pe_rows, "pe_cols": config.pe_cols,
            "lanes": config.lanes, "passes": passes, "layers": _per_layer(passes),
            "total": total}


def _per_layer(passes: list[dict]) -> list[dict]:
    """Passes summed per (layer, role) for the table (a layer's `q k^T` rotations add up)."""
    rows: dict = {}
    keys = ("dense_cycles", "dense_steps", "zero_steps", "static_zero_steps",
            "bitmap_skipped_steps", "words", "zero_words") + tuple(
                f"{k}_skip_cycles" for k in SCHEMES)
    for p in passes:
        if "dense_steps" not in p:
            continue
        r = rows.setdefault((p["layer"], p["role"]), {"layer": p["layer"], "role": p["role"],
                                                      "input_kind": p["input_kind"],
                                                      "inputs": p["inputs"],
                                                      **{k: 0 for k in keys}})
        for k in keys:
            r[k] += p[k]
    for r in rows.values():
        r["zero_step_fraction"] = r["zero_steps"] / r["dense_steps"]
        r["zero_word_fraction"] = r["zero_words"] / r["words"]
    return list(rows.values())


def golden_stats(model: IntModel, images: np.ndarray, batch: int = BATCH) -> list[dict]:
    """Per array layer (conv, head, attention): density and zero words of each input tensor
    on `images`, from the golden model's trace."""
    sums: dict = {}
    for first in range(0, len(images), batch):
        chunk = images[first:first + batch]
        _, trace = golden.run(model, chunk)
        trace[model.input] = golden.prepare_input(model, chunk)
        for layer in model.layers:
            if layer.kind not in ("conv", "head", "ssa", "sdsa"):
                continue
            for name in dict.fromkeys(layer.inputs):
                s = tensor_stats(trace[name], model.tensors[name])
                acc = sums.setdefault((layer.name, name), dict(s, density=0.0,
                                                               zero_word_fraction=0.0))
                acc["density"] += s["density"] * len(chunk)
                acc["zero_word_fraction"] += s["zero_word_fraction"] * len(chunk)
    rows = []
    for (layer, name), s in sums.items():
        rows.append({"layer": layer, "kind": model.layer(layer).kind, "tensor": name,
                     "input_kind": input_kind(model.tensors[name]),
                     "density": s["density"] / len(images),
                     "zero_word_fraction": s["zero_word_fraction"] / len(images),
                     "words_per_image": s["words_per_image"]})
    return rows


def measure(dataset: str = "digits", images: int | None = None, columns=COLUMNS,
            variants=None, progress=print) -> dict:
    """The whole report of one data set: every available variant on every array."""
    folder, default_count = DATASETS[dataset]
    count = default_count if images is None else images
    configs = array_configs(columns)
    names = [v for v in (variants or VARIANTS) if v in cli.available_models(folder)]
    out = {"dataset": dataset, "images": count,
           "image_selection": f"the first {count} images of the {dataset} test split",
           "arrays": {c.name: {"pe_rows": c.pe_rows, "pe_cols": c.pe_cols, "lanes": c.lanes,
                               "act_depth": c.act_depth} for c in configs},
           "variants": {}}
    for variant in names:
        start = time.monotonic()
        model = cli.load_model(variant, folder)
        x = test_images(dataset, model, count)
        entry = {"T": model.T, "layers": golden_stats(model, x), "arrays": {}}
        for config in configs:
            entry["arrays"][config.name] = measure_array(model, x, config)
        out["variants"][variant] = entry
        progress(f"{dataset} {variant}: {time.monotonic() - start:.1f} s")
    return out


def table(report: dict) -> str:
    """Per variant: each array layer's input density, zero words and zero-step fraction per
    array, then the cycles each scheme saves per array."""
    arrays = list(report["arrays"])
    cols = [report["arrays"][a]["pe_cols"] for a in arrays]
    lines = []
    for variant, entry in report["variants"].items():
        lines.append(f"\n{variant} ({report['dataset']}, {report['images']} images)")
        head = (f"{'layer':<22} {'pass':<12} {'input':<6} {'density':>9} {'0 words':>9} "
                + " ".join(f"{'0 st c' + str(c):>8}" for c in cols))
        lines.append(head)
        tensors = {g["tensor"]: g for g in entry["layers"]}
        per = [{(r["layer"], r["role"]): r for r in entry["arrays"][a]["layers"]}
               for a in arrays]
        for key, r in per[0].items():
            layer, role = key
            stats = [tensors[t] for t in r["inputs"] if t in tensors]
            density = "/".join(f"{g['density']:.2f}" for g in stats)
            zw = "/".join(f"{g['zero_word_fraction']:.0%}" for g in stats)
            fr = " ".join(f"{p[key]['zero_step_fraction']:>8.1%}" for p in per)
            lines.append(f"{layer:<22} {role:<12} {r['input_kind']:<6} {density:>9} {zw:>9} "
                         f"{fr}")
        lines.append(f"{'cycles per inference':<22} {'dense':>8} "
                     + " ".join(f"{SCHEME_LABELS[k]:>10}" for k in SCHEMES)
                     + f" {'ideal':>7}")
        for a, c in zip(arrays, cols, strict=True):
            t = entry["arrays"][a]["total"]
            lines.append(f"  {a + ' (' + str(c) + ' cols)':<20} {t['dense_cycles']:>8,} "
                         + " ".join(f"{t[k + '_skip_cycles']:>10,.0f}" for k in SCHEMES)
                         + f" {t['ideal_step_skip_saved']:>7.1%}")
            lines.append(f"  {'saved':<20} {'':>8} "
                         + " ".join(f"{t[k + '_skip_saved']:>10.1%}" for k in SCHEMES))
    return "\n".join(lines)


def plot(report: dict, variant: str, path: Path) -> None:
    """Per-layer zero-step fraction against PE columns for one variant (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entry = report["variants"][variant]
    arrays = list(report["arrays"])
    cols = [report["arrays"][a]["pe_cols"] for a in arrays]
    per = [{(r["layer"], r["role"]): r for r in entry["arrays"][a]["layers"]} for a in arrays]
    fig, ax = plt.subplots(figsize=(10, 5.5))
    colours = plt.get_cmap("tab20").colors
    for n, key in enumerate(per[0]):
        label = key[0] if key[1] in ("conv", "head") else f"{key[0]} ({key[1]})"
        style = "-" if per[0][key]["input_kind"] == "spike" else "--"
        ax.plot(cols, [100 * p[key]["zero_step_fraction"] for p in per], style, marker="o",
                color=colours[n % len(colours)], label=label)
    totals = [entry["arrays"][a]["total"] for a in arrays]
    ax.plot(cols, [100 * t["zero_steps"] / t["dense_steps"] for t in totals], "k-", lw=3,
            marker="s", label="all array passes")
    ax.set_xscale("log", base=2)
    ax.set_xticks(cols, [str(c) for c in cols])
    ax.set_xlabel("PE columns (positions per column tile)")
    ax.set_ylabel("zero reduction steps (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{variant} ({report['dataset']}, {report['images']} test images): "
                 "steps whose whole run is zero\n(dashed: multi-bit input, read as bit-planes)",
                 fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@cli.entry_point("python -m pysim.sparsity")
def main(argv=None) -> int:
    """`python -m pysim.sparsity [--dataset D] [--images N] [--out J] [--plot PNG]`."""
    parser = argparse.ArgumentParser(prog="python -m pysim.sparsity",
                                     description="zero bits, words, reduction steps and the "
                                     "cycles a skipping sequencer would save, per layer")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    parser.add_argument("--images", type=cli.positive,
                        help="first N test images (default: digits 120, fashion 500)")
    parser.add_argument("--columns", type=cli.positive, nargs="+", default=list(COLUMNS),
                        help="PE columns of the arrays measured (default: 4 8 16)")
    parser.add_argument("--out", help="report JSON (default: build/sparsity/report.json, "
                        "fashion: build/sparsity/fashion/report.json)")
    parser.add_argument("--plot", help="also draw spikformer's zero steps against the columns "
                        "into this PNG")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    for c in args.columns:
        if c & (c - 1) or c > 64:
            raise cli.UsageError(f"--columns {c}: PE columns are a power of two, 1 .. 64")
    report = measure(args.dataset, args.images, tuple(args.columns))
    print(table(report))
    out = Path(args.out) if args.out else ROOT / "build/sparsity" / (
        "report.json" if args.dataset == "digits" else f"{args.dataset}/report.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {cli.shown(out)}")
    if args.plot:
        plot(report, "spikformer", Path(args.plot))
        print(f"wrote {cli.shown(Path(args.plot))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
