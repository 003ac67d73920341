"""cocotb test module of the cosimulation: reset the DUT, then serve the host over a socket.

The host side (pytest in `tests/test_cosim*.py`, or `python -m tb.run_sim`) starts the
simulator through `tb.session.Session` with TB_SOCKET set and talks to the RTL with the host
firmware; every check happens there, in the same code that drives a board.
"""

import os

import cocotb

from tb.bench import TB


@cocotb.test()
async def serve(dut):
    """Serve the host firmware on the socket TB_SOCKET until it disconnects."""
    tb = TB.from_env(dut)
    await tb.reset()
    await tb.serve(os.environ["TB_SOCKET"])
