"""Fixed-point arithmetic, defined once: TFLite's (gemmlowp's) rescaling and rounding, vectorised over NumPy
int64 arrays.

Every integer kernel rescales through these functions, so lowbit and a TFLite runtime agree bit for bit.
Contracts (checked where cheap):
- a real multiplier M > 0 is stored as (m0, shift) with M ~= m0 * 2^(shift - 31), m0 in [2^30, 2^31).
- ``multiply_by_quantized_multiplier`` (double rounding, TFLite's default build):
      RoundingDivideByPOT(SaturatingRoundingDoublingHighMul(x * 2^max(shift, 0), m0), max(-shift, 0))
- ``multiply_by_quantized_multiplier_single_round`` (TFLITE_SINGLE_ROUNDING builds, e.g. some TFLM ports):
      (x * m0 + 2^(30 - shift)) >> (31 - shift)
- ``multiply_by_quantized_multiplier_int64`` (16x8 kernels, int64 accumulators, |x| < 2^47):
      m' = (m0 + 2^15) >> 16 (0x7FFF when m0 >= 0x7FFF0000);  (x * m' + 2^(14 - shift)) >> (15 - shift)
Right shifts of negative numbers are arithmetic (floor), as in C++ on every platform TFLite supports.

``multiply_by_quantized_multiplier_fast`` and ``requantize_fast`` compute the double-rounding rescale (plus a
bias before it and an offset after it) in a few in-place int64 passes; they equal the definition above wherever
their preconditions hold and fall back to it elsewhere (see ``_fast_plan``).
"""
from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1


def quantize_multiplier(real: float) -> tuple[int, int]:
    """(m0, shift) with real ~= m0 * 2^(shift - 31); TFLite's QuantizeMultiplier (round half away from zero).

    0 gives (0, 0); a multiplier too small to represent (shift < -31) gives (0, 0) as in TFLite. Negative
    multipliers give a negative m0 (only the double-rounding rescale accepts those).
    """
    if not math.isfinite(real):
        raise ValueError(f"quantize_multiplier: multiplier {real} is not finite")
    if real == 0.0:
        return 0, 0
    q, shift = math.frexp(real)
    q_fixed = int(math.copysign(math.floor(abs(q) * (1 << 31) + 0.5), q))  # std::round
    if q_fixed == (1 << 31):
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q_fixed, shift


def quantize_multipliers(reals) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``quantize_multiplier``: int32 multipliers and int32 shifts."""
    pairs = [quantize_multiplier(float(r)) for r in np.asarray(reals, np.float64).reshape(-1)]
    return (np.array([p[0] for p in pairs], np.int32), np.array([p[1] for p in pairs], np.int32))


def saturating_rounding_doubling_high_mul(a, b) -> np.ndarray:
    """gemmlowp SRDHM: a * b / 2^31 rounded to nearest (its nudge sends ties toward +infinity: 0.5 -> 1,
    -0.5 -> 0); INT32_MIN * INT32_MIN saturates to INT32_MAX."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    low31 = np.int64((1 << 31) - 1)
    s = ab + (np.int64(1 << 30) - ((ab >> 63) & low31))  # nudge: 2^30, or 1 - 2^30 when ab < 0
    high = (s + ((s >> 63) & low31)) >> 31  # C++ division truncates toward zero (floor, + 1 for inexact s < 0)
    if np.any(a == INT32_MIN) and np.any(b == INT32_MIN):
        high = np.where((a == INT32_MIN) & (b == INT32_MIN), np.int64(INT32_MAX), high)
    return high


def rounding_divide_by_pot(x, exponent) -> np.ndarray:
    """gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero (0 <= e <= 31)."""
    x = np.asarray(x, np.int64)
    e = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << e) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> e) + (remainder > threshold)


