"""Differential fuzzing: random networks of the whole export format, RTL against golden model.

    python -m tb.fuzz --config hw/configs/default.json --minutes 30 --seed 0 [--networks N]
    python -m tb.fuzz --config hw/configs/default.json --replay SEED [--after PREVIOUS]
    python -m tb.fuzz ... --sim icarus        # the same on Icarus Verilog (slower)

For each configuration (`--config`, repeatable; default: the default and small arrays) one
Verilator build and ONE cosimulation session (`tb.session`) serve network after network, as a
board would: RESET, compile (`hw.compiler.compile_network`), LOAD, INFER a few random inputs with
tracing, INFER them again untraced bracketed by STATUS reads. The networks come from
`pysim.fuzz_model.fuzz_network(seed, config)`, seed `network_seed(--seed, index)`. A network
passes when

- the compiler refuses it with `DoesNotFit` (counted by reason: a refusal is an answer, not a
  wrong result), or
- every logit (traced and untraced runs), every traced tensor and the busy cycles of the
  untraced run (the cycle model's, `pysim.cycles`) equal the golden model's. The logits and
  cycles are judged by the board runner's `firmware.__main__.compare`, the traces by
  `compare_traces` here.

It fails on a mismatch, a hang (no response or result within a timeout scaled to the cycle
model), a device error (e.g. the gateware refusing a program the compiler accepted), any other
compiler exception, or a generator error (an export that does not validate or breaks its own
declared bounds). Device state outlives RESET (activation memory), so a failure can depend on
the network before it: each failure records its seed and the previous network's seed, and
`--replay SEED --after PREVIOUS` runs the pair again in a fresh session. A failure is also
triaged: its first wrong layer (every layer's output is traced, so the fault is in that layer's
pass) and what it reads, whether the NumPy executor of the same load image
(`pysim.hwref.Executor`, a fresh memory) agrees with the golden model, the known cause it
matches (`suspected_cause`) and, unless a truncated shift explains it, whether the network
fails alone in a fresh session (`--triage` such reruns per config).

Writes `build/fuzz/report.json` (networks generated, compiled, refused by reason, run, inputs,
mismatches with seeds and what differed, hangs, wall time, configs) and exits 1 when anything
failed.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIGS = (ROOT / "hw" / "configs" / "default.json", ROOT / "hw" / "configs" / "small.json")
DEFAULT_OUT = ROOT / "build" / "fuzz" / "report.json"
#: Simulated cycles per second assumed for timeouts (Verilator runs 60-120k on this machine).
SLOW_CYCLES_PER_SECOND = 10_000
#: Seconds any response may take on top of the expected simulation time.
TIMEOUT_BASE = 30.0

#: DoesNotFit messages -> short reasons (first match wins); numbers and names dropped so that
#: refusals of one kind count together.
REFUSALS = (
    (r"power-of-two grid width", "3x3 conv on a grid width that is not a power of two"),
    (r"time-step lanes", "T above the lanes"),
    (r"weight_bits = \d+ exceeds", "weights wider than the array's"),
    (r"input pixels have", "pixels wider than 8 bits"),
    (r"input slot", "input larger than the input slot"),
    (r"bias beyond", "head bias beyond the accumulator"),
    (r"accumulator", "accumulator could overflow"),
    (r"logits may reach", "logits could exceed 32 bits"),
    (r"activation memory", "activation memory full"),
    (r"needs \d+ (weight words|parameter entries|reduction steps|passes)",
     "program needs too many {0}"),
    (r"descriptor field (\w+)", "descriptor field {0} out of range"),
    (r"pe_rows <= pe_cols", "attention needs pe_rows <= pe_cols"),
    (r"pack = ", "pack out of range"),
)


def refusal_reason(message: str) -> str:
    """The short reason of a `DoesNotFit` message (see `REFUSALS`)."""
    for pattern, reason in REFUSALS:
        m = re.search(pattern, message)
        if m:
            return reason.format(*m.groups())
    text = message.split(": ", 1)[-1]
    return re.sub(r"-?\d+", "N", text)[:80]


@dataclass(frozen=True)
class Verdict:
    """The outcome of one network on one configuration."""

    seed: int
    config: str
    #: "passed", "refused" (DoesNotFit), or a failure: "mismatch", "hang", "device error",
    #: "compiler error", "generator error"
    status: str
    network: str = ""  #: `pysim.fuzz_model.describe` of the network
    reason: str = ""  #: refusal reason, or a one-line summary of the failure
    differences: tuple = ()  #: what differed (strings), failures only
    previous: int | None = None  #: seed of the network that ran on the device before this one
    inputs: int = 0  #: inputs inferred (each twice: traced and untraced)
    cycles: int = 0  #: cycle model's busy cycles per inference
    seconds: float = 0.0
    triage: dict = field(default_factory=dict)
    features: tuple = ()  #: `pysim.fuzz_model.features` of the network (coverage)

    @property
    def failed(self) -> bool:
        return self.status not in ("passed", "refused")


def compare_traces(expected: dict, traces: list, names) -> list[str]:
    """Every traced tensor of every input against the golden trace (`golden.run`'s dict of
    `(B, T, C, H, W)` arrays); `names` are the tensors the device must have traced. Returns one
    line per differing tensor (empty when all are equal)."""
    out = []
    names = list(names)
    for b, traced in enumerate(traces):
        traced = traced or {}
        for name in names:
            if name not in traced:
                out.append(f"input {b}: tensor {name} not in the device's trace")
                continue
            want, got = np.asarray(expected[name][b]), np.asarray(traced[name])
            if want.shape != got.shape:
                out.append(f"input {b}: tensor {name} has shape {got.shape}, expected "
                           f"{want.shape}")
                continue
            bad = np.argwhere(want != got)
            if len(bad):
                first = tuple(int(i) for i in bad[0])
                out.append(f"input {b}: tensor {name}: {len(bad)} of {want.size} values differ; "
                           f"first at (t, c, y, x) = {first}: {int(got[first])}, expected "
                           f"{int(want[first])}")
        for name in sorted(set(traced) - set(names)):
            out.append(f"input {b}: unexpected tensor {name} in the device's trace")
    return out


def judge(expected: np.ndarray, reference: dict, names, traced_logits: np.ndarray,
          traces: list, measured, model_cycles: int) -> list[str]:
    """Everything one network's run is judged by; returns what differed (empty: passed).

    `measured` is the untraced run (`firmware.host.MeasuredRun`): its logits and busy cycles
    are judged by the board runner's `compare`; `traced_logits` and `traces` come from the
    traced run of the same inputs."""
    from firmware.__main__ import compare

    diffs = []
    if np.shape(measured.logits) != expected.shape:
        diffs.append(_logit_difference("untraced", measured.logits, expected))
    else:
        verdict = compare(expected, measured, expected.argmax(1), model_cycles)
        if verdict["mismatches"]:
            diffs.append(_logit_difference("untraced", measured.logits, expected))
        if not verdict["cycle_model_equal"]:
            diffs.append(f"busy cycles {measured.busy_cycles} for {measured.results} results, "
                         f"cycle model {model_cycles} x {len(expected)}")
    traced_logits = np.asarray(traced_logits)
    if traced_logits.shape != expected.shape or (traced_logits != expected).any():
        diffs.append(_logit_difference("traced", traced_logits, expected))
    diffs += compare_traces(reference, traces, names)
    return diffs


def _logit_difference(run: str, got, expected) -> str:
    got = np.asarray(got)
    if got.shape != expected.shape:
        return f"logits of the {run} run have shape {got.shape}, expected {expected.shape}"
    bad = np.nonzero((got != expected).any(axis=1))[0]
    b = int(bad[0])
    return (f"logits of inputs {bad.tolist()} differ ({run} run); input {b}: got "
            f"{got[b].tolist()}, expected {expected[b].tolist()}")


def traced_names(model) -> list[str]:
    """The tensors a traced inference returns: every layer's output but the logits."""
    return [layer.output for layer in model.layers if layer.kind != "head"]


