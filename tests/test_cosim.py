"""Cosimulation on Verilator: the host firmware drives `spikeformer_top` (host link + core).

One Verilator build of the default configuration (`build/cosim/default_<hash>/`, shared with
`make sim`) serves every test here; each test opens its own simulation session. The models are
the committed checkpoints; every comparison is against `pysim.golden.run`.
"""

import json
import random
import struct

import numpy as np
import pytest

from firmware.host import DeviceError
from firmware.protocol import RESPONSE, SOF, Command, encode_frame
from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from hw.status import Status
from pysim import golden
from pysim.data import digits_test
from pysim.intmodel import IntModel
from pysim.regressions import stale_lane_networks, wide_shift_network
from tb.run_sim import DEFAULT_CONFIG, ROOT, per_inference_cycles
from tb.session import Session, build

CONFIG = ArrayConfig.load(DEFAULT_CONFIG)
MODELS = ["spikformer", "spikformer_v2", "spikingformer", "sdt", "spikformer_iand"]


@pytest.fixture(scope="module")
def built():
    return build(CONFIG)


@pytest.fixture(scope="module")
def images():
    x, _ = digits_test()
    return x


def compiled_model(name):
    model = IntModel.load(ROOT / "checkpoints" / f"{name}.json")
    return model, compile_network(model, CONFIG)


def assert_trace_equal(model, traces, reference):
    for b, traced in enumerate(traces):
        assert traced, "the device returned no traced tensors"
        for name, value in traced.items():
            np.testing.assert_array_equal(value, reference[name][b],
                                          err_msg=f"input {b}, tensor {name}")


@pytest.mark.parametrize("name", MODELS)
def test_network_bit_exact_with_every_layer(built, images, name):
    """Logits and every layer's spikes of each committed variant equal the golden model's,
    and the busy cycles the device counts equal the cycle model's."""
    model, compiled = compiled_model(name)
    x = images[:3]
    expected, reference = golden.run(model, x, record=True)
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(compiled)
        logits, traces = acc.infer(x, trace=True)
        before = acc.status()
        plain = acc.infer(x[::-1])
        link = acc.status()
    assert session.passed
    np.testing.assert_array_equal(logits, expected)
    np.testing.assert_array_equal(plain, expected[::-1])
    assert_trace_equal(model, traces, reference)
    assert len(traces[0]) == len(compiled.trace_tensors())
    assert link.error == Status.OK and link.results_done == 6
    assert link.busy_cycles - before.busy_cycles == len(x) * per_inference_cycles(compiled)


def test_stress_idle_backpressure_and_stalls(built, images):
    """Random idle, back-pressure and internal stalls on every stream; a long run in one
    session with nothing lost or reordered."""
    model, compiled = compiled_model("spikformer")
    x = images[:40]
    expected, _ = golden.run(model, x, record=False)
    with Session(built, idle=0.3, backpressure=0.4, stall=0.3, seed=7) as session:
        acc = session.accelerator(timeout=120)
        acc.reset()
        acc.load(compiled)
        got = acc.infer(x)
        again = acc.infer(x[:5], trace=True)[0]
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(again, expected[:5])


