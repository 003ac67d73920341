"""Status codes shared by the gateware, the compiler and the host firmware.

Every response frame carries one of these; the core's `status.error` output holds the last one.
"""

from enum import IntEnum


class Status(IntEnum):
    OK = 0
    BAD_CRC = 1  #: frame CRC mismatch; the frame was dropped
    UNKNOWN_COMMAND = 2  #: command byte not in the protocol
    BAD_LENGTH = 3  #: payload length over the limit, or not what the command needs
    BAD_RECORD = 4  #: a load record is malformed (unknown memory, bad header)
    DOES_NOT_FIT = 5  #: the program or its memories exceed this array's configuration
    NOT_LOADED = 6  #: inference requested before a complete program was committed
    BUSY = 7  #: the request cannot be taken now; retry
    BAD_INPUT = 8  #: an input on the token stream has the wrong number of bytes
    TIMEOUT = 9  #: a frame stopped arriving mid-way and was dropped

    @property
    def description(self) -> str:
        return {
            Status.OK: "ok",
            Status.BAD_CRC: "frame CRC mismatch (frame dropped)",
            Status.UNKNOWN_COMMAND: "unknown command",
            Status.BAD_LENGTH: "payload length over the limit or wrong for the command",
            Status.BAD_RECORD: "malformed load record",
            Status.DOES_NOT_FIT: "program does not fit this array configuration",
            Status.NOT_LOADED: "no complete program is loaded",
            Status.BUSY: "device busy",
            Status.BAD_INPUT: "input has the wrong number of bytes",
            Status.TIMEOUT: "frame timed out mid-way (dropped)",
        }[self]
