"""Integer recurrent kernels that TFLite lacks: the LMU memory, Mamba's selective scan and the running sum of a
streamed mean pooling. Their docstrings define their integer semantics (docs/hybrid_ops.md); their Prepare
functions are in quant/prepare_recurrent.py.

Every whole-sequence kernel is its step function applied to t = 0 .. T-1 in a Python loop (vectorised over the
batch and the features), so a step graph that calls the kernel with T = 1 and carries the integer state
between calls computes exactly the same integers as one whole-sequence call.

Exact products: dot products go through float64 BLAS while every partial sum stays below 2^53 (checked from
the operand widths; a 32-bit state is split into two 16-bit halves first, which keeps each half's products
below 2^31 per term); element-wise products are NumPy int64 arithmetic, with the bounds stated per kernel.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.kernels.int.linear import finish
from lowbit.runtime.registry import int_kernel

_F64_EXACT = 1 << 53
_STATE = {16: np.int16, 32: np.int32}


def _state_dtype(op: str, state_bits) -> np.dtype:
    try:
        return np.dtype(_STATE[int(state_bits)])
    except KeyError:
        raise ModelError(f"{op}: state_bits must be 16 or 32, got {state_bits!r}") from None


def _out_dtype(op: str, to: str) -> np.dtype:
    if to not in ("int8", "int16"):
        raise ModelError(f"{op}: 'to' must be 'int8' or 'int16', got {to!r}")
    return np.dtype(to)


def _saturate(x: np.ndarray, dtype, stats, key: str = "saturated") -> np.ndarray:
    """Clamp int64 ``x`` to ``dtype`` and count the clamped elements into ``stats[key]``."""
    info = np.iinfo(dtype)
    if stats is not None:
        stats[key] = stats.get(key, 0) + fp.saturate_count(x, int(info.min), int(info.max))
    return np.clip(x, info.min, info.max)


def exact_matvec_t(m: np.ndarray, w: np.ndarray, w_f64: np.ndarray | None = None) -> np.ndarray:
    """m [B, K] (int, |m| < 2^31) @ w.T (w [M, K] int16) exactly, as int64 [B, M].

    |m| < 2^15 is one float64 product; a wider m is split as m = hi * 2^16 + lo (0 <= lo < 2^16), so every
    term stays below 2^31 and a K-deep sum below 2^53 for K < 2^22."""
    m = np.asarray(m, np.int64)
    k = m.shape[-1]
    if k >= (1 << 22):
        raise ModelError(f"exact_matvec_t: depth {k} is too deep for exact float64 sums")
    wt = (w.astype(np.float64) if w_f64 is None else w_f64).T
    if m.size == 0 or int(np.max(np.abs(m))) < (1 << 15):
        return np.matmul(m.astype(np.float64), wt).astype(np.int64)
    hi, lo = m >> 16, m & 0xFFFF
    return (np.matmul(hi.astype(np.float64), wt).astype(np.int64) << 16) \
        + np.matmul(lo.astype(np.float64), wt).astype(np.int64)


def _initial_state(s0, shape, dtype, op: str) -> np.ndarray:
    if s0 is None:
        return np.zeros(shape, np.int64)
    s0 = np.asarray(s0)
    if s0.dtype.kind not in "iu":
        raise ModelError(f"{op}: the initial state must be integer codes, got {s0.dtype}")
    try:
        return np.broadcast_to(s0.astype(np.int64), shape).copy()
    except ValueError:
        raise ModelError(f"{op}: initial state {list(s0.shape)} does not broadcast to {list(shape)}") from None


# --- LMUMemory ---------------------------------------------------------------------------------------------------
def lmu_memory_step(m, u_t, abar, bbar, abar_shift, input_offset, state_dtype, stats=None, abar_f64=None):
    """One LMU step on integer codes: acc = abar m + bbar (u + input_offset); m' = sat(RDBPOT(acc, abar_shift)).

    m [B, d] int64 (state codes), u_t [B, du] codes; returns m' [B, d] int64 (already saturated)."""
    acc = exact_matvec_t(m, abar, abar_f64)
    acc += (np.asarray(u_t, np.int64) + int(input_offset)) @ bbar.T
    return _saturate(fp.rounding_divide_by_pot(acc, abar_shift), state_dtype, stats, "state_saturated")


