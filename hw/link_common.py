"""What the host link's components share: stream layouts, the CRC, the core's interface."""

from __future__ import annotations

from amaranth.lib import data, enum, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.accelerator import STATUS_LAYOUT

#: Layout of the core's three byte streams (the `last` bit marks the end of a record or input).
BYTE_LAST = data.StructLayout({"data": 8, "last": 1})
#: Layout of the core's status output.
CORE_STATUS = STATUS_LAYOUT


def core_signature() -> wiring.Signature:
    """The interface `HostLink` expects of a core (that of `hw.accelerator.Accelerator`)."""
    return wiring.Signature({
        "load": In(stream.Signature(BYTE_LAST)),
        "tokens": In(stream.Signature(BYTE_LAST)),
        "results": Out(stream.Signature(BYTE_LAST)),
        "status": Out(CORE_STATUS),
        "clear": In(1),
    })


class ResponseKind(enum.Enum, shape=2):
    """Which payload a response carries after its status byte."""

    STATUS_ONLY = 0  #: the status byte alone (rejections, RESET)
    STATUS = 1  #: the 21-byte STATUS payload
    QUEUE_FREE = 2  #: status, queue_free u16 (LOAD, INFER)
    READ = 3  #: status, queue_free u16, result bytes, ends u8


#: A decoded request, from the frame decoder to the command sequencer. `verdict` is the link's
#: own answer (`Status.OK` when the frame checked out and the command was accepted); `arg` is
#: the little-endian value of the last two payload bytes (READ's `max_bytes`); `dup`: the
#: request repeats the last accepted one (same `seq`): its payload was not queued again, and a
#: READ sends the previous response's bytes again.
REQUEST = data.StructLayout({"cmd": 8, "seq": 8, "verdict": 8, "arg": 16, "dup": 1})


def response_layout(max_payload: int) -> data.StructLayout:
    """A response to encode, from the command sequencer to the response encoder: everything
    it reports, snapshotted when the response is issued so multi-byte values cannot tear."""
    return data.StructLayout({
        "cmd": 8, "seq": 8, "kind": ResponseKind, "status": 8, "flags": 8, "queue_free": 16,
        "results_level": 16, "results_done": 32, "busy_cycles": 32,
        "read_n": range(max_payload + 1),  # READ: result bytes in the response
    })


#: The decoder's side of the queue's write port: tentative writes of a frame's payload while its
#: CRC runs, then `commit` (the frame checked out) or `rollback` (it did not).
QUEUE_WRITE = wiring.Signature({
    "en": Out(1), "data": Out(8), "last": Out(1),
    "tokens": Out(1),  #: destination: 1 the core's `tokens` stream, 0 its `load` stream
    "commit": Out(1), "rollback": Out(1),
    "free": In(16),  #: bytes free in the queue (committed entries count as used)
})
