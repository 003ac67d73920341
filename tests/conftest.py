"""Test tiers, and what lets `make test` run on both cores (pytest-xdist).

Markers (registered in pyproject.toml):

- `rtl`: builds or runs a Verilator (or Icarus) model through cocotb. Every test of the files in
  `RTL_FILES` is marked here.
- `synth`: runs the YoWASP Yosys/nextpnr tools (minutes each).
- `slow`: pure Python, but long enough to keep out of the fast tier.

`make test-fast` runs `-m "not rtl and not synth and not slow"` (the pure-Python and
Amaranth-simulator tests) on two workers. `make test` runs everything with
`-n 2 --dist loadfile`: all tests of one file run on one worker, one after another. The tests
that share a Verilator build folder (`build/cosim/<name>_<hash>/`, `build/cocotb/...`) are kept
in one file each (`RTL_FILES` names the build of each), so two workers never build the same
folder at once. (`--dist loadgroup` with `xdist_group` marks would be finer, but pytest-xdist
3.8 renames `Node._nodeid` to attach the group, which pytest 9 no longer reads: the groups are
silently ignored.)
"""

from __future__ import annotations

import pytest

#: Files whose tests build or run Verilator (or Icarus) models, and the build folder(s) each uses
#: (no two files share one; `make sim`'s runner is tested in test_cosim.py, on its build).
RTL_FILES = {
    "test_cosim.py": "build/cosim/default_<hash>",
    "test_cosim_blocks.py": "build/cocotb/blocks_blk_small_<hash>, blocks_blk_lanes16_<hash>",
    "test_cosim_icebreaker.py": "build/cosim/icebreaker_<hash>",
    "test_cosim_link.py": "build/cosim/link_echo_<hash>",
    "test_explore_rtl.py": "build/cosim/explore_*",
    "test_icarus.py": "build/cosim/icarus_small_<hash>, build/cocotb/blocks_blk_icarus_<hash>, "
                      "build/cocotb/icarus_held_state",
    "test_noisy_line.py": "build/noisy_test",
    "test_soak.py": "build/cosim/soak_default_<hash>",
    "test_uart_bridge.py": "build/cosim/uart_bridge_icebreaker",
    "test_uart_cocotb.py": "build/cocotb/uart_loopback*",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if item.path.name in RTL_FILES:
            item.add_marker(pytest.mark.rtl)