@int_kernel("LMUMemory")
def LMUMemory(u, abar, bbar, m0=None, *, abar_shift=None, input_offset=0, state_bits=32, output_multiplier=None,
              output_shift=None, output_offset=0, act_min=None, act_max=None, to="int8", input_is_spikes=0,
              _stats=None):
    """Integer Legendre memory (lowbit.LMUMemory): m_t = Abar m_{t-1} + Bbar u_t on integer codes.

    Inputs: u [B, T, du] int8/int16 codes (real u = s_u (u - z_u)); abar int16 [d, d] with one power-of-two
    scale per row, Abar[i, j] ~ abar[i, j] * 2^-abar_shift[i]; bbar int64 [d, du] at the accumulator scale
    of its row, Bbar[i, k] * s_u ~ bbar[i, k] * s_m * 2^-abar_shift[i]; m0 [B|1, d] state codes (zeros when
    None). The state is an int``state_bits`` tensor at scale s_m (real m = s_m * m_q, zero point 0).

        acc_t[i] = sum_j abar[i, j] * m_{t-1}[j] + sum_k bbar[i, k] * (u_t[k] + input_offset)     (int64, exact)
        m_t[i]   = saturate_state(RoundingDivideByPOT(acc_t[i], abar_shift[i]))
        y_t[i]   = clamp(MultiplyByQuantizedMultiplier(m_t[i], output_multiplier, output_shift)
                         + output_offset, act_min, act_max)                                       (``to``)

    Outputs: y [B, T, d] (``to``: int8/int16, the activation spec), m_last [B, d] (state codes, int32 for
    state_bits 32, int16 for 16).

    Widths: |abar| <= 2^15 and |m| < 2^31, so the Abar term is < 2^46 d; it is summed exactly in float64
    (``exact_matvec_t``: m split into 16-bit halves, every partial sum < 2^53 for d < 2^22); Prepare bounds the
    Bbar term below 2^61, so acc never wraps int64. The state saturates (counted in
    ``_stats["state_saturated"]``; output clamps in ``_stats["saturated"]``).

    Error bound (in state steps s_m), against the float recurrence run with the dequantized matrices
    Abar_q = abar * 2^-abar_shift, Bbar_q and the dequantized input: every step adds one rounding of at most
    1/2, and the error propagates through Abar_q, so |m_t - m_ref_t / s_m| <= 1/2 * sum_{k=0..t} ||Abar_q^k||_inf.
    The output adds at most 1 output step (TFLite's double rounding: 1/2 + 2^-(1 + its right shift)).
    With ``input_is_spikes`` (u holds 0/1 spikes), ``_stats`` also records ``ac`` (= sum(u) * d accumulates
    of the Bbar u term) and ``spikes``.
    """
    if abar_shift is None or output_multiplier is None or output_shift is None:
        raise ModelError("LMUMemory: missing integer attribute(s) abar_shift/output_multiplier/output_shift "
                         "(see docs/hybrid_ops.md)")
    u = np.asarray(u)
    abar, bbar = np.asarray(abar), np.asarray(bbar, np.int64)
    if u.ndim != 3 or abar.ndim != 2 or abar.shape[0] != abar.shape[1] or bbar.shape != (abar.shape[0], u.shape[2]):
        raise ModelError(f"LMUMemory: u {list(u.shape)} [B, T, du], abar {list(abar.shape)} [d, d] and bbar "
                         f"{list(bbar.shape)} [d, du] do not fit together")
    sdt = _state_dtype("LMUMemory", state_bits)
    odt = _out_dtype("LMUMemory", to)
    batch, steps, _ = u.shape
    d = abar.shape[0]
    shift = np.asarray(abar_shift, np.int64).reshape(-1)
    m = _initial_state(m0, (batch, d), sdt, "LMUMemory")
    a64 = abar.astype(np.float64)
    states = np.empty((batch, steps, d), np.int64)
    for t in range(steps):
        m = lmu_memory_step(m, u[:, t], abar, bbar, shift, input_offset, sdt, _stats, a64)
        states[:, t] = m
    y = fp.multiply_by_quantized_multiplier(states, int(output_multiplier), int(output_shift))
    y = finish(y, output_offset, act_min, act_max, odt, _stats)
    if _stats is not None and input_is_spikes:
        n = int(np.asarray(u, np.int64).sum()) + int(input_offset) * u.size
        _stats["spikes"] = _stats.get("spikes", 0) + n
        _stats["ac"] = _stats.get("ac", 0) + n * d
    return y, m.astype(sdt)


