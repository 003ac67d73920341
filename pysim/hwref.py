"""Bit-accurate NumPy references of the accelerator's blocks, at their finite widths.

- `wrap`: two's-complement wrap-around at a width (what a register of that width holds).
- `pe_tile`: the PE array's AND/accumulate over a list of reduction steps.
- `lif_unit`: the LIF unit (T lanes of accumulated input + bias -> T spikes, one pass).
- `Executor`: runs a compiled program (`hw.compiler.CompiledNetwork`) on a flat activation
  memory exactly as the gateware's sequencer does: same addresses, same masks, same words. The
  RTL is tested against it block by block and end to end; it is tested against `pysim.golden`.

Imports nothing from Amaranth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hw import isa


def wrap(x, bits: int):
    """Two's-complement wrap-around of `x` at `bits` bits (int64 arrays or ints)."""
    x = np.asarray(x, np.int64)
    half = np.int64(1) << (bits - 1)
    return ((x + half) & ((np.int64(1) << bits) - 1)) - half


def lane_bits(words, lanes: int) -> np.ndarray:
    """Words (any shape) -> (..., lanes) 0/1 array; lane l is bit l."""
    words = np.asarray(words, np.int64)
    return (words[..., None] >> np.arange(lanes)) & 1


def bits_word(bits) -> np.ndarray:
    """(..., lanes) 0/1 -> words."""
    bits = np.asarray(bits, np.int64)
    return (bits << np.arange(bits.shape[-1])).sum(axis=-1)


def pe_tile(weights, shifts, negs, rowops, colops, acc_bits: int, acc=None,
            second=None) -> np.ndarray:
    """The PE array over K reduction steps.

    weights (K, R) signed; shifts, negs (K,); rowops (K, R, L) and colops (K, C, L) 0/1.
    Per step, PE (r, c) lane l adds `(-1)^neg * (w[r] << shift)` when rowop[r, l] AND
    colop[c, l]; with `second = (shifts2, negs2, colops2)` (paired steps) it also adds
    `(-1)^neg2 * (w[r] << shift2)` when rowop[r, l] AND colop2[c, l]. Returns acc (R, C, L),
    wrapped at `acc_bits` after every addition (the compiler proves that no wrap happens on a
    compiled program).
    """
    weights = np.asarray(weights, np.int64)
    K, R = weights.shape
    C, L = np.asarray(colops).shape[1:]
    acc = np.zeros((R, C, L), np.int64) if acc is None else np.asarray(acc, np.int64).copy()
    operands = [(shifts, negs, colops)] + ([second] if second is not None else [])
    for k in range(K):
        for shift, neg, cols in operands:
            w = weights[k] << int(shift[k])
            w = -w if neg[k] else w
            gate = np.asarray(rowops[k])[:, None, :] & np.asarray(cols[k])[None, :, :]
            acc = wrap(acc + gate * w[:, None, None], acc_bits)
    return acc


def lif_unit(x, bias, threshold, T: int, lanes: int, membrane_bits: int,
             step: bool = False, pack: int = 1) -> np.ndarray:
    """The LIF unit: `x` (..., lanes) accumulated inputs, `bias` and `threshold` broadcast.

    The membrane keeps `lanes` fractional bits: `B = (V + (X << lanes)) >> 1`, fire when
    `B >= threshold` (the compiler passes `ceil(theta * 2^lanes / 2^shift)`), hard reset to 0.
    Lanes form `pack` groups of T time steps (other positions); the membrane restarts at 0 at
    each group's first lane. With `step` the membrane is reset every lane (a plain per-step
    compare). Lanes >= pack * T give 0.
    """
    x = np.asarray(x, np.int64) + np.asarray(bias, np.int64)[..., None]
    threshold = np.asarray(threshold, np.int64)
    v = np.zeros(x.shape[:-1], np.int64)
    out = np.zeros(x.shape, np.int64)
    for t in range(lanes):
        if t % T == 0:
            v = np.zeros_like(v)
        b = wrap((v + (x[..., t] << lanes)) >> 1, membrane_bits)
        fired = b >= threshold
        out[..., t] = fired & (t < pack * T)
        v = np.where(fired | step, 0, b)
    return out


