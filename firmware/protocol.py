"""The host protocol: framing, CRC and payload layouts, in pure Python.

One frame on the byte stream, in either direction::

    SOF | cmd | seq | len_lo | len_hi | payload[len] | crc_hi | crc_lo

`SOF` is `0xA5`; `seq` is the request's sequence number, which the response echoes (a request
sent again with the same `seq` is recognized as a duplicate, so every request is safe to retry);
`len` is little-endian and at most `ArrayConfig.max_payload`; the CRC is CRC-16/CCITT-FALSE
(poly 0x1021, init 0xFFFF, no reflection, no final XOR) over `cmd`, `seq`, `len` and the
payload, sent most significant byte first so that the CRC over the whole frame after `SOF` is
zero (the gateware checks that residue instead of comparing). A response echoes the request's
command with bit 7 set and its payload always starts with a status byte (`hw.status.Status`).
`firmware/PROTOCOL.md` describes every command; the gateware side is `hw/host_link.py`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from amaranth.lib.crc import catalog

from hw.status import Status

SOF = 0xA5
RESPONSE = 0x80  #: bit set in the command byte of every response
HEADER_BYTES = 5  #: SOF, command, sequence number, two length bytes
OVERHEAD = HEADER_BYTES + 2  #: header plus the CRC
SEGMENT_MORE = 0x8000  #: INFER segment header bit: the input continues in the next segment
SEGMENT_MAX = 0x7FFF  #: largest segment (bytes) one header can describe
LINK_VERSION = 2  #: 2: sequence numbers (duplicates recognized, READ resendable)
#: The frame CRC, CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final XOR),
#: one definition for the host (`Parameters.compute`) and the gateware (`LINK_CRC.create()`,
#: an `amaranth.lib.crc.Processor`). Its residue is 0: the CRC over a frame and its CRC is 0.
LINK_CRC = catalog.CRC16_CCITT_FALSE(data_width=8)

STATUS_FORMAT = "<BBBHHIIHHH"  #: layout of a STATUS response payload
STATUS_BYTES = struct.calcsize(STATUS_FORMAT)


class Command(IntEnum):
    RESET = 0x01  #: clear the core (error, program), flush the link's queues
    STATUS = 0x02  #: report flags, the core's error, queue levels and counters
    LOAD = 0x03  #: forward whole load records to the core once the frame's CRC checks
    INFER = 0x04  #: queue input tokens (segments) for one or more inputs
    READ = 0x05  #: return up to N bytes of results


class ProtocolError(Exception):
    """The byte stream from the device does not parse as a frame (host side)."""


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE of `data` (`LINK_CRC`; check value of b"123456789" is 0x29B1)."""
    return LINK_CRC.compute(data)


def encode_frame(cmd: int, payload: bytes = b"", seq: int = 0) -> bytes:
    """One frame: header, payload and CRC. Raises `ValueError` for values that do not fit."""
    if not 0 <= cmd <= 0xFF:
        raise ValueError(f"command {cmd} is not a byte")
    if not 0 <= seq <= 0xFF:
        raise ValueError(f"sequence number {seq} is not a byte")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes is over the 65535 the length holds")
    body = bytes([cmd, seq]) + struct.pack("<H", len(payload)) + bytes(payload)
    return bytes([SOF]) + body + struct.pack(">H", crc16(body))


@dataclass(frozen=True)
class Frame:
    cmd: int
    payload: bytes
    seq: int = 0

    @property
    def is_response(self) -> bool:
        return bool(self.cmd & RESPONSE)

    @property
    def status(self) -> Status:
        """The status byte of a response (the first payload byte)."""
        if not self.payload:
            raise ProtocolError(f"response to command 0x{self.cmd & 0x7F:02x} has no status byte")
        try:
            return Status(self.payload[0])
        except ValueError as err:
            raise ProtocolError(f"response carries unknown status {self.payload[0]}") from err


