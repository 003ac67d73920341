"""`make soak` (issue 16): malformed frames of every kind, interleaved with valid LOAD, INFER and
READ traffic, into the cosimulated RTL (host link + core); every inference checked against the
golden model.

    python -m tb.soak [--frames 10000] [--inferences 1000] [--seed 0] [--model spikformer]
                      [--config hw/configs/default.json] [--out build/soak/report.json]

The host firmware (`AcceleratorClient`, with retries) streams the digits test split (a seeded
permutation, repeated) in batches; while results come back, after every result, it puts
`frames / inferences` malformed frames on the line, each followed by a STATUS probe (which a
truncated frame swallows: the probe is retried like any request; before it, the host waits
for the device's first answer to the malformed bytes, at most 1 s). Every few batches it resets
and loads the program again. Kinds of malformed frames: bit flips in a LOAD, INFER, READ or
STATUS frame; a frame cut short; a dropped byte; a wrong length field (over `max_payload` or
not); an unknown command; a length wrong for its command; garbage without a start marker;
garbage with start markers; a start marker inside a payload; frames back to back. Valid frames
sent raw carry the sequence number of the host's last request, so should one be accepted it is
a repeat (INFER not queued, LOAD not forwarded); READs are never sent raw (a repeated READ with
a larger count would hand out bytes the host's next READ then releases).

The report (`build/soak/report.json`): frames by kind, responses by status (every response the
host saw that answered none of its requests, and the probes'), inferences, mismatches against
the golden model, lost (requests the host gave up on, results that never came), retries, the
device's error afterwards, simulated cycles and wall time. Exit status 1 on any mismatch or
loss.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter
from pathlib import Path

import numpy as np

from firmware.protocol import SOF, Command, encode_frame, encode_segments
from pysim import cli

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "hw" / "configs" / "default.json"

KINDS = ("bit_flip", "truncated", "dropped_byte", "wrong_length", "oversize_length",
         "unknown_command", "length_wrong_for_command", "garbage", "garbage_with_sof",
         "sof_in_payload", "back_to_back")


def malformed(kind: str, rng: random.Random, seq: int, load_chunk: bytes, tokens: bytes,
              max_payload: int) -> bytes:
    """One malformed frame (or run of bytes) of `kind`; valid frames in it carry `seq`."""
    infer = encode_frame(Command.INFER, encode_segments([tokens], max_payload)[0], seq)
    frames = [encode_frame(Command.LOAD, load_chunk, seq), infer,
              encode_frame(Command.READ, rng.randrange(1 << 16).to_bytes(2, "little"), seq),
              encode_frame(Command.STATUS, b"", seq)]
    frame = bytearray(rng.choice(frames))
    if kind == "bit_flip":
        frame[rng.randrange(1, len(frame))] ^= 1 << rng.randrange(8)
    elif kind == "truncated":
        del frame[rng.randrange(1, len(frame) - 1):]
    elif kind == "dropped_byte":
        del frame[rng.randrange(1, len(frame))]
    elif kind == "wrong_length":
        length = frame[3] | frame[4] << 8
        wrong = rng.choice([n for n in range(max_payload + 1) if n != length])
        frame[3:5] = wrong.to_bytes(2, "little")
    elif kind == "oversize_length":
        frame[3:5] = rng.randrange(max_payload + 1, 1 << 16).to_bytes(2, "little")
    elif kind == "unknown_command":
        cmd = rng.choice([c for c in range(0x80) if c not in set(Command)])
        frame = bytearray(encode_frame(cmd, bytes(rng.randrange(256) for _ in
                                                  range(rng.randrange(8))), seq))
    elif kind == "length_wrong_for_command":
        frame = bytearray(rng.choice([
            encode_frame(Command.STATUS, b"\x00", seq), encode_frame(Command.RESET, b"x", seq),
            encode_frame(Command.READ, b"", seq), encode_frame(Command.READ, b"\x01\x02\x03", seq),
            encode_frame(Command.LOAD, b"", seq), encode_frame(Command.INFER, b"\x09\x00abc", seq),
            encode_frame(Command.INFER, b"\x00\x00abc", seq)]))
    elif kind == "garbage":
        frame = bytearray(rng.choice([b for b in range(256) if b != SOF])
                          for _ in range(rng.randrange(1, 64)))
    elif kind == "garbage_with_sof":
        frame = bytearray(rng.choice([SOF, *range(16)]) for _ in range(rng.randrange(1, 64)))
    elif kind == "sof_in_payload":
        frame = bytearray(encode_frame(Command.INFER, encode_segments(
            [bytes([SOF]) * rng.randrange(1, 16)], max_payload)[0], seq))
    elif kind == "back_to_back":
        frame = bytearray(encode_frame(Command.STATUS, b"", seq) * rng.randrange(2, 4) + infer)
    return bytes(frame)


def soak(frames: int = 10_000, inferences: int = 1_000, seed: int = 0,
         model_name: str = "spikformer", config_path: str | Path | None = None,
         batch: int = 25, reload_every: int = 8, progress: bool = True,
         tamper: bool = False, build_folder: str | None = None,
         timeout_cycles: int = 1 << 10) -> dict:
    """Run the soak on the cosimulated RTL; return the report (see the module docstring).

    The RTL is built in `build/cosim/<build_folder>` (default `soak_<config>_<hash>`) with a
    frame timeout of `timeout_cycles` (1024: a frame cut short is answered quickly; requests
    arrive back to back in the cosimulation); `tamper` (a negative control for tests) changes
    one expected logit by one."""
    from firmware.host import DeviceError, LinkError
    from firmware.protocol import ProtocolError
    from firmware.transport import TransportError
    from hw.compiler import compile_network
    from hw.config import ArrayConfig
    from pysim import golden
    from pysim.data import digits_test
    from tb.session import Session, build, build_name

    rng = random.Random(seed)
    model = cli.load_model(model_name)
    config = ArrayConfig.load(config_path or DEFAULT_CONFIG)
    compiled = compile_network(model, config)
    x, _ = digits_test()
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(x)), inferences))
    images = x[order]
    expected, _ = golden.run(model, images, record=False)
    if tamper:
        expected[0, 0] += 1
    load_chunk = compiled.load_chunks(config.max_payload)[0]
    tokens = compiled.encode_input(images[0])
    per_result = frames / max(inferences, 1)
    sent = Counter()
    probes = Counter()
    lost = Counter()
    failures = []  # what the host said when it gave up
    got = np.full(expected.shape, np.iinfo(np.int64).min, dtype=np.int64)
    start = time.monotonic()
    built = build(config, build_folder or f"soak_{build_name(config)}",
                  timeout_cycles=timeout_cycles)
    with Session(built) as session:
        acc = session.accelerator(timeout=300)
        acc.response_timeout = 2.0 * session.slowdown
        acc.retries = 6
        owed = 0.0

        def inject(count: int) -> None:
            for _ in range(count):
                kind = KINDS[sum(sent.values()) % len(KINDS)] if rng.random() < 0.5 \
                    else rng.choice(KINDS)
                acc.send_raw(malformed(kind, rng, acc.seq, load_chunk, tokens,
                                       config.max_payload))
                sent[kind] += 1
                if kind != "garbage":
                    # Let the device answer (a cut-off frame: after its frame timeout) before
                    # the probe, so the probe is seldom swallowed by a frame still open.
                    acc.unsolicited += acc.drain(quiet=0.02, first=1.0 * session.slowdown)
                try:
                    probes[acc.status().error.name] += 1
                except (LinkError, ProtocolError) as err:
                    lost[f"probe after {kind}: {type(err).__name__}"] += 1
                    failures.append(f"{kind}: {err}"[:300])

        def on_result(_count: int) -> None:
            nonlocal owed
            owed += per_result
            inject(int(owed))
            owed -= int(owed)

        done = 0
        batches = 0
        while done < inferences:
            if batches % reload_every == 0:
                acc.reset()
                acc.load(compiled)
            part = images[done:done + batch]
            try:
                got[done:done + len(part)] = acc.infer(part, on_result=on_result)
            except (LinkError, ProtocolError, DeviceError, TransportError) as err:
                lost[f"batch: {type(err).__name__}: {str(err)[:120]}"] += 1
                acc.drain(quiet=1.0)
                batches = -1  # start over: reset and load before the next batch
            done += len(part)
            batches += 1
            if progress:
                print(f"\r{done}/{inferences} inferences, {sum(sent.values())} malformed frames",
                      end="", flush=True)
        inject(frames - sum(sent.values()))
        link = acc.status()
        retried = acc.retried
        responses = Counter(status_name(f) for f in acc.unsolicited)
    if progress:
        print()
    stats = session.stats
    complete = got != np.iinfo(np.int64).min
    rows_complete = complete.all(axis=1)
    mismatches = int((rows_complete & (got != expected).any(axis=1)).sum())
    report = {
        "seed": seed, "model": model_name, "config": config.name,
        "frames_by_kind": dict(sorted(sent.items())),
        "malformed_frames": sum(sent.values()),
        "responses_by_status": dict(sorted(responses.items())),
        "probe_error_status": dict(sorted(probes.items())),
        "inferences": inferences,
        "inferences_checked": int(rows_complete.sum()),
        "mismatches": mismatches,
        "lost": {"results": int((~rows_complete).sum()), **dict(lost)},
        "retries": retried,
        "give_ups": failures[:20],
        "device_error_after": link.error.name,
        "results_done_since_last_reset": link.results_done,
        "simulated_cycles": stats.get("cycles"),
        "wall_seconds": round(time.monotonic() - start, 1),
    }
    report["passed"] = (mismatches == 0 and report["lost"]["results"] == 0 and not lost
                        and link.error.name == "OK")
    return report


def status_name(frame) -> str:
    """A response's status name, or what is wrong with its payload."""
    try:
        return frame.status.name
    except Exception as err:  # a response without a status byte, or an unknown one
        return f"unparsed ({err})"


@cli.entry_point("python -m tb.soak")
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tb.soak", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=cli.positive, default=10_000)
    parser.add_argument("--inferences", type=cli.positive, default=1_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="spikformer")
    parser.add_argument("--config", help="ArrayConfig JSON (default: hw/configs/default.json)")
    parser.add_argument("--out", default="build/soak/report.json")
    cli.add_debug(parser)
    args = parser.parse_args(argv)
    report = soak(args.frames, args.inferences, args.seed, args.model, args.config)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("malformed_frames", "inferences_checked",
                                             "mismatches", "lost", "retries", "wall_seconds",
                                             "passed")}))
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
