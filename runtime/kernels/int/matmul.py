"""Integer BatchMatMul (activation x activation), TFLite's reference_ops::BatchMatMul, computed exactly through
float BLAS.

    acc[..., m, n] = sum_k (A[..., m, k] + a_offset) (B[..., k, n] + b_offset)
                   = A.B + a_offset colsum(B) + b_offset rowsum(A) + K a_offset b_offset

A.B on the raw integers runs as a float matmul: float32 while every partial sum stays within 2^24
(int8 x int8, in chunks of K <= 1024), float64 otherwise (exact for int16 x int16 with K < 2^23); the
zero-point terms are added in int64.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.kernels.int.elementwise import rescale, wrap32
from lowbit.runtime.registry import int_kernel


def integer_matmul(a, b) -> np.ndarray:
    """Exact int64 A @ B (NumPy matmul broadcasting) of int8/int16 operands through float BLAS.

    Every partial sum of a float32 product over a chunk of k terms is an integer of magnitude at most
    k * max|a| * max|b|, exact while that is <= 2^24: int8 x int8 runs in float32 chunks of up to 1024 terms
    (summed in float64); wider operands run in float64 (exact below 2^53)."""
    k = a.shape[-1]
    per_term = (1 << (8 * a.dtype.itemsize - 1)) * (1 << (8 * b.dtype.itemsize - 1))
    chunk = (1 << 24) // per_term
    if chunk >= 64:
        if k <= chunk:
            return np.matmul(a.astype(np.float32), b.astype(np.float32)).astype(np.int64)
        acc = None
        for i in range(0, k, chunk):
            part = np.matmul(a[..., i:i + chunk].astype(np.float32), b[..., i:i + chunk, :].astype(np.float32))
            acc = part.astype(np.float64) if acc is None else acc + part
        return acc.astype(np.int64)
    if k * per_term >= (1 << 53):
        raise ModelError(f"BatchMatMul: inner dimension {k} too large for an exact float64 product")
    return np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(np.int64)


@int_kernel("BatchMatMul")
def BatchMatMul(a, b, *, adj_x=0, adj_y=0, a_offset, b_offset, output_offset, multiplier, shift, act_min,
                act_max, accumulator="int32", rounding="double", _stats=None):
    """y = clamp(rescale(acc, multiplier, shift) + output_offset, act_min, act_max), acc as in the module
    docstring; A = a (or its last two axes swapped when adj_x), B = b (swapped when adj_y); batch dimensions
    broadcast. accumulator "int32": int32 sum and the int32 rescale (int8); "int64": int64 sum and TFLite's
    int64 rescale (16-bit multiplier, 16x8 and 16x16)."""
    if a.ndim < 2 or b.ndim < 2:
        raise ModelError(f"BatchMatMul: operands need at least 2 dimensions, got {list(a.shape)} and "
                         f"{list(b.shape)}")
    A = np.swapaxes(a, -1, -2) if adj_x else a
    B = np.swapaxes(b, -1, -2) if adj_y else b
    if A.shape[-1] != B.shape[-2]:
        raise ModelError(f"BatchMatMul: a {list(a.shape)} (adj_x={adj_x}) and b {list(b.shape)} (adj_y={adj_y}) "
                         f"have inner dimensions {A.shape[-1]} and {B.shape[-2]}")
    try:
        np.broadcast_shapes(A.shape[:-2], B.shape[:-2])
    except ValueError:
        raise ModelError(f"BatchMatMul: batch dimensions of {list(a.shape)} and {list(b.shape)} do not "
                         f"broadcast") from None
    k = A.shape[-1]
    acc = integer_matmul(A, B)
    if a_offset:
        acc += a_offset * B.sum(axis=-2, dtype=np.int64)[..., None, :]
    if b_offset:
        acc += b_offset * A.sum(axis=-1, dtype=np.int64)[..., :, None]
    if a_offset and b_offset:
        acc += k * a_offset * b_offset
    if accumulator == "int64":
        scaled = fp.multiply_by_quantized_multiplier_int64(acc, multiplier, shift)
    else:
        scaled = rescale(wrap32(acc), multiplier, shift, rounding)
    raw = scaled + output_offset
    if _stats is not None:
        _stats["saturated"] = fp.saturate_count(raw, act_min, act_max)
    return np.clip(raw, act_min, act_max).astype(a.dtype)
