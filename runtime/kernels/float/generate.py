"""Tensor generators: Constant, ConstantOfShape, Range, EyeLike."""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.shape_ops import int_values
from lowbit.runtime.registry import float_kernel

# ONNX TensorProto.DataType codes of the dtypes lowbit runs (EyeLike's ``dtype`` attribute)
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


@float_kernel("Constant")
def Constant(*, value=None, value_float=None, value_floats=None, value_int=None, value_ints=None,
             value_string=None, value_strings=None, sparse_value=None):
    """y = the one value_* attribute given: a tensor as is, value_float(s) as float32, value_int(s) as int64
    (a scalar for the singular forms, 1-D for the plural)."""
    given = {k: v for k, v in (("value", value), ("value_float", value_float), ("value_floats", value_floats),
                               ("value_int", value_int), ("value_ints", value_ints),
                               ("value_string", value_string), ("value_strings", value_strings),
                               ("sparse_value", sparse_value)) if v is not None}
    if len(given) != 1:
        raise ModelError(f"Constant: needs exactly one value attribute, got {sorted(given) or 'none'}")
    (name, v), = given.items()
    if name in ("value_string", "value_strings", "sparse_value"):
        raise ModelError(f"Constant: '{name}' is not supported (lowbit runs numeric dense tensors only)")
    if name == "value":
        return np.asarray(v)
    dtype = np.float32 if name.startswith("value_float") else np.int64
    return np.array(v, dtype=dtype)


@float_kernel("ConstantOfShape")
def ConstantOfShape(input, *, value=None):
    """y = a tensor of shape ``input`` filled with the one element of ``value`` (default float32 0)."""
    shape = int_values(input)
    if min(shape, default=0) < 0:
        raise ModelError(f"ConstantOfShape: shape {shape} has a negative dim")
    v = np.zeros(1, np.float32) if value is None else np.asarray(value)
    if v.size != 1:
        raise ModelError(f"ConstantOfShape: value must hold one element, it has shape {list(v.shape)}")
    return np.full(shape, v.reshape(-1)[0], dtype=v.dtype)


@float_kernel("Range")
def Range(start, limit, delta, *, stash_type=1):
    """y[i] = start + i * delta for i < max(ceil((limit - start) / delta), 0), in the inputs' dtype.

    Float values are computed in float64 and rounded once (so stash_type, which asks for at least float32
    for 16-bit floats, is always honoured)."""
    dtype = np.asarray(start).dtype
    if np.asarray(limit).dtype != dtype or np.asarray(delta).dtype != dtype:
        raise ModelError(f"Range: start, limit and delta differ in dtype ({np.asarray(start).dtype}, "
                         f"{np.asarray(limit).dtype}, {np.asarray(delta).dtype})")
    if any(np.asarray(a).size != 1 for a in (start, limit, delta)):
        raise ModelError("Range: start, limit and delta must be scalars")
    s, lim, d = (np.asarray(a).reshape(()) for a in (start, limit, delta))
    if d == 0:
        raise ModelError("Range: delta is 0")
    if dtype.kind in "iu":
        s, lim, d = int(s), int(lim), int(d)
        n = max(-((s - lim) // d), 0)  # ceil((lim - s) / d) in exact integer arithmetic
        return (s + np.arange(n, dtype=np.int64) * d).astype(dtype)
    # like ONNX Runtime: the difference in the input dtype, the division in double
    n = max(int(np.ceil(float(lim - s) / float(d))), 0)
    return (float(s) + np.arange(n, dtype=np.float64) * float(d)).astype(dtype)


@float_kernel("EyeLike")
def EyeLike(input, *, dtype=None, k=0):
    """y = a matrix of input's shape with ones on diagonal k (above the main one for k > 0), zeros elsewhere,
    of ONNX dtype ``dtype`` (default: input's dtype)."""
    if input.ndim != 2:
        raise ModelError(f"EyeLike: input shape {list(input.shape)} is not 2-D")
    if dtype is not None and dtype not in _ONNX_DTYPES:
        raise ModelError(f"EyeLike: dtype {dtype} is not a type lowbit runs "
                         f"(supported ONNX type codes: {sorted(_ONNX_DTYPES)})")
    out_dtype = input.dtype if dtype is None else _ONNX_DTYPES[dtype]
    return np.eye(input.shape[0], input.shape[1], k, dtype=out_dtype)