def mutated_frames(rng, compiled, max_payload):
    """Malformed frames of every kind, each with the status the link must answer (or None
    when the bytes must be dropped without an answer)."""
    status = encode_frame(Command.STATUS)
    chunk = compiled.load_chunks(max_payload)[0]
    load = encode_frame(Command.LOAD, chunk)
    cases = []
    bad_crc = bytearray(load)
    bad_crc[10] ^= 0x10  # a weight/record byte flipped in flight: CRC no longer matches
    cases.append(("bad CRC on LOAD", bytes(bad_crc), Status.BAD_CRC))
    cases.append(("unknown command", encode_frame(0x3C, b"xyz"), Status.UNKNOWN_COMMAND))
    cases.append(("oversize length", bytes([SOF, Command.LOAD, 0, 0xFF, 0x7F]),
                  Status.BAD_LENGTH))
    cases.append(("STATUS with a payload", encode_frame(Command.STATUS, b"\x00"),
                  Status.BAD_LENGTH))
    cases.append(("READ without a count", encode_frame(Command.READ), Status.BAD_LENGTH))
    cases.append(("INFER with a broken segment", encode_frame(Command.INFER, b"\x09\x00abc"),
                  Status.BAD_LENGTH))
    cases.append(("truncated frame", load[:len(load) // 2], Status.TIMEOUT))
    cases.append(("length longer than the frame", bytes([SOF, Command.STATUS, 0, 3, 0, 1]),
                  Status.TIMEOUT))
    cases.append(("garbage without a start marker",
                  bytes(rng.choice([b for b in range(256) if b != SOF]) for _ in range(50)),
                  None))
    for i in range(6):
        frame = bytearray(status if i % 2 else load)
        frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
        cases.append((f"random bit flip {i}", bytes(frame), "any"))
    return cases


def test_fuzz_malformed_frames_then_bit_exact(built, images):
    """Bad CRC, truncation, wrong lengths, unknown commands between valid requests: each gets
    its error response, the link keeps serving, and inference stays bit-exact."""
    rng = random.Random(3)
    model, compiled = compiled_model("spikformer")
    x = images[:3]
    expected, _ = golden.run(model, x, record=False)
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(compiled)
        for what, data, answer in mutated_frames(rng, compiled, acc.max_payload):
            acc.send_raw(data)
            frames = acc.drain(quiet=3.0 if answer == Status.TIMEOUT else 1.0)
            statuses = [f.status for f in frames]
            if answer is None:
                assert frames == [], what
            elif answer != "any":
                assert statuses[:1] == [answer], f"{what}: got {statuses}"
                assert all(f.cmd & RESPONSE for f in frames)
            link = acc.status()  # still serving, program intact
            assert link.ready and link.error == Status.OK, what
        np.testing.assert_array_equal(acc.infer(x), expected)


def test_load_error_is_reported_and_recovers(built, images):
    """A record beyond the weight memory gets DOES_NOT_FIT, a malformed one BAD_RECORD; after
    RESET a full load runs bit-exactly."""
    model, compiled = compiled_model("spikformer")
    x = images[:2]
    expected, _ = golden.run(model, x, record=False)
    beyond = struct.pack("<BHB", isa.REC_WEIGHT, CONFIG.weight_depth, 1) + bytes(CONFIG.pe_rows)
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        frame = acc.request(Command.LOAD, beyond)
        answer = frame.status if frame.status != Status.OK else acc.status().error
        assert answer == Status.DOES_NOT_FIT
        acc.reset()
        frame = acc.request(Command.LOAD, b"\x00garbage")
        answer = frame.status if frame.status != Status.OK else acc.status().error
        assert answer == Status.BAD_RECORD
        acc.reset()
        with pytest.raises(DeviceError, match="NOT_LOADED"):
            acc.compiled = compiled
            acc.infer(x)
        acc.reset()
        acc.load(compiled)
        np.testing.assert_array_equal(acc.infer(x), expected)


def corrupt_one_weight(compiled, x, expected):
    """Flip bit 6 of the first head weight whose corruption the NumPy executor of the load
    image shows to change a logit; return (word, row)."""
    from pysim.hwref import Executor

    head = next(p for p in compiled.passes if p.desc["out_mode"] == isa.OUT_HEAD)
    for word in range(head.desc["w_base"], len(compiled.weights)):
        for row in range(CONFIG.pe_rows):
            compiled.weights[word][row] ^= 0x40
            logits = np.stack([compiled.decode_result(r, False)[0]
                               for r in Executor(compiled).run_batch(x)])
            if (logits != expected).any():
                return word, row
            compiled.weights[word][row] ^= 0x40
    raise AssertionError("no head weight changes the logits of these inputs")


def test_corrupted_weight_makes_comparison_fail(built, images):
    """Negative control: one flipped weight bit, sent in a well-formed LOAD (fresh CRC and
    commit checksum), makes the RTL disagree with the golden model."""
    model, compiled = compiled_model("spikformer")
    x = images[:3]
    expected, _ = golden.run(model, x, record=False)
    corrupt_one_weight(compiled, x, expected)  # records() re-derives image and checksum
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(compiled)
        logits = acc.infer(x)
    with pytest.raises(AssertionError):
        np.testing.assert_array_equal(logits, expected)


def test_unchanged_build_skips_verilator(built):
    """Building the same configuration again rewrites nothing and skips Verilator (the model
    in build/cosim/default_<hash>/ is reused by the next test session and by `make sim`)."""
    again = build(CONFIG)
    assert not again.verilated and again.sim_dir == built.sim_dir
    assert (again.sim_dir / "spikeformer_top").exists()


def test_make_sim_fails_on_a_corrupted_weight(built, images, tmp_path, monkeypatch, capsys):
    """Negative control of `make sim` itself: its runner (`tb.run_sim`, judged by the board
    runner's `compare`) sends a load image with one weight bit flipped (well-formed: fresh CRC
    and commit checksum), exits 1 and names the mismatching inputs in its report."""
    import hw.compiler
    from tb import run_sim

    x = images[:3]
    model, _ = compiled_model("spikformer")
    expected, _ = golden.run(model, x, record=False)
    real_compile = hw.compiler.compile_network
    flipped = []

    def compile_with_a_flipped_weight(model, config):
        compiled = real_compile(model, config)
        flipped.append(corrupt_one_weight(compiled, x, expected))
        return compiled

    monkeypatch.setattr(hw.compiler, "compile_network", compile_with_a_flipped_weight)
    out = tmp_path / "report.json"
    assert run_sim.main(["--images", "3", "--out", str(out), "--no-progress"]) == 1
    assert len(flipped) == 1
    report = json.loads(out.read_text())
    assert not report["passed"] and report["cycle_model_equal"]  # the logits alone fail it
    assert 1 <= report["mismatches"] == len(report["mismatching_inputs"]) <= 3
    assert set(report["mismatching_inputs"]) <= {0, 1, 2}
    assert f"{report['mismatches']} inputs differ from the golden model (first: " \
        in capsys.readouterr().out


def test_both_regressions_on_the_rtl(built):
    """On the RTL, in one session: the wide-shift network's logits are all zero (it fired
    everywhere when shifts were cut to 4 bits), and after the filler network, the victim's
    logits on all-zero images are [0, 0] for several inferences (they were [4, 0])."""
    wide = wide_shift_network()
    filler, victim = stale_lane_networks(CONFIG.lanes)
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(compile_network(wide, CONFIG))
        x = np.ones((2,) + wide.input_spec.shape, np.int64)
        logits, traces = acc.infer(x, trace=True)
        np.testing.assert_array_equal(logits, golden.run(wide, x, record=False)[0])
        _, reference = golden.run(wide, x, record=True)
        for b, traced in enumerate(traces):
            for name, value in traced.items():
                np.testing.assert_array_equal(value, reference[name][b], err_msg=name)
        zeros = np.zeros((3,) + filler.input_spec.shape, np.int64)
        acc.reset()
        acc.load(compile_network(filler, CONFIG))
        np.testing.assert_array_equal(acc.infer(zeros[:1]),
                                      golden.run(filler, zeros[:1], record=False)[0])
        acc.reset()
        acc.load(compile_network(victim, CONFIG))
        np.testing.assert_array_equal(acc.infer(zeros), golden.run(victim, zeros, record=False)[0])
    assert session.passed


def test_board_runner_runs_a_fashion_model(built):
    """The board runner (`python -m firmware`'s `run`) takes a Fashion-MNIST model unchanged:
    the committed spikformer on two 28x32 test images, bit-exact and cycle-exact."""
    from firmware.__main__ import run
    from pysim import cli
    from pysim.data import test_split

    model = cli.load_model("spikformer", cli.CHECKPOINTS / "fashion")
    x, y = test_split("fashion")
    with Session(built) as session:
        report = run(session.transport, model, CONFIG, x[:2], y[:2], timeout=300,
                     progress=False)
    assert report["passed"], report
    assert report["mismatches"] == 0 and report["cycle_model_equal"]


def test_board_runner_runs_the_lane_packed_t1_model(built):
    """The 64-token T = 1 Spikformer V2 (32x32 input, `pack` = 4: three spare lanes carry
    other positions) through the board runner on the RTL: bit-exact and cycle-exact."""
    from firmware.__main__ import run
    from pysim import cli
    from pysim.data import fit_images, test_split

    model = cli.load_model("spikformer_v2_t1_n64", cli.CHECKPOINTS / "fashion")
    assert compile_network(model, CONFIG).globals["pack"] == CONFIG.lanes
    x, y = test_split("fashion")
    x = fit_images(x[:2], model.input_spec.shape)
    with Session(built) as session:
        report = run(session.transport, model, CONFIG, x, y[:2], timeout=300, progress=False)
    assert report["passed"], report
    assert report["mismatches"] == 0 and report["cycle_model_equal"]
