"""Framing, CRC and payload codecs of the host protocol, and the host API on a scripted line."""

import random
import struct

import numpy as np
import pytest

from firmware.host import AcceleratorClient, DeviceError
from firmware.protocol import (
    LINK_VERSION,
    OVERHEAD,
    RESPONSE,
    SOF,
    STATUS_BYTES,
    Command,
    FrameParser,
    LinkStatus,
    ProtocolError,
    crc16,
    decode_read,
    decode_segments,
    encode_frame,
    encode_segments,
)
from firmware.transport import Transport, TransportError
from hw.status import Status


def test_crc16_check_value_and_residue():
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue check value
    assert crc16(b"") == 0xFFFF
    frame = encode_frame(Command.LOAD, bytes(range(40)))
    assert crc16(frame[1:]) == 0  # the residue the gateware checks
    corrupted = bytearray(frame)
    corrupted[10] ^= 0x04
    assert crc16(bytes(corrupted[1:])) != 0


def test_frame_layout():
    frame = encode_frame(Command.READ, b"\x10\x00", seq=0x37)
    assert frame[0] == SOF and frame[1] == Command.READ and frame[2] == 0x37
    assert frame[3:5] == b"\x02\x00" and frame[5:7] == b"\x10\x00"
    assert FrameParser().feed(frame)[0].seq == 0x37
    assert len(frame) == OVERHEAD + 2
    with pytest.raises(ValueError):
        encode_frame(0x100)
    with pytest.raises(ValueError, match="sequence"):
        encode_frame(Command.READ, seq=256)
    with pytest.raises(ValueError):
        encode_frame(Command.LOAD, bytes(70000))


def test_parser_resynchronises_after_garbage_and_bad_frames():
    rng = random.Random(1)
    good = [encode_frame(Command.STATUS | RESPONSE, bytes(rng.randrange(256) for _ in range(n)))
            for n in (0, 1, 5, 200)]
    bad_crc = bytearray(good[2])
    bad_crc[-1] ^= 1
    oversize = bytes([SOF, 0x85, 0, 0xFF, 0xFF])
    stream = (b"\x00\x13" + good[0] + bytes(bad_crc) + good[1] + oversize + good[2] + b"\xa5"
              + good[3])
    parser = FrameParser(max_payload=256)
    frames = []
    for i in range(0, len(stream), 7):  # arbitrary split points
        frames += parser.feed(stream[i:i + 7])
    payloads = [f.payload for f in frames]
    # the stray SOF before the last frame swallows its start, so the last frame is found by
    # hunting from the byte after the stray marker
    assert payloads[:4] == [good[0][5:-2], good[1][5:-2], good[2][5:-2], good[3][5:-2]]
    assert parser.errors >= 2


def test_parser_rejects_status_less_response():
    frame = FrameParser().feed(encode_frame(Command.RESET | RESPONSE))[0]
    with pytest.raises(ProtocolError):
        frame.status  # noqa: B018
    assert FrameParser().feed(encode_frame(0x81, bytes([Status.BAD_CRC])))[0].status \
        == Status.BAD_CRC
    with pytest.raises(ProtocolError):
        FrameParser().feed(encode_frame(0x81, bytes([200])))[0].status  # noqa: B018


@pytest.mark.parametrize("max_payload", [16, 67, 256])
def test_segments_round_trip(max_payload):
    rng = random.Random(max_payload)
    inputs = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
              for _ in range(20)]
    payloads = encode_segments(inputs, max_payload)
    assert all(3 <= len(p) <= max_payload for p in payloads)
    pieces = [piece for p in payloads for piece in decode_segments(p)]
    rebuilt, current = [], b""
    for data, ends in pieces:
        current += data
        if ends:
            rebuilt.append(current)
            current = b""
    assert rebuilt == inputs and current == b""


def test_segments_pack_small_inputs_together():
    payloads = encode_segments([b"a" * 65] * 3, 256)
    assert len(payloads) == 1 and len(payloads[0]) == 3 * 67


@pytest.mark.parametrize("payload, what", [
    (b"\x05\x00abc", "runs"), (b"\x00\x00", "empty"), (b"\x01\x00a\x01", "cut off"),
    (b"", "at least one"),
])
def test_segments_reject_malformed(payload, what):
    with pytest.raises(ValueError, match=what):
        decode_segments(payload)


def test_status_round_trip_and_length_check():
    status = LinkStatus(Status.DOES_NOT_FIT, True, False, True, 1, 900, 12, 7, 12345, 256,
                        1024, 1024)
    assert len(status.encode()) == STATUS_BYTES
    assert LinkStatus.decode(status.encode()) == status
    with pytest.raises(ProtocolError):
        LinkStatus.decode(status.encode()[:-1])


