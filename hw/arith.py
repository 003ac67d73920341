"""Small arithmetic building blocks shared by the core's components (no multipliers)."""

from amaranth import Const, Signal, signed


def log2_ceil(n: int) -> int:
    """Bits of an unsigned value 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def kept_sum(m, a, b, name: str):
    """`a + b` in a signal Yosys keeps: an adder chain of its own. Without the barrier, Yosys
    merges chains of additions into one multi-operand `$macc`, which it maps to carry-save
    full adders: about twice the LUTs of carry-chain adders on iCE40 and ECP5."""
    total = Signal(signed(max(len(a), len(b)) + 1) if a.shape().signed or b.shape().signed
                   else max(len(a), len(b)) + 1, name=name, attrs={"keep": 1})
    m.d.comb += total.eq(a + b)
    return total


def sum_tree(m, terms, name: str, register_every: int = 0):
    """The sum of `terms` as a balanced tree of kept two-input adders (see `kept_sum`); with
    `register_every` = k, a register after every k levels but the last, so the sum arrives
    `(levels - 1) // k` cycles later."""
    level = 0
    levels = max(0, (len(terms) - 1).bit_length())
    while len(terms) > 1:
        terms = [kept_sum(m, terms[i], terms[i + 1], f"{name}_{level}_{i // 2}")
                 if i + 1 < len(terms) else terms[i] for i in range(0, len(terms), 2)]
        level += 1
        if register_every and level % register_every == 0 and level < levels:
            regs = [Signal.like(t, name=f"{name}_q{level}_{i}") for i, t in enumerate(terms)]
            m.d.sync += [q.eq(t) for q, t in zip(regs, terms, strict=True)]
            terms = regs
    return terms[0]


def or_all(words, width: int):
    """Bitwise OR of `width`-bit values (0 when there are none)."""
    out = Const(0, width)
    for word in words:
        out = out | word
    return out


def times_const(value, k: int):
    """`value * k` for a constant k, as a sum of shifted copies (no multiplier)."""
    terms = [value << i for i in range(k.bit_length()) if k >> i & 1]
    return sum(terms[1:], terms[0])
