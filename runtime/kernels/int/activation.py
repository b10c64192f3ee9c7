"""Integer activations: Lut (int8 256-entry, int16 513-entry interpolated), Relu/Relu6 (requantize + clamp),
LeakyRelu, HardSwish (int8), and TFLite's int16 Tanh / Logistic (sigmoid-table interpolation).

Semantics are TFLite's reference kernels (internal/common.h LUTLookup, reference_ops::ReluX,
reference_ops::QuantizeLeakyRelu, reference_ops::HardSwish, reference_integer_ops::Tanh / Logistic for
int16). Attributes come from ``lowbit.quant.prepare_elementwise``.

An element-wise integer function of an int8 (or a large int16) tensor is evaluated once for every value of
the type, per attribute set (cached), and then gathered: the same integers, at table-lookup speed.
"""
from __future__ import annotations

import functools

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.kernels.int.elementwise import rescale
from lowbit.runtime.registry import int_kernel


def lut_lookup_int16(x, table) -> np.ndarray:
    """TFLite LUTLookup(int16): base = T[256 + (x >> 7)], slope = int16(T[i + 1] - T[i]),
    y = int16(base + ((slope * (x & 127) + 64) >> 7))."""
    x = np.asarray(x, np.int64)
    t = np.asarray(table, np.int64)
    index = 256 + (x >> 7)
    base = t[index]
    slope = ((t[index + 1] - base + 32768) & 0xFFFF) - 32768  # stored in an int16
    y = base + ((slope * (x & 0x7F) + 64) >> 7)
    return (((y + 32768) & 0xFFFF) - 32768).astype(np.int16)


@functools.lru_cache(maxsize=256)
def _int16_lookup_by_uint16(table_bytes: bytes) -> np.ndarray:
    """All 65536 results of ``lut_lookup_int16`` for a table, ordered by the input's uint16 bit pattern."""
    table = np.frombuffer(table_bytes, np.int16)
    return lut_lookup_int16(ALL_INT16_BY_UINT16, table)


# every int16 value, in the order of its uint16 bit pattern (0, 1, ..., 32767, -32768, ..., -1)
ALL_INT16_BY_UINT16 = np.arange(65536, dtype=np.uint16).view(np.int16)


@int_kernel("Lut")
def Lut(x, *, table):
    """int8: y = table[x + 128] (table int8[256]); int16: TFLite's interpolated lookup in table int16[513]
    (``lut_lookup_int16``): the high 9 bits of x select a segment, the low 7 bits interpolate.

    The int16 lookup is evaluated once per table for all 65536 inputs and then gathered (same values)."""
    table = np.asarray(table)
    if x.dtype == np.int8:
        if table.shape != (256,):
            raise ModelError(f"Lut: an int8 input needs a 256-entry table, got shape {list(table.shape)}")
        by_uint8 = np.roll(table.astype(np.int8, copy=False), -128)  # entry u holds table[int8(u) + 128]
        return by_uint8[x.view(np.uint8)]
    if x.dtype == np.int16:
        if table.shape != (513,):
            raise ModelError(f"Lut: an int16 input needs a 513-entry table, got shape {list(table.shape)}")
        full = _int16_lookup_by_uint16(np.ascontiguousarray(table, np.int16).tobytes())
        return full[x.view(np.uint16)]
    raise ModelError(f"Lut: input must be int8 or int16, got {x.dtype}")


# -- requantizing activations: the formula is evaluated once per input value and attribute set -----------------
ALL_INT8_BY_UINT8 = np.arange(256, dtype=np.uint8).view(np.int8)


def _relu_raw(x, *, input_offset, output_offset, multiplier, shift, act_min, act_max, rounding):
    raw = rescale(x.astype(np.int64) + input_offset, multiplier, shift, rounding) + output_offset
    return raw, act_min, act_max


