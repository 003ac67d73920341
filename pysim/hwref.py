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


def pe_tile(weights, shifts, negs, rowops, colops, acc_bits: int, acc=None) -> np.ndarray:
    """The PE array over K reduction steps.

    weights (K, R) signed; shifts, negs (K,); rowops (K, R, L) and colops (K, C, L) 0/1.
    Per step, PE (r, c) lane l adds `(-1)^neg * (w[r] << shift)` when rowop[r, l] AND
    colop[c, l]. Returns acc (R, C, L), wrapped at `acc_bits` after every addition (the
    compiler proves that no wrap happens on a compiled program).
    """
    weights = np.asarray(weights, np.int64)
    K, R = weights.shape
    C, L = np.asarray(colops).shape[1:]
    acc = np.zeros((R, C, L), np.int64) if acc is None else np.asarray(acc, np.int64).copy()
    for k in range(K):
        w = weights[k] << int(shifts[k])
        w = -w if negs[k] else w
        gate = np.asarray(rowops[k])[:, None, :] & np.asarray(colops[k])[None, :, :]
        acc = wrap(acc + gate * w[:, None, None], acc_bits)
    return acc


def lif_unit(x, bias, threshold, T: int, lanes: int, membrane_bits: int,
             step: bool = False) -> np.ndarray:
    """The LIF unit: `x` (..., lanes) accumulated inputs, `bias` and `threshold` broadcast.

    The membrane keeps `lanes` fractional bits: `B = (V + (X << lanes)) >> 1`, fire when
    `B >= threshold` (the compiler passes `ceil(theta * 2^lanes / 2^shift)`), hard reset to 0.
    With `step` the membrane is reset every lane (a plain per-step compare). Lanes >= T give 0.
    """
    x = np.asarray(x, np.int64) + np.asarray(bias, np.int64)[..., None]
    threshold = np.asarray(threshold, np.int64)
    v = np.zeros(x.shape[:-1], np.int64)
    out = np.zeros(x.shape, np.int64)
    for t in range(lanes):
        b = wrap((v + (x[..., t] << lanes)) >> 1, membrane_bits)
        fired = b >= threshold
        out[..., t] = fired & (t < T)
        v = np.where(fired | step, 0, b)
    return out


