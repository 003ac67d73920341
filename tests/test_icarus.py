"""The second simulator: the same RTL, benches and host driver on Icarus Verilog.

Icarus (Debian's `iverilog`) is installed by `make test` / `make iverilog` when missing, so
nothing here is skipped: without it the runner fails naming the command that installs it.
A small array (`hw/configs/small.json` renamed `icarus_small`, so its build folder,
`build/cosim/icarus_small_<hash>/sim_icarus/`, is used by no other test file) runs tiny random
networks through the host firmware; the PE array and LIF block tests run on Icarus too
(`build/cocotb/blocks_blk_icarus_<hash>/sim_icarus/`). Negative controls: a flipped weight bit
is caught, and both Icarus fixes are shown to be needed: the bench's settling time, and
compiling as Verilog-2005 (on a tiny design).
"""

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import cocotb
import numpy as np
import pytest
from amaranth import Module, Signal
from amaranth.back import verilog
from amaranth.lib import wiring
from amaranth.lib.wiring import Out
from cocotb.triggers import Timer

from firmware.__main__ import compare, per_inference_cycles
from hw import isa
from hw.compiler import compile_network
from hw.config import ArrayConfig
from pysim import golden
from pysim.hwref import Executor
from pysim.random_model import random_images, random_int_model
from tb import blocks
from tb.runner import SLOWDOWN, IcarusRunner, make_runner, sim_folder, write_if_changed
from tb.session import Session, build

pytestmark = pytest.mark.rtl

CONFIG = ArrayConfig.load(blocks.ROOT / "hw" / "configs" / "small.json").replace(
    name="icarus_small")
BLOCKS = ArrayConfig(name="blk_icarus", pe_rows=3, pe_cols=2, lanes=1, weight_bits=8,
                     acc_bits=14, membrane_bits=17)
BLOCK_TESTS = {"pe_corners", "pe_modes/idle=0.0", "pe_modes/idle=0.4", "pe_random/idle=0.0",
               "pe_random/idle=0.3", "lif_corners", "lif_random/idle=0.0",
               "lif_random/idle=0.5"}


@pytest.fixture(scope="module")
def built():
    return build(CONFIG, simulator="icarus")


def network(family, seed):
    """A tiny seeded random network (4x4 input, D = 8, 4 classes, T = 4: 1,200-1,700 cycles per
    inference on the small array) and 2 seeded images."""
    model = random_int_model(family, seed=seed, T=4, size=4, dim=8, classes=4)
    return model, compile_network(model, CONFIG), random_images(model, 2, seed=seed + 1)


def test_build_is_icarus_and_unchanged_rebuild_skips_iverilog(built):
    """The build is Icarus's own (`sim_icarus/sim.vvp`), and building the unchanged design
    again does not run iverilog."""
    assert built.simulator == "icarus" and built.sim_dir.name == sim_folder("icarus")
    assert (built.sim_dir / "sim.vvp").exists()
    assert not build(CONFIG, simulator="icarus").verilated


@pytest.mark.parametrize("family", ["sew", "ms"])
def test_random_network_bit_exact_on_icarus(built, family):
    """A SEW network (SSA, SEW adds) and a membrane-shortcut one (LIF on integer streams):
    the logits and busy cycles of 2 images equal the golden and cycle models, judged as
    `make sim` judges them, and every traced tensor of one image equals the golden model's."""
    model, net, x = network(family, seed=3)
    expected, reference = golden.run(model, x, record=True)
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(net)
        judged = compare(expected, acc.measure(x, progress=False), np.zeros(len(x)),
                         per_inference_cycles(net))
        logits, traces = acc.infer(x[:1], trace=True)
    assert session.passed and session.stats["cycles"] > 2 * per_inference_cycles(net)
    assert judged["passed"], judged
    np.testing.assert_array_equal(logits, expected[:1])
    assert len(traces[0]) == len(net.trace_tensors())
    for name, value in traces[0].items():
        np.testing.assert_array_equal(value, reference[name][0], err_msg=name)