def multiply_by_quantized_multiplier(x, m0, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier (double rounding) on int32 values ``x``; m0/shift broadcast."""
    x = np.asarray(x, np.int64)
    shift = np.asarray(shift, np.int64)
    left = np.maximum(shift, 0)
    right = np.maximum(-shift, 0)
    # x * 2^left must stay an int32, as the C++ code computes it in int32 arithmetic
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x << left, m0), right)


def multiply_by_quantized_multiplier_single_round(x, m0, shift) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier under TFLITE_SINGLE_ROUNDING: one rounding, half up."""
    x = np.asarray(x, np.int64)
    total = 31 - np.asarray(shift, np.int64)
    return (x * np.asarray(m0, np.int64) + (np.int64(1) << (total - 1))) >> total


def multiply_by_quantized_multiplier_int64(x, m0, shift) -> np.ndarray:
    """TFLite's int64 MultiplyByQuantizedMultiplier (16x8 kernels): 16-bit multiplier, one rounding.

    Needs |x| < 2^47 so that x * m' fits in int64.
    """
    x = np.asarray(x, np.int64)
    m0 = np.asarray(m0, np.int64)
    reduced = np.where(m0 < 0x7FFF0000, (m0 + (1 << 15)) >> 16, np.int64(0x7FFF))
    total = 15 - np.asarray(shift, np.int64)
    return (x * reduced + (np.int64(1) << (total - 1))) >> total


def rounding_right_shift(x, shift) -> np.ndarray:
    """x / 2^shift rounded half up (add 2^(shift-1), arithmetic shift); shift 0 is the identity."""
    x = np.asarray(x, np.int64)
    s = np.asarray(shift, np.int64)
    return np.where(s > 0, (x + ((np.int64(1) << np.maximum(s, 1)) >> 1)) >> s, x)


def saturate(x, dtype) -> np.ndarray:
    """Clamp to the range of integer ``dtype`` and cast (saturation, never wrap-around)."""
    info = np.iinfo(dtype)
    return np.clip(x, info.min, info.max).astype(dtype)


def saturate_count(x, lo: int, hi: int) -> int:
    """How many elements of ``x`` lie outside [lo, hi] (saturations about to happen)."""
    x = np.asarray(x)
    return int(np.count_nonzero((x < lo) | (x > hi)))


# --- the double-rounding rescale in closed form (hot path of Conv / FullyConnected) ------------------------------
# For m0 > 0, SRDHM(a, m0) = floor((a m0 + 2^30) / 2^31) for every a (gemmlowp's sign-dependent nudge followed by
# C++'s truncating division is exactly this floor), and RoundingDivideByPOT(y, e) = floor((y + 2^(e-1) - [y < 0])
# / 2^e) for e >= 1. Nested floors of divisions by powers of two merge, so with M = m0 2^left, e = max(-shift, 0),
# t = 31 + e and p = (x + bias) M:
#     multiply_by_quantized_multiplier(x + bias, m0, shift) + offset
#         = (p + 2^30 + 2^(30+e) + offset 2^t - 2^31 [p + 2^30 < 0]) >> t        (e >= 1)
#         = (p + 2^30 + offset 2^t) >> t                                          (e = 0)
# and [p + 2^30 < 0] = [x + bias < 0] when M > 2^30, [x + bias < -1] when M = 2^30: one multiply, one add of a
# per-channel constant, one sign correction and one shift.
_FAST_LIMIT = float(1 << 63) * (1 - 2.0 ** -30)  # below 2^63 with room for float64 rounding of the bound


class _FastPlan(NamedTuple):
    """The closed form's per-channel constants (1-D arrays, one entry per channel)."""
    m: np.ndarray           # M = m0 << left, int64
    add: np.ndarray         # 2^30 + 2^(30+e) [e >= 1] + bias M (+ offset 2^t when offset_after is 0), int64
    offset_after: int       # the offset when offset 2^t would not fit int64 (added after the shift), else 0
    total: np.ndarray       # t = 31 + e, int64
    neg: str                # "none" (every e = 0), "sign" (x int32, no bias, M > 2^30: x & INT32_MIN), "below"
    neg_below: np.ndarray   # x < neg_below  <=>  p + 2^30 < 0
    neg_weight: np.ndarray  # 2^31 where e >= 1, else 0
    zero_below: np.ndarray  # x < zero_below  <=>  the exact rescale (without offset) is < 0
    fits_int32: bool        # every result fits an int32
    aligned: tuple | None   # (M 2^d, add 2^d, max t) with d = max t - t: one shift for all channels; valid
                            # without the sign correction (which adds 2^31, not 2^(31+d)); None if it overflows
    tiled: dict             # (r, relu) -> the vectors a call needs, repeated r times (see _tiled)


def _fast_plan(m0, shift, bias, offset: int, x_abs_max: int, x_is_int32: bool):
    """Per-channel constants of the closed form, or None where it does not apply: every m0 in [2^30, 2^31)
    (positive, so SRDHM never saturates), -31 <= shift <= 30, |x| <= x_abs_max < 2^31 - 1 and every
    intermediate ((|x| + |bias|) M + the added constant) below 2^63. Cached per distinct parameter set."""
    m0 = np.asarray(m0, np.int64).reshape(-1)
    shift = np.asarray(shift, np.int64).reshape(-1)
    bias = np.zeros(1, np.int64) if bias is None else np.asarray(bias, np.int64).reshape(-1)
    return _fast_plan_cached(m0.tobytes(), shift.tobytes(), bias.tobytes(), int(offset), int(x_abs_max),
                             bool(x_is_int32))


@functools.lru_cache(maxsize=256)
def _fast_plan_cached(m0_b: bytes, shift_b: bytes, bias_b: bytes, offset: int, x_abs_max: int, x_is_int32: bool):
    m0, shift, bias = (np.frombuffer(b, np.int64) for b in (m0_b, shift_b, bias_b))
    n = max(m0.size, shift.size, bias.size)
    if any(a.size not in (1, n) for a in (m0, shift, bias)) or not 0 <= x_abs_max < INT32_MAX:
        return None
    m0, shift, bias = (np.broadcast_to(a, (n,)) for a in (m0, shift, bias))
    if np.any(m0 < (1 << 30)) or np.any(m0 > INT32_MAX) or np.any(shift < -31) or np.any(shift > 30):
        return None
    left = np.maximum(shift, 0)
    e = np.maximum(-shift, 0)
    total = 31 + e
    m = m0 << left
    const = (1 << 30) + np.where(e > 0, np.int64(1) << (30 + e), 0)
    worst = (x_abs_max + np.abs(bias).astype(np.float64)) * m + const
    if not np.all(worst < _FAST_LIMIT):
        return None
    add = const + bias * m
    offset_after = offset
    if np.all(worst + abs(offset) * np.ldexp(1.0, total) < _FAST_LIMIT):
        add, offset_after = add + (np.int64(offset) << total), 0
    neg_below = np.where(m == (1 << 30), -1, 0) - bias
    if not np.any(e > 0):
        neg = "none"
    elif x_is_int32 and np.all(e > 0) and not np.any(bias) and np.all(m > (1 << 30)):
        neg = "sign"
    else:
        neg = "below"
    # exact rescale < 0  <=>  y < 1 - 2^(e-1) (e >= 1), y < 0 (e = 0)  <=>  p < 2^30 - 2^(30+e) (e >= 1), -2^30
    r = np.where(e > 0, (1 << 30) - (np.int64(1) << (30 + e)), -(1 << 30))
    zero_below = -((-r) // m) - bias
    # thresholds beyond +-(x_abs_max + 1) compare alike with every x, and then fit x's own type
    limit = x_abs_max + 1
    below_type = np.int32 if x_is_int32 else np.int64
    neg_below, zero_below = (np.clip(a, -limit, limit).astype(below_type) for a in (neg_below, zero_below))
    fits_int32 = bool(np.all(np.ldexp(worst, -total) + abs(offset) < INT32_MAX - 1))
    d = total.max() - total
    aligned = None
    if np.all((np.ldexp(worst, d) + np.ldexp(np.abs(add).astype(np.float64), d)) < _FAST_LIMIT):
        aligned = (m << d, add << d, int(total.max()))
    return _FastPlan(m, add, offset_after, total, neg, neg_below, np.where(e > 0, np.int64(1 << 31), np.int64(0)),
                     zero_below, fits_int32, aligned, {})


_TILE = 8192  # NumPy's ufunc buffer size: per-channel operands broadcast fastest over rows this long


def tile_factor(x: np.ndarray, n: int) -> int:
    """How many rows of the C-contiguous x [..., n] to treat as one (x.reshape(-1, r * n)) so that a
    per-channel vector, repeated r times, is broadcast over rows of about _TILE elements (1 if not applicable)."""
    if not (x.flags.c_contiguous and x.ndim and x.shape[-1] == n and 0 < n < _TILE):
        return 1
    rows = x.size // n
    r = max(1, min(rows, _TILE // n))
    while rows % r:
        r -= 1
    return r


def _tiled(x: np.ndarray, plan: _FastPlan, relu: bool):
    """x as [rows, r * channels] and the plan vectors this call needs, repeated r times: a per-channel operand
    is then broadcast over long rows instead of many short ones (about 1.4x faster). A uniform shift stays an
    int; vectors a call does not use are None. The repeated vectors are kept in the plan, per r."""
    n = plan.m.size
    r = tile_factor(x, n)
    key = (r, relu)
    vectors = plan.tiled.get(key)
    if vectors is None:
        m, add, total = plan.m, plan.add, plan.total
        if relu and plan.aligned is not None:  # no sign correction: one shift amount for every channel
            m, add, total = plan.aligned
        below = plan.neg == "below" and not relu
        vectors = plan.tiled[key] = (
            np.tile(m, r), np.tile(add, r), int(np.max(total)) if np.all(total == np.max(total)) else np.tile(total, r),
            np.tile(plan.neg_below, r) if below else None, np.tile(plan.neg_weight, r) if below else None,
            np.tile(plan.zero_below, r) if relu else None)
    return (x.reshape(-1, r * n) if r > 1 else x), vectors


def _fast_shifted(x: np.ndarray, vectors, plan: _FastPlan, tie_correction: bool, narrow: bool) -> np.ndarray:
    """(x M + add - 2^31 [negative]) >> t, computed in one int64 buffer (shifted into an int32 one when
    ``narrow`` and the results fit)."""
    m, add, total, neg_below, neg_weight, _ = vectors
    v = np.multiply(x, m, dtype=np.int64)
    v += add
    if tie_correction and plan.neg == "sign":
        v += x & np.int32(INT32_MIN)  # -2^31 exactly where x < 0
    elif tie_correction and plan.neg == "below":
        v -= np.less(x, neg_below) * neg_weight
    if narrow and plan.fits_int32:
        v = np.right_shift(v, total, out=np.empty(v.shape, np.int32), casting="unsafe")
    else:
        v >>= total
    if plan.offset_after:
        v += plan.offset_after
    return v


def _abs_max_of(x: np.ndarray) -> int:
    return max(-int(x.min()), int(x.max())) if x.size else 0


def multiply_by_quantized_multiplier_fast(x, m0, shift, *, bias=None, offset: int = 0,
                                          x_abs_max: int | None = None) -> np.ndarray:
    """``multiply_by_quantized_multiplier(x + bias, m0, shift) + offset`` (int64), per channel along the last
    axis of ``x``, in about four int64 passes.

    Preconditions (checked on the parameters, and on ``x_abs_max`` = a bound on |x| that the caller knows, or
    on x's min and max when it is not given): m0 in [2^30, 2^31), shift in [-31, 30], |x| < 2^31 - 1, no
    intermediate reaching 2^63. Where one fails, the result comes from ``multiply_by_quantized_multiplier``."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"multiply_by_quantized_multiplier_fast: x must hold integers, got {x.dtype}")
    bound = _abs_max_of(x) if x_abs_max is None else int(x_abs_max)
    plan = _fast_plan(m0, shift, bias, offset, bound, x.dtype == np.int32)
    if plan is None:
        xb = x.astype(np.int64) + (0 if bias is None else np.asarray(bias, np.int64))
        return multiply_by_quantized_multiplier(xb, m0, shift) + int(offset)
    xt, vectors = _tiled(x, plan, relu=False)
    return _fast_shifted(xt, vectors, plan, True, False).reshape(np.broadcast_shapes(x.shape, plan.m.shape))


def requantize_fast(x, m0, shift, *, bias=None, offset: int = 0, lo: int, hi: int, dtype,
                    x_abs_max: int | None = None, count: bool = True) -> tuple[np.ndarray, int]:
    """``clip(multiply_by_quantized_multiplier(x + bias, m0, shift) + offset, lo, hi).astype(dtype)`` and the
    number of values the clip changed, per channel along the last axis of ``x``; preconditions as
    ``multiply_by_quantized_multiplier_fast`` (falls back to the definition where they fail).

    When lo >= offset (a fused ReLU) the tie correction of negative values is skipped: every value it would
    change is <= offset before the clip, so lo after it; values clipped at lo are then counted on x against
    the exact per-channel threshold. With ``count=False`` the count is skipped (reported as 0): two fewer
    passes over the data when nobody asked for statistics."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"requantize_fast: x must hold integers, got {x.dtype}")
    info = np.iinfo(dtype)
    if not info.min <= lo <= hi <= info.max:
        raise ValueError(f"requantize_fast: [lo, hi] = [{lo}, {hi}] must be a range of {np.dtype(dtype).name}")
    bound = _abs_max_of(x) if x_abs_max is None else int(x_abs_max)
    plan = _fast_plan(m0, shift, bias, offset, bound, x.dtype == np.int32)
    if plan is None:
        xb = x.astype(np.int64) + (0 if bias is None else np.asarray(bias, np.int64))
        v = multiply_by_quantized_multiplier(xb, m0, shift) + int(offset)
        return np.clip(v, lo, hi).astype(dtype), saturate_count(v, lo, hi)
    relu = lo >= offset
    xt, vectors = _tiled(x, plan, relu)
    v = _fast_shifted(xt, vectors, plan, tie_correction=not relu, narrow=True)
    saturated = 0
    if count:
        if relu and lo == offset:
            low = int(np.count_nonzero(np.less(xt, vectors[5])))
        else:
            low = int(np.count_nonzero(v < lo))
        saturated = low + int(np.count_nonzero(v > hi))
    y = np.empty(v.shape, dtype)
    np.clip(v, lo, hi, out=y, casting="unsafe")
    return y.reshape(np.broadcast_shapes(x.shape, plan.m.shape)), saturated