# --- SelectiveScan -----------------------------------------------------------------------------------------------
DECAY_BITS = 30  # the decay exp(delta * A) is a Q30 number in (0, 1]


def decay_q30(t: np.ndarray, frac_bits: int, table: np.ndarray) -> np.ndarray:
    """2^(-t / 2^frac_bits) as Q30 for integer t >= 0: 2^-(integer part) is a rounding right shift, 2^-(fraction)
    a table of 2^(-i / 2^L) (Q30, 2^L + 1 entries) with linear interpolation between entries."""
    t = np.maximum(np.asarray(t, np.int64), 0)
    lbits = int(table.size - 1).bit_length() - 1
    if table.size != (1 << lbits) + 1 or lbits > frac_bits:
        raise ModelError(f"SelectiveScan: exp_table must hold 2^L + 1 entries (L <= {frac_bits}), got {table.size}")
    whole, frac = t >> frac_bits, t & ((1 << frac_bits) - 1)
    low = frac_bits - lbits
    idx, rest = frac >> low, frac & ((1 << low) - 1)
    tab = table.astype(np.int64)
    base = tab[idx]
    v = base + fp.rounding_divide_by_pot((tab[idx + 1] - base) * rest, low) if low else base
    return fp.rounding_divide_by_pot(v, np.minimum(whole, 62))


