"""Quantize (float -> integer), Dequantize (integer -> float) and Requantize (integer -> integer): TFLite's
QUANTIZE and DEQUANTIZE reference kernels. Quantize and Dequantize are the graph's float boundary, the only
integer-IR kernels that take or return floats.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.int.linear import finish, rescale, round_half_away
from lowbit.runtime.registry import int_kernel

_TARGETS = {"int8": np.int8, "int16": np.int16, "uint8": np.uint8, "int32": np.int32}


def _target(op: str, to: str):
    try:
        return np.dtype(_TARGETS[to])
    except KeyError:
        raise ModelError(f"{op}: 'to' must be one of {', '.join(_TARGETS)}, got {to!r}") from None


@int_kernel("Quantize")
def Quantize(x, *, scale=None, zero_point=0, qmin=None, qmax=None, to="int8", _stats=None):
    """q = clamp(round_half_away(float32(x) / float32(scale)) + zero_point, qmin, qmax) as ``to``.

    The division is in float32, as TFLite's AffineQuantize computes it; qmin/qmax default to the range of
    ``to``. NaN quantizes to the zero point; +-inf and huge values saturate.
    """
    if scale is None:
        raise ModelError("Quantize: missing attribute 'scale' (see docs/integer_ir.md)")
    dtype = _target("Quantize", to)
    with np.errstate(over="ignore", invalid="ignore"):  # huge inputs (mask sentinels) saturate on purpose
        v = np.asarray(x, np.float32) / np.float32(scale)
    r = round_half_away(np.nan_to_num(v, nan=0.0))
    info = np.iinfo(dtype)
    r = np.clip(r.astype(np.float64), -2.0 ** 40, 2.0 ** 40).astype(np.int64)  # saturates like any big value
    lo = int(info.min) if qmin is None else int(qmin)
    hi = int(info.max) if qmax is None else int(qmax)
    return finish(r, zero_point, lo, hi, dtype, _stats)


@int_kernel("Dequantize")
def Dequantize(q, *, scale=None, zero_point=0):
    """x = float32(double(scale) * (q - zero_point)), as TFLite's reference Dequantize."""
    if scale is None:
        raise ModelError("Dequantize: missing attribute 'scale' (see docs/integer_ir.md)")
    q = np.asarray(q)
    return (np.float64(scale) * (q.astype(np.int64) - int(zero_point)).astype(np.float64)).astype(np.float32)


@int_kernel("Requantize")
def Requantize(q, *, input_offset=0, output_offset=0, multiplier=None, shift=None, qmin=None, qmax=None,
               to="int8", rounding="double", _stats=None):
    """q' = clamp(MultiplyByQuantizedMultiplier(q + input_offset, multiplier, shift) + output_offset, qmin, qmax)
    as ``to`` (TFLite's reference Requantize; ``rounding`` "double" or "single")."""
    if multiplier is None or shift is None:
        raise ModelError("Requantize: missing integer attribute(s) multiplier/shift (see docs/integer_ir.md)")
    dtype = _target("Requantize", to)
    y = rescale(np.asarray(q).astype(np.int64) + int(input_offset), multiplier, shift, "int32", rounding)
    return finish(y, output_offset, qmin, qmax, dtype, _stats)
