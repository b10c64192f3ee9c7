"""Integer element-wise arithmetic: Add, Sub, Mul, SquaredDifference (broadcasting) and Rsqrt.

Semantics are TFLite's reference kernels (reference/integer_ops/add.h, mul.h, reference/sub.h,
kernels/squared_difference.cc, kernels/elementwise.cc). Attributes come from
``lowbit.quant.prepare_elementwise``; ``*_offset`` values are added to the raw integers (``a_offset =
-zero_point``). ``rescale(x, m, s)`` below is TFLite's MultiplyByQuantizedMultiplier on int32 values (double
rounding by default; ``rounding="single"`` for TFLITE_SINGLE_ROUNDING builds). Broadcasting follows NumPy,
which is what TFLite's BroadcastBinaryOpSimple computes element by element.
"""
from __future__ import annotations

import functools

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.registry import int_kernel

INT32_MAX = (1 << 31) - 1


def wrap32(x) -> np.ndarray:
    """Two's-complement wrap of int64 values to int32 (what C++ int32 arithmetic does on overflow)."""
    x = np.asarray(x, np.int64)
    return ((x + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def rescale(x, multiplier, shift, rounding: str = "double") -> np.ndarray:
    """TFLite MultiplyByQuantizedMultiplier(int32 x, multiplier, shift); a positive shift is applied as the
    int32 product ``x * (1 << shift)`` first (wrapping like the C++ code).

    For the usual scalar multiplier in [0, 2^31) the double rounding is computed in closed form:
    SaturatingRoundingDoublingHighMul(x, m) = (x m + 2^30) >> 31 (its nudge and truncating division reduce to
    this for every int32 x), RoundingDivideByPOT(y, e) = (y + 2^(e-1) - [y < 0]) >> e; the general case
    goes through lowbit.quant.fixedpoint.
    """
    if rounding == "single":
        return fp.multiply_by_quantized_multiplier_single_round(x, multiplier, shift)
    x = np.asarray(x, np.int64)
    if np.ndim(multiplier) or np.ndim(shift) or not 0 <= int(multiplier) <= INT32_MAX:
        return fp.multiply_by_quantized_multiplier(x, multiplier, shift)
    shift = int(shift)
    if shift > 0:
        x = x << shift
        if x.size and (x.min() < -INT32_MAX - 1 or x.max() > INT32_MAX):
            x = wrap32(x)
    y = x * int(multiplier)
    y += 1 << 30
    y >>= 31
    if shift < 0:
        negative = y < 0
        y += 1 << (-shift - 1)
        y -= negative
        y >>= -shift
    return y


def _clamp(raw, act_min, act_max, dtype, stats):
    if stats is not None:
        stats["saturated"] = fp.saturate_count(raw, act_min, act_max)
    return np.clip(raw, act_min, act_max).astype(dtype)


def _check_binary(op, a, b):
    if a.dtype != b.dtype or a.dtype not in (np.int8, np.int16):
        raise ModelError(f"{op}: inputs must both be int8 or both int16, got {a.dtype} and {b.dtype}")
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ModelError(f"{op}: input shapes {list(a.shape)} and {list(b.shape)} do not broadcast") from None


# all int16 values in the order of their uint16 bit patterns; all int8 pairs as a broadcast grid
_INT16_BY_UINT16 = np.arange(65536, dtype=np.uint16).view(np.int16)
_GRID_A = (np.arange(256) - 128).astype(np.int8).reshape(256, 1)
_GRID_B = _GRID_A.reshape(1, 256)


@functools.lru_cache(maxsize=256)
def _rescaled_int16_table(offset: int, left_shift: int, multiplier: int, shift: int, rounding: str) -> np.ndarray:
    return rescale((_INT16_BY_UINT16.astype(np.int64) + offset) << left_shift, multiplier, shift, rounding)


def _rescaled_input(x, offset, left_shift, multiplier, shift, rounding):
    """rescale((x + offset) * 2^left_shift, multiplier, shift); int16 inputs through a per-value table."""
    if x.dtype == np.int16 and x.size > 4096:
        table = _rescaled_int16_table(int(offset), int(left_shift), int(multiplier), int(shift), rounding)
        return table[x.view(np.uint16)]
    return rescale((x.astype(np.int64) + offset) << left_shift, multiplier, shift, rounding)


def _add_raw(a, b, *, left_shift, a_offset, a_multiplier, a_shift, b_offset, b_multiplier, b_shift,
             output_offset, output_multiplier, output_shift, rounding, sign=1):
    sa = _rescaled_input(a, a_offset, left_shift, a_multiplier, a_shift, rounding)
    sb = _rescaled_input(b, b_offset, left_shift, b_multiplier, b_shift, rounding)
    return rescale(wrap32(sa + sign * sb), output_multiplier, output_shift, rounding) + output_offset


def _sub_raw(a, b, **attrs):
    return _add_raw(a, b, sign=-1, **attrs)


def _mul_raw(a, b, *, a_offset, b_offset, output_offset, output_multiplier, output_shift, rounding):
    prod = wrap32((a.astype(np.int64) + a_offset) * (b.astype(np.int64) + b_offset))
    return rescale(prod, output_multiplier, output_shift, rounding) + output_offset


def _squared_difference_raw(a, b, *, left_shift, a_offset, a_multiplier, a_shift, b_offset, b_multiplier,
                            b_shift, output_offset, output_multiplier, output_shift, rounding):
    sa = _rescaled_input(a, a_offset, left_shift, a_multiplier, a_shift, rounding)
    sb = _rescaled_input(b, b_offset, left_shift, b_multiplier, b_shift, rounding)
    diff = sa - sb
    return rescale(wrap32(diff * diff), output_multiplier, output_shift, rounding) + output_offset


_RAW = {"Add": _add_raw, "Sub": _sub_raw, "Mul": _mul_raw, "SquaredDifference": _squared_difference_raw}


# the grid row/column of each int8 bit pattern: index (a & 0xFF) * 256 + (b & 0xFF) -> (a + 128) * 256 + b + 128
_BITS_TO_GRID = (((np.arange(65536) >> 8) ^ 0x80) << 8) | ((np.arange(65536) & 0xFF) ^ 0x80)


@functools.lru_cache(maxsize=256)
def _int8_pair_tables(op: str, items: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The op's int8 result for all 65536 input pairs, indexed by the pair's bit patterns (a & 0xFF) * 256 +
    (b & 0xFF); and the same as int16 whose sign bit is set where the result was clamped (its low byte is the
    result: one lookup gives both)."""
    attrs = dict(items)
    act_min, act_max = attrs.pop("act_min"), attrs.pop("act_max")
    raw = _RAW[op](_GRID_A, _GRID_B, **attrs).reshape(-1)[_BITS_TO_GRID]
    table = np.clip(raw, act_min, act_max).astype(np.int8)
    clamped = (raw < act_min) | (raw > act_max)
    return table, (table.view(np.uint8).astype(np.uint16) | (clamped.astype(np.uint16) << 15)).view(np.int16)


def _memory_order(a: np.ndarray) -> tuple[int, ...] | None:
    """The axis order in which ``a`` is C-contiguous (e.g. an NCHW view of NHWC data), or None."""
    if a.flags.c_contiguous or a.ndim < 2:
        return None
    order = tuple(int(i) for i in np.argsort([-abs(s) for s in a.strides], kind="stable"))
    return order if a.transpose(order).flags.c_contiguous else None


def _int8_pairs(a: np.ndarray, b: np.ndarray, table: np.ndarray, flagged: np.ndarray, stats) -> np.ndarray:
    """table[(a & 0xFF) * 256 + (b & 0xFF)] with NumPy broadcasting, in a's memory order (so that an NCHW view
    of NHWC data gives the same kind of view back); clamped pairs are counted (through ``flagged``)."""
    order = _memory_order(a) if a.shape == b.shape else None
    if order is not None:
        a, b = a.transpose(order), b.transpose(order)
    index = np.empty(np.broadcast_shapes(a.shape, b.shape), np.uint16)
    np.left_shift(a.view(np.uint8), 8, out=index, dtype=np.uint16)
    index |= b.view(np.uint8)
    if stats is None:
        y = np.take(table, index)
    else:
        both = np.take(flagged, index)
        stats["saturated"] = int(np.count_nonzero(both < 0))
        y = both.astype(np.int8)  # the low byte: integer narrowing keeps the low bits (two's complement)
    return y if order is None else y.transpose(np.argsort(order))


def _binary(op: str, a, b, attrs: dict, stats) -> np.ndarray:
    """Evaluate a binary op: int8 through its table of all input pairs (the same values, computed once per
    attribute set), int16 directly."""
    _check_binary(op, a, b)
    if a.dtype == np.int8:
        key = tuple(sorted((k, v if isinstance(v, str) else int(v)) for k, v in attrs.items()))
        table, flagged = _int8_pair_tables(op, key)
        return _int8_pairs(a, b, table, flagged, stats)
    act_min, act_max = attrs.pop("act_min"), attrs.pop("act_max")
    return _clamp(_RAW[op](a, b, **attrs), act_min, act_max, a.dtype, stats)


@int_kernel("Add")
def Add(a, b, *, left_shift, a_offset, a_multiplier, a_shift, b_offset, b_multiplier, b_shift, output_offset,
        output_multiplier, output_shift, act_min, act_max, rounding="double", _stats=None):
    """y = clamp(rescale(A + B, M_out) + output_offset, act_min, act_max), with
    A = rescale((a + a_offset) * 2^left_shift, M_a), B likewise (TFLite AddFunc; left_shift 20 for int8,
    15 for int16, int32 arithmetic throughout)."""
    return _binary("Add", a, b, dict(
        left_shift=left_shift, a_offset=a_offset, a_multiplier=a_multiplier, a_shift=a_shift, b_offset=b_offset,
        b_multiplier=b_multiplier, b_shift=b_shift, output_offset=output_offset,
        output_multiplier=output_multiplier, output_shift=output_shift, act_min=act_min, act_max=act_max,
        rounding=rounding), _stats)


@int_kernel("Sub")
def Sub(a, b, *, left_shift, a_offset, a_multiplier, a_shift, b_offset, b_multiplier, b_shift, output_offset,
        output_multiplier, output_shift, act_min, act_max, rounding="double", _stats=None):
    """As Add with A - B (TFLite SubElementwise); the output multiplier may exceed 1 (shift > 0)."""
    return _binary("Sub", a, b, dict(
        left_shift=left_shift, a_offset=a_offset, a_multiplier=a_multiplier, a_shift=a_shift, b_offset=b_offset,
        b_multiplier=b_multiplier, b_shift=b_shift, output_offset=output_offset,
        output_multiplier=output_multiplier, output_shift=output_shift, act_min=act_min, act_max=act_max,
        rounding=rounding), _stats)


@int_kernel("Mul")
def Mul(a, b, *, a_offset, b_offset, output_offset, output_multiplier, output_shift, act_min, act_max,
        rounding="double", _stats=None):
    """y = clamp(rescale((a + a_offset) * (b + b_offset), M) + output_offset, act_min, act_max)
    (TFLite MulElementwise; int16 inputs are symmetric, so their product fits int32)."""
    return _binary("Mul", a, b, dict(
        a_offset=a_offset, b_offset=b_offset, output_offset=output_offset, output_multiplier=output_multiplier,
        output_shift=output_shift, act_min=act_min, act_max=act_max, rounding=rounding), _stats)


@int_kernel("SquaredDifference")
def SquaredDifference(a, b, *, left_shift, a_offset, a_multiplier, a_shift, b_offset, b_multiplier, b_shift,
                      output_offset, output_multiplier, output_shift, act_min=-128, act_max=127,
                      rounding="double", _stats=None):
    """y = clamp(rescale((A - B)^2, M_out) + output_offset), A, B as in Add with left_shift 7 (int8 only in
    TFLite: (255 * 2^7)^2 < 2^31)."""
    return _binary("SquaredDifference", a, b, dict(
        left_shift=left_shift, a_offset=a_offset, a_multiplier=a_multiplier, a_shift=a_shift, b_offset=b_offset,
        b_multiplier=b_multiplier, b_shift=b_shift, output_offset=output_offset,
        output_multiplier=output_multiplier, output_shift=output_shift, act_min=act_min, act_max=act_max,
        rounding=rounding), _stats)


# -- Rsqrt (int8): TFLite's fixed-point inverse square root ------------------------------------------------------
def saturating_left_shift(x, exponent: int) -> np.ndarray:
    """gemmlowp SaturatingRoundingMultiplyByPOT<exponent > 0> on int32 values: x * 2^exponent, saturated."""
    x = np.asarray(x, np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, -INT32_MAX - 1, x << exponent))


def count_leading_zeros32(x) -> np.ndarray:
    """Leading zero bits of values in [0, 2^32) taken as uint32 (32 for 0), by binary search on the shifts."""
    v = np.asarray(x, np.int64)
    bits = np.zeros(v.shape, np.int64)
    for s in (16, 8, 4, 2, 1):
        big = v >= (1 << s)
        v = np.where(big, v >> s, v)
        bits += big * s
    return 32 - (bits + (v > 0))


def inv_sqrt_multiplier(value) -> tuple[np.ndarray, np.ndarray]:
    """TFLite GetInvSqrtQuantizedMultiplierExp(value, kReverseShift) for 2 <= value < 2^29: (multiplier,
    left shift) with 1/sqrt(value) ~= multiplier * 2^(shift - 31); 3 Newton-Raphson steps in Q3.28.
    Values 0 and 1 give (INT32_MAX, 0)."""
    v = np.asarray(value, np.int64)
    small = v <= 1
    v = np.where(small, 4, v)
    pairs = (count_leading_zeros32(v) - 1) // 2 - 1
    shift = 11 - pairs
    v = v << (2 * pairs)
    half_input = fp.rounding_divide_by_pot(v >> 1, 1)
    half_three = (1 << 28) + (1 << 27)
    x = np.full(v.shape, 1 << 28, np.int64)
    srdhm = fp.saturating_rounding_doubling_high_mul
    for _ in range(5):
        x3 = saturating_left_shift(srdhm(srdhm(x, x), x), 6)
        x = saturating_left_shift(wrap32(srdhm(half_three, x) - srdhm(half_input, x3)), 3)
    x = srdhm(x, 1518500250)  # * sqrt(2) / 2
    x = np.where(shift < 0, wrap32(x << np.maximum(-shift, 0)), x)
    shift = np.maximum(shift, 0)
    return np.where(small, INT32_MAX, x), np.where(small, 0, -shift)


@int_kernel("Rsqrt")
def Rsqrt(x, *, input_offset, output_offset, multiplier, shift, rounding="double", _stats=None):
    """int8 y = clamp(rescale(rescale(1, inv_sqrt(v), s_v + 20), M, shift - 20) + output_offset), v = x +
    input_offset, where (inv_sqrt(v), s_v) is TFLite's GetInvSqrtQuantizedMultiplierExp; v = 0 gives 127.

    TFLite fails the inference when some v < 0 (RSQRT of a negative number); so does this kernel.
    """
    if x.dtype != np.int8:
        raise ModelError(f"Rsqrt: the fixed-point kernel takes int8 input, got {x.dtype} (int16 RSQRT is a Lut)")
    v = x.astype(np.int64) + input_offset
    if np.any(v < 0):
        raise ModelError(f"Rsqrt: {int(np.count_nonzero(v < 0))} input value(s) lie below the zero point "
                         f"({-input_offset}), i.e. are negative; RSQRT is only defined for positive values")
    out_raw = _rsqrt_table(int(output_offset), int(multiplier), int(shift), rounding)[v]
    if _stats is not None:
        _stats["saturated"] = fp.saturate_count(out_raw, -128, 127)
    return np.clip(out_raw, -128, 127).astype(np.int8)


@functools.lru_cache(maxsize=64)
def _rsqrt_table(output_offset: int, multiplier: int, shift: int, rounding: str) -> np.ndarray:
    """Unclamped Rsqrt results for v = 0..255 (every value an int8 input minus its zero point can take)."""
    v = np.arange(256, dtype=np.int64)
    inv, inv_shift = inv_sqrt_multiplier(v)
    one = np.ones_like(inv)
    if rounding == "single":
        data = fp.multiply_by_quantized_multiplier_single_round(one, inv, inv_shift + 20)
    else:
        data = fp.multiply_by_quantized_multiplier(one, inv, inv_shift + 20)  # 1 << (s + 20) fits int32
    raw = rescale(data, multiplier, shift - 20, rounding) + output_offset
    return np.where(v == 0, 127, raw)
