"""`pysim.sparsity`: zero steps and words against brute-force recounts, the skipping cycle
model against the cycle model, and the command line."""

import json

import numpy as np
import pytest

from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import cycles, golden, sparsity
from pysim.hwref import decode_image
from pysim.random_model import random_images, random_int_model

SMALL = ArrayConfig(name="tiny", pe_rows=4, pe_cols=4, lanes=4)
WIDE = SMALL.replace(name="tiny8", pe_cols=8, act_depth=512)
T = 4


def iand_net(config):
    """A seeded all-spike network (3x3 convs on a 4x4 grid, SSA) compiled for `config`."""
    return compile_network(random_int_model("iand", seed=3, T=T), config)


def layer_pass(net, layer: str, role: str | None = None) -> int:
    roles = sparsity.pass_roles(net)
    return next(i for i, p in enumerate(net.passes)
                if p.layer == layer and (role is None or roles[i] == role))


def write_spikes(mem, base: int, x):
    """Spikes x (T, C, H, W) into the flat word memory as the compiler lays tensors out with
    one lane group: word base + c * H W + position, lane t = time step t."""
    _, C, H, W = x.shape
    for c in range(C):
        for p in range(H * W):
            mem[0, base + c * H * W + p] = sum(int(x[t, c, p // W, p % W]) << t
                                               for t in range(T))


def activity(net, index: int, tensors: dict):
    """`pass_activity` of pass `index` on a memory holding only `tensors` (name -> spikes)."""
    cfg = net.config
    mem = np.zeros((1, cfg.act_depth * cfg.pe_cols), np.int64)
    for name, x in tensors.items():
        write_spikes(mem, net.tensors[name][0], x)
    image = decode_image(net.records(), cfg)
    return sparsity.pass_activity(mem, image.descs[index], image.steps, cfg, T, 1)


def brute_conv3x3(x, cols: int, rows: int, R: int):
    """Per tile (row group > column tile): the channel x tap steps of a 3x3 conv that see a
    spike in their run of `cols` consecutive positions, and the busiest column's count."""
    _, C, H, W = x.shape
    P = H * W
    steps, busiest = [], []
    for _ in range(-(-rows // R)):
        for ct in range(-(-P // cols)):
            n, per_column = 0, [0] * cols
            for ch in range(C):
                for dy in range(3):
                    for dx in range(3):
                        seen = False
                        for c in range(cols):
                            pos = ct * cols + c
                            y, xx = pos // W + dy - 1, pos % W + dx - 1
                            if pos < P and 0 <= y < H and 0 <= xx < W and x[:, ch, y, xx].any():
                                seen = True
                                per_column[c] += 1
                        n += seen
            steps.append(n)
            busiest.append(max(per_column))
    return np.array(steps), np.array(busiest)


def hand_spikes(C: int, seed: int = 5):
    """A sparse hand-made spike tensor (T, C, 4, 4): a few spikes, channel 0 left empty."""
    rng = np.random.default_rng(seed)
    x = (rng.random((T, C, 4, 4)) < 0.04).astype(np.int64)
    x[:, 0] = 0
    x[2, 3, 0, 3] = 1
    x[0, 5, 3, 0] = 1
    return x


@pytest.mark.parametrize("config", [SMALL, WIDE], ids=lambda c: c.name)
def test_conv_zero_steps_match_brute_force(config):
    net = iand_net(config)
    i = layer_pass(net, "tok.rpe")
    layer = net.model.layer("tok.rpe")
    x = hand_spikes(8)
    act = activity(net, i, {layer.inputs[0]: x})
    rows = layer.arrays["weight"].shape[0]
    steps, busiest = brute_conv3x3(x, config.pe_cols, rows, config.pe_rows)
    assert act.steps_per_tile == 8 * 9
    np.testing.assert_array_equal(act.nonzero_steps[0], steps)
    np.testing.assert_array_equal(act.busiest_column[0], busiest)
    # Nonzero words: each spike-holding word seen through each tap that reaches it.
    assert act.nonzero_words[0] == sum(busiest_words(x, config.pe_cols, rows,
                                                     config.pe_rows))
    # The bitmap is conservative: it never skips a step that reads a spike.
    assert (act.bitmap_steps >= act.nonzero_steps).all()
    assert (act.bitmap_steps <= act.steps_per_tile).all()


def busiest_words(x, cols, rows, R):
    _, C, H, W = x.shape
    out = []
    for _ in range(-(-rows // R)):
        n = 0
        for pos in range(H * W):
            for ch in range(C):
                for dy in range(3):
                    for dx in range(3):
                        y, xx = pos // W + dy - 1, pos % W + dx - 1
                        n += 0 <= y < H and 0 <= xx < W and bool(x[:, ch, y, xx].any())
        out.append(n)
    return out


def test_one_flipped_spike_changes_the_zero_steps():
    """Negative case: one spike in the empty channel 0 at grid (1, 1) wakes every step that
    reads it: 3 grid rows (tiles of 4 positions = one row) x 3 column taps x 2 row groups."""
    net = iand_net(SMALL)
    i = layer_pass(net, "tok.rpe")
    name = net.model.layer("tok.rpe").inputs[0]
    x = hand_spikes(8)
    before = activity(net, i, {name: x}).nonzero_steps.sum()
    flipped = x.copy()
    flipped[1, 0, 1, 1] = 1
    act = activity(net, i, {name: flipped})
    assert act.nonzero_steps.sum() == before + 18
    np.testing.assert_array_equal(act.nonzero_steps[0],
                                  brute_conv3x3(flipped, 4, 8, 4)[0])
    # A second spike in the same word (another time step) changes no step.
    twice = flipped.copy()
    twice[3, 0, 1, 1] = 1
    assert activity(net, i, {name: twice}).nonzero_steps.sum() == before + 18


@pytest.mark.parametrize("config", [SMALL, WIDE], ids=lambda c: c.name)
def test_attention_qk_zero_steps_match_brute_force(config):
    """q k^T (the compiler's A^T = k^T q): a step (one channel of a head) adds nothing when
    the column tile's q run or the row group's k run is all zero."""
    net = iand_net(config)
    i = layer_pass(net, "attn.ssa", "q k^T")
    q_name, k_name, _ = net.model.layer("attn.ssa").inputs
    q, k = hand_spikes(8, seed=1), hand_spikes(8, seed=2)
    k[:, 6] = 0
    act = activity(net, i, {q_name: q, k_name: k})
    R, C = config.pe_rows, config.pe_cols
    heads, dh, N = 2, 4, 16
    qf, kf = q.reshape(T, 8, N), k.reshape(T, 8, N)
    expect = []
    for h in range(heads):
        for rg in range(N // R):
            for ct in range(N // C):
                expect.append(sum(bool(qf[:, h * dh + j, ct * C:(ct + 1) * C].any())
                                  and bool(kf[:, h * dh + j, rg * R:(rg + 1) * R].any())
                                  for j in range(dh)))
    np.testing.assert_array_equal(act.nonzero_steps[0], expect)
    # Flip: one spike of k in the silent channel 6 (head 1, j = 2) at token 0 wakes the
    # row group of token 0 in every column tile whose q run of channel 6 is nonzero.
    k2 = k.copy()
    k2[0, 6, 0, 0] = 1
    woken = sum(bool(qf[:, 6, ct * C:(ct + 1) * C].any()) for ct in range(N // C))
    assert woken > 0
    assert activity(net, i, {q_name: q, k_name: k2}).nonzero_steps.sum() == \
        act.nonzero_steps.sum() + woken


def test_tensor_stats_brute_force():
    x = hand_spikes(8)[None]
    spec = sparsity.TensorSpec("spike", 1, (8, 4, 4))
    s = sparsity.tensor_stats(x, spec)
    assert s["density"] == x.sum() / x.size
    zero = sum(not x[0, :, c, y, w].any() for c in range(8) for y in range(4) for w in range(4))
    assert s["zero_word_fraction"] == zero / 128
    # Multi-bit values count per bit-plane (two's complement for int).
    v = np.array([0, 1, 2, 3, -1]).reshape(1, 1, 5, 1, 1)
    s = sparsity.tensor_stats(v, sparsity.TensorSpec("int", 3, (5, 1, 1)))
    assert s["density"] == (0 + 1 + 1 + 2 + 3) / 15


@pytest.mark.parametrize("config", [SMALL, WIDE, ArrayConfig(),
                                    ArrayConfig(name="serial", pe_rows=1, pe_cols=1,
                                                paired_steps=False, lane_packing=False,
                                                double_buffer=False, act_depth=8192)],
                         ids=lambda c: c.name)
def test_dense_steps_give_the_cycle_model(config):
    """With every tile at its dense step count the skipping timing is the cycle model's, pass
    for pass; fewer steps never cost more, and a tile keeps its drain."""
    for family in ("iand", "sdsa"):
        net = compile_network(random_int_model(family, seed=3, T=T), config)
        for p in net.passes:
            if p.desc["op"] != isa.OP_ARRAY:
                continue
            d = p.desc
            tiles = d["groups"] * d["rgs"] * d["cts"]
            dense = np.full(tiles, d["steps"] * d["taps"])
            assert sparsity.skipping_pass_cycles(config, d, dense) == \
                cycles.pass_cycles(config, d), p.layer
            fewer = sparsity.skipping_pass_cycles(config, d, np.maximum(dense // 3, 1))
            one = sparsity.skipping_pass_cycles(config, d, np.ones(tiles, int))
            assert one <= fewer <= cycles.pass_cycles(config, d)
            assert one >= cycles.PASS_OVERHEAD + tiles * (1 if config.double_buffer else 2)
    with pytest.raises(ValueError, match="tile step counts"):
        sparsity.skipping_pass_cycles(config, d, dense[:-1])


def test_measure_array_agrees_with_the_golden_trace():
    """End to end: the zero steps measured in the executor's memory equal a brute-force
    recount on the golden model's trace of the same images."""
    model = random_int_model("iand", seed=3, T=T)
    images = random_images(model, 3, seed=4)
    result = sparsity.measure_array(model, images, SMALL, batch=2)
    _, trace = golden.run(model, images)
    row = next(p for p in result["passes"] if p["layer"] == "tok.rpe")
    x = trace[model.layer("tok.rpe").inputs[0]]
    brute = np.mean([brute_conv3x3(x[b], 4, 8, 4)[0].sum() for b in range(3)])
    assert row["zero_steps"] == pytest.approx(row["dense_steps"] - brute)
    assert row["dense_cycles"] == compile_network(model, SMALL).cycles.passes[
        row["pass"]].cycles
    total = result["total"]
    assert total["dense_cycles"] == compile_network(model, SMALL).cycles.total
    assert 0 < total["step_skip_cycles"] <= total["dense_cycles"]
    assert total["word_skip_cycles"] <= total["step_skip_cycles"] \
        <= total["bitmap_skip_cycles"] <= total["bitmap4_skip_cycles"]
    assert total["step_skip_cycles"] <= total["dual_read_skip_cycles"] < total["dense_cycles"]


def test_kept_steps_bound_the_skip_rate():
    act = sparsity.PassActivity(8, np.array([[0, 3, 8]]), np.array([[1, 5, 8]]),
                                np.array([[0, 2, 4]]), np.array([11]), 96)
    kept = {k: sparsity.kept_steps(act, k, True).tolist() for k in sparsity.SCHEMES}
    assert kept == {"step": [[1, 3, 8]], "bitmap": [[1, 5, 8]], "bitmap4": [[2, 5, 8]],
                    "dual_read": [[4, 4, 8]], "word": [[1, 2, 4]]}
    assert sparsity.kept_steps(act, "dual_read", False).tolist() == [[8, 8, 8]]
    with pytest.raises(ValueError, match="unknown scheme"):
        sparsity.kept_steps(act, "magic", True)


def test_golden_check_catches_a_wrong_value():
    model = random_int_model("iand", seed=3, T=T)
    net = compile_network(model, SMALL)
    images = random_images(model, 1, seed=4)
    payloads = sparsity._Probe(net).run_batch(list(images), trace=True)
    _, trace = golden.run(model, images)
    sparsity._check_against_golden(net, payloads, trace, 0)
    name = model.layer("tok.rpe").output
    trace[name] = trace[name].copy()
    trace[name][0, 0, 0, 0, 0] ^= 1
    with pytest.raises(RuntimeError, match=name):
        sparsity._check_against_golden(net, payloads, trace, 0)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert sparsity.main(["--images", "2", "--columns", "4", "16", "--out", str(out),
                          "--plot", str(tmp_path / "s.png")]) == 0
    report = json.loads(out.read_text())
    assert set(report["variants"]) == set(sparsity.VARIANTS)
    assert [a["pe_cols"] for a in report["arrays"].values()] == [4, 16]
    assert (tmp_path / "s.png").stat().st_size > 10_000
    assert "spikformer (digits, 2 images)" in capsys.readouterr().out
    assert sparsity.main(["--columns", "3"]) == 2
    assert "power of two" in capsys.readouterr().err
