"""References of the core's sequencing blocks, one step or word at a time.

`pysim.hwref.Executor` computes whole passes with array arithmetic; the functions here spell
out what the sequencing blocks of `hw/` do one element at a time, so that each block's
Amaranth-simulator test can compare every value it produces:

- `issue_order`: every (step, tap) of a pass in the order `hw.sequencer.StepIssue` issues it,
  with its run-read addresses, weight address, column masks and edge reads, and every tile's
  drain parameters, with the gateware's modular address arithmetic and loop counters;
- `unpack_input`: the activation words `hw.unpack.InputUnpacker` writes for an input.
"""

from __future__ import annotations

from hw import isa


def _bits(n: int) -> int:
    return max(1, (n - 1).bit_length())


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _iterations(count: int, bits: int) -> int:
    """How often a loop counter of `bits` bits runs for `count` (0 wraps: 2**bits)."""
    return count % (1 << bits) or (1 << bits)


def issue_order(desc: dict, steps: list[dict], config) -> tuple[list[dict], list[dict]]:
    """(issued steps, tiles) of one pass. `desc` holds every field of `isa.DESC_FIELDS` as the
    registers hold it; `steps` the step memory's words (`isa.step_bits` fields).

    An issued step: `col`, `row`, `w` (addresses), `adjust` (per column, signed bank-row move
    of the edge reads), and the stage-2 fields `first`, `last`, `shift`, `neg`, `seg`,
    `onehot`, `mask`, `up`, `dn`, `rot`, `pair`, `shift2`, `neg2` (integers, column c in bit c).
    A tile: `mask`, `par_t`, `out_t`, `rows_left`, `first_ct`, `last_ct`, `final`.
    """
    C, R = config.pe_cols, config.pe_rows
    LC = (C - 1).bit_length()
    bits = isa.field_bits(config)
    AW = _bits(config.act_depth * C)
    amask, wmask_w = (1 << AW) - 1, (1 << _bits(config.weight_depth)) - 1
    pmask = (1 << _bits(config.param_depth)) - 1
    pos_mask = (1 << (AW + 1)) - 1
    d = desc
    maxpool = d["op"] == isa.OP_MAXPOOL
    packing = config.lane_packing
    width_mask = (d["width"] - 1) & ((1 << bits["width"]) - 1)
    band_words = d["band"] >> LC
    step_count = _iterations(d["steps"], _bits(config.step_depth) + 1)
    taps = _iterations(d["taps"], 4)
    issued, tiles = [], []
    groups = _iterations(d["groups"], AW + 1)
    rgs = _iterations(d["rgs"], AW + 1)
    cts = _iterations(d["cts"], AW + 1)
    for g in range(groups):
        for rg in range(rgs):
            for ct in range(cts):
                col_t = (d["col_base"] + g * d["col_g"] + rg * d["col_rg"] + ct * d["col_ct"])
                row_t = (d["row_base"] + g * d["row_g"] + rg * d["row_rg"] + ct * d["row_ct"])
                out_t = (d["out_base"] + g * d["out_g"] + rg * d["out_rg"] + ct * d["out_ct"])
                w_t = d["w_base"] + g * d["w_g"] + rg * d["w_rg"]
                p0 = (ct * C) & pos_mask
                first_ct, last_ct = ct == 0, ct == cts - 1
                first_rg, last_rg = rg == 0, rg == rgs - 1
                valid_cols = 0
                for c in range(C):
                    valid_cols |= (((p0 + c) & pos_mask) < d["cols"]) << c
                for i in range(step_count):
                    st = steps[(d["step_base"] + i) % len(steps)]
                    kx, ky = (0, 0) if d["taps"] == 9 else (1, 1)
                    tap_off = (-d["width"] - 1) if d["taps"] == 9 else 0
                    for tap in range(taps):
                        mask = up = dn = 0
                        for c in range(C):
                            pos = (p0 + c) & pos_mask
                            x = pos & width_mask
                            pad_ok = not ((kx == 0 and x == 0) or (kx == 2 and x == width_mask))
                            above = d["pad"] and ky == 0 and pos < d["width"]
                            below = d["pad"] and ky == 2 and pos >= d["lastrow"]
                            if packing:
                                up |= above << c
                                dn |= below << c
                            else:
                                pad_ok = pad_ok and not above and not below
                            ok = pos < d["cols"]
                            mask |= (ok and (pad_ok or not d["pad"])) << c
                        mp_ky, mp_seg = st["shift"] & 3, (st["shift"] >> 2) & 3
                        if maxpool:
                            top = first_rg and mp_ky == 0
                            rowok = not (last_rg and mp_ky == 2 and d["mp_odd"] & 1)
                            if not packing:
                                rowok = rowok and not top
                            mask = 0
                            for c in range(C):
                                j = (mp_seg << LC) + c
                                mask |= (rowok and not (first_ct and j == 0) and not (
                                    last_ct and d["mp_odd"] & 2 and j == d["mp_last"] << 1)) << c
                            if packing:
                                up, dn = ((1 << C) - 1 if top else 0), 0
                        adjust = [band_words if up >> c & 1 else -band_words if dn >> c & 1
                                  else 0 for c in range(C)] if packing else [0] * C
                        pair = st.get("pair", 0)
                        issued.append({
                            "col": (col_t + st["col"] + tap_off) & amask,
                            "row": (row_t + st["row"] + (tap_off if pair else 0)) & amask,
                            "w": (w_t + st["w"] + tap) & wmask_w,
                            "adjust": adjust,
                            "first": i == 0 and tap == 0,
                            "last": i == step_count - 1 and tap == taps - 1,
                            "shift": st["shift"], "neg": st["neg"], "seg": mp_seg,
                            "onehot": st["col"] & max(C - 1, 1), "mask": mask,
                            "up": up, "dn": dn, "rot": st.get("rot", 0),
                            "pair": int(bool(pair) and d["row_mode"] == isa.ROW_ONES),
                            "shift2": st.get("shift2", 0), "neg2": st.get("neg2", 0)})
                        if kx == 2:
                            kx, ky, tap_off = 0, ky + 1, tap_off + d["width"] - 2
                        else:
                            kx, tap_off = kx + 1, tap_off + 1
                tiles.append({"mask": valid_cols, "par_t": (d["par_base"] + g * d["par_g"]
                                                            + rg * d["par_rg"]) & pmask,
                              "out_t": out_t & amask,
                              "rows_left": _signed(d["rows"] - rg * R, AW + 2),
                              "first_ct": int(first_ct), "last_ct": int(last_ct),
                              "final": int(last_ct and last_rg and g == groups - 1)})
    return issued, tiles


def unpack_input(pixels: bytes, glob: dict, config) -> dict[int, int]:
    """Activation words (flat address -> word) an input's pixels unpack into: pixel i's bit b
    in lane group i % pack of word `in_base + b * in_plane + i // pack` (all T lanes), written
    word by word, plane by plane (a later write to the same address wins); a last word's
    groups past the pixels read 0."""
    T, pack = glob["T"], glob["pack"]
    group = (1 << T) - 1
    size = 1 << _bits(config.act_depth * config.pe_cols)  # the address registers wrap
    words: dict[int, int] = {}
    for w in range(-(-len(pixels) // pack)):
        chunk = pixels[w * pack:(w + 1) * pack]
        for b in range(glob["pixel_bits"]):
            word = 0
            for k, pixel in enumerate(chunk):
                word |= (pixel >> b & 1) * (group << (T * k))
            addr = (glob["in_base"] + b * glob["in_plane"] + w) % size
            words[addr] = word & ((1 << config.lanes) - 1)
    return words