def hwref_agrees(compiled, images, expected, reference) -> bool:
    """Whether the NumPy executor of the same load image reproduces the golden model."""
    from pysim.hwref import Executor

    for b, payload in enumerate(Executor(compiled).run_batch(images, trace=True)):
        logits, traced = compiled.decode_result(payload, trace=True)
        if (logits != expected[b]).any() or any(
                (traced[n] != reference[n][b]).any() for n in traced):
            return False
    return True


def largest_step_shift(compiled) -> int:
    """The largest bit-plane shift in the program's reduction steps (`isa.STEP_FIELDS`)."""
    return max((max(s[3], s[6]) for s in compiled.steps), default=0)


def first_wrong_layer(model, reference: dict, expected: np.ndarray, logits, traces) -> str | None:
    """The earliest layer (execution order) whose output differs on some input of the traced
    run. Its inputs are right (every layer's output is traced), so the fault is in its pass.
    None when only the untraced run or the cycle count differs."""
    for layer in model.layers:
        if layer.kind == "head":
            got = np.asarray(logits)
            if got.shape != expected.shape or (got != expected).any():
                return layer.name
            continue
        for b, traced in enumerate(traces):
            got = (traced or {}).get(layer.output)
            want = reference[layer.output][b]
            if got is None or np.shape(got) != want.shape or (got != want).any():
                return layer.name
    return None