def lane_masks(T: int, pack: int, lanes: int) -> tuple[int, int]:
    """(valid, group): lanes below `pack * T`, and the lanes of lane group 0."""
    return (1 << min(lanes, pack * T)) - 1, (1 << T) - 1


def rotate_groups(words, amount, used: int):
    """Rotate words up by `amount` lanes (broadcast), cyclically over the `used` low lanes;
    the words have no bits from `used` up."""
    words = np.asarray(words, np.int64)
    amount = np.asarray(amount, np.int64)
    return ((words << amount) | (words >> (used - amount))) & ((1 << used) - 1)


@dataclass
class LoadImage:
    """A load image as the gateware's parser stores it (`decode_image`)."""

    globals: dict
    weights: np.ndarray  #: (weight_depth, pe_rows) signed `weight_bits`
    params: np.ndarray  #: (param_depth, 2): bias (signed `acc_bits`), threshold (`membrane_bits`)
    steps: np.ndarray  #: (step_depth, STEP_FIELDS) as `isa.decode_step` gives them
    descs: list  #: per pass, every descriptor field cut to its register's width


def _signed(value, bits: int):
    """The low `bits` bits of `value` read as two's complement."""
    value = np.asarray(value, np.int64) & ((1 << bits) - 1)
    return value - ((value >> (bits - 1)) << bits)


def decode_image(records, config) -> LoadImage:
    """Parse load records (`CompiledNetwork.records()`) exactly as the gateware's load parser
    does: weights, parameters and steps cut to the widths its memories hold, descriptor and
    global fields to its registers' widths. A reference that executes the decoded image sees
    any fault of the encoding (a field too narrow, a sign lost) that the RTL would."""
    cfg = config
    R, WB = cfg.pe_rows, cfg.weight_bits
    bits = isa.field_bits(cfg)
    weights = np.zeros((cfg.weight_depth, R), np.int64)
    params = np.zeros((cfg.param_depth, 2), np.int64)
    steps = np.zeros((cfg.step_depth, isa.STEP_FIELDS), np.int64)
    descs, glob = {}, {}
    entry_layout = {isa.REC_WEIGHT: isa.weight_layout(R), isa.REC_PARAM: isa.PARAM_LAYOUT,
                    isa.REC_STEP: isa.STEP_LAYOUT}

    def registers(fields: dict) -> dict:
        return {name: value & ((1 << bits[name]) - 1) for name, value in fields.items()}

    for rec in records:
        kind, header, body = isa.split_record(rec)
        if kind == isa.REC_GLOBAL:
            glob = registers(isa.GLOBAL_LAYOUT.unpack(body))
        elif kind == isa.REC_DESC:
            descs[header["index"]] = registers(isa.DESC_LAYOUT.unpack(body))
        elif kind in entry_layout:
            layout = entry_layout[kind]
            for n in range(header["count"]):
                entry = body[n * layout.nbytes:(n + 1) * layout.nbytes]
                addr = header["addr"] + n
                if kind == isa.REC_WEIGHT:
                    weights[addr] = _signed(list(layout.unpack(entry).values()), WB)
                elif kind == isa.REC_PARAM:
                    p = layout.unpack(entry)
                    params[addr] = (_signed(p["bias"], cfg.acc_bits),
                                    _signed(p["threshold"], cfg.membrane_bits))
                else:
                    step = isa.decode_step(entry, cfg)
                    step["row"] |= step["rot"] << isa.ROT_SHIFT
                    steps[addr] = [step[name] for name in isa.STEP_TUPLE]
    passes = [descs[i] for i in range(len(descs))]
    return LoadImage(glob, weights, params, steps, passes)


