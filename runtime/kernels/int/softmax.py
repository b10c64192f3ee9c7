"""Integer Softmax over the last axis, as TFLite's reference kernels (reference/softmax.h).

int8 (output scale 1/256, zero point -128): gemmlowp fixed point. Per row, d = x - max(x); entries with
d < diff_min contribute nothing and output -128; the others are rescaled to Q5.26
(``SRDHM(d * 2^input_left_shift, input_multiplier)``), exponentiated with gemmlowp's
``exp_on_negative_values`` (Q0.31), summed in Q12.19, and divided by the sum through gemmlowp's
``one_over_one_plus_x_for_x_in_0_1`` (GetReciprocal).

int16 (output scale 2^-15): two 513-entry tables (exp on [-10, 0], 1/(1+x) on [0, 1]) looked up with TFLite's
interpolation (SoftmaxInt16).

The fixed-point helpers below mirror gemmlowp/fixedpoint/fixedpoint.h on int32 raw values held in int64
arrays; int32 additions wrap as the compiled C++ does.
"""
from __future__ import annotations

import functools

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.kernels.int.activation import lut_lookup_int16
from lowbit.runtime.kernels.int.elementwise import count_leading_zeros32, rescale, saturating_left_shift, wrap32
from lowbit.runtime.registry import int_kernel

INT32_MAX = (1 << 31) - 1
_srdhm = fp.saturating_rounding_doubling_high_mul
_rdbpot = fp.rounding_divide_by_pot


def _rescale_bits(raw, src_integer_bits: int, dst_integer_bits: int) -> np.ndarray:
    """gemmlowp Rescale<dst>(FixedPoint<int32, src>): multiply the raw value by 2^(src - dst)."""
    e = src_integer_bits - dst_integer_bits
    if e > 0:
        return saturating_left_shift(raw, e)
    if e < 0:
        return _rdbpot(raw, -e)
    return np.asarray(raw, np.int64)


def exp_on_interval_between_negative_one_quarter_and_0_excl(a) -> np.ndarray:
    """exp(a) for Q0.31 a in [-1/4, 0): 4th-order Taylor expansion around -1/8."""
    constant_term = 1895147668  # exp(-1/8)
    one_third = 715827883
    x = wrap32(np.asarray(a, np.int64) + (1 << 28))
    x2 = _srdhm(x, x)
    x3 = _srdhm(x2, x)
    x4 = _srdhm(x2, x2)
    x4_over_4 = _rdbpot(x4, 2)
    poly = _rdbpot(wrap32(_srdhm(wrap32(x4_over_4 + x3), one_third) + x2), 1)
    return wrap32(constant_term + _srdhm(constant_term, wrap32(x + poly)))


_EXP_BARREL = ((-2, 1672461947), (-1, 1302514674), (0, 790015084), (1, 290630308), (2, 39332535),
               (3, 720401), (4, 242))  # exp(-2^e) in Q0.31