def test_decode_read():
    assert decode_read(bytes([0, 0x10, 0x02, 7, 8, 9, 1])) == (0x210, b"\x07\x08\x09", 1)
    with pytest.raises(ProtocolError):
        decode_read(b"\x00\x00")


# ---- host API on a scripted device ----------------------------------------------------------


class ScriptedLine(Transport):
    """A fake line: `device(frame) -> response frames` answers each request frame."""

    def __init__(self, device):
        self.device = device
        self.parser = FrameParser()
        self.out = b""
        self.sent = []

    def write(self, data):
        for frame in self.parser.feed(data):
            self.sent.append(frame)
            self.out += b"".join(self.device(frame))

    def read(self, max_bytes, timeout):
        data, self.out = self.out[:max_bytes], self.out[max_bytes:]
        return data

    def close(self):
        pass


def status_payload(error=Status.OK, ready=True, idle=True):
    return LinkStatus(error, ready, False, idle, LINK_VERSION, 1024, 0, 0, 0, 64, 1024,
                      1024).encode()


class FakeNet:
    """A compiled-network stand-in: inputs of 3 bytes, results of 8 bytes (2 logits)."""

    def load_chunks(self, max_bytes):
        return [b"W" * 10, b"C" * 6]

    def encode_input(self, image, trace=False):
        return bytes([int(trace)]) + bytes(np.asarray(image, np.uint8).ravel())

    def result_bytes(self, trace):
        return 8

    def decode_result(self, payload, trace):
        return np.frombuffer(payload, "<i4").astype(np.int64), None


def echo_device(results_per_read=5, load_status=Status.OK, commit_error=Status.OK):
    """A device that answers each input [t, a, b] with logits (a + b, a - b)."""
    queue = []
    partial = bytearray()

    def device(frame):
        cmd = Command(frame.cmd)
        if cmd == Command.STATUS:
            payload = status_payload(commit_error)
        elif cmd == Command.LOAD:
            payload = bytes([load_status, 0, 4])
        elif cmd == Command.INFER:
            for data, ends in decode_segments(frame.payload):
                partial.extend(data)
                if ends:
                    a, b = partial[1], partial[2]
                    queue.append(struct.pack("<ii", a + b, a - b))
                    partial.clear()
            payload = bytes([0, 0, 4])
        elif cmd == Command.READ:
            take = queue[:results_per_read]
            del queue[:results_per_read]
            payload = bytes([0, 0, 4]) + b"".join(take) + bytes([len(take)])
        else:
            payload = bytes([Status.OK])
        return [encode_frame(frame.cmd | RESPONSE, payload, frame.seq)]

    return device


def test_host_streams_inputs_and_decodes_in_order():
    line = ScriptedLine(echo_device(results_per_read=3))
    acc = AcceleratorClient(line, timeout=1)
    acc.load(FakeNet())
    images = np.arange(2 * 40).reshape(40, 2) % 100
    seen = []
    logits = acc.infer(images, on_result=seen.append)
    assert logits.tolist() == [[a + b, a - b] for a, b in images.tolist()]
    assert seen == list(range(1, 41))
    infers = [f for f in line.sent if f.cmd == Command.INFER]
    assert len(infers) < 40  # several inputs share a frame
    assert all(len(f.payload) <= 64 for f in line.sent)


def test_host_raises_device_errors_with_context():
    acc = AcceleratorClient(ScriptedLine(echo_device(load_status=Status.BAD_RECORD)), timeout=1)
    with pytest.raises(DeviceError, match=r"LOAD chunk 1/2.*BAD_RECORD.*malformed"):
        acc.load(FakeNet())
    acc = AcceleratorClient(ScriptedLine(echo_device(commit_error=Status.DOES_NOT_FIT)), timeout=1)
    with pytest.raises(DeviceError, match="DOES_NOT_FIT"):
        acc.load(FakeNet())
    with pytest.raises(DeviceError, match="NOT_LOADED"):
        acc.infer(np.zeros((1, 2)))


def test_host_detects_result_stream_out_of_step():
    device = echo_device()

    def lying(frame):
        out = device(frame)
        if frame.cmd == Command.READ:
            payload = FrameParser().feed(out[0])[0].payload
            if len(payload) > 4:
                return [encode_frame(frame.cmd | RESPONSE, payload[:-1] + b"\x00", frame.seq)]
        return out

    acc = AcceleratorClient(ScriptedLine(lying), timeout=1)
    acc.load(FakeNet())
    with pytest.raises(ProtocolError, match="out of step"):
        acc.infer(np.ones((2, 2)))


def test_host_times_out_on_a_silent_device():
    with pytest.raises(TransportError, match="no response"):
        AcceleratorClient(ScriptedLine(lambda frame: []), timeout=0.2)
