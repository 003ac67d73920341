"""The 64-token Fashion-MNIST shape (`fashion64_config`): the input padding, the committed
T = 1 models' lane packing, bit-exactness on a few test images, names and seeded masks."""

import numpy as np
import pytest
import torch

from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import cli, data, golden, torch_int
from pysim.data import fit_images
from pysim.pretrain import make_masks, pretrain
from pysim.torch_models import config_for, load_float_model
from pysim.train import model_shape, output_name

DEFAULT = ArrayConfig.load("hw/configs/default.json")
PACKED = ("spikformer_v2_t1_n64", "spikformer_v2_pt_t1_n64")


def test_fit_images_pads_evenly_and_refuses_what_does_not_fit():
    x = np.arange(2 * 28 * 32).reshape(2, 28, 32) % 16
    y = fit_images(x, (1, 32, 32))
    assert y.shape == (2, 32, 32)
    np.testing.assert_array_equal(y[:, 2:30], x)
    assert not y[:, :2].any() and not y[:, 30:].any()
    np.testing.assert_array_equal(fit_images(y, (32, 32)), y)
    np.testing.assert_array_equal(fit_images(x[:, None], (32, 32))[:, 0], y)
    with pytest.raises(ValueError, match="do not pad evenly"):
        fit_images(x, (31, 32))
    with pytest.raises(ValueError, match="do not pad evenly"):
        fit_images(y, (28, 32))


def test_shape_is_64_tokens_on_32x32():
    cfg = config_for("spikformer_v2", "fashion64", T=1)
    assert (cfg.height, cfg.width, cfg.tokens) == (32, 32, 64)
    assert model_shape("fashion", 64) == "fashion64" and model_shape("fashion") == "fashion"
    with pytest.raises(ValueError, match="16 tokens"):
        model_shape("digits", 64)
    assert output_name("spikformer_v2", T=1, tokens=64) == "spikformer_v2_t1_n64"
    assert output_name("spikformer_v2", T=1, pretrained=True, tokens=64) == \
        "spikformer_v2_pt_t1_n64"


@pytest.mark.parametrize("name", PACKED)
def test_committed_t1_models_pack_four_positions_and_take_fewer_cycles_than_t4(name):
    model = cli.load_model(name, cli.CHECKPOINTS / "fashion")
    assert model.T == 1 and tuple(model.input_spec.shape) == (1, 32, 32)
    packed = compile_network(model, DEFAULT)
    assert packed.globals["pack"] == DEFAULT.lanes
    t4 = compile_network(cli.load_model("spikformer_v2", cli.CHECKPOINTS / "fashion"), DEFAULT)
    assert packed.cycles.total < t4.cycles.total
    from hw.compiler import DoesNotFit
    # Packing is also what makes 64 tokens fit: unpacked, the attention temporaries do not.
    with pytest.raises(DoesNotFit, match="attention temporaries"):
        compile_network(model, DEFAULT, pack=1)
    # The input slot the shape needs: 1 + 32 * 32 bytes is refused by a 1,024-byte slot.
    with pytest.raises(DoesNotFit, match="input slot"):
        compile_network(model, DEFAULT.replace(input_depth=1024))


@pytest.mark.parametrize("name", PACKED)
def test_committed_t1_models_torch_int_equals_golden(name):
    model = cli.load_model(name, cli.CHECKPOINTS / "fashion")
    x = fit_images(data.test_split("fashion")[0][:16], model.input_spec.shape)
    logits, trace = golden.run(model, x)
    t_logits, t_trace = torch_int.run(model, x)
    np.testing.assert_array_equal(logits, t_logits)
    for key in trace:
        np.testing.assert_array_equal(trace[key], t_trace[key])
    # Negative control: a flipped spike in the input image changes the golden logits somewhere.
    bad = x.copy()
    bad[:, 16, 16] ^= 8
    assert not np.array_equal(golden.run(model, bad, record=False)[0], logits)


def test_torch_model_pads_the_28x32_split_itself():
    name = PACKED[0]
    float_model = load_float_model(name, cli.CHECKPOINTS / "fashion")
    x = data.test_split("fashion")[0][:4]
    with torch.no_grad():
        a = float_model(x)
        b = float_model(fit_images(x, (32, 32)))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pretraining_64_patches_masks_48_seeded():
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    m1, m2 = make_masks(5, 64, 0.75, g1), make_masks(5, 64, 0.75, g2)
    assert torch.equal(m1, m2) and (m1.sum(dim=1) == 48).all()
    x = data.test_split("fashion")[0][:16]
    model, history = pretrain(T=1, epochs=1, images=x, steps=1, progress=False, tokens=64)
    assert model.patches == 64 and len(history) == 1 and np.isfinite(history[0]["loss"])
