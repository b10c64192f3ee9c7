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
"""
from __future__ import annotations

import math

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