def _leaky_relu_raw(x, *, input_offset, output_offset, identity_multiplier, identity_shift, alpha_multiplier,
                    alpha_shift, rounding):
    v = x.astype(np.int64) + input_offset
    sign = -1 if alpha_multiplier < 0 else 1
    pos = rescale(v, identity_multiplier, identity_shift, rounding)
    neg = sign * rescale(v, abs(int(alpha_multiplier)), alpha_shift, rounding)
    info = np.iinfo(x.dtype)
    return output_offset + np.where(v >= 0, pos, neg), info.min, info.max


def _hard_swish_raw(x, *, input_offset, output_offset, output_multiplier, output_shift, reluish_multiplier,
                    reluish_shift):
    v = _wrap16(_wrap16(x.astype(np.int64) + input_offset) * 128)
    pre = _srdhm16(v, output_multiplier)
    r = v
    if reluish_shift > 0:
        r = _saturating_left_shift16(r, reluish_shift - 1)
    r = _srdhm16(r, reluish_multiplier)
    if reluish_shift > 0:
        r = _saturating_left_shift16(r, 1)
    if reluish_shift < 0:
        r = fp.rounding_divide_by_pot(r, -reluish_shift)
    r = (r + (1 << 15)) >> 1
    out = fp.rounding_divide_by_pot(_sdhm16(r, pre), -output_shift)
    return _wrap16(out + output_offset), -128, 127


_RAW = {"Relu": _relu_raw, "LeakyRelu": _leaky_relu_raw, "HardSwish": _hard_swish_raw}


