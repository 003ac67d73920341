"""The host link on the Amaranth simulator, around the echo stand-in core: every response byte
against `tb.link_model.EchoLinkModel` (built with `firmware.protocol.encode_frame`), valid
traffic and malformed frames of every kind, under random idle, back-pressure and stalls."""

import itertools
import random

import pytest

from firmware.protocol import (
    RESPONSE,
    SOF,
    Command,
    FrameParser,
    decode_read,
    encode_frame,
    encode_segments,
)
from hw.status import Status
from tb.echo_core import EchoCore
from tb.link_model import EchoLinkModel
from tb.link_sim import CONFIG, LINK_ARGS, LinkBench

_SEQ = itertools.count(1)


def frame(cmd, payload=b"", seq=None):
    """A request frame; each gets the next sequence number unless `seq` is given."""
    return encode_frame(cmd, payload, next(_SEQ) & 0xFF if seq is None else seq)


def model():
    return EchoLinkModel(CONFIG.max_payload, LINK_ARGS["queue_depth"], LINK_ARGS["result_depth"])


def run_and_compare(chunks, seed=0, stress=0.0, bench=None):
    """Run `chunks` through the link; assert every chunk's responses equal the model's."""
    reference = model()
    expected = [reference.feed(chunk) for chunk in chunks]
    bench = bench or LinkBench(seed=seed, idle=stress, backpressure=stress, stall=stress)
    got = bench.run(chunks, [len(e) for e in expected])
    for i, (chunk, want, have) in enumerate(zip(chunks, expected, got, strict=True)):
        assert have == want, f"chunk {i} ({chunk[:12].hex()}..): got {have}, expected {want}"
    return got


def read(count):
    return frame(Command.READ, count.to_bytes(2, "little"))


def valid_traffic(rng, inputs=6):
    """RESET, STATUS, a LOAD, inputs spanning frames and packed together, READs of every size
    (planned on a model so that the echoes never overfill the result buffer)."""
    chunks = [frame(Command.RESET), frame(Command.STATUS),
              frame(Command.LOAD, bytes(rng.randrange(256) for _ in range(40)))]
    plan = model()
    for chunk in chunks:
        plan.feed(chunk)
    sizes = [rng.choice([1, 5, 30, 90]) for _ in range(inputs)]
    data = [bytes(rng.randrange(256) for _ in range(n)) for n in sizes]
    for payload in encode_segments(data, CONFIG.max_payload):
        while plan.result_room() < len(payload):
            chunks.append(read(60))
            plan.feed(chunks[-1])
        chunks.append(frame(Command.INFER, payload))
        chunks.append(read(rng.choice([0, 1, 7, 60, 500])))
        plan.feed(chunks[-2])
        plan.feed(chunks[-1])
    chunks += [read(60)] * 6 + [frame(Command.STATUS)]
    return chunks


@pytest.mark.parametrize("stress", [0.0, 0.4])
def test_valid_traffic_byte_for_byte(stress):
    got = run_and_compare(valid_traffic(random.Random(1)), seed=2, stress=stress)
    assert all(frames for frames in got)