#: Failure causes known when the fuzzer was written (issue "Two silent wrong results").
KNOWN_SHIFT = "known 1: a bit-plane shift >= 16 truncated (layer reads a tensor over 16 bits)"
KNOWN_STALE = ("known 2: stale lanes of an earlier network in 3x3 padding (T < lanes, "
               "passes alone in a fresh session)")
UNEXPLAINED = "unexplained"


def suspected_cause(model, config, layer_name: str | None, state_dependent: bool | None) -> str:
    """Which known cause explains a failure whose first wrong layer is `layer_name`.

    Known 1 when that layer reads a tensor of more than 16 bit-planes (its steps shift by 16
    and more). Known 2 when it is a 3x3 conv with T < lanes and the failure depends on the
    networks before it (`state_dependent`: the network passes alone, or fails first at a later
    layer; None when not rerun alone: "suspected"). Else unexplained."""
    if layer_name is None:
        return UNEXPLAINED
    layer = model.layer(layer_name)
    widest = max(1 if model.tensors[n].kind == "spike" else model.tensors[n].bits
                 for n in layer.inputs)
    if widest > 16:
        return KNOWN_SHIFT
    if layer.kind == "conv" and layer.params.get("kernel") == 3 and model.T < config.lanes \
            and state_dependent is not False:
        return KNOWN_STALE + (" (suspected: not rerun alone)" if state_dependent is None else "")
    return UNEXPLAINED + (" (depends on the networks before it)" if state_dependent else "")


