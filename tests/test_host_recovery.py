"""Host-side recovery (issue 16): requests are retried after a missing or damaged response, the
device recognizes repeats by their sequence number, and with retries switched off the failure
is reported instead of a wrong result. The device here is `tb.link_model.EchoLinkModel` (the
link around the echo core, byte for byte); `test_cosim_link.py` does the same on the RTL."""

import numpy as np
import pytest

from firmware.host import AcceleratorClient, LinkError
from firmware.protocol import Command, ProtocolError
from firmware.transport import FaultyTransport, Transport
from hw.status import Status
from tb.echo_core import EchoNet
from tb.link_model import EchoLinkModel, ModelTransport

SIZE = 37  # bytes per input (and per result)


def device(dedup=True):
    return ModelTransport(EchoLinkModel(64, 128, 1 << 15, dedup=dedup))


def client(line, retries):
    acc = AcceleratorClient(line, timeout=0.02, retries=retries)
    acc.compiled = EchoNet(SIZE)
    return acc


def inputs(count=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE))


@pytest.mark.parametrize("seed", range(3))
def test_retries_recover_every_fault_and_results_are_exact(seed):
    line = FaultyTransport(device(), seed=seed, request_faults=0.15, response_faults=0.15)
    acc = client(line, retries=8)
    x = inputs(seed=seed)
    np.testing.assert_array_equal(acc.infer(x), x)
    assert acc.status().results_done == len(x)
    assert acc.retried > 10 and sum(line.faults.values()) > 10
    assert set(line.faults) >= {"request_flip", "request_drop", "request_truncate",
                                "request_lose", "response_flip", "response_drop",
                                "response_lose"}


def test_without_retries_the_failure_is_reported_not_a_wrong_result():
    line = FaultyTransport(device(), seed=1, request_faults=0.15, response_faults=0.15)
    acc = client(line, retries=8)  # the constructor's STATUS may need a retry too
    acc.retries = 0
    with pytest.raises(LinkError, match=r"no good response after 1 attempt"):
        acc.infer(inputs())


def test_without_sequence_numbers_a_retried_infer_would_run_twice():
    """Negative control: on a device that ignores the sequence number, a retried INFER whose
    response was lost is queued twice and the host sees the result stream go out of step."""
    lost = {"count": 0}

    class LoseFirstInferResponse(Transport):
        def __init__(self, inner):
            self.inner, self.drop = inner, False

        def write(self, data):
            self.drop = data[1] == Command.INFER and lost["count"] == 0
            lost["count"] += self.drop
            self.inner.write(data)

        def read(self, max_bytes, timeout):
            data = self.inner.read(max_bytes, timeout)
            if self.drop and data:
                self.drop = False
                return b""
            return data

        def close(self):
            pass

    x = inputs(count=4)
    good = client(LoseFirstInferResponse(device()), retries=2)
    np.testing.assert_array_equal(good.infer(x), x)
    assert good.retried == 1
    lost["count"] = 0
    bad = client(LoseFirstInferResponse(device(dedup=False)), retries=2)
    with pytest.raises((ProtocolError, AssertionError)):
        np.testing.assert_array_equal(bad.infer(x), x)


def test_a_silent_device_gives_up_after_the_retries_with_each_attempt_named():
    class Silent(Transport):
        writes = 0

        def write(self, data):
            Silent.writes += 1

        def read(self, max_bytes, timeout):
            return b""

        def close(self):
            pass

    with pytest.raises(LinkError) as info:
        AcceleratorClient(Silent(), timeout=0.01, retries=2)
    assert Silent.writes == 3 and len(info.value.failures) == 3
    assert "STATUS: no good response after 3 attempts (no response within 0.0 s" \
        in str(info.value)


def test_a_damaged_request_status_is_retried_and_other_errors_are_not():
    acc = client(device(), retries=3)
    frame = acc.request(Command.STATUS)
    assert frame.status == Status.OK and frame.seq == acc.seq
    # a READ without a count is the host's own mistake: answered BAD_LENGTH, not retried
    assert acc.request(Command.READ, b"\x01").status == Status.BAD_LENGTH
    assert acc.retried == 0