def test_make_sim_runner_on_icarus(built, tmp_path):
    """`make sim SIM=icarus` end to end (its runner, `tb.run_sim --sim icarus`) on an exported
    random network of the digits' input shape: exit 0, the report names Icarus, the first 2
    test images agree with the golden model and the busy cycles with the cycle model."""
    import json

    from tb import run_sim

    model = random_int_model("sew", seed=4, T=4, size=8, dim=8, classes=10, pixel_bits=5)
    model.save(tmp_path / "tiny")
    config = tmp_path / "icarus_small.json"
    config.write_text(CONFIG.to_json())
    out = tmp_path / "report.json"
    assert run_sim.main(["--model", str(tmp_path / "tiny.json"), "--config", str(config),
                         "--images", "2", "--sim", "icarus", "--out", str(out),
                         "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["simulator"] == "icarus" and report["config"] == CONFIG.name
    assert report["images"] == 2 and report["mismatches"] == 0 and report["cycle_model_equal"]
    assert report["cocotb_passed"]


def test_corrupted_weight_is_caught_on_icarus(built):
    """Negative control: one flipped head weight bit in a well-formed load image makes the
    Icarus RTL disagree with the golden model."""
    model, net, x = network("sew", seed=3)
    expected, _ = golden.run(model, x, record=False)
    head = next(p for p in net.passes if p.desc["out_mode"] == isa.OUT_HEAD)
    for word in range(head.desc["w_base"], len(net.weights)):
        net.weights[word][0] ^= 0x40
        if any((net.decode_result(r, False)[0] != e).any()
               for r, e in zip(Executor(net).run_batch(x), expected, strict=True)):
            break
        net.weights[word][0] ^= 0x40
    else:
        raise AssertionError("no head weight changes the logits of these inputs")
    with Session(built) as session:
        acc = session.accelerator()
        acc.reset()
        acc.load(net)
        judged = compare(expected, acc.measure(x, progress=False), np.zeros(len(x)),
                         per_inference_cycles(net))
    assert judged["mismatches"] >= 1 and not judged["passed"]


def test_bench_must_settle_before_starting(built, monkeypatch):
    """Why `tb.bench.TB` waits 1 ns before the clock and the stream models start: started at
    time 0 (`TB_SETTLE_NS=0`, as the old bench did), the models' first edge reads X from the
    link's outputs on Icarus and the simulation never serves."""
    monkeypatch.setenv("TB_SETTLE_NS", "0")
    with pytest.raises(RuntimeError, match="not serving"):
        Session(built, timeout=0.5)
    assert "Logic('X')" in (built.directory / "sim_icarus.log").read_text()


class HeldState(wiring.Component):
    """A register that never changes and an output decoded from it: Yosys writes the decoder
    as an `always @*` block woken only by its `reg ... = 0;` trigger's initial value."""

    out: Out(4)

    def elaborate(self, platform):
        m = Module()
        state = Signal(2, init=1)
        m.d.sync += state.eq(state)
        with m.Switch(state):
            with m.Case(1):
                m.d.comb += self.out.eq(9)
            with m.Default():
                m.d.comb += self.out.eq(5)
        return m


@cocotb.test()
async def held_state_output_is_defined(dut):
    """(Runs inside Icarus.) Before any clock edge, the output already reads its value."""
    await Timer(1, unit="ns")
    assert str(dut.out.value) == "1001", f"out reads {dut.out.value}"


@pytest.mark.parametrize("language, passes", [("-g2005", True), ("-g2012", False)])
def test_verilog_2005_gives_initial_values_their_event(monkeypatch, language, passes):
    """Why the runner compiles as Verilog-2005: under cocotb's `-g2012` Icarus gives Yosys's
    `reg x = 0;` initial values no time-0 event, so an `always @*` block that only reads such
    registers never runs and its output stays X (on the link it was `s_axis_tready`)."""
    monkeypatch.setattr(IcarusRunner, "LANGUAGE", language)
    folder = blocks.BUILD / "icarus_held_state"
    source = folder / "held_state.v"
    write_if_changed(source, verilog.convert(HeldState(), name="held_state"))
    runner = make_runner("icarus")
    runner.build(sources=[source], hdl_toplevel="held_state", timescale=("1ns", "1ps"),
                 build_dir=folder / f"sim{language}")
    results = runner.build_dir / "results.xml"
    try:
        runner.test(test_module=Path(__file__).stem, hdl_toplevel="held_state", seed=1,
                    results_xml=str(results), extra_env={"PYTHONPATH": os.pathsep.join(
                        [str(Path(__file__).parent), str(blocks.ROOT)])})
    except SystemExit:
        pass  # under pytest the runner exits on a failing cocotb test; the XML says which
    cases = list(ET.parse(results).getroot().iter("testcase"))
    assert [case.get("name") for case in cases] == ["held_state_output_is_defined"]
    failure = cases[0].find("failure")
    assert (failure is None) == passes
    if not passes:
        assert "out reads XXXX" in failure.get("message")


def test_blocks_on_icarus():
    """The PE array and LIF block tests pass on Icarus, and each fails when one wrong value is
    driven (TB_FAULT)."""
    outcome = blocks.run(BLOCKS, simulator="icarus")
    assert set(outcome.results) == BLOCK_TESTS and not outcome.failed, outcome.failed
    assert outcome.log.name == "sim_icarus.log"
    faulty = blocks.run(BLOCKS, simulator="icarus", fault=True)
    assert set(faulty.results) == BLOCK_TESTS
    assert all(message is not None for message in faulty.results.values()), faulty.results


def test_waves_on_icarus_give_an_fst_trace(monkeypatch):
    """WAVES=1 builds into sim_icarus_waves/ with the Verilog-2005 dump module and the run
    writes an FST file."""
    monkeypatch.setenv("WAVES", "1")
    outcome = blocks.run(BLOCKS, tests="lif_corners", simulator="icarus")
    assert outcome.results == {"lif_corners": None}
    dump = blocks.build_dir(BLOCKS) / "sim_icarus_waves" / f"{blocks.TOP}.fst"
    assert dump.stat().st_size > 1000
    assert dump.read_bytes()[0] == 0  # FST block type 0: header (a VCD starts with text)


def test_simulator_choice_and_timeouts():
    """Verilator stays the default; Icarus's wall-clock timeouts are scaled; a wrong name is
    refused with the choices."""
    assert type(make_runner()).__name__ == "VerilatorRunner"
    assert isinstance(make_runner("icarus"), IcarusRunner)
    assert sim_folder() == "sim" and SLOWDOWN["verilator"] == 1 < SLOWDOWN["icarus"]
    with pytest.raises(ValueError, match="verilator, icarus"):
        make_runner("questa")
