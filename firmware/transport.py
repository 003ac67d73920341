"""Byte transports the host API talks through: a board's serial port or the cosimulation socket.

A transport moves raw bytes; framing lives in `firmware.protocol`. Both implementations are
synchronous so the same host code drives a board and the RTL.
"""

from __future__ import annotations

import socket
import time
from abc import ABC, abstractmethod


class TransportError(OSError):
    """The link to the device is gone or timed out."""


class Transport(ABC):
    """A bidirectional byte pipe with a read timeout."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Send all of `data`."""

    @abstractmethod
    def read(self, max_bytes: int, timeout: float) -> bytes:
        """Return 1 .. `max_bytes` bytes, or b"" when nothing arrived within `timeout` seconds."""

    @abstractmethod
    def close(self) -> None:
        """Release the link."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SocketTransport(Transport):
    """A Unix-domain (path) or TCP (`host:port`) stream socket; the cosimulation serves one.

    `connect_timeout` retries while the server is still starting (the simulator builds and
    elaborates before it listens).
    """

    def __init__(self, address: str, connect_timeout: float = 60.0):
        self.address = address
        deadline = time.monotonic() + connect_timeout
        while True:
            try:
                self.sock = self._connect(address)
                break
            except (FileNotFoundError, ConnectionRefusedError) as err:
                if time.monotonic() > deadline:
                    raise TransportError(f"nothing is listening on {address} after "
                                         f"{connect_timeout:.0f} s") from err
                time.sleep(0.05)

    @staticmethod
    def _connect(address: str) -> socket.socket:
        if "/" in address or address.endswith(".sock"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(address)
        else:
            host, _, port = address.rpartition(":")
            sock = socket.create_connection((host or "127.0.0.1", int(port)))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def write(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise TransportError(f"write to {self.address} failed: {err}") from err

    def read(self, max_bytes: int, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(max_bytes)
        except TimeoutError:
            return b""
        except OSError as err:
            raise TransportError(f"read from {self.address} failed: {err}") from err
        if not data:
            raise TransportError(f"{self.address} closed the connection")
        return data

    def close(self) -> None:
        self.sock.close()


class SerialTransport(Transport):
    """A serial port through pyserial (a board's UART bridge into `HostLinkTop`).

    `port` is a device (`/dev/ttyUSB1`, `COM3`) or any pyserial URL (`socket://host:port`,
    `rfc2217://...` for a port shared over the network).
    """

    def __init__(self, port: str, baudrate: int = 115200):
        import serial  # pyserial; imported here so the simulation does not need it

        self.port = port
        try:
            self.serial = serial.serial_for_url(port, baudrate=baudrate, timeout=0.1)
        except serial.SerialException as err:
            raise TransportError(f"cannot open serial port {port}: {err}") from err

    def write(self, data: bytes) -> None:
        self.serial.write(data)
        self.serial.flush()

    def read(self, max_bytes: int, timeout: float) -> bytes:
        self.serial.timeout = timeout
        first = self.serial.read(1)
        if not first:
            return b""
        waiting = min(self.serial.in_waiting, max_bytes - 1)
        return first + (self.serial.read(waiting) if waiting else b"")

    def close(self) -> None:
        self.serial.close()


class FaultyTransport(Transport):
    """Another transport with seeded damage on the line: tests and soak runs of recovery.

    Each request (one `write`) is hit with probability `request_faults` by one fault: a flipped
    bit (`flip`), a dropped byte (`drop`), its end cut off (`truncate`) or the whole request
    lost (`lose`); each chunk of response bytes (one `read`) with probability `response_faults`
    by a flipped bit, a dropped byte or its loss. `faults` counts them by direction and kind.
    """

    REQUEST_KINDS = ("flip", "drop", "truncate", "lose")
    RESPONSE_KINDS = ("flip", "drop", "lose")

    def __init__(self, inner: Transport, seed: int = 0, request_faults: float = 0.0,
                 response_faults: float = 0.0):
        import random

        self.inner = inner
        self.rng = random.Random(seed)
        self.request_faults = request_faults
        self.response_faults = response_faults
        self.faults: dict[str, int] = {}

    def _damage(self, data: bytes, direction: str, kinds: tuple[str, ...]) -> bytes:
        kind = self.rng.choice(kinds)
        key = f"{direction}_{kind}"
        self.faults[key] = self.faults.get(key, 0) + 1
        position = self.rng.randrange(len(data))
        if kind == "flip":
            return data[:position] + bytes([data[position] ^ 1 << self.rng.randrange(8)]) \
                + data[position + 1:]
        if kind == "drop":
            return data[:position] + data[position + 1:]
        if kind == "truncate":
            return data[:max(position, 1)]
        return b""

    def write(self, data: bytes) -> None:
        if data and self.rng.random() < self.request_faults:
            data = self._damage(data, "request", self.REQUEST_KINDS)
        if data:
            self.inner.write(data)

    def read(self, max_bytes: int, timeout: float) -> bytes:
        data = self.inner.read(max_bytes, timeout)
        if data and self.rng.random() < self.response_faults:
            data = self._damage(data, "response", self.RESPONSE_KINDS)
        return data

    def close(self) -> None:
        self.inner.close()