class Fuzzer:
    """One configuration's cosimulation and the networks it has judged.

    `triage` bounds how many failures are rerun alone in a fresh session (a new simulation:
    seconds each); every failure gets the cheap triage (first wrong layer, NumPy executor,
    largest shift, suspected cause)."""

    def __init__(self, config, inputs: int = 3, triage: int = 20, log=print,
                 simulator: str = "verilator"):
        from tb.session import build, verilator_on_path

        verilator_on_path()
        self.config = config
        self.inputs = inputs
        self.rerun_left = triage
        self.log = log
        start = time.monotonic()
        self.built = build(config, simulator=simulator)
        self.build_seconds = time.monotonic() - start
        self.session = None
        self.acc = None
        self.sessions = 0
        self.previous: int | None = None  # seed of the last network loaded into the device
        self.fresh = True  # no network has run in this session yet
        self.verdicts: list[Verdict] = []

    # ---- session ---------------------------------------------------------------------------
    def open(self):
        from tb.session import Session

        self.session = Session(self.built)
        self.acc = self.session.accelerator(timeout=60.0)
        self.sessions += 1
        self.previous = None
        self.fresh = True

    def close(self):
        if self.session is not None:
            try:
                self.session.close()
            except Exception as err:  # a hung simulation: report, go on with a new one
                self.log(f"closing the session of {self.config.name}: {err}")
            self.session = self.acc = None

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- one network -------------------------------------------------------------------------
    def run(self, seed: int, triage: bool = True) -> Verdict:
        """Generate, compile and run network `seed`; record and return its verdict."""
        fresh = self.fresh
        verdict, evidence = self._run(seed)
        if verdict.failed and triage and evidence is not None:
            verdict = self._triage(verdict, evidence, fresh)
        self.verdicts.append(verdict)
        return verdict

    def _run(self, seed: int):
        """One network; returns its verdict and, once compiled, the evidence for triage."""
        from firmware.host import DeviceError
        from firmware.transport import TransportError
        from hw.compiler import DoesNotFit, compile_network
        from pysim import golden
        from pysim.fuzz_model import describe, features, fuzz_images, fuzz_network
        from tb.run_sim import per_inference_cycles

        start = time.monotonic()
        name = self.config.name

        def verdict(status, **kw):
            return Verdict(seed, name, status, seconds=time.monotonic() - start, **kw)

        try:
            model = fuzz_network(seed, self.config)
            images = fuzz_images(model.input_spec, self.inputs, np.random.default_rng(seed + 1))
            expected, reference = golden.run(model, images)
        except Exception as err:
            return verdict("generator error", reason=f"{type(err).__name__}: {err}"), None
        network = describe(model)
        try:
            compiled = compile_network(model, self.config)
        except DoesNotFit as err:
            return verdict("refused", network=network, reason=refusal_reason(str(err)),
                           differences=(str(err),)), None
        except Exception as err:
            return verdict("compiler error", network=network,
                           reason=f"{type(err).__name__}: {err}"), None
        cycles = per_inference_cycles(compiled)
        # Trace dumps and the link add to the core's cycles; allow for a slow simulator.
        self.acc.timeout = (TIMEOUT_BASE + 4 * self.inputs * cycles / SLOW_CYCLES_PER_SECOND) \
            * self.session.slowdown
        previous, self.previous, self.fresh = self.previous, seed, False
        common = dict(network=network, previous=previous, inputs=len(images), cycles=cycles,
                      features=tuple(features(model)))
        evidence = dict(model=model, compiled=compiled, images=images, expected=expected,
                        reference=reference, culprit=None)
        step = "RESET"
        try:
            self.acc.reset()
            step = "LOAD"
            self.acc.load(compiled)
            step = "INFER (traced)"
            logits, traces = self.acc.infer(images, trace=True)
            step = "INFER (untraced)"
            measured = self.acc.measure(images, progress=False)
        except TransportError as err:
            self._recover()
            return verdict("hang", reason=f"{step}: {err}", **common), evidence
        except DeviceError as err:
            return verdict("device error", reason=f"{step}: {err}", **common), evidence
        diffs = judge(expected, reference, traced_names(model), logits, traces, measured,
                      cycles)
        if diffs:
            evidence["culprit"] = first_wrong_layer(model, reference, expected, logits, traces)
            return verdict("mismatch", reason=diffs[0][:200], differences=tuple(diffs[:20]),
                           **common), evidence
        return verdict("passed", **common), evidence

    def _recover(self):
        """After a hang: a new session (a RESET may not free a stuck sequencer, and a clean
        simulation keeps the next networks' verdicts their own)."""
        self.log(f"{self.config.name}: no answer; starting a new session")
        self.close()
        self.open()

    def _triage(self, v: Verdict, evidence: dict, fresh: bool) -> Verdict:
        """Where a failure comes from: the first wrong layer and what it reads, whether the
        NumPy executor of the same load image agrees with the golden model (compiler or
        RTL?), the largest bit-plane shift of the program, and, unless the session was fresh
        or known cause 1 explains it, whether the network fails alone in a fresh session."""
        model, compiled = evidence["model"], evidence["compiled"]
        culprit = evidence["culprit"]
        info = {"first_wrong_layer": culprit, "T": model.T, "lanes": self.config.lanes,
                "pack": compiled.globals["pack"],
                "largest_step_shift": largest_step_shift(compiled),
                "fresh_session": fresh}
        if culprit is not None:
            layer = model.layer(culprit)
            info["first_wrong_layer_reads"] = [
                f"{n}: {model.tensors[n].kind} {model.tensors[n].bits} bits"
                for n in layer.inputs]
            if layer.kind == "conv":
                info["first_wrong_layer_kernel"] = layer.params["kernel"]
        try:
            info["hwref_agrees_with_golden"] = hwref_agrees(
                compiled, evidence["images"], evidence["expected"], evidence["reference"])
        except Exception as err:
            info["hwref_agrees_with_golden"] = f"{type(err).__name__}: {err}"
        state_dependent = False if fresh else None
        cause = suspected_cause(model, self.config, culprit, state_dependent)
        if not fresh and cause != KNOWN_SHIFT and self.rerun_left > 0:
            self.rerun_left -= 1
            self.close()
            self.open()
            alone, alone_evidence = self._run(v.seed)
            alone_culprit = (alone_evidence or {}).get("culprit")
            info["alone_in_fresh_session"] = alone.status
            info["alone_first_wrong_layer"] = alone_culprit
            if alone.differences:
                info["alone_first_difference"] = alone.differences[0][:200]
            state_dependent = not alone.failed or alone_culprit != culprit
            cause = suspected_cause(model, self.config, culprit, state_dependent)
            if alone.failed:
                info["alone_cause"] = suspected_cause(model, self.config, alone_culprit, False)
        info["cause"] = cause
        return Verdict(**{**asdict(v), "triage": info})

    # ---- figures -----------------------------------------------------------------------------
    def summary(self) -> dict:
        vs = self.verdicts
        refused = Counter(v.reason for v in vs if v.status == "refused")
        failures = [v for v in vs if v.failed]
        ran = [v for v in vs if v.status in ("passed", "mismatch")]
        coverage = Counter(f for v in ran for f in v.features)
        return {
            "config": self.config.name,
            "config_values": json.loads(self.config.to_json()),
            "build": str(self.built.directory),
            "build_seconds": round(self.build_seconds, 1),
            "sessions": self.sessions,
            "networks_generated": len(vs),
            "compiled": sum(v.status not in ("refused", "generator error", "compiler error")
                            for v in vs),
            "refused": sum(refused.values()),
            "refused_by_reason": dict(refused.most_common()),
            "run": sum(v.status in ("passed", "mismatch") for v in vs),
            "passed": sum(v.status == "passed" for v in vs),
            "inputs": sum(v.inputs for v in vs if v.status in ("passed", "mismatch")),
            "mismatches": [_failure(v) for v in failures if v.status == "mismatch"],
            "hangs": [_failure(v) for v in failures if v.status == "hang"],
            "errors": [_failure(v) for v in failures if v.status not in ("mismatch", "hang")],
            "failed": len(failures),
            "failures_by_cause": dict(Counter(v.triage.get("cause", "not triaged")
                                              for v in failures).most_common()),
            "seconds": round(sum(v.seconds for v in vs), 1),
            "coverage_of_networks_run": dict(sorted(coverage.items())),
        }


