"""Comparisons, boolean logic, Where, bit shifts and dtype casts.

Comparisons and logic broadcast as NumPy does and give bool tensors; NaN compares unequal to everything.
"""
import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel


@float_kernel("Equal")
def Equal(a, b):
    """c = (a == b)"""
    return np.equal(a, b)


@float_kernel("Greater")
def Greater(a, b):
    """c = (a > b)"""
    return np.greater(a, b)


@float_kernel("Less")
def Less(a, b):
    """c = (a < b)"""
    return np.less(a, b)


@float_kernel("GreaterOrEqual")
def GreaterOrEqual(a, b):
    """c = (a >= b)"""
    return np.greater_equal(a, b)


@float_kernel("LessOrEqual")
def LessOrEqual(a, b):
    """c = (a <= b)"""
    return np.less_equal(a, b)


@float_kernel("And")
def And(a, b):
    """c = a and b (bool)"""
    return np.logical_and(a, b)


@float_kernel("Or")
def Or(a, b):
    """c = a or b (bool)"""
    return np.logical_or(a, b)


@float_kernel("Xor")
def Xor(a, b):
    """c = a xor b (bool)"""
    return np.logical_xor(a, b)


@float_kernel("Not")
def Not(x):
    """y = not x (bool)"""
    return np.logical_not(x)


@float_kernel("Where")
def Where(condition, x, y):
    """z = x where condition else y; the three inputs broadcast together."""
    if condition.dtype != np.bool_:
        raise ModelError(f"Where: condition must be bool, got {condition.dtype}")
    if x.dtype != y.dtype:
        raise ModelError(f"Where: X ({x.dtype}) and Y ({y.dtype}) must have one dtype")
    return np.where(condition, x, y)


@float_kernel("BitShift")
def BitShift(x, y, *, direction):
    """z = x << y (direction="LEFT") or x >> y (direction="RIGHT"), unsigned integers; bits shifted past the
    width are lost."""
    if direction == "LEFT":
        return np.left_shift(x, y)
    if direction == "RIGHT":
        return np.right_shift(x, y)
    raise ModelError(f"BitShift: direction='{direction}' is not 'LEFT' or 'RIGHT'")


# ONNX TensorProto.DataType -> the NumPy dtype lowbit runs it as
ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
               9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}
_ONNX_NAMES = {8: "STRING", 14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16", 17: "FLOAT8E4M3FN",
               18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2", 20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4",
               23: "FLOAT4E2M1"}


def _cast(op, x, dtype):
    if x.dtype.kind not in "biuf":
        raise ModelError(f"{op}: input dtype {x.dtype} is not supported; lowbit casts bool, integer and float "
                         f"tensors")
    # NumPy's astype is the C cast ONNX Runtime does: float -> int truncates toward zero, out-of-range values
    # and NaN take the x86 conversion result, int -> narrower int wraps, -> bool is (x != 0).
    return x.astype(dtype)


@float_kernel("Cast")
def Cast(input, *, to, saturate=1):
    """y = input converted to the ONNX dtype ``to`` (a TensorProto.DataType number). ``saturate`` only
    concerns float8 targets, which lowbit does not run."""
    dtype = ONNX_DTYPES.get(to)
    if dtype is None:
        name = _ONNX_NAMES.get(to, f"number {to}")
        supported = ", ".join(np.dtype(d).name for d in ONNX_DTYPES.values())
        raise ModelError(f"Cast: target dtype {name} is not supported; lowbit runs {supported}")
    return _cast("Cast", input, dtype)


@float_kernel("CastLike")
def CastLike(input, target_type, *, saturate=1):
    """y = input converted to the dtype of target_type (whose values are not read)."""
    if target_type.dtype.kind not in "biuf":
        raise ModelError(f"CastLike: target dtype {target_type.dtype} is not supported; lowbit casts to bool, "
                         f"integer and float tensors")
    return _cast("CastLike", input, target_type.dtype)