def exp_on_negative_values(a, integer_bits: int) -> np.ndarray:
    """gemmlowp exp_on_negative_values: exp(a) in Q0.31 for a <= 0 in Q(integer_bits).(31 - integer_bits)."""
    a = np.asarray(a, np.int64)
    frac_bits = 31 - integer_bits
    one_quarter = 1 << (frac_bits - 2)
    a_mod_quarter_minus_one_quarter = wrap32((a & (one_quarter - 1)) - one_quarter)
    result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        _rescale_bits(a_mod_quarter_minus_one_quarter, integer_bits, 0))
    remainder = wrap32(a_mod_quarter_minus_one_quarter - a)
    for exponent, multiplier in _EXP_BARREL:
        if integer_bits > exponent:
            bit = 1 << (frac_bits + exponent)
            result = np.where(remainder & bit, _srdhm(result, multiplier), result)
    if integer_bits > 5:
        clamp = -(1 << (36 - integer_bits))
        result = np.where(a < clamp, 0, result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_for_x_in_0_1(a) -> np.ndarray:
    """gemmlowp: 1 / (1 + a) for Q0.31 a in [0, 1), returned in Q0.31 (Newton-Raphson, 3 steps, in Q2.29)."""
    a = np.asarray(a, np.int64)
    s = a + INT32_MAX  # RoundingHalfSum(a, One)
    half_denominator = np.where(s >= 0, (s + 1) // 2, -((-(s - 1)) // 2))
    x = wrap32(1515870810 + _srdhm(half_denominator, -1010580540))  # 48/17 - 32/17 * d
    one_q2 = 1 << 29
    for _ in range(3):
        one_minus = wrap32(one_q2 - _srdhm(half_denominator, x))
        x = wrap32(x + _rescale_bits(_srdhm(x, one_minus), 4, 2))
    return _rescale_bits(x, 1, 0)


@int_kernel("Softmax")
def Softmax(x, *, axis=-1, input_multiplier, input_left_shift, diff_min=None, exp_table=None,
            one_over_one_plus_x_table=None, rounding="double", exp_cutoff=0):
    """Softmax over the last axis; int8 or int16 as described in the module docstring.

    ``exp_cutoff=1`` (int16 only, lowbit's variant, not TFLite's): row differences below the exp table's range
    (real difference < -10) contribute exp = 0 instead of TFLite's clamped exp(-10) = 4.5e-5, as the int8
    kernel's diff_min cut-off does. With many classes and peaked logits TFLite's clamp adds up to
    N * 4.5e-5 of spurious mass (0.045 for 1,000 classes).
    """
    if axis not in (-1, x.ndim - 1):
        raise ModelError(f"Softmax: the integer kernel works on the last axis (TFLite's), got axis={axis} for "
                         f"an input of rank {x.ndim}")
    if x.dtype == np.int8:
        if diff_min is None:
            raise ModelError("Softmax: an int8 input needs the diff_min attribute")
        return _softmax_int8(x, input_multiplier, input_left_shift, diff_min)
    if x.dtype == np.int16:
        if exp_table is None or one_over_one_plus_x_table is None:
            raise ModelError("Softmax: an int16 input needs exp_table and one_over_one_plus_x_table")
        return _softmax_int16(x, input_multiplier, input_left_shift, np.asarray(exp_table),
                              np.asarray(one_over_one_plus_x_table), rounding, bool(exp_cutoff))
    raise ModelError(f"Softmax: input must be int8 or int16, got {x.dtype}")


@functools.lru_cache(maxsize=64)
def _int8_exp_tables(input_multiplier: int, input_left_shift: int, diff_min: int):
    """For every row difference d = x - max(x) in [-255, 0], indexed by -d: (kept, exp(d) in Q0.31, exp(d) in
    Q12.19). Entries with d < diff_min are not kept."""
    diff = -np.arange(256, dtype=np.int64)
    keep = diff >= diff_min
    # MultiplyByQuantizedMultiplierGreaterThanOne: SRDHM(d * 2^left_shift, m); |d| <= radius keeps it in int32
    scaled = _srdhm(np.where(keep, diff, 0) << input_left_shift, input_multiplier)
    exps = np.where(keep, exp_on_negative_values(scaled, 5), 0)
    return keep, exps, _rescale_bits(exps, 0, 12)


def _softmax_int8(x, input_multiplier, input_left_shift, diff_min):
    keep_t, exp_t, exp12_t = _int8_exp_tables(int(input_multiplier), int(input_left_shift), int(diff_min))
    neg_diff = x.max(axis=-1, keepdims=True).astype(np.int16) - x
    sum_of_exps = wrap32(exp12_t[neg_diff].sum(axis=-1, keepdims=True))
    # GetReciprocal(sum, 12): normalise the sum to [1, 2) and invert
    headroom_plus_one = count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = wrap32(((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8  # >= 23: the sum is at least 2^19
    # SRDHM and RoundingDivideByPOT of non-negative values: (a b + 2^30) >> 31, then (y + 2^(e-1)) >> e
    prod = (shifted_scale * exp_t[neg_diff] + (1 << 30)) >> 31
    out = ((prod + (np.int64(1) << (exponent - 1))) >> exponent) - 128
    out = np.where(keep_t[neg_diff], np.minimum(out, 127), -128)
    return out.astype(np.int8)


@functools.lru_cache(maxsize=64)
def _int16_exp_table(input_multiplier: int, input_left_shift: int, exp_table_bytes: bytes, rounding: str,
                     cutoff: bool = False):
    """exp(d) in Q0.15 for every row difference d in [-65535, 0], indexed by -d (TFLite SoftMaxCalculateExp);
    with ``cutoff``, 0 where d falls below the table's range instead of the clamped first entry."""
    diff = -np.arange(65536, dtype=np.int64)
    scaled = rescale(diff, input_multiplier, input_left_shift, rounding)
    sym = np.clip(scaled + 32767, -32768, 32767)
    table = lut_lookup_int16(sym, np.frombuffer(exp_table_bytes, np.int16)).astype(np.int64)
    if cutoff:
        table[scaled + 32767 < -32768] = 0
    return table


def _softmax_int16(x, input_multiplier, input_left_shift, exp_table, recip_table, rounding, cutoff=False):
    exp_t = _int16_exp_table(int(input_multiplier), int(input_left_shift),
                             np.ascontiguousarray(exp_table, np.int16).tobytes(), rounding, cutoff)
    neg_diff = x.max(axis=-1, keepdims=True).astype(np.int32) - x
    exps = exp_t[neg_diff]
    return normalize_int16(exps, wrap32(exps.sum(axis=-1, keepdims=True)), recip_table)


def normalize_int16(exps, sum_of_exps, recip_table) -> np.ndarray:
    """exps / sum_of_exps in Q0.15 through TFLite's 1/(1+x) table (the tail of SoftmaxInt16)."""
    headroom_plus_one = count_leading_zeros32(sum_of_exps)
    shifted_sum = ((sum_of_exps << (headroom_plus_one - 1)) + (1 << 13)) >> 14
    sym_sum = np.clip(shifted_sum - ((1 << 15) + (1 << 16)), -32768, 32767)
    reciprocal = lut_lookup_int16(sym_sum, recip_table).astype(np.int64)
    right_shift = 31 - headroom_plus_one
    out = (exps * reciprocal + (np.int64(1) << (right_shift - 1))) >> right_shift
    return np.clip(out, 0, 32767).astype(np.int16)