def _failure(v: Verdict) -> dict:
    replay = f"python -m tb.fuzz --config <{v.config}> --replay {v.seed}"
    if v.previous is not None:
        replay += f" --after {v.previous}"
    return {"seed": v.seed, "previous_seed": v.previous, "status": v.status,
            "network": v.network, "what": v.reason, "differences": list(v.differences),
            "triage": v.triage, "replay": replay}


def fuzz(configs, minutes: float, seed: int, networks: int | None = None, inputs: int = 3,
         triage: int = 20, progress: bool = True, simulator: str = "verilator") -> dict:
    """Fuzz each configuration in turn (the time budget split evenly); returns the report."""
    from tqdm import tqdm

    from pysim.fuzz_model import network_seed

    start = time.monotonic()
    budget = minutes * 60 / len(configs)
    sections = []
    interrupted = False
    for config in configs:
        if interrupted:
            break
        fz = Fuzzer(config, inputs, triage, log=tqdm.write, simulator=simulator)
        begin = time.monotonic()
        deadline = begin + budget
        with fz, tqdm(total=networks, unit="net", desc=config.name, disable=not progress,
                      file=sys.stdout, dynamic_ncols=True) as bar:
            index = 0
            try:
                while time.monotonic() < deadline and (networks is None or index < networks):
                    v = fz.run(network_seed(seed, index))
                    index += 1
                    if v.failed:
                        tqdm.write(f"FAIL {config.name} seed {v.seed} (after {v.previous}): "
                                   f"{v.status} [{v.triage.get('cause', '')}]: "
                                   f"{v.reason[:120]}")
                    bar.update(1)
                    s = Counter(x.status for x in fz.verdicts)
                    bar.set_postfix(run=s["passed"] + s["mismatch"], refused=s["refused"],
                                    failed=sum(x.failed for x in fz.verdicts), refresh=False)
            except KeyboardInterrupt:  # Ctrl-C: stop, and report what has been judged
                interrupted = True
                tqdm.write("interrupted: reporting the networks judged so far")
        loop = time.monotonic() - begin
        sections.append({**fz.summary(), "fuzz_seconds": round(loop, 1),
                         "networks_per_minute": round(len(fz.verdicts) / loop * 60, 1)})
    wall = time.monotonic() - start
    total = {key: sum(s[key] for s in sections)
             for key in ("networks_generated", "compiled", "refused", "run", "passed", "inputs",
                         "failed")}
    reasons, causes = Counter(), Counter()
    for s in sections:
        reasons.update(s["refused_by_reason"])
        causes.update(s["failures_by_cause"])
    return {
        "seed": seed,
        "minutes": minutes,
        "networks_limit": networks,
        "inputs_per_network": inputs,
        "configs": [c.name for c in configs],
        "simulator": simulator,
        **total,
        "refused_by_reason": dict(reasons.most_common()),
        "failures_by_cause": dict(causes.most_common()),
        "mismatches": [m for s in sections for m in s["mismatches"]],
        "hangs": [m for s in sections for m in s["hangs"]],
        "errors": [m for s in sections for m in s["errors"]],
        "interrupted": interrupted,
        "wall_seconds": round(wall, 1),
        #: over the wall time, Verilator builds included (per config: the fuzzing loop alone)
        "networks_per_minute": round(total["networks_generated"] / wall * 60, 1) if wall else 0,
        "per_config": sections,
    }