class Executor:
    """Runs a compiled program pass by pass on a flat word memory, as the sequencer does.

    `run_batch` runs a batch of inputs at once (one memory per input, the same program), which
    is how the whole test split is checked in seconds; `run` is one input.
    """

    def __init__(self, net):
        self.net = net
        self.cfg = net.config
        image = self.image = decode_image(net.records(), self.cfg)
        self.T = image.globals["T"]
        self.pack = image.globals["pack"]
        self.valid, self.group = lane_masks(self.T, self.pack, self.cfg.lanes)
        self.weights, self.params, self.steps = image.weights, image.params, image.steps
        self.mem = np.zeros((1, self.cfg.act_depth * self.cfg.pe_cols), np.int64)
        #: Activation memory contents before the first input (what a previous program left);
        #: the gateware must not depend on words this program did not write.
        self.stale = None

    def run(self, image, trace: bool = False) -> bytes:
        """One input -> the result payload the accelerator sends (trace dumps, then logits)."""
        return self.run_batch([image], trace)[0]

    def run_batch(self, images, trace: bool = False) -> list[bytes]:
        """Inputs -> one result payload per input."""
        cfg, g = self.cfg, self.image.globals
        payloads = [self.net.encode_input(image, trace) for image in images]
        pixels = np.stack([np.frombuffer(p[1:], np.uint8) for p in payloads]).astype(np.int64)
        self.mem = np.zeros((len(payloads), cfg.act_depth * cfg.pe_cols), np.int64)
        if self.stale is not None:
            self.mem[:] = self.stale
        k = self.pack
        lanes = self.group << (self.T * np.arange(k))  # lane group of each pixel of a word
        for b in range(g["pixel_bits"]):
            bits = ((pixels >> b) & 1).reshape(len(payloads), -1, k)
            addr = g["in_base"] + b * g["in_plane"] + np.arange(bits.shape[1])
            self.mem[:, addr] = (bits * lanes).sum(axis=2)
        out = [bytearray() for _ in payloads]
        wb = isa.word_bytes(cfg.lanes)
        for d in self.image.descs:
            if d["op"] == isa.OP_MAXPOOL:
                self.maxpool(d)
            else:
                for i, logits in enumerate(self.array(d)):
                    out[i] += logits
            if trace and d["dump_words"]:
                words = self.mem[:, d["dump_base"]:d["dump_base"] + d["dump_words"]] & self.valid
                for i in range(len(out)):
                    out[i] += words[i].astype("<u1" if wb == 1 else "<u2").tobytes()
        return [bytes(o) for o in out]

    def maxpool(self, d):
        """3x3/2 OR, as the sequencer runs it (`isa.OP_MAXPOOL`): per chunk of K outputs of one
        output row, the steps' run reads from the chunk's input row 2 oy - 1, column 2 ox0 - 1,
        with the window's padding masked; with lane packing, the row above a band's first row
        is the previous band's last row (the word `band` further on, lane groups shifted up by
        one)."""
        C = self.cfg.pe_cols
        K, S = isa.maxpool_chunk(C)
        size = self.mem.shape[1]
        st = self.steps[d["step_base"]:d["step_base"] + d["steps"]]
        st = isa.Step(*st.T)  # one array per step field
        ky, seg = isa.maxpool_window(st.shift)
        j = seg[:, None] * C + np.arange(C)[None, :]  # run word j = input column 2 ox0 - 1 + j
        for g in range(d["groups"]):
            for rg in range(d["rgs"]):
                top = (rg == 0) & (ky == 0)
                rowok = ~((rg == d["rgs"] - 1) & (ky == 2) & bool(d["mp_odd"] & 1))
                if not self.cfg.lane_packing:
                    rowok &= ~top
                for ct in range(d["cts"]):
                    col_t = d["col_base"] + g * d["col_g"] + rg * d["col_rg"] + ct * d["col_ct"]
                    out_t = d["out_base"] + g * d["out_g"] + rg * d["out_rg"] + ct * d["out_ct"]
                    last = ct == d["cts"] - 1
                    ok = rowok[:, None] & ~((ct == 0) & (j == 0)) & ~(
                        last & bool(d["mp_odd"] & 2) & (j == 2 * d["mp_last"]))
                    addr = col_t + st.col[:, None] + np.arange(C)[None, :]
                    addr = addr + np.where(top, d["band"], 0)[:, None]
                    words = self.mem[:, addr % size] & self.valid  # the used lanes only
                    words = np.where(top[:, None], (words << self.T) & self.valid, words)
                    words = np.where(ok, words, 0) & self.valid
                    for k in range(d["mp_last"] if last else K):
                        hit = (j >= 2 * k) & (j <= 2 * k + 2)
                        self.mem[:, out_t + k] = np.bitwise_or.reduce(
                            np.where(hit, words, 0).reshape(len(self.mem), -1), axis=1)

    def array(self, d) -> list[bytes]:
        """One array pass; returns the head's logits bytes per input (empty otherwise)."""
        cfg = self.cfg
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        size = self.mem.shape[1]
        st = self.steps[d["step_base"]:d["step_base"] + d["steps"]]
        taps, W = d["taps"], d["width"]
        # Expand steps x taps (tap fastest), as the sequencer issues them.
        ky, kx = (np.divmod(np.arange(9), 3) if taps == 9 else (np.ones(1, int), np.ones(1, int)))
        n_steps, st = len(st), isa.Step(*st.T)  # one array per step field
        col_off = np.repeat(st.col, taps)
        row_off = np.repeat(st.row & ((1 << isa.ROT_SHIFT) - 1), taps)
        rot = np.repeat(st.row >> isa.ROT_SHIFT, taps)
        w_off = (st.w[:, None] + np.arange(taps)[None, :]).reshape(-1)
        shift = np.repeat(st.shift, taps)
        neg = np.repeat(st.neg, taps)
        # Paired steps (rows all ones only): port B reads the second operand's run.
        pair = np.repeat(st.pair, taps) * int(d["row_mode"] == isa.ROW_ONES)
        sign2 = pair * (np.where(np.repeat(st.neg2, taps) == 1, -1, 1)
                        << np.repeat(st.shift2, taps))
        ky, kx = np.tile(ky, n_steps), np.tile(kx, n_steps)
        tap = (ky - 1) * W + (kx - 1)
        sign = np.where(neg == 1, -1, 1) << shift
        used = min(L, self.pack * self.T)
        emitted = [bytearray() for _ in range(len(self.mem))]
        for g in range(d["groups"]):
            for rgl in range(d["rgs"]):
                logit = np.zeros((len(self.mem), R), np.int64)
                for ct in range(d["cts"]):
                    col_t = d["col_base"] + g * d["col_g"] + rgl * d["col_rg"] + ct * d["col_ct"]
                    row_t = d["row_base"] + g * d["row_g"] + rgl * d["row_rg"] + ct * d["row_ct"]
                    w_t = d["w_base"] + g * d["w_g"] + rgl * d["w_rg"]
                    pos = ct * C + np.arange(C)
                    valid = pos < d["cols"]
                    wsel = self.weights[(w_t + w_off) % cfg.weight_depth]
                    weights = wsel * sign[:, None]
                    mask = np.broadcast_to(valid, (n_steps * taps, C))
                    if d["pad"]:
                        x = pos & (W - 1)
                        mask = mask & ~((kx[:, None] == 0) & (x[None, :] == 0)) \
                            & ~((kx[:, None] == 2) & (x[None, :] == W - 1))

                    def run_words(start, pos=pos, mask=mask):
                        """The words column c reads from run `start` (per step), with the
                        3x3 edge reads and padding masks applied."""
                        addr = start[:, None] + tap[:, None] + np.arange(C)[None, :]
                        up = dn = np.zeros(addr.shape, bool)
                        if d["pad"]:
                            up = (ky[:, None] == 0) & (pos[None, :] < W)
                            dn = (ky[:, None] == 2) & (pos[None, :] >= d["lastrow"])
                        addr = addr + d["band"] * (up.astype(int) - dn)
                        # Only the used lanes are read: lanes from pack * T up may hold a
                        # previous program's data, which a shift down would bring in.
                        words = self.mem[:, addr % size] & self.valid
                        words = np.where(up, words << self.T, np.where(dn, words >> self.T,
                                                                        words))
                        return lane_bits(np.where(mask, words, 0) & self.valid, L)

                    if d["col_mode"] == isa.COL_ONEHOT:
                        colw = np.where(np.arange(C)[None, None, :] == col_off[None, :, None],
                                        (1 << L) - 1, 0)
                        colops = lane_bits(np.where(valid, colw, 0) & self.valid, L)
                    else:
                        colops = run_words(col_t + col_off)
                    if d["row_mode"] == isa.ROW_RUN:
                        rw = self.mem[:, (row_t + row_off[:, None] + np.arange(R)[None, :])
                                      % size] & self.valid
                        rw = rotate_groups(rw, rot[None, :, None], used)
                        acc = np.einsum("kr,bkrl,bkcl->brcl", weights, lane_bits(rw, L), colops)
                    else:
                        batch = (len(self.mem),) + colops.shape[-3:]
                        acc = np.einsum("kr,bkcl->brcl", weights,
                                        np.broadcast_to(colops, batch))
                        if pair.any():
                            acc = acc + np.einsum("kr,bkcl->brcl", wsel * sign2[:, None],
                                                  run_words(row_t + row_off))
                    # The compiler proves no accumulator wraps, so one wrap at the end equals
                    # the RTL's wrap after every addition (modular arithmetic).
                    acc = wrap(acc, cfg.acc_bits)
                    self.drain(d, acc, g, rgl, ct, valid, logit, emitted)
        return [bytes(e) for e in emitted]

    def drain(self, d, acc, g, rgl, ct, valid, logit, emitted):
        """Tile accumulators (batch, R, C, L) -> output words (LIF spikes or raw bit-planes),
        or the head's running logits (emitted after the last column tile)."""
        cfg = self.cfg
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        par_t = d["par_base"] + g * d["par_g"] + rgl * d["par_rg"]
        out_t = d["out_base"] + g * d["out_g"] + rgl * d["out_rg"] + ct * d["out_ct"]
        bias, thr = self.params[(par_t + np.arange(R)) % cfg.param_depth].T
        rows = rgl * R + np.arange(R) < d["rows"]
        mode = d["out_mode"]
        if mode == isa.OUT_HEAD:
            logit[:] = wrap(logit + acc.sum(axis=(2, 3)), 32)
            if ct == d["cts"] - 1:
                for i, row in enumerate(wrap(logit + bias, 32)):
                    emitted[i] += row[rows].astype("<i4").tobytes()
            return
        if mode in (isa.OUT_LIF, isa.OUT_STEP):
            planes = bits_word(lif_unit(acc, bias[:, None], thr[:, None], self.T, L,
                                        cfg.membrane_bits, step=mode == isa.OUT_STEP,
                                        pack=self.pack))[:, None]
        else:
            x = wrap(acc + bias[:, None, None], cfg.acc_bits + 1)
            planes = np.stack([bits_word((x >> b) & 1) & self.valid
                               for b in range(d["out_planes"])], axis=1)
        addr = (out_t + np.arange(planes.shape[1])[:, None, None] * d["out_plane"]
                + np.arange(R)[None, :, None] * d["out_row"] + np.arange(C)[None, None, :])
        keep = np.broadcast_to(rows[None, :, None] & valid[None, None, :], addr.shape)
        self.mem[:, addr[keep] % self.mem.shape[1]] = planes[:, keep]
