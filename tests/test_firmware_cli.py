"""`python -m firmware`, the board runner: argument and port errors say what was wrong.

The runner's bit-exact path against the cosimulated iCEBreaker bridge is in
`test_uart_bridge.py`.
"""

import pytest

from firmware.__main__ import main, model_path
from firmware.host import AcceleratorClient
from firmware.transport import SerialTransport, TransportError


def test_missing_port_is_named():
    with pytest.raises(TransportError, match="cannot open serial port /dev/ttyNOPE"):
        SerialTransport("/dev/ttyNOPE", 1_000_000)


def test_a_port_without_our_device_times_out_clearly():
    # pyserial's loop:// echoes every byte: frames come back as requests, never as responses
    with pytest.raises(TransportError, match="STATUS: no good response after 4 attempts "
                                             r"\(no response within 0.5 s"):
        AcceleratorClient(SerialTransport("loop://", 1_000_000), timeout=0.5)


@pytest.mark.parametrize("argv", [
    [],                                                            # no board, no config
    ["--board", "icebreaker"],                                     # no port
    ["--board", "icebreaker", "--port", "loop://", "--socket", "x"],  # both
    ["--board", "no-such-board", "--port", "loop://"],
])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_model_names_and_paths():
    assert model_path("sdt").name == "sdt.json" and model_path("sdt").parent.name == "checkpoints"
    assert str(model_path("build/x.json")) == "build/x.json"


def test_compare_catches_a_wrong_logit_and_a_wrong_cycle_count():
    import numpy as np

    from firmware.__main__ import compare
    from firmware.host import MeasuredRun
    from hw.status import Status

    expected = np.array([[3, 1], [0, 5], [2, 2]])
    labels = np.array([0, 1, 0])
    good = MeasuredRun(expected.copy(), 3, 300, 1.0, Status.OK)
    report = compare(expected, good, labels, 100)
    assert report["mismatches"] == 0 and report["cycle_model_equal"]
    wrong = expected.copy()
    wrong[1, 0] += 1  # one logit off by one
    report = compare(expected, MeasuredRun(wrong, 3, 300, 1.0, Status.OK), labels, 100)
    assert report["mismatches"] == 1 and report["mismatching_inputs"] == [1]
    assert not compare(expected, MeasuredRun(expected, 3, 301, 1.0, Status.OK), labels,
                       100)["cycle_model_equal"]
    assert not compare(expected, MeasuredRun(expected, 2, 200, 1.0, Status.OK), labels,
                       100)["cycle_model_equal"]  # a result lost
