"""`scripts/paths.py` on hand-made netlists: a long LUT chain between two registers is
reported with its start, end and depth, a short one is not, a carry chain costs no net delay
along itself, and a combinational loop does not hang the search."""

from scripts import paths


def _netlist(cells):
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"},
                                "cells": cells}}}


def _ff(d, q):
    return {"type": "SB_DFF", "port_directions": {"C": "input", "D": "input", "Q": "output"},
            "connections": {"C": [1], "D": [d], "Q": [q]}}


def _lut(a, o):
    return {"type": "SB_LUT4",
            "port_directions": {"I0": "input", "I1": "input", "I2": "input", "I3": "input",
                                "O": "output"},
            "connections": {"I0": [a], "I1": ["0"], "I2": ["0"], "I3": ["0"], "O": [o]}}


def _carry(ci, i0, co):
    return {"type": "SB_CARRY",
            "port_directions": {"CI": "input", "I0": "input", "I1": "input", "CO": "output"},
            "connections": {"CI": [ci], "I0": [i0], "I1": ["0"], "CO": [co]}}


def _chain(first_net, n, prefix):
    """`n` LUTs in series from `first_net`; returns the cells and the last net."""
    cells, net = {}, first_net
    for i in range(n):
        cells[f"{prefix}{i}"] = _lut(net, 1000 * (prefix == "b") + 100 + i)
        net = 1000 * (prefix == "b") + 100 + i
    return cells, net


def test_a_long_chain_is_reported_and_a_short_one_is_not():
    long_cells, long_end = _chain(10, 12, "a")
    short_cells, short_end = _chain(10, 2, "b")
    cells = {"start": _ff(2, 10), "end_long": _ff(long_end, 20), "end_short": _ff(short_end, 21),
             **long_cells, **short_cells}
    # FF 0.8 + 12 x (net 1.5 + LUT 0.5) + net 1.5 into the end = 26.3 ns
    slow = paths.analyse(_netlist(cells), budget_ns=18)
    assert [(r["start"], r["end"], r["pin"], r["levels"]) for r in slow] == [
        ("start", "end_long", "D", 12)]
    assert slow[0]["ns"] == 26.3 and slow[0]["path"] == [f"a{i}" for i in range(12)]
    assert paths.analyse(_netlist(cells), budget_ns=30) == []
    groups = paths.grouped(paths.analyse(_netlist(cells), budget_ns=5))
    assert [g["end"] for g in groups] == ["end_long", "end_short"]  # slowest first


def test_a_carry_chain_costs_no_net_along_itself_and_a_loop_is_cut():
    cells = {"start": _ff(2, 10), "c0": _carry("0", 10, 30), "c1": _carry(30, "0", 31),
             "c2": _carry(31, "0", 32), "end": _ff(32, 40),
             # a combinational loop between two LUTs, read by a register
             "l0": _lut(51, 50), "l1": _lut(50, 51), "loop_end": _ff(51, 41)}
    slow = {r["end"]: r for r in paths.analyse(_netlist(cells), budget_ns=0)}
    # FF 0.8 + net 1.5 + into the chain 0.4 + 2 steps x 0.15 + net 1.5 into the end
    assert slow["end"]["ns"] == 4.5 and slow["end"]["levels"] == 0
    assert "loop_end" in slow  # analysed, not hung
