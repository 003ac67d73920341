"""The host API of the accelerator: load a compiled network, run inputs, read logits and spikes.

    from firmware.host import AcceleratorClient
    from firmware.transport import SerialTransport

    with AcceleratorClient(SerialTransport("/dev/ttyUSB1")) as acc:
        acc.load(compile_network(model, config))
        logits = acc.infer(images)
        logits, spikes = acc.infer(images[:2], trace=True)

The same code drives the cocotb simulation through `SocketTransport`. Inputs are streamed: the
next inputs' tokens are queued on the device (as far as its queue has room) while the current
one computes, and results are read back as they appear. Every device error becomes a
`DeviceError` naming the status and the request that got it.

Recovery: a request whose response is missing, fails its CRC, or reports that the request
arrived damaged (BAD_CRC, TIMEOUT; a rejection that does not echo the request's sequence
number only after a short grace period) is sent again with the same sequence number, at most
`retries` times; the device recognizes a repeat of the request it last accepted and does not
carry it out twice (an INFER is not queued again, a READ sends the same bytes again; see
`firmware/PROTOCOL.md`). When the retries are used up, `LinkError` names the request and what
happened to each attempt.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from firmware.protocol import (
    LINK_VERSION,
    RESPONSE,
    Command,
    Frame,
    FrameParser,
    LinkStatus,
    ProtocolError,
    decode_queue_free,
    decode_read,
    encode_frame,
    encode_segments,
    length_ok,
)
from firmware.transport import Transport, TransportError
from hw.status import Status


@dataclass(frozen=True)
class MeasuredRun:
    """What `AcceleratorClient.measure` saw: logits and the device's own counts over the run."""

    logits: np.ndarray
    results: int  #: results the device completed during the run
    busy_cycles: int  #: clock cycles the core was busy during the run
    seconds: float  #: host wall-clock time of the run
    error: Status  #: the device's sticky error afterwards

    @property
    def cycles_per_inference(self) -> float:
        return self.busy_cycles / self.results if self.results else 0.0


class DeviceError(RuntimeError):
    """The device answered a request with an error status."""

    def __init__(self, status: Status, request: str):
        self.status = Status(status)
        self.request = request
        super().__init__(f"{request}: device answered {self.status.name} "
                         f"({self.status.description})")


class LinkError(TransportError):
    """A request got no good response in `retries + 1` attempts."""

    def __init__(self, request: str, failures: list[str]):
        self.request = request
        self.failures = failures
        attempts = f"{len(failures)} attempt" + ("s" if len(failures) > 1 else "")
        super().__init__(f"{request}: no good response after {attempts} "
                         f"({'; '.join(failures)})")


#: Statuses that say the request itself was damaged on the line: sending it again may work.
#: BAD_LENGTH too when the request was well formed: a length field hit on the line is answered
#: (over `max_payload`) before the CRC is checked.
DAMAGED = (Status.BAD_CRC, Status.TIMEOUT)

#: Seconds without a byte that end a frame the host has started to receive (the bytes of one
#: response follow each other without a gap, on a serial port and in the cosimulation).
QUIET = 0.5


