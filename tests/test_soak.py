"""`make soak` in short (tb/soak.py): malformed frames of every kind between valid traffic on the
cosimulated RTL of the default configuration; every inference equals the golden model's.

Its Verilator build (`build/cosim/soak_default_<hash>`, shared with `make soak`) is used by no
other test file, so `make test`'s workers never build one folder at once (tests/conftest.py)."""

import pytest

from tb.soak import KINDS, soak

pytestmark = pytest.mark.rtl


def test_short_soak_every_kind_and_bit_exact():
    report = soak(frames=2 * len(KINDS) * 4, inferences=8, seed=1, batch=4, reload_every=2,
                  progress=False)
    assert report["passed"], report
    assert set(report["frames_by_kind"]) == set(KINDS)
    assert report["inferences_checked"] == 8 and report["mismatches"] == 0
    statuses = report["responses_by_status"]
    for status in ("BAD_CRC", "TIMEOUT", "UNKNOWN_COMMAND", "BAD_LENGTH"):
        assert statuses.get(status, 0) > 0, statuses


def test_short_soak_catches_a_wrong_logit():
    """Negative control: one expected logit off by one is one mismatch and a failed soak."""
    report = soak(frames=len(KINDS), inferences=2, seed=2, batch=2, progress=False, tamper=True)
    assert report["mismatches"] == 1 and not report["passed"]