@functools.lru_cache(maxsize=256)
def _value_table(op: str, dtype: str, items: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The op's result, and whether it was clamped, for every value of the dtype in uint bit-pattern order."""
    xs = ALL_INT8_BY_UINT8 if dtype == "int8" else ALL_INT16_BY_UINT16
    raw, lo, hi = _RAW[op](xs, **dict(items))
    return np.clip(raw, lo, hi).astype(xs.dtype), (raw < lo) | (raw > hi)


def _unary(op: str, x, attrs: dict, stats) -> np.ndarray:
    if x.dtype not in (np.int8, np.int16):
        raise ModelError(f"{op}: input must be int8 or int16, got {x.dtype}")
    if x.dtype == np.int8 or x.size > 4096:
        key = tuple(sorted((k, v if isinstance(v, str) else int(v)) for k, v in attrs.items()))
        table, clamped = _value_table(op, x.dtype.name, key)
        u = x.view(np.uint8 if x.dtype == np.int8 else np.uint16)
        if stats is not None:
            stats["saturated"] = int(np.count_nonzero(clamped[u]))
        return table[u]
    raw, lo, hi = _RAW[op](x, **attrs)
    if stats is not None:
        stats["saturated"] = fp.saturate_count(raw, lo, hi)
    return np.clip(raw, lo, hi).astype(x.dtype)


@int_kernel("Relu")
def Relu(x, *, input_offset, output_offset, multiplier, shift, act_min, act_max, rounding="double", _stats=None):
    """y = clamp(rescale(x + input_offset, M) + output_offset, act_min, act_max) (TFLite ReluX): RELU,
    RELU_N1_TO_1 and RELU_0_TO_1 differ only in [act_min, act_max]."""
    return _unary("Relu", x, dict(input_offset=input_offset, output_offset=output_offset, multiplier=multiplier,
                                  shift=shift, act_min=act_min, act_max=act_max, rounding=rounding), _stats)


@int_kernel("Relu6")
def Relu6(x, *, input_offset, output_offset, multiplier, shift, act_min, act_max, rounding="double", _stats=None):
    """As Relu, with act_max = zero_point + round(6 / s_out)."""
    return _unary("Relu", x, dict(input_offset=input_offset, output_offset=output_offset, multiplier=multiplier,
                                  shift=shift, act_min=act_min, act_max=act_max, rounding=rounding), _stats)


@int_kernel("LeakyRelu")
def LeakyRelu(x, *, input_offset, output_offset, identity_multiplier, identity_shift, alpha_multiplier,
              alpha_shift, rounding="double", _stats=None):
    """v = x + input_offset;  y = clamp(output_offset + (v >= 0 ? rescale(v, M_id) : sign(M_alpha) *
    rescale(v, |M_alpha|)), type range)  (TFLite QuantizeLeakyRelu; a negative alpha keeps its sign outside
    the rescale)."""
    return _unary("LeakyRelu", x, dict(
        input_offset=input_offset, output_offset=output_offset, identity_multiplier=identity_multiplier,
        identity_shift=identity_shift, alpha_multiplier=alpha_multiplier, alpha_shift=alpha_shift,
        rounding=rounding), _stats)


# -- HardSwish: 16-bit fixed point as TFLite's reference_ops::HardSwish --------------------------------------
def _srdhm16(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul on int16: (a * b + nudge) / 2^15 truncated; (-2^15)^2
    saturates to 32767."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    s = ab + np.where(ab >= 0, 1 << 14, 1 - (1 << 14))
    q = np.where(s >= 0, s >> 15, -((-s) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, ((q + 32768) & 0xFFFF) - 32768)


def _sdhm16(a, b):
    """SaturatingDoublingHighMul on int16: a * b / 2^15 truncated toward zero (no rounding nudge)."""
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    ab = a * b
    q = np.where(ab >= 0, ab >> 15, -((-ab) >> 15))
    return np.where((a == -32768) & (b == -32768), 32767, ((q + 32768) & 0xFFFF) - 32768)


def _saturating_left_shift16(x, amount):
    return np.clip(np.asarray(x, np.int64) << amount, -32768, 32767)


def _wrap16(x):
    return ((np.asarray(x, np.int64) + 32768) & 0xFFFF) - 32768


@int_kernel("HardSwish")
def HardSwish(x, *, input_offset, output_offset, output_multiplier, output_shift, reluish_multiplier,
              reluish_shift, _stats=None):
    """int8 hard-swish in 16-bit fixed point (TFLite reference_ops::HardSwish):
        v = (x + input_offset) * 2^7;  pre = SRDHM16(v, output_multiplier);
        r = v rescaled by (reluish_multiplier, reluish_shift) with saturating left shifts, mapped from
            [-1, 1] to [0, 1] as (r + 2^15) >> 1;
        y = clamp(RoundingDivideByPOT(SDHM16(r, pre), -output_shift) + output_offset, int8 range).
    """
    if x.dtype != np.int8:
        raise ModelError(f"HardSwish: TFLite's integer kernel takes int8, got {x.dtype}")
    return _unary("HardSwish", x, dict(
        input_offset=input_offset, output_offset=output_offset, output_multiplier=output_multiplier,
        output_shift=output_shift, reluish_multiplier=reluish_multiplier, reluish_shift=reluish_shift), _stats)


# -- int16 Tanh / Logistic: TFLite's 256-entry sigmoid table with linear interpolation -------------------------
# sigmoid(i / 24) in 0.16 fixed point, i = 0..255: TFLite's sigmoid_table_uint16 (internal/common.h). Data,
# not derivable by a plain rounding formula (several entries are adjusted for interpolation).
SIGMOID_TABLE_UINT16 = np.array([
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794, 41432, 42064, 42688,
    43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443, 48964, 49475, 49975, 50464, 50942, 51409,
    51865, 52311, 52745, 53169, 53581, 53983, 54374, 54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433,
    57724, 58007, 58280, 58544, 58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110,
    61279, 61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990, 63090, 63186,
    63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030, 64090, 64148, 64204, 64257, 64308,
    64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652, 64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900,
    64926, 64950, 64974, 64997, 65019, 65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208,
    65221, 65234, 65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360, 65367,
    65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433, 65438, 65442, 65445, 65449,
    65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476, 65479, 65481, 65483, 65485, 65488, 65489, 65491,
    65493, 65495, 65497, 65498, 65500, 65501, 65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513,
    65514, 65515, 65516, 65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529, 65529, 65530, 65530,
    65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532, 65532, 65532, 65532, 65533, 65533, 65533,
    65533, 65533, 65533, 65533, 65533, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535,
], dtype=np.int64)


def _scaled_int16_input(x, input_multiplier, input_left_shift):
    if input_multiplier == 0:  # power-of-two input scale: the multiplier is 3 (range [-8, 8] -> [-10.7, 10.7])
        input_multiplier, input_left_shift = 3 << input_left_shift, 0
    rnd = (1 << (input_left_shift - 1)) if input_left_shift > 0 else 0
    return (x.astype(np.int64) * input_multiplier + rnd) >> input_left_shift


def _interpolate(abs_v, frac_bits):
    uh = abs_v >> frac_bits
    idx = np.minimum(uh, 254)
    ua = SIGMOID_TABLE_UINT16[idx]
    ub = SIGMOID_TABLE_UINT16[idx + 1]
    ut = abs_v & ((1 << frac_bits) - 1)
    return uh, (ua << frac_bits) + ut * (ub - ua)


@functools.lru_cache(maxsize=64)
def _sigmoid_family_by_uint16(op: str, input_multiplier: int, input_left_shift: int) -> np.ndarray:
    x = ALL_INT16_BY_UINT16
    return (_tanh_int16 if op == "Tanh" else _logistic_int16)(x, input_multiplier, input_left_shift)


def _tanh_int16(x, input_multiplier, input_left_shift):
    v = _scaled_int16_input(x, input_multiplier, input_left_shift)
    uh, r = _interpolate(np.abs(v), 8)
    r = np.where(uh >= 255, 0xFFFF << 8, r)
    r = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1)
    return _wrap16(r >> 8).astype(np.int16)


def _logistic_int16(x, input_multiplier, input_left_shift):
    v = _scaled_int16_input(x, input_multiplier, input_left_shift)
    uh, r = _interpolate(np.abs(v), 9)
    r = np.where(uh >= 255, 0x7FFF << 10, r)
    r = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) & 0xFFFFFFFF
    return _wrap16(r >> 10).astype(np.int16)


@int_kernel("Tanh")
def Tanh(x, *, input_multiplier, input_left_shift):
    """int16 tanh(x) = 2 sigmoid(2x) - 1 from the 256-entry sigmoid table (TFLite reference_integer_ops::Tanh):
        v = (x * input_multiplier + round) >> input_left_shift;  |v| = 256 u + t;
        r = (T[u] << 8) + t (T[u+1] - T[u])  (r = 0xFFFF << 8 once u >= 255);
        y = int16(((v >= 0) ? r - 2^23 + 2^7 : 2^23 + 2^7 - 1 - r) >> 8).
    (Evaluated once for all 65536 inputs per parameter pair, then gathered.)"""
    if x.dtype != np.int16:
        raise ModelError(f"Tanh: the integer kernel takes int16 (int8 TANH is a Lut), got {x.dtype}")
    return _sigmoid_family_by_uint16("Tanh", int(input_multiplier), int(input_left_shift))[x.view(np.uint16)]


@int_kernel("Logistic")
def Logistic(x, *, input_multiplier, input_left_shift):
    """int16 logistic from the same table (TFLite reference_integer_ops::Logistic), 9 fraction bits:
        r = (T[u] << 9) + t (T[u+1] - T[u])  (0x7FFF << 10 once u >= 255);
        y = int16(((v >= 0) ? r + 2^9 : 2^25 - r + 2^9 - 1) >> 10)   (unsigned arithmetic).
    (Evaluated once for all 65536 inputs per parameter pair, then gathered.)"""
    if x.dtype != np.int16:
        raise ModelError(f"Logistic: the integer kernel takes int16 (int8 LOGISTIC is a Lut), got {x.dtype}")
    return _sigmoid_family_by_uint16("Logistic", int(input_multiplier), int(input_left_shift))[x.view(np.uint16)]
