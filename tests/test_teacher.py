"""The distillation teacher (`pysim.teacher`) and `pysim.train --distill`."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pysim import teacher as teacher_module
from pysim.data import fashion_pixels, fashion_test
from pysim.teacher import TeacherCNN, distill_loss, load_teacher, state_digest, teacher_logits
from pysim.train import train_variant


def _random_teacher(seed: int = 0) -> TeacherCNN:
    torch.manual_seed(seed)
    model = TeacherCNN()
    model.eval()
    return model


def test_distill_loss_is_cross_entropy_at_alpha_zero_and_zero_kl_on_agreement():
    torch.manual_seed(0)
    student, teacher = torch.randn(16, 10), torch.randn(16, 10)
    labels = torch.randint(0, 10, (16,))
    assert torch.equal(distill_loss(student, teacher, labels, alpha=0.0),
                       F.cross_entropy(student, labels))
    assert float(distill_loss(teacher, teacher, labels, alpha=1.0)) == pytest.approx(0, abs=1e-6)
    # The soft term pulls the student towards the teacher: a step along -grad lowers it.
    student.requires_grad_(True)
    loss = distill_loss(student, teacher, labels, alpha=1.0)
    loss.backward()
    with torch.no_grad():
        after = distill_loss(student - 0.1 * student.grad, teacher, labels, alpha=1.0)
    assert float(after) < float(loss.detach())


def test_teacher_logits_cover_plain_and_flipped_images_and_are_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "CACHE_DIR", tmp_path)
    model = _random_teacher()
    x = fashion_pixels(fashion_test()[0][:12])
    logits = teacher_logits(model, x)
    assert logits.shape == (12, 2, 10)
    with torch.no_grad():
        images = torch.from_numpy(x.astype(np.float32))
        torch.testing.assert_close(logits[:, 0], model(images))
        torch.testing.assert_close(logits[:, 1], model(images.flip(-1)))
    (cached,) = tmp_path.iterdir()
    assert state_digest(model)[:16] in cached.name
    torch.testing.assert_close(teacher_logits(model, x), logits, rtol=0, atol=0)
    other = _random_teacher(1)  # another teacher gets its own cache entry
    assert not torch.equal(teacher_logits(other, x), logits)
    assert len(list(tmp_path.iterdir())) == 2
    shifted = x.copy()  # and so do other images of the same count
    shifted[0, 5, 5] ^= 1
    assert not torch.equal(teacher_logits(model, shifted)[0], logits[0])
    assert len(list(tmp_path.iterdir())) == 3


def _split():
    x = fashion_pixels(fashion_test()[0][:64])
    y = fashion_test()[1][:64]
    return (x[:48], y[:48], x[48:], y[48:])


def test_distilled_training_is_deterministic_and_follows_the_teacher(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(teacher_module, "load_teacher", lambda path=None: _random_teacher())
    kwargs = dict(epochs=1, qat_epochs=1, dataset="fashion", split=_split(), progress=False)
    _, plain, m_plain = train_variant("sdt", **kwargs, distill=False)
    _, q1, m1 = train_variant("sdt", **kwargs, distill=True)
    _, q2, m2 = train_variant("sdt", **kwargs, distill=True)
    for key, value in q1.state_dict().items():
        assert torch.equal(value, q2.state_dict()[key]), key
    assert m1 == m2
    assert m1["distill"]["teacher"] == state_digest(_random_teacher())
    assert "distill" not in m_plain
    assert any(not torch.equal(value, plain.state_dict()[key])
               for key, value in q1.state_dict().items())


def test_the_fashion_recipe_distills_the_four_stemless_variants_only(tmp_path, monkeypatch):
    monkeypatch.setattr(teacher_module, "CACHE_DIR", tmp_path)
    monkeypatch.setattr(teacher_module, "load_teacher", lambda path=None: _random_teacher())
    kwargs = dict(epochs=1, qat_epochs=0, dataset="fashion", split=_split(), progress=False)
    assert "distill" in train_variant("spikformer", **kwargs)[2]
    assert "distill" not in train_variant("spikformer_v2", **kwargs)[2]
    assert "distill" not in train_variant("spikformer", **kwargs, distill=False)[2]


def test_distillation_refuses_what_the_cache_cannot_serve(monkeypatch):
    monkeypatch.setattr(teacher_module, "load_teacher", lambda path=None: _random_teacher())
    with pytest.raises(ValueError, match="distillation needs"):
        train_variant("sdt", epochs=1, qat_epochs=0, dataset="digits", progress=False,
                      distill=True, train_limit=8)


def test_missing_teacher_says_how_to_make_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m pysim.teacher"):
        load_teacher(tmp_path / "teacher.pt")


def test_committed_teacher():
    """The committed teacher loads, and its recorded accuracy is what it measures now on the
    first 2,000 test images' share (the full figure is in its meta)."""
    saved = torch.load(teacher_module.TEACHER_PATH, map_location="cpu", weights_only=False)
    meta = saved["meta"]
    assert meta["test_accuracy"] >= 0.89 and meta["val_accuracy"] >= 0.89
    model = load_teacher()
    x, y = fashion_test()
    with torch.no_grad():
        logits = model(torch.from_numpy(fashion_pixels(x[:2000]).astype(np.float32)))
    assert float((logits.argmax(1).numpy() == y[:2000]).mean()) >= 0.88