def malformed(rng):
    """(name, chunk) of every kind of bad input; each chunk is followed by a pause."""
    load = frame(Command.LOAD, bytes(rng.randrange(256) for _ in range(30)))
    status = frame(Command.STATUS)
    flipped = bytearray(load)
    flipped[9] ^= 0x20
    crc_flip = bytearray(status)
    crc_flip[-1] ^= 1
    return [
        ("bad CRC in the payload", bytes(flipped)),
        ("bad CRC in the CRC", bytes(crc_flip)),
        ("unknown command", frame(0x3C, b"xyz")),
        ("oversize length", bytes([SOF, Command.LOAD, 0x99, 0xFF, 0x7F, 1, 2, 3])),
        ("STATUS with a payload", frame(Command.STATUS, b"\x00")),
        ("READ without a count", frame(Command.READ)),
        ("INFER with a broken segment", frame(Command.INFER, b"\x09\x00abc")),
        ("INFER with an empty segment", frame(Command.INFER, b"\x00\x00abc")),
        ("truncated frame", load[:len(load) // 2]),
        ("start marker alone", bytes([SOF])),
        ("dropped byte, then a good frame", load[:7] + load[8:] + status),
        ("garbage without a start marker",
         bytes(rng.choice([b for b in range(256) if b != SOF]) for _ in range(40))),
        ("start marker inside a payload", frame(Command.LOAD, bytes([SOF] * 5))),
        ("back-to-back frames", status + load + read(3) + status),
        ("garbage, then a frame", b"\x00\x13\x37" + status),
    ]


@pytest.mark.parametrize("stress", [0.0, 0.3])
def test_malformed_frames_get_their_error_and_the_link_keeps_serving(stress):
    rng = random.Random(4)
    cases = malformed(rng)
    inputs = frame(Command.INFER, encode_segments([b"hello", b"world!"], 64)[0])
    chunks = [frame(Command.RESET), inputs]
    for _, chunk in cases:
        chunks += [chunk, frame(Command.STATUS)]
    chunks += [read(60)]
    got = run_and_compare(chunks, seed=5, stress=stress)
    statuses = {name: [FrameParser().feed(f)[0].status for f in frames]
                for (name, _), frames in zip(cases, got[2::2], strict=False)}
    assert statuses["bad CRC in the payload"] == [Status.BAD_CRC]
    assert statuses["unknown command"] == [Status.UNKNOWN_COMMAND]
    assert statuses["oversize length"] == [Status.BAD_LENGTH]
    assert statuses["truncated frame"] == [Status.TIMEOUT]
    assert statuses["dropped byte, then a good frame"][0] == Status.BAD_CRC
    assert statuses["garbage without a start marker"] == []
    assert len(statuses["back-to-back frames"]) == 4
    # after all of it the inputs are still there, in order, less the 3 bytes read in between
    assert decode_read(FrameParser().feed(got[-1][0])[0].payload)[1:] == (b"loworld!", 2)


def test_a_corrupted_result_is_caught():
    """Negative control: an echo core that flips one bit of one result byte makes the
    comparison with the model fail."""
    chunks = [frame(Command.INFER, encode_segments([b"abcdefgh"], 64)[0]), read(60)]
    bench = LinkBench(seed=1, core=EchoCore(corrupt_byte=3))
    with pytest.raises(AssertionError, match="chunk 1"):
        run_and_compare(chunks, bench=bench)


def test_the_model_and_the_encoder_agree_on_response_framing():
    frames = model().feed(frame(Command.STATUS) + frame(0x77, seq=9))
    parsed = FrameParser().feed(b"".join(frames))
    assert [f.cmd for f in parsed] == [Command.STATUS | RESPONSE, 0x77 | RESPONSE]
    assert parsed[1].status == Status.UNKNOWN_COMMAND and parsed[1].seq == 9


@pytest.mark.parametrize("stress", [0.0, 0.3])
def test_a_repeated_request_is_recognized_and_not_done_twice(stress):
    """A request sent again with the sequence number of the last accepted one (its response
    was lost): INFER is not queued again, READ sends the same bytes again, LOAD is not
    forwarded again; a repeat of a rejected request is carried out."""
    infer = frame(Command.INFER, encode_segments([b"abc", b"defg"], 64)[0], seq=40)
    read5 = frame(Command.READ, b"\x05\x00", seq=41)
    load = frame(Command.LOAD, b"L" * 9, seq=43)
    broken = frame(Command.INFER, b"\x09\x00abc", seq=44)
    fixed = frame(Command.INFER, encode_segments([b"hij"], 64)[0], seq=44)
    chunks = [frame(Command.RESET, seq=39), infer, infer, read5, read5,
              frame(Command.READ, b"\x3c\x00", seq=42), load, load, broken, fixed,
              frame(Command.READ, b"\x3c\x00", seq=45), frame(Command.STATUS, seq=46)]
    got = run_and_compare(chunks, seed=9, stress=stress)
    reads = [decode_read(FrameParser().feed(got[i][0])[0].payload)[1:] for i in (3, 4, 5, 10)]
    assert reads == [(b"abcde", 1), (b"abcde", 1), (b"fg", 1), (b"hij", 1)]
    status = FrameParser().feed(got[-1][0])[0]
    assert status.seq == 46 and status.payload[7:11] == (3).to_bytes(4, "little")  # 3 inputs
