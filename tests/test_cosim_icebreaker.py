"""The committed digits spikformer on the iCEBreaker's array, cosimulated on Verilator.

The README says spikformer runs bit-exactly on the iCEBreaker's one-PE array
(`hw/boards/icebreaker.json`: 1x1 PEs x 4 lanes, no paired steps, no lane packing, single
accumulator bank). These tests check it on the trained checkpoint (`checkpoints/spikformer.json`),
not a random network: `make sim CONFIG=hw/boards/icebreaker.json IMAGES=3` as a test (its runner,
`tb.run_sim.run`, judged by the board runner's `firmware.__main__.compare`), every traced tensor
of one image, and a negative control. One Verilator build, `build/cosim/icebreaker_<hash>/`
(used by no other test file; `make sim CONFIG=hw/boards/icebreaker.json` shares it).
"""

import json

import numpy as np
import pytest

from firmware.__main__ import compare, per_inference_cycles
from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.data import digits_test
from pysim.hwref import Executor
from pysim.intmodel import IntModel
from tb import run_sim
from tb.session import Session, build

pytestmark = pytest.mark.rtl

BOARD_CONFIG = run_sim.ROOT / "hw" / "boards" / "icebreaker.json"
CONFIG = ArrayConfig.load(BOARD_CONFIG)
MODEL = run_sim.ROOT / "checkpoints" / "spikformer.json"


@pytest.fixture(scope="module")
def compiled():
    model = IntModel.load(MODEL)
    return model, compile_network(model, CONFIG)


def test_make_sim_of_spikformer_on_the_icebreaker_array(tmp_path):
    """`make sim CONFIG=hw/boards/icebreaker.json IMAGES=3`: the first three test images give
    the golden model's logits, and the busy cycles the cycle model's."""
    out = tmp_path / "report.json"
    report = run_sim.run("spikformer", str(BOARD_CONFIG), 3, out, progress=False)
    assert report == json.loads(out.read_text())
    assert report["config"] == "icebreaker"
    assert ArrayConfig.from_json(json.dumps(report["config_values"])) == CONFIG
    assert report["images"] == 3 and report["cocotb_passed"]
    assert report["mismatches"] == 0, report["mismatching_inputs"]
    assert report["cycle_model_equal"], (report["cycles_per_inference"],
                                         report["cycles_per_inference_model"])
    assert report["passed"] and report["accuracy_rtl"] == report["accuracy_golden"]
    # The board's array is the slow one: hundreds of thousands of cycles per inference.
    assert report["cycles_per_inference"] > 100_000


def corrupt_one_weight(compiled, x, expected):
    """Flip bit 6 of the first head weight whose corruption the NumPy executor of the load
    image shows to change a logit of `x`; return (word, row)."""
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


def test_every_traced_tensor_then_a_corrupted_weight_is_caught(compiled):
    """One image traced: every layer's output equals the golden model's. Then, in the same
    session, a load image with one flipped weight bit (well-formed: fresh CRC and checksum)
    makes the board runner's verdict fail on that image while the cycles still match."""
    model, net = compiled
    x, y = digits_test()
    x, y = x[3:4], y[3:4]
    expected, reference = golden.run(model, x, record=True)
    with Session(build(CONFIG)) as session:
        acc = session.accelerator(timeout=120)
        acc.reset()
        assert acc.max_payload == CONFIG.max_payload
        acc.load(net)
        logits, traces = acc.infer(x, trace=True)
        np.testing.assert_array_equal(logits, expected)
        assert len(traces[0]) == len(net.trace_tensors())
        for name, value in traces[0].items():
            np.testing.assert_array_equal(value, reference[name][0], err_msg=name)

        corrupt_one_weight(net, x, expected)
        acc.reset()
        acc.load(net)
        judged = compare(expected, acc.measure(x, progress=False), y,
                         per_inference_cycles(net))
    assert session.passed
    assert judged["mismatches"] == 1 and judged["mismatching_inputs"] == [0]
    assert judged["cycle_model_equal"] and not judged["passed"]