class Executor:
    """Runs a compiled program pass by pass on a flat word memory, as the sequencer does."""

    def __init__(self, net):
        self.net = net
        self.cfg = net.config
        self.mem = np.zeros(self.cfg.act_depth * self.cfg.pe_cols, np.int64)
        self.T = net.globals["T"]

    def run(self, image, trace: bool = False) -> bytes:
        """One input -> the result payload the accelerator sends (trace dumps, then logits)."""
        cfg, g = self.cfg, self.net.globals
        payload = self.net.encode_input(image, trace)
        pixels = np.frombuffer(payload[1:], np.uint8).astype(np.int64)
        tmask = (1 << self.T) - 1
        for b in range(g["pixel_bits"]):
            addr = g["in_base"] + b * g["in_plane"] + np.arange(len(pixels))
            self.mem[addr] = np.where((pixels >> b) & 1, tmask, 0)
        out = bytearray()
        wb = isa.word_bytes(cfg.lanes)
        for p in self.net.passes:
            d = p.desc
            if d["op"] == isa.OP_MAXPOOL:
                self.maxpool(d)
            else:
                out += self.array(d, p)
            if trace and d["dump_words"]:
                words = self.mem[d["dump_base"]:d["dump_base"] + d["dump_words"]]
                for w in words:
                    out += int(w).to_bytes(wb, "little")
        return bytes(out)

    def maxpool(self, d):
        H, W, Ho, Wo = d["mp_h"], d["mp_w"], d["mp_ho"], d["mp_wo"]
        for ch in range(d["groups"]):
            src = d["col_base"] + ch * d["col_g"]
            for oy in range(Ho):
                for ox in range(Wo):
                    word = 0
                    for ky in range(3):
                        for kx in range(3):
                            iy, ix = 2 * oy + ky - 1, 2 * ox + kx - 1
                            if 0 <= iy < H and 0 <= ix < W:
                                word |= int(self.mem[src + iy * W + ix])
                    self.mem[d["out_base"] + ch * d["out_row"] + oy * Wo + ox] = word

    def array(self, d, p) -> bytes:
        cfg, net = self.cfg, self.net
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        size = len(self.mem)
        steps = net.steps[d["step_base"]:d["step_base"] + d["steps"]]
        taps = d["taps"]
        W = d["width"]
        emitted = bytearray()
        for g in range(d["groups"]):
            for rgl in range(d["rgs"]):
                logit = np.zeros(R, np.int64)
                for ct in range(d["cts"]):
                    col_t = d["col_base"] + g * d["col_g"] + rgl * d["col_rg"] + ct * d["col_ct"]
                    row_t = d["row_base"] + g * d["row_g"] + rgl * d["row_rg"] + ct * d["row_ct"]
                    w_t = d["w_base"] + g * d["w_g"] + rgl * d["w_rg"]
                    pos = ct * C + np.arange(C)
                    valid = pos < d["cols"]
                    ws, shifts, negs, rowops, colops = [], [], [], [], []
                    for col_off, row_off, w_off, shift, neg in steps:
                        for t in range(taps):
                            ky, kx = divmod(t, 3) if taps == 9 else (1, 1)
                            tap = (ky - 1) * W + (kx - 1)
                            ws.append(net.weights[(w_t + w_off + t) % cfg.weight_depth])
                            shifts.append(shift)
                            negs.append(neg)
                            if d["row_mode"] == isa.ROW_RUN:
                                addr = (row_t + row_off + np.arange(R)) % size
                                rowops.append(lane_bits(self.mem[addr], L))
                            else:
                                rowops.append(np.ones((R, L), np.int64))
                            if d["col_mode"] == isa.COL_ONEHOT:
                                word = np.where(np.arange(C) == col_off, (1 << L) - 1, 0)
                            else:
                                word = self.mem[(col_t + col_off + tap + np.arange(C)) % size]
                            mask = valid.copy()
                            if d["pad"]:
                                x = pos & (W - 1)
                                mask &= ~((ky == 0) & (pos < W))
                                mask &= ~((ky == 2) & (pos >= d["lastrow"]))
                                mask &= ~((kx == 0) & (x == 0)) & ~((kx == 2) & (x == W - 1))
                            colops.append(lane_bits(np.where(mask, word, 0), L))
                    acc = pe_tile(ws, shifts, negs, rowops, colops, cfg.acc_bits)
                    emitted += self.drain(d, acc, g, rgl, ct, pos, valid, logit)
        return bytes(emitted)

    def drain(self, d, acc, g, rgl, ct, pos, valid, logit) -> bytes:
        cfg, net = self.cfg, self.net
        R, C, L = cfg.pe_rows, cfg.pe_cols, cfg.lanes
        size = len(self.mem)
        out = bytearray()
        par_t = d["par_base"] + g * d["par_g"] + rgl * d["par_rg"]
        out_t = d["out_base"] + g * d["out_g"] + rgl * d["out_rg"] + ct * d["out_ct"]
        tmask = np.arange(L) < self.T
        for r in range(R):
            row_valid = rgl * R + r < d["rows"]
            bias, thr = net.params[(par_t + r) % cfg.param_depth] \
                if (par_t + r) < len(net.params) else (0, 0)
            x = wrap(acc[r] + bias, cfg.acc_bits + 1)
            mode = d["out_mode"]
            if mode == isa.OUT_HEAD:
                logit[r] = wrap(logit[r] + acc[r].sum(), 32)
                if ct == d["cts"] - 1 and row_valid:
                    out += int(wrap(logit[r] + bias, 32)).to_bytes(4, "little", signed=True)
                continue
            if mode in (isa.OUT_LIF, isa.OUT_STEP):
                planes = [lif_unit(acc[r], np.full(C, bias), thr, self.T, L,
                                   cfg.membrane_bits, step=mode == isa.OUT_STEP)]
            else:
                planes = [((x >> b) & 1) * tmask for b in range(d["out_planes"])]
            if not row_valid:
                continue
            for b, plane in enumerate(planes):
                addr = out_t + r * d["out_row"] + b * d["out_plane"] + np.arange(C)
                words = bits_word(plane)
                self.mem[addr[valid] % size] = words[valid]
        return bytes(out)