class AcceleratorClient:
    """Synchronous host-side driver of one `HostLinkTop` (board or simulation).

    `timeout` bounds the wait for the next result while inputs are in flight and for the
    device's queue to drain (seconds of wall time); `response_timeout` (default: `timeout`)
    the wait for each attempt's response; `retries` is how many times a request is sent again
    after a missing or damaged response (0: never); `poll_interval` is a pause after a READ
    that found no result bytes. `retried` counts the requests sent again.
    """

    def __init__(self, transport: Transport, timeout: float = 30.0, poll_interval: float = 0.0,
                 retries: int = 3, response_timeout: float | None = None):
        if retries < 0:
            raise ValueError(f"retries = {retries}: must be >= 0")
        self.transport = transport
        self.timeout = timeout
        self.response_timeout = timeout if response_timeout is None else response_timeout
        self.poll_interval = poll_interval
        self.retries = retries
        self.retried = 0
        self.seq = 0  # of the last request sent
        self.parser = FrameParser()
        self.pending: list[Frame] = []
        #: responses that answered no request of ours (garbage on the line, damaged requests,
        #: late answers to an earlier attempt), kept for tests and soak statistics
        self.unsolicited: list[Frame] = []
        self.compiled = None
        self.max_payload = 0xFFFF  # until the device says
        link = self.status()
        if link.version != LINK_VERSION:
            raise ProtocolError(f"the device speaks link version {link.version}, this host "
                                f"{LINK_VERSION}: rebuild the bitstream or update the host")
        self.max_payload = link.max_payload
        self.queue_depth = link.queue_depth
        self.result_depth = link.result_depth
        self.parser.max_payload = self.max_payload

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.transport.close()

    # ---- frames ----------------------------------------------------------------------------------

    def _next_frame(self, timeout: float, stop_on_error: bool = True) -> Frame | None:
        """The next response frame, or None after `timeout` s (or, with `stop_on_error`, when
        the parser dropped a damaged frame)."""
        deadline = time.monotonic() + timeout
        errors = self.parser.errors
        while not self.pending:
            left = deadline - time.monotonic()
            if left <= 0 or (stop_on_error and self.parser.errors != errors):
                return None
            wait = min(left, QUIET)
            data = self.transport.read(4096, wait)
            if data:
                self.pending.extend(self.parser.feed(data))
            elif wait == QUIET and self.parser.buffer:
                # A frame's bytes stopped coming: a hit length field (or a lost end), perhaps
                # with the device's answers behind it (tb/noisy_uart.py found this).
                self.pending.extend(self.parser.expire())
        return self.pending.pop(0)

    def request(self, cmd: Command, payload: bytes = b"", what: str | None = None) -> Frame:
        """Send one request and return its response (any status but those that say the request
        was damaged on the line: BAD_CRC, TIMEOUT, and BAD_LENGTH to a well-formed request);
        send it again (same sequence number) after a missing or damaged response, at most
        `retries` times, then raise `LinkError`."""
        what = what or getattr(cmd, "name", f"command 0x{cmd:02x}")
        if len(payload) > self.max_payload:
            raise ValueError(f"{what}: payload of {len(payload)} bytes is over the device's "
                             f"max_payload {self.max_payload}")
        self.seq = (self.seq + 1) & 0xFF
        frame = encode_frame(cmd, payload, self.seq)
        failures = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
            self.transport.write(frame)
            answer = self._response(cmd, self.seq, length_ok(cmd, payload))
            if isinstance(answer, Frame):
                return answer
            failures.append(answer)
        raise LinkError(what, failures)

    def _response(self, cmd: int, seq: int, well_formed: bool) -> Frame | str:
        """The response to request (`cmd`, `seq`), or why there is none worth waiting for.

        A rejection of a damaged frame that echoes our `cmd` and `seq` ends the wait at once.
        One that does not (a bit hit our command or sequence number, or it answers garbage
        that was on the line before) and a response that fails its CRC (ours, or another)
        shorten the wait to `response_timeout / 10`: our answer, if it comes, follows soon,
        so a burst of stale rejections does not use up the retries.
        """
        damage = DAMAGED + ((Status.BAD_LENGTH,) if well_formed else ())
        deadline = time.monotonic() + self.response_timeout
        grace = self.response_timeout / 10
        errors = self.parser.errors
        suspicion = None  # why our request may be lost, if nothing better comes
        while True:
            frame = self._next_frame(max(deadline - time.monotonic(), 0))
            now = time.monotonic()
            if frame is not None:
                damaged = len(frame.payload) == 1 and frame.payload[0] in damage
                ours = frame.cmd == cmd | RESPONSE and frame.seq == seq
                if ours and not damaged:
                    return frame
                self.unsolicited.append(frame)
                if damaged and ours:
                    return f"the device answered {Status(frame.payload[0]).name}"
                if damaged and frame.cmd & RESPONSE:
                    suspicion = (f"the device answered {Status(frame.payload[0]).name} to "
                                 f"command 0x{frame.cmd & 0x7F:02x} seq {frame.seq}")
                    deadline = min(deadline, now + grace)
            if self.parser.errors != errors:
                errors = self.parser.errors
                suspicion = "a response failed its CRC"
                deadline = min(deadline, now + grace)
            if frame is None and now >= deadline:
                return suspicion or f"no response within {self.response_timeout:.1f} s"

    def _checked(self, cmd: Command, payload: bytes = b"", what: str | None = None) -> Frame:
        frame = self.request(cmd, payload, what)
        if frame.status != Status.OK:
            raise DeviceError(frame.status, what or cmd.name)
        return frame

    def send_raw(self, data: bytes) -> None:
        """Put arbitrary bytes on the line (tests: malformed frames)."""
        self.transport.write(data)

    def drain(self, quiet: float = 0.3, first: float | None = None) -> list[Frame]:
        """Collect responses until the line is quiet for `quiet` seconds (`first`: seconds to
        wait for the first one, default `quiet`); return them."""
        frames = list(self.pending)
        self.pending.clear()
        wait = quiet if first is None or frames else first
        while True:
            frame = self._next_frame(wait, stop_on_error=False)
            wait = quiet
            if frame is None:
                return frames
            frames.append(frame)

    # ---- commands --------------------------------------------------------------------------------

    def status(self) -> LinkStatus:
        """The device's status; a sticky core error is reported in `.error`, not raised."""
        return LinkStatus.decode(self.request(Command.STATUS).payload)

    def reset(self) -> None:
        """Clear the core's error and program and empty the device's queues."""
        self._checked(Command.RESET)
        self.compiled = None

    def load(self, compiled) -> None:
        """Load a `hw.compiler.CompiledNetwork`; raise `DeviceError` if the device rejects it."""
        chunks = compiled.load_chunks(self.max_payload)
        for index, chunk in enumerate(chunks):
            what = f"LOAD chunk {index + 1}/{len(chunks)}"
            while True:
                frame = self.request(Command.LOAD, chunk, what)
                if frame.status != Status.BUSY:
                    break
                self._wait_idle(what)
            if frame.status != Status.OK:
                raise DeviceError(frame.status, what)
        link = self._wait_idle("LOAD commit")
        if link.error != Status.OK:
            raise DeviceError(link.error, "LOAD commit")
        if not link.ready:
            raise DeviceError(Status.NOT_LOADED, "LOAD commit (device not ready after the "
                              "commit record)")
        self.compiled = compiled

    def _wait_idle(self, what: str) -> LinkStatus:
        deadline = time.monotonic() + self.timeout
        while True:
            link = self.status()
            if link.idle or link.error != Status.OK:
                return link
            if time.monotonic() > deadline:
                raise TransportError(f"{what}: device queue did not drain within "
                                     f"{self.timeout:.1f} s")

    def infer(self, images: Sequence | np.ndarray, trace: bool = False,
              on_result: Callable[[int], None] | None = None):
        """Run every input; return logits `(B, classes)` (and a list of spike dicts if `trace`).

        Tokens are queued as far as the device's queue has room, results are read as they
        come; `on_result(count)` is called after each complete result (progress bars).
        """
        compiled = self.compiled
        if compiled is None:
            raise DeviceError(Status.NOT_LOADED, "infer (call load() first)")
        tokens = [compiled.encode_input(np.asarray(image), trace=trace) for image in images]
        result_bytes = compiled.result_bytes(trace)
        frames = encode_segments(tokens, self.max_payload)
        read_max = self.max_payload - 4
        stream = bytearray()
        received = 0  # result bytes received so far
        outputs = []
        queue_free = self.status().queue_free
        sent = 0
        last_progress = time.monotonic()
        while len(outputs) < len(tokens):
            while sent < len(frames) and len(frames[sent]) <= queue_free:
                frame = self.request(Command.INFER, frames[sent], f"INFER frame {sent + 1}")
                if frame.status == Status.BUSY:
                    queue_free = 0
                    break
                if frame.status != Status.OK:
                    raise DeviceError(frame.status, f"INFER frame {sent + 1}/{len(frames)}")
                queue_free = decode_queue_free(frame.payload)
                sent += 1
            frame = self._checked(Command.READ, read_max.to_bytes(2, "little"),
                                  f"READ after {len(outputs)} results")
            queue_free, data, ends = decode_read(frame.payload)
            expected_ends = ((received + len(data)) // result_bytes
                             - received // result_bytes)
            if ends != min(expected_ends, 255):
                raise ProtocolError(f"result stream out of step: {ends} result ends in bytes "
                                    f"{received} .. {received + len(data)}, expected "
                                    f"{expected_ends} ({result_bytes} bytes per result)")
            received += len(data)
            stream += data
            while len(stream) >= result_bytes:
                outputs.append(compiled.decode_result(bytes(stream[:result_bytes]), trace))
                del stream[:result_bytes]
                if on_result is not None:
                    on_result(len(outputs))
            now = time.monotonic()
            if data:
                last_progress = now
            elif self.poll_interval:
                time.sleep(self.poll_interval)
            if now - last_progress > self.timeout:
                raise TransportError(f"no result for {self.timeout:.1f} s after "
                                     f"{len(outputs)}/{len(tokens)} results")
        logits = np.stack([out[0] for out in outputs]).astype(np.int64)
        if trace:
            return logits, [out[1] for out in outputs]
        return logits

    def measure(self, images: Sequence | np.ndarray, progress: bool = True) -> MeasuredRun:
        """`infer` with a progress bar, bracketed by STATUS reads: the device's result and
        busy-cycle counters over the run (what the cycle model predicts) and the wall time."""
        from tqdm import tqdm

        before = self.status()
        start = time.monotonic()
        with tqdm(total=len(images), unit="img", disable=not progress, file=sys.stdout) as bar:
            logits = self.infer(images, on_result=lambda n: bar.update(n - bar.n))
        seconds = time.monotonic() - start
        after = self.status()
        return MeasuredRun(logits, (after.results_done - before.results_done) % 2**32,
                           (after.busy_cycles - before.busy_cycles) % 2**32, seconds,
                           after.error)
