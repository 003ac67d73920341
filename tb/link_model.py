"""A Python reference of `HostLink` around `tb.echo_core.EchoCore`: the responses, byte for byte.

`EchoLinkModel.feed(chunk)` takes the request bytes a host puts on the line before it waits, and
returns the response frames the link must send for them, built with
`firmware.protocol.encode_frame`. It mirrors the decoder byte by byte (hunting for the start
marker, the length check right after the length field, CRC, command, length per command, INFER
segments, duplicates: a request that repeats the last accepted sequence number) and treats the
end of a chunk as a long pause: a frame still open then times out. The model assumes what a test
bench arranges: each chunk goes in once the link is quiescent (the queue drained into the echo
core) and results never fill the result buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.protocol import (
    LINK_VERSION,
    RESPONSE,
    SOF,
    Command,
    LinkStatus,
    crc16,
    decode_segments,
    length_ok,
)
from firmware.protocol import encode_frame as _encode_frame
from firmware.transport import Transport
from hw.status import Status


@dataclass
class EchoLinkModel:
    max_payload: int
    queue_depth: int
    result_depth: int
    waiting: list = field(default_factory=list)  #: result (byte, last) not yet read
    unreleased: int = 0  #: bytes the last READ sent, held until the next READ
    results_done: int = 0
    busy_cycles: int = 0  #: EchoCore is busy one cycle per echoed byte
    cmd: int = 0  #: the decoder's command register (a TIMEOUT before CMD echoes the old one)
    seq: int = 0  #: the decoder's sequence-number register
    last_seq: int | None = None  #: of the last accepted request
    sent: list = field(default_factory=list)  #: the bytes of the last READ response
    dedup: bool = True  #: False: a negative control, a link that ignores sequence numbers

    def result_room(self) -> int:
        return self.result_depth - self.unreleased - len(self.waiting)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The response frames the link sends for `chunk` followed by a long pause."""
        out = []
        i = 0
        while i < len(chunk):
            if chunk[i] != SOF:
                i += 1
                continue
            header = chunk[i + 1:i + 5]
            if len(header) >= 1:
                self.cmd = header[0]
            if len(header) >= 2:
                self.seq = header[1]
            if len(header) < 4:
                out.append(self._reject(Status.TIMEOUT))
                break
            length = header[2] | header[3] << 8
            if length > self.max_payload:
                out.append(self._reject(Status.BAD_LENGTH))
                i += 5
                continue
            end = i + 5 + length + 2
            if end > len(chunk):
                out.append(self._reject(Status.TIMEOUT))
                break
            body = chunk[i + 1:end]
            out.append(self._decide(body, chunk[i + 5:i + 5 + length]))
            i = end
        return out

    def _reject(self, status: Status) -> bytes:
        return _encode_frame(self.cmd | RESPONSE, bytes([status]), self.seq)

    def _decide(self, body: bytes, payload: bytes) -> bytes:
        cmd = body[0]
        if crc16(body) != 0:
            return self._reject(Status.BAD_CRC)
        if cmd not in set(Command):
            return self._reject(Status.UNKNOWN_COMMAND)
        if not length_ok(cmd, payload):
            return self._reject(Status.BAD_LENGTH)
        dup = self.dedup and self.seq == self.last_seq
        # The echo core drains the queue at once, so the queue is empty when a frame starts.
        if cmd in (Command.LOAD, Command.INFER) and len(payload) > self.queue_depth and not dup:
            return self._reject(Status.BUSY)
        self.last_seq = self.seq
        reply = cmd | RESPONSE

        def encode_frame(cmd, payload):  # the response echoes the sequence number
            return _encode_frame(cmd, payload, self.seq)

        if cmd == Command.RESET:
            self.waiting.clear()
            self.unreleased = self.results_done = self.busy_cycles = 0
            self.sent = []
            return encode_frame(reply, bytes([Status.OK]))
        if cmd == Command.STATUS:
            status = LinkStatus(Status.OK, True, False, True, LINK_VERSION, self.queue_depth,
                                len(self.waiting), self.results_done, self.busy_cycles,
                                self.max_payload, self.queue_depth, self.result_depth)
            return encode_frame(reply, status.encode())
        if cmd == Command.LOAD:
            return encode_frame(reply, bytes([Status.OK]) + self.queue_depth.to_bytes(2, "little"))
        if cmd == Command.INFER and dup:  # not queued again
            return encode_frame(reply, bytes([Status.OK]) + self.queue_depth.to_bytes(2, "little"))
        if cmd == Command.INFER:
            pieces = decode_segments(payload)
            queued = sum(len(data) for data, _ in pieces)
            if queued > self.result_room():
                raise AssertionError("test bench error: the echoes would fill the result buffer")
            for data, ends in pieces:
                for k, byte in enumerate(data):
                    last = ends and k == len(data) - 1
                    self.waiting.append((byte, last))
                    self.results_done += last
                self.busy_cycles += len(data)
            free = self.queue_depth - queued  # snapshot right after the commit
            return encode_frame(reply, bytes([Status.OK]) + free.to_bytes(2, "little"))
        # READ: the previous READ's bytes are released first, or sent again by a duplicate.
        if dup:
            self.waiting = self.sent + self.waiting
        self.unreleased = 0
        count = min(payload[0] | payload[1] << 8, self.max_payload - 4, len(self.waiting))
        sent, self.waiting = self.waiting[:count], self.waiting[count:]
        self.unreleased = count
        self.sent = sent
        ends = min(sum(last for _, last in sent), 255)
        return encode_frame(reply, bytes([Status.OK]) + self.queue_depth.to_bytes(2, "little")
                            + bytes(byte for byte, _ in sent) + bytes([ends]))


class ModelTransport(Transport):
    """A line to an `EchoLinkModel` instead of a device: each `write` is one chunk (the host
    waits for its responses before it writes again), the responses come back on `read`."""

    def __init__(self, model: EchoLinkModel):
        self.model = model
        self.out = b""

    def write(self, data: bytes) -> None:
        self.out += b"".join(self.model.feed(data))

    def read(self, max_bytes: int, timeout: float) -> bytes:
        data, self.out = self.out[:max_bytes], self.out[max_bytes:]
        return data

    def close(self) -> None:
        pass
