"""Masked pre-training of the spikformer_v2 encoder (pysim/pretrain.py) and the fine-tuning hooks
of pysim/train.py (`--init-encoder`, `--T`, output names).

Fast: a few dozen of the shipped Fashion-MNIST test images, a few optimizer steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pysim import golden, pretrain, torch_int
from pysim.data import fashion_pixels, fashion_test
from pysim.pretrain import (
    MaskedAutoencoder,
    hide,
    load_encoder,
    make_masks,
    masked_loss,
    normalized_targets,
    patch_shape,
    pixel_mask,
    save_encoder,
    token_grid,
)
from pysim.torch_models import build_model, config_for
from pysim.train import Interrupted, output_name, train_variant
from pysim.train import main as train_main

CONFIG = config_for("spikformer_v2", "fashion")


@pytest.fixture(scope="module")
def images():
    """48 shipped test images as network inputs (uint8, (48, 28, 32)) and their labels."""
    x, y = fashion_test()
    return fashion_pixels(x[:48]), y[:48]


def _small(images, **kwargs):
    """A few steps of pre-training on the 48 images (the test recipe)."""
    args = dict(epochs=3, batch=16, lr=3e-3, images=images, progress=False)
    args.update(kwargs)
    return pretrain.pretrain(**args)


def _fixed_loss(model: MaskedAutoencoder, x: np.ndarray, seed: int = 123) -> float:
    """Masked-patch loss of `model` on `x` with masks of a fixed seed (no gradient)."""
    mask = make_masks(len(x), model.patches, 0.75, torch.Generator().manual_seed(seed))
    model.train()  # BatchNorm on batch statistics, as during pre-training
    with torch.no_grad():
        return float(model.loss(torch.from_numpy(x.astype(np.float32)), mask))


# ---- patches and masks --------------------------------------------------------------------------

def test_patch_grid_is_the_token_grid():
    assert token_grid(CONFIG) == (4, 4) and patch_shape(CONFIG) == (7, 8)
    x = torch.arange(2 * 28 * 32, dtype=torch.float32).view(2, 28, 32)
    patches = pretrain.patchify(x, CONFIG)
    assert patches.shape == (2, 16, 56)
    # patch 5 is row 1, column 1 of the grid: rows 7..13, columns 8..15
    torch.testing.assert_close(patches[1, 5], x[1, 7:14, 8:16].reshape(-1))
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, 5] = True
    pix = pixel_mask(mask, CONFIG)
    assert int(pix.sum()) == 56 and bool(pix[0, 7:14, 8:16].all())


def test_masks_are_seeded():
    a = make_masks(64, 16, 0.75, torch.Generator().manual_seed(1))
    b = make_masks(64, 16, 0.75, torch.Generator().manual_seed(1))
    c = make_masks(64, 16, 0.75, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert (a.sum(dim=1) == 12).all()  # 75% of 16 patches per image
    assert len({tuple(row.tolist()) for row in a}) > 32  # different masks per image
    with pytest.raises(ValueError, match="mask ratio"):
        make_masks(4, 16, 1.0, torch.Generator())


def test_pretraining_is_deterministic_and_seeded(images):
    x = images[0][:32]
    runs = [_small(x, epochs=1, steps=2, seed=s)[0].encoder_state() for s in (0, 0, 1)]
    for key, value in runs[0].items():
        assert torch.equal(value, runs[1][key]), key
    assert any(not torch.equal(v, runs[2][k]) for k, v in runs[0].items()
               if v.dtype.is_floating_point)


# ---- the objective ------------------------------------------------------------------------------

def test_objective_decreases_on_a_small_subset(images):
    x = images[0]
    before = _fixed_loss(_small(x, epochs=0)[0], x)
    model, history = _small(x, epochs=4)
    after = _fixed_loss(model, x)
    assert len(history) == 4
    assert history[-1]["loss"] < 0.9 * history[0]["loss"], history
    assert after < 0.9 * before, (before, after)


def test_loss_counts_masked_patches_only():
    """Negative control: corrupting the targets of visible patches leaves the loss unchanged,
    corrupting the targets of masked patches changes it."""
    gen = torch.Generator().manual_seed(0)
    pred = torch.randn(4, 16, 56, generator=gen)
    target = torch.randn(4, 16, 56, generator=gen)
    mask = make_masks(4, 16, 0.75, gen)
    base = masked_loss(pred, target, mask)
    visible = target.clone()
    visible[~mask] += 10.0
    masked = target.clone()
    masked[mask] += 10.0
    assert masked_loss(pred, visible, mask) == base
    assert masked_loss(pred, masked, mask) > base + 50


def test_masked_pixels_do_not_reach_the_encoder(images):
    """Changing masked pixels changes nothing the model predicts; changing a visible one does."""
    model = _small(images[0], epochs=1, steps=2)[0].train()  # batch statistics: a barely
    # trained encoder's running statistics leave every neuron silent in eval mode
    x = torch.from_numpy(images[0][:4].astype(np.float32))
    mask = make_masks(4, 16, 0.75, torch.Generator().manual_seed(5))
    pix = pixel_mask(mask, CONFIG)
    noise = torch.randint(0, 16, x.shape, generator=torch.Generator().manual_seed(6)).float()
    with torch.no_grad():
        pred = model(x, mask)
        assert torch.equal(model(torch.where(pix, noise, x), mask), pred)
        assert not torch.equal(model(torch.where(pix, x, noise), mask), pred)
    assert torch.equal(hide(torch.where(pix, noise, x), mask, CONFIG), hide(x, mask, CONFIG))


def test_targets_are_normalized_per_patch(images):
    t = normalized_targets(torch.from_numpy(images[0][:8].astype(np.float32)), CONFIG)
    busy = t.abs().sum(dim=-1) > 0  # (all-zero patches stay zero)
    torch.testing.assert_close(t.mean(dim=-1), torch.zeros(8, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.var(dim=-1)[busy], torch.ones(int(busy.sum())), atol=1e-3,
                               rtol=0)


def test_pretraining_resumes_to_the_same_weights(images, tmp_path):
    x = images[0][:32]
    kwargs = dict(epochs=3, steps=2)
    whole, h1 = _small(x, **kwargs)
    path = tmp_path / "p.resume.pt"
    for _ in range(2):
        with pytest.raises(Interrupted):
            _small(x, resume=path, stop_after=1, **kwargs)
    resumed, h2 = _small(x, resume=path, **kwargs)
    assert h1 == h2
    for key, value in whole.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[key]), key


# ---- fine-tuning hooks --------------------------------------------------------------------------

def test_encoder_loads_into_the_classifier(images, tmp_path):
    mae = _small(images[0][:32], epochs=1, steps=2)[0]
    path = save_encoder(mae, tmp_path / "enc.pt", {"note": "test"})
    model = build_model("spikformer_v2", "fashion", seed=7)
    fresh = build_model("spikformer_v2", "fashion", seed=7)
    assert load_encoder(model, path) == {"note": "test"}
    for key, value in mae.encoder_state().items():  # weights and BatchNorm statistics
        assert torch.equal(model.state_dict()[key], value), key
    # compare on batch statistics (a barely trained encoder is silent on running ones)
    for m in (model, fresh, mae):
        m.train()
    x = images[0][:6]
    with torch.no_grad():
        _, mine = model(x, return_tensors=True)
        _, theirs = mae.encoder(x, return_tensors=True)
        _, other = fresh(x, return_tensors=True)
    feature = mae.feature
    assert torch.equal(mine[feature], theirs[feature])
    assert not torch.equal(other[feature], theirs[feature])  # negative control: no load
    # the head is the classifier's own
    assert torch.equal(model.units["head"].fc.weight, fresh.units["head"].fc.weight)
    # another shape or variant is refused
    with pytest.raises(ValueError, match="shape differs"):
        load_encoder(build_model("spikformer_v2", "digits"), path)
    with pytest.raises(ValueError, match="spikformer_v2"):
        load_encoder(build_model("spikformer", "fashion"), path)
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        load_encoder(model, tmp_path / "missing.pt")


def test_t1_fine_tuning_exports_and_runs_in_the_golden_model(images, tmp_path):
    x, y = images
    mae = _small(x[:32], epochs=1, steps=2, T=1)[0]
    assert mae.config.T == 1
    path = save_encoder(mae, tmp_path / "enc_t1.pt", {})
    split = (x[:32], y[:32], x[32:], y[32:])
    f_model, q_model, metrics = train_variant(
        "spikformer_v2", epochs=1, qat_epochs=1, dataset="fashion", split=split,
        progress=False, T=1, init_encoder=path)
    assert f_model.config.T == 1 and metrics["T"] == 1
    assert metrics["init_encoder"]["sha256"] == pretrain.file_digest(path)
    intmodel = q_model.export()
    assert intmodel.T == 1
    logits, _ = golden.run(intmodel, x[:2])
    t_logits, _ = torch_int.run(intmodel, x[:2])
    np.testing.assert_array_equal(logits, t_logits)
    assert logits.shape == (2, 10)
    from pysim.evaluate import compile_results
    result = compile_results(intmodel, ("hw/configs/default.json",))["default"]
    assert result["fits"] and result["cycles"] > 0


def test_output_names_keep_the_main_checkpoint():
    assert output_name("spikformer_v2") == "spikformer_v2"
    assert output_name("spikformer_v2", T=1) == "spikformer_v2_t1"
    assert output_name("spikformer_v2", pretrained=True) == "spikformer_v2_pt"
    assert output_name("spikformer_v2", T=1, pretrained=True) == "spikformer_v2_pt_t1"
    assert output_name("spikformer_v2", T=1, suffix="_x") == "spikformer_v2_x"
    assert pretrain.default_encoder_path(1).name == "spikformer_v2_t1-encoder.pt"


def test_command_line_errors(tmp_path):
    with pytest.raises(SystemExit):
        pretrain.main(["--mask-ratio", "1.0"])
    with pytest.raises(SystemExit):
        pretrain.main(["--T", "0"])
    with pytest.raises(SystemExit):  # the encoder is one variant's
        train_main(["--all", "--dataset", "fashion", "--init-encoder", str(tmp_path / "e.pt")])
    with pytest.raises(SystemExit):
        train_main(["--model", "spikformer_v2", "--dataset", "fashion", "--init-encoder",
                    str(tmp_path / "missing.pt")])