def replay(config, seed: int, after: int | None = None, inputs: int = 3,
           simulator: str = "verilator") -> list[Verdict]:
    """Network `seed` in a fresh session, after network `after` when given."""
    with Fuzzer(config, inputs, triage=1, simulator=simulator) as fz:
        if after is not None:
            fz.run(after, triage=False)
        fz.run(seed)
    return fz.verdicts


def main(argv=None) -> int:
    from hw.config import ArrayConfig
    from tb.runner import SIMULATORS

    parser = argparse.ArgumentParser(prog="python -m tb.fuzz",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", action="append",
                        help="ArrayConfig JSON, repeatable (default: hw/configs/default.json "
                        "and hw/configs/small.json)")
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="wall-time budget, split evenly between the configs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run")
    parser.add_argument("--networks", type=int, help="at most this many networks per config")
    parser.add_argument("--inputs", type=int, default=3, help="inputs per network")
    parser.add_argument("--triage", type=int, default=20,
                        help="failures per config to rerun alone in a fresh session")
    parser.add_argument("--replay", type=int, metavar="SEED",
                        help="run the network of this seed (from a report) and stop")
    parser.add_argument("--after", type=int, metavar="SEED",
                        help="with --replay: first run this network (the failure's previous)")
    parser.add_argument("--out", help=f"report (default {DEFAULT_OUT.relative_to(ROOT)}, "
                        "build/fuzz/replay-SEED.json for --replay)")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--sim", choices=SIMULATORS, default=SIMULATORS[0], help="simulator")
    args = parser.parse_args(argv)
    configs = [ArrayConfig.load(p) for p in (args.config or DEFAULT_CONFIGS)]
    if args.replay is not None:
        out = Path(args.out or ROOT / "build" / "fuzz" / f"replay-{args.replay}.json")
        verdicts = [v for c in configs
                    for v in replay(c, args.replay, args.after, args.inputs, args.sim)]
        for v in verdicts:
            print(f"{v.config} seed {v.seed}: {v.status} {v.network}")
            for line in v.differences:
                print(f"  {line}")
            if v.triage:
                print(f"  triage: {v.triage}")
        report = {"replay": args.replay, "after": args.after,
                  "verdicts": [asdict(v) for v in verdicts]}
        failed = any(v.failed for v in verdicts)
    else:
        report = fuzz(configs, args.minutes, args.seed, args.networks, args.inputs,
                      args.triage, progress=not args.no_progress, simulator=args.sim)
        out = Path(args.out or DEFAULT_OUT)
        print(f"{report['networks_generated']} networks in {report['wall_seconds']:.0f} s "
              f"({report['networks_per_minute']}/min): {report['run']} run on the RTL "
              f"({report['inputs']} inputs), {report['refused']} refused, "
              f"{report['failed']} failed")
        for reason, n in report["refused_by_reason"].items():
            print(f"  refused {n:4d}  {reason}")
        for cause, n in report["failures_by_cause"].items():
            print(f"  failed  {n:4d}  {cause}")
        for f in report["mismatches"] + report["hangs"] + report["errors"]:
            print(f"  FAIL {f['status']} seed {f['seed']} (after {f['previous_seed']}): "
                  f"{f['triage'].get('cause', '')}: {f['what'][:120]}")
        failed = report["failed"] > 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
