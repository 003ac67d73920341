"""The host link alone on Verilator, around a stand-in core that echoes each input back.

The echo core has no program and accepts any input length, so these tests reach what the real
core's small inputs do not: inputs that span several frames (segment `more` bit), results far
larger than a READ, and a token queue kept full (BUSY answers and retries), all under random
idle, back-pressure and internal stalls.
"""

import random

import numpy as np
import pytest

from firmware.host import AcceleratorClient, LinkError
from firmware.protocol import Command, decode_read, encode_segments
from firmware.transport import FaultyTransport
from hw.config import ArrayConfig
from hw.status import Status
from tb.echo_core import EchoCore, EchoNet
from tb.session import Session, build

CONFIG = ArrayConfig(name="link_echo", max_payload=64)


@pytest.fixture(scope="module")
def built():
    return build(CONFIG, core=EchoCore(), result_depth=128, queue_depth=128)


@pytest.mark.parametrize("stress", [0.0, 0.4])
def test_inputs_spanning_frames_come_back_in_order(built, stress):
    rng = np.random.default_rng(5)
    inputs = rng.integers(0, 256, (12, 150))  # 150 bytes: three 64-byte frames each
    assert len(encode_segments([bytes(inputs[0].astype(np.uint8))], 64)) == 3
    with Session(built, idle=stress, backpressure=stress, stall=stress, seed=11) as session:
        acc = session.accelerator()
        acc.compiled = EchoNet(150)
        got = acc.infer(inputs)
        link = acc.status()
    np.testing.assert_array_equal(got, inputs)
    assert link.results_done == 12 and link.error == Status.OK


def test_full_queue_answers_busy_and_nothing_is_lost(built):
    """With results unread, the 128-byte result FIFO and then the queue fill up: INFER gets
    BUSY and leaves the queue as it was; reading everything returns each input once."""
    rng = random.Random(2)
    inputs = [bytes(rng.randrange(256) for _ in range(30)) for _ in range(12)]
    with Session(built) as session:
        acc = session.accelerator()
        accepted, answers = [], []
        for data in inputs:
            frame = acc.request(Command.INFER, encode_segments([data], 64)[0])
            answers.append(frame.status)
            if frame.status == Status.OK:
                accepted.append(data)
        assert Status.BUSY in answers and answers[0] == Status.OK
        stream = b""
        while len(stream) < 30 * len(accepted):
            _, data, _ = decode_read(acc.request(Command.READ, b"\x3c\x00").payload)
            stream += data
        assert stream == b"".join(accepted)
        assert decode_read(acc.request(Command.READ, b"\x3c\x00").payload)[1] == b""


def lossy_client(session, retries, seed):
    line = FaultyTransport(session.transport, seed=seed, request_faults=0.1,
                           response_faults=0.1)
    acc = AcceleratorClient(line, timeout=3.0, retries=retries, poll_interval=0.002)
    acc.compiled = EchoNet(40)
    return acc, line


def test_retries_recover_a_lossy_line_on_the_rtl(built):
    """Bit flips, dropped bytes, cut-off and lost requests and responses: every request is
    retried with its sequence number, the link recognizes repeats, and every result is exact."""
    inputs = np.random.default_rng(8).integers(0, 256, (30, 40))
    with Session(built) as session:
        acc, line = lossy_client(session, retries=8, seed=3)
        got = acc.infer(inputs)
        done = acc.status().results_done
    np.testing.assert_array_equal(got, inputs)
    assert done == 30 and acc.retried >= 5 and sum(line.faults.values()) >= 5


def test_without_retries_a_lossy_line_is_reported(built):
    inputs = np.random.default_rng(9).integers(0, 256, (30, 40))
    with Session(built) as session:
        acc, _ = lossy_client(session, retries=8, seed=4)
        acc.retries = 0
        with pytest.raises(LinkError, match="no good response after 1 attempt"):
            acc.infer(inputs)