class FrameParser:
    """Incremental parser of frames from a byte stream, the mirror of the gateware decoder.

    Bytes before a start marker are skipped; a frame whose length is over `max_payload` or whose
    CRC fails is dropped and the parser hunts for the next start marker from the byte after
    the dropped frame's marker. `errors` counts dropped frames.
    """

    def __init__(self, max_payload: int = 0xFFFF):
        self.max_payload = max_payload
        self.buffer = bytearray()
        self.errors = 0
        self.skipped = 0

    def feed(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete, in order."""
        self.buffer += data
        frames = []
        while True:
            start = self.buffer.find(SOF)
            if start < 0:
                self.skipped += len(self.buffer)
                self.buffer.clear()
                return frames
            if start:
                self.skipped += start
                del self.buffer[:start]
            if len(self.buffer) < HEADER_BYTES:
                return frames
            length = self.buffer[3] | self.buffer[4] << 8
            if length > self.max_payload:
                self.errors += 1
                del self.buffer[:1]
                continue
            if len(self.buffer) < OVERHEAD + length:
                return frames
            body = bytes(self.buffer[1:OVERHEAD + length])
            if crc16(body) != 0:
                self.errors += 1
                del self.buffer[:1]
                continue
            frames.append(Frame(body[0], body[4:4 + length], body[1]))
            del self.buffer[:OVERHEAD + length]

    def expire(self) -> list[Frame]:
        """The line went quiet inside a frame: drop it like a frame that fails its CRC (its
        length field was hit, or its end lost) and return the frames in the bytes after its
        start marker, which a false length would otherwise hide until enough bytes came."""
        if not self.buffer:
            return []
        self.errors += 1
        del self.buffer[:1]
        return self.feed(b"")


def encode_segments(inputs: list[bytes], max_payload: int) -> list[bytes]:
    """Pack input token strings into INFER payloads of at most `max_payload` bytes.

    Each segment is a little-endian header (`n | SEGMENT_MORE` if the input goes on in the next
    segment) and `n` bytes; an input larger than a frame is split over frames. Inputs are packed
    greedily, so several small inputs share one frame.
    """
    if max_payload < 3:
        raise ValueError("an INFER payload needs room for a segment header and one byte")
    payloads: list[bytes] = []
    current = bytearray()
    for tokens in inputs:
        if not tokens:
            raise ValueError("an input has no token bytes")
        offset = 0
        while offset < len(tokens):
            room = min(max_payload - len(current) - 2, SEGMENT_MAX)
            if room < 1:
                payloads.append(bytes(current))
                current = bytearray()
                continue
            piece = tokens[offset:offset + room]
            offset += len(piece)
            header = len(piece) | (SEGMENT_MORE if offset < len(tokens) else 0)
            current += struct.pack("<H", header) + piece
    if current:
        payloads.append(bytes(current))
    return payloads


def length_ok(cmd: int, payload: bytes) -> bool:
    """Whether a request's payload has a length its command takes (what the device answers
    with BAD_LENGTH after the CRC check when it does not)."""
    if cmd in (Command.RESET, Command.STATUS):
        return not payload
    if cmd == Command.READ:
        return len(payload) == 2
    if cmd == Command.LOAD:
        return bool(payload)
    if cmd == Command.INFER:
        try:
            decode_segments(payload)
        except ValueError:
            return False
        return len(payload) >= 3
    return True


def decode_segments(payload: bytes) -> list[tuple[bytes, bool]]:
    """Split an INFER payload into `(bytes, ends_input)` pieces; `ValueError` if malformed."""
    pieces = []
    offset = 0
    while offset < len(payload):
        if offset + 2 > len(payload):
            raise ValueError(f"segment header at byte {offset} is cut off")
        header = payload[offset] | payload[offset + 1] << 8
        size = header & SEGMENT_MAX
        if size == 0:
            raise ValueError(f"segment at byte {offset} is empty")
        if offset + 2 + size > len(payload):
            raise ValueError(f"segment at byte {offset} runs {offset + 2 + size - len(payload)} "
                             "bytes past the payload")
        pieces.append((bytes(payload[offset + 2:offset + 2 + size]), not header & SEGMENT_MORE))
        offset += 2 + size
    if not pieces:
        raise ValueError("an INFER payload holds at least one segment")
    return pieces


@dataclass(frozen=True)
class LinkStatus:
    """The STATUS response, decoded."""

    error: Status  #: the core's sticky error (`Status.OK` when none)
    ready: bool  #: a complete program is committed
    busy: bool  #: the core is computing
    idle: bool  #: the link's token queue is empty and nothing is in flight to the core
    version: int  #: link protocol version
    queue_free: int  #: bytes free in the token/load queue
    results_level: int  #: result bytes waiting to be read
    results_done: int  #: results (inputs) completed since the last reset, mod 2^32
    busy_cycles: int  #: clock cycles the core was busy since the last reset, mod 2^32
    max_payload: int
    queue_depth: int
    result_depth: int

    @classmethod
    def decode(cls, payload: bytes) -> LinkStatus:
        if len(payload) != STATUS_BYTES:
            raise ProtocolError(f"STATUS response has {len(payload)} payload bytes, "
                                f"expected {STATUS_BYTES}")
        (error, flags, version, queue_free, results_level, results_done, busy_cycles,
         max_payload, queue_depth, result_depth) = struct.unpack(STATUS_FORMAT, payload)
        try:
            error = Status(error)
        except ValueError as err:
            raise ProtocolError(f"STATUS response carries unknown status {error}") from err
        return cls(error, bool(flags & 1), bool(flags & 2), bool(flags & 4), version, queue_free,
                   results_level, results_done, busy_cycles, max_payload, queue_depth,
                   result_depth)

    def encode(self) -> bytes:
        flags = int(self.ready) | int(self.busy) << 1 | int(self.idle) << 2
        return struct.pack(STATUS_FORMAT, int(self.error), flags, self.version, self.queue_free,
                           self.results_level, self.results_done, self.busy_cycles,
                           self.max_payload, self.queue_depth, self.result_depth)


def decode_read(payload: bytes) -> tuple[int, bytes, int]:
    """A READ response payload -> (queue_free, result bytes, result ends in those bytes)."""
    if len(payload) < 4:
        raise ProtocolError(f"READ response has {len(payload)} payload bytes, expected >= 4")
    queue_free = payload[1] | payload[2] << 8
    return queue_free, bytes(payload[3:-1]), payload[-1]


def decode_queue_free(payload: bytes) -> int:
    """A LOAD or INFER response payload -> bytes free in the device's queue."""
    if len(payload) != 3:
        raise ProtocolError(f"response has {len(payload)} payload bytes, expected 3")
    return payload[1] | payload[2] << 8
