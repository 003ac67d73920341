"""The activation memory: `pe_cols` banks of `lanes`-bit words, read and written as runs.

A word's flat address `a` lies in bank `a % pe_cols`, row `a // pe_cols`, so the run of
`pe_cols` consecutive words at any address touches every bank once and is read or written in
one cycle. `ActivationMemory(config)` has two run-read ports (`col`, `row`) and one run-write
port (`write`).

A read port takes the run's flat address and, with lane packing, a move per column in whole bank
rows (`adjust`: the edge reads of a 3x3 window, `band` words away); one cycle later `words[c]`
is the run's word c (rotated from its bank), masked to the program's lanes (`lane_valid`: the
lanes above `pack * T` may hold a previous program's data, which an edge read's shift or a lane
rotation would otherwise bring in). The write port takes column-ordered words and a mask of the
columns to write.

Its reference is the flat word memory of `pysim.hwref.Executor` (`mem[addr]`).

Latency: 1 cycle from address to words. Throughput: two run reads and one run write per cycle.
Cost: `pe_cols` block RAMs of `act_depth` words with two read ports each (true dual port or
duplicated); per read port `pe_cols` address adders and a `pe_cols`:1 word select per column;
per write a `pe_cols`:1 select per bank. No transparency is asked for: a pass never reads a word
in the cycle it is written (its outputs go to other addresses).
"""

from amaranth import Const, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arith import log2_ceil
from .config import ArrayConfig


def run_read_signature(config: ArrayConfig) -> wiring.Signature:
    """A run read: the flat address of its first word and, with lane packing, per column a
    move in whole bank rows (signed); the words come back a cycle later."""
    C, L = config.pe_cols, config.lanes
    AW = log2_ceil(config.act_depth * C)
    members = {"addr": Out(AW), "words": In(data.ArrayLayout(L, C))}
    if config.lane_packing:
        members["adjust"] = Out(data.ArrayLayout(signed(AW + 1), C))
    return wiring.Signature(members)


def run_write_signature(config: ArrayConfig) -> wiring.Signature:
    """A run write: flat address of column 0's word, the words in column order, a column mask."""
    C, L = config.pe_cols, config.lanes
    AW = log2_ceil(config.act_depth * C)
    return wiring.Signature({"addr": Out(AW), "words": Out(data.ArrayLayout(L, C)),
                             "en": Out(C)})


class ActivationMemory(wiring.Component):
    """See the module docstring. `banks` lists the `Memory` of each bank (for simulation)."""

    def __init__(self, config: ArrayConfig):
        self.config = config
        super().__init__({
            "col": In(run_read_signature(config)),
            "row": In(run_read_signature(config)),
            "write": In(run_write_signature(config)),
            "lane_valid": In(config.lanes),
        })
        self.banks = [Memory(shape=unsigned(config.lanes), depth=config.act_depth, init=[])
                      for _ in range(config.pe_cols)]

    def elaborate(self, platform):
        m = Module()
        C = self.config.pe_cols
        LC = log2_ceil(C) if C > 1 else 0
        ports = []
        for b, mem in enumerate(self.banks):
            m.submodules[f"bank{b}"] = mem
            ports.append((mem.read_port(), mem.read_port(), mem.write_port()))

        def wraps(b, lo):
            """Bank b's word of a run starting at bank `lo` lies one bank row further on when
            b < lo (never for the last bank: no constant comparison is emitted)."""
            return Const(b, LC + 1) < lo if b < C - 1 else 0

        for index, (name, read) in enumerate((("col", self.col), ("row", self.row))):
            lo, hi = read.addr[:LC], read.addr[LC:]
            for b in range(C):
                extra = 0
                if self.config.lane_packing:
                    # The column whose word bank b holds is (b - lo) mod C.
                    extra = Signal(signed(len(read.addr) + 1), name=f"{name}_adjust{b}")
                    with m.Switch((b - lo)[:LC] if LC else Const(0, 1)):
                        for c in range(C):
                            with m.Case(c):
                                m.d.comb += extra.eq(read.adjust[c])
                m.d.comb += ports[b][index].addr.eq(hi + wraps(b, lo) + extra)
            # The words come a cycle after the address: rotate by the address's low bits then.
            lo_reg = Signal(max(LC, 1), name=f"{name}_lo")
            if LC:
                m.d.sync += lo_reg.eq(lo)
            for c in range(C):
                sel = Signal(max(LC, 1), name=f"{name}_sel{c}")
                m.d.comb += sel.eq(lo_reg + c)
                with m.Switch(sel):
                    for b in range(C):
                        with m.Case(b):
                            m.d.comb += read.words[c].eq(ports[b][index].data & self.lane_valid)

        write = self.write
        lo, hi = write.addr[:LC], write.addr[LC:]
        for b in range(C):
            port = ports[b][2]
            col = Signal(max(LC, 1), name=f"write_col{b}")
            if LC:
                m.d.comb += col.eq(b - lo)
            m.d.comb += port.addr.eq(hi + wraps(b, lo))
            with m.Switch(col):
                for c in range(C):
                    with m.Case(c):
                        m.d.comb += [port.data.eq(write.words[c]), port.en.eq(write.en[c])]
        return m