def fwht(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Unnormalised fast Walsh-Hadamard transform along ``axis`` (length a power of two; Sylvester order):
    integer additions only, |result| <= length * max|x|."""
    x = np.moveaxis(np.array(x, np.int64), axis, -1)
    n = x.shape[-1]
    if n & (n - 1):
        raise ModelError(f"SelectiveScan: a Hadamard rotation needs a power-of-two length, got {n}")
    h = 1
    while h < n:
        y = x.reshape(x.shape[:-1] + (n // (2 * h), 2, h))
        a, b = y[..., 0, :].copy(), y[..., 1, :].copy()
        y[..., 0, :], y[..., 1, :] = a + b, a - b
        x = y.reshape(x.shape)
        h *= 2
    return np.moveaxis(x, -1, axis)


def selective_scan_step(h, x_t, dq, b_t, c_t, p: dict, state_dtype, stats=None):
    """One selective-scan step on integer codes (``dq``: the delta values, offset or looked up); returns
    (h' int64 [B, D, N], acc_y int64 [B, D])."""
    xq = np.asarray(x_t, np.int64) + p["x_offset"]                    # [B, D]
    bq = np.asarray(b_t, np.int64) + p["b_offset"]                    # [B, N]
    cq = np.asarray(c_t, np.int64) + p["c_offset"]                    # [B, N]
    t = fp.multiply_by_quantized_multiplier(dq[:, :, None], p["exp_multiplier"], p["exp_shift"])
    decay = decay_q30(t, p["exp_frac_bits"], p["exp_table"])          # Q30 [B, D, N]
    inject = fp.multiply_by_quantized_multiplier_int64((dq * xq)[:, :, None] * bq[:, None, :],
                                                      p["inject_multiplier"], p["inject_shift"])
    h = fp.rounding_divide_by_pot(decay * h, DECAY_BITS) + inject
    h = _saturate(h, state_dtype, stats, "state_saturated")
    acc = np.einsum("bdn,bn->bd", h, cq) + p["d_skip"] * xq
    return h, acc


@int_kernel("SelectiveScan")
def SelectiveScan(x, delta, b, c, h0=None, gate=None, *, x_offset=0, delta_offset=0, delta_table=None, b_offset=0,
                  c_offset=0, gate_offset=0, exp_multiplier=None, exp_shift=None, exp_frac_bits=None, exp_table=None,
                  inject_multiplier=None, inject_shift=None, d_skip=None, state_bits=32, output_pre_shift=0,
                  hadamard=0, output_multiplier=None, output_shift=None, output_offset=0, act_min=None, act_max=None,
                  to="int8", _stats=None):
    """Integer selective scan (lowbit.SelectiveScan, Mamba): h_t = exp(delta_t A) h_{t-1} + delta_t x_t B_t,
    y_t = C_t h_t + D x_t, on integer codes; optionally gated (y * gate, Mamba's z branch) and rotated.
    A [D, N] (negative) and the skip D are folded into attributes.

    Inputs: x [B, T, D], delta [B, T, D], b [B, T, N], c [B, T, N], gate [B, T, D] (optional): int8/int16
    codes, each real = s (q - z), ``*_offset`` = -z; h0 [B|1, D, N] state codes (zeros when None). The state is
    int``state_bits`` at scale s_h (zero point 0).

        dq = delta_table[delta + 128]  with a table (int8 codes of the pre-softplus dt: delta = softplus(dt)
             in fixed point at scale s_delta), else  delta + delta_offset
        xq, bq, cq, gq = x + x_offset, b + b_offset, c + c_offset, gate + gate_offset
        e[d, n]   = MultiplyByQuantizedMultiplier(dq[d], exp_multiplier[d, n], exp_shift[d, n])
                    (= -delta A / ln 2 in Q``exp_frac_bits``: the quantized delta*A code)
        a[d, n]   = 2^(-e / 2^F) in Q30: exp_table[i] = round(2^30 * 2^(-i / 2^L)) interpolated linearly on the
                    fraction's top L bits, then a rounding right shift by the integer part (decay_q30)
        inj[d, n] = MultiplyByQuantizedMultiplierInt64(dq[d] * xq[d] * bq[n], inject_multiplier, inject_shift)
        h[d, n]   = saturate_state(RoundingDivideByPOT(a[d, n] * h[d, n], 30) + inj[d, n])
        acc[d]    = sum_n h[d, n] * cq[n] + d_skip[d] * xq[d]                                    (int64)
        r[d]      = RoundingDivideByPOT(acc[d], output_pre_shift)                                (< 2^31)
        no gate:  y[d] = MultiplyByQuantizedMultiplier(r[d], output_multiplier, output_shift)
        gate:     g[d] = r[d] * gq[d], rotated g = FWHT(g) along D when ``hadamard`` (< 2^47)
                  y[d] = MultiplyByQuantizedMultiplierInt64(g[d], output_multiplier, output_shift)
        y = clamp(y + output_offset, act_min, act_max)                                           (``to``)

    with s_acc = s_h s_c: inject_multiplier ~ s_delta s_x s_b / s_h, d_skip = round(D s_x / s_acc), output
    multiplier ~ s_acc 2^output_pre_shift (s_gate) (/ sqrt(D) rotated) / s_y. A rotated output is H y with H the
    orthonormal Sylvester Hadamard matrix; the consumer folds H into its weights (H = H^T = H^-1).

    Widths: |xq|, |bq|, |cq|, |gq| <= 2^16 (int16 codes are symmetric: <= 2^15), dq < 2^21, so the injection
    product stays < 2^47 as the int64 rescale needs; a * h < 2^61; Prepare picks output_pre_shift from the
    accumulator's bound. e stays below 2^30 (Prepare chooses F). Saturations: state in
    ``_stats["state_saturated"]``, output in ``_stats["saturated"]``.

    Error bound, against the float SelectiveScan on the dequantized inputs (delta: the table's values), with
    H = max |h_ref| / s_h: the decay's error is below eps_a = 2^-F ln2 + (ln2 / 2^L)^2 / 8 + 2^-28 (exponent
    code, interpolation, table and shift roundings; F >= 16, L = 10: < 1.1e-5), the injection's below
    2^-15 |inj| <= 2^-14 H (16-bit multiplier), and each update rounds twice by 1/2 state step, so
        |h_t - h_ref_t / s_h| <= e_t = t (1 + eps_a H + 2^-14 H)                                  state steps
        |y - y_ref / s_y| <= ((sum_n |c_n|) e_t s_h + (2^pre + |xq|) s_acc / 2) |g| / s_y + 1/2 + 2^-14 |y_ref| / s_y
    output steps (|g| = 1 without a gate; the last term is the output multiplier's relative error).
    """
    req = dict(exp_multiplier=exp_multiplier, exp_shift=exp_shift, exp_frac_bits=exp_frac_bits,
               exp_table=exp_table, inject_multiplier=inject_multiplier, inject_shift=inject_shift, d_skip=d_skip,
               output_multiplier=output_multiplier, output_shift=output_shift)
    missing = [k for k, v in req.items() if v is None]
    if missing:
        raise ModelError(f"SelectiveScan: missing integer attribute(s) {', '.join(missing)} (see docs/hybrid_ops.md)")
    x, delta, b, c = (np.asarray(a) for a in (x, delta, b, c))
    if x.ndim != 3 or delta.shape != x.shape or b.ndim != 3 or c.shape != b.shape or b.shape[:2] != x.shape[:2]:
        raise ModelError(f"SelectiveScan: x {list(x.shape)} and delta {list(delta.shape)} must be [B, T, D], b "
                         f"{list(b.shape)} and c {list(c.shape)} [B, T, N]")
    if gate is not None and np.shape(gate) != x.shape:
        raise ModelError(f"SelectiveScan: gate {list(np.shape(gate))} must have x's shape {list(x.shape)}")
    batch, steps, dim = x.shape
    n = b.shape[2]
    em = np.asarray(exp_multiplier, np.int64)
    if em.shape != (dim, n):
        raise ModelError(f"SelectiveScan: exp_multiplier {list(em.shape)} must be [D, N] = [{dim}, {n}]")
    sdt = _state_dtype("SelectiveScan", state_bits)
    odt = _out_dtype("SelectiveScan", to)
    if delta_table is not None:
        table = np.asarray(delta_table, np.int64).reshape(-1)
        if delta.dtype != np.int8 or table.size != 256:
            raise ModelError(f"SelectiveScan: delta_table needs int8 delta codes and 256 entries, got "
                             f"{delta.dtype} and {table.size}")
        dqs = table[delta.astype(np.int64) + 128]
    else:
        dqs = delta.astype(np.int64) + int(delta_offset)
    p = {"x_offset": int(x_offset), "b_offset": int(b_offset), "c_offset": int(c_offset), "exp_multiplier": em,
         "exp_shift": np.asarray(exp_shift, np.int64), "exp_frac_bits": int(exp_frac_bits),
         "exp_table": np.asarray(exp_table, np.int64), "inject_multiplier": int(inject_multiplier),
         "inject_shift": int(inject_shift), "d_skip": np.asarray(d_skip, np.int64).reshape(-1)}
    h = _initial_state(h0, (batch, dim, n), sdt, "SelectiveScan")
    acc = np.empty((batch, steps, dim), np.int64)
    for t in range(steps):
        h, acc[:, t] = selective_scan_step(h, x[:, t], dqs[:, t], b[:, t], c[:, t], p, sdt, _stats)
    r = fp.rounding_divide_by_pot(acc, int(output_pre_shift))
    if gate is None:
        y = fp.multiply_by_quantized_multiplier(r, int(output_multiplier), int(output_shift))
    else:
        g = r * (np.asarray(gate, np.int64) + int(gate_offset))
        if hadamard:
            g = fwht(g, -1)
        y = fp.multiply_by_quantized_multiplier_int64(g, int(output_multiplier), int(output_shift))
    return finish(y, output_offset, act_min, act_max, odt, _stats), h.astype(sdt)


# --- RunningSum (streamed mean pooling) --------------------------------------------------------------------------
@int_kernel("RunningSum")
def RunningSum(acc, x, *, axes=None, input_offset=0, _stats=None):
    """acc' = saturate_int32(acc + sum over ``axes`` of (x + input_offset)): the exact running sum that a streamed
    mean pooling carries as its state (acc at the scale of x, zero point 0; int32).

    acc [B, ...] int32 (None: zeros), x codes with the reduced ``axes`` (kept out of the result). Followed by a
    Requantize whose multiplier folds 1/n in exactly as the Mean kernel does, the result equals the Mean of the
    whole sequence bit for bit after n elements."""
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axes is None else tuple(sorted({int(a) % x.ndim for a in axes}))
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    total = x.sum(axis=axes, dtype=np.int64) + int(input_offset) * n
    if acc is not None:
        total = total + np.asarray(acc, np.int64)
    return _saturate(total, np.int32, _stats).astype(np.int32)
