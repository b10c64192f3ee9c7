"""Matrix products: Gemm, MatMul (batched, broadcasting, 1-D operands) and Einsum, all through BLAS for floats.

float16 operands are multiplied in float32 and rounded once (NumPy has no half-precision BLAS); integer
operands use NumPy's exact integer matmul.
"""
from __future__ import annotations

import re

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel


def _ct(dtype):
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)


@float_kernel("Gemm")
def Gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0):
    """Y = alpha * A' @ B' + beta * C, A' = A.T if transA else A, B' likewise; C broadcasts to [M, N]."""
    if a.ndim != 2 or b.ndim != 2:
        raise ModelError(f"Gemm: A {list(a.shape)} and B {list(b.shape)} must be matrices")
    at = a.T if transA else a
    bt = b.T if transB else b
    if at.shape[1] != bt.shape[0]:
        raise ModelError(f"Gemm: A' {list(at.shape)} @ B' {list(bt.shape)} do not match (transA={transA}, "
                         f"transB={transB})")
    ct = _ct(a.dtype)
    if ct.kind in "iu" and (alpha != 1.0 or beta not in (0.0, 1.0)):
        ct = np.dtype(np.float64)  # fractional alpha/beta on integers: as ONNX's reference, then truncate
    y = np.matmul(at.astype(ct, copy=False), bt.astype(ct, copy=False))
    if alpha != 1.0:
        y *= np.asarray(alpha, dtype=ct)
    if c is not None and beta != 0.0:
        try:
            np.broadcast_shapes(c.shape, y.shape)
        except ValueError:
            raise ModelError(f"Gemm: C {list(c.shape)} does not broadcast to the output {list(y.shape)}") from None
        cc = c.astype(ct, copy=False)
        if beta != 1.0:
            cc = cc * np.asarray(beta, dtype=ct)
        y += cc
    return y.astype(a.dtype, copy=False)


@float_kernel("MatMul")
def MatMul(a, b):
    """Y = A @ B with NumPy matmul semantics: batch dimensions broadcast, a 1-D operand is a vector."""
    if a.ndim == 0 or b.ndim == 0:
        raise ModelError(f"MatMul: operands must have at least one dimension, got {list(a.shape)} and "
                         f"{list(b.shape)}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ModelError(f"MatMul: A {list(a.shape)} @ B {list(b.shape)}: inner dimensions {ka} and {kb} differ")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ModelError(f"MatMul: batch dimensions of A {list(a.shape)} and B {list(b.shape)} do not "
                         f"broadcast") from None
    ct = _ct(a.dtype)
    return np.matmul(a.astype(ct, copy=False), b.astype(ct, copy=False)).astype(a.dtype, copy=False)


_TERM = re.compile(r"^(?:[A-Za-z]*(?:\.\.\.)?[A-Za-z]*)$")


@float_kernel("Einsum")
def Einsum(*inputs, equation):
    """Y = einsum(equation, *inputs) (NumPy semantics; the implicit form sorts the output letters)."""
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(inputs) or not all(_TERM.match(t) for t in terms + [rhs]):
        raise ModelError(f"Einsum: equation '{equation}' does not fit {len(inputs)} input(s) "
                         f"({', '.join(str(list(x.shape)) for x in inputs)})")
    for t, x in zip(terms, inputs):
        letters = len(t.replace("...", ""))
        if letters > x.ndim or ("..." not in t and letters != x.ndim):
            raise ModelError(f"Einsum: term '{t}' of '{equation}' does not fit an input of shape {list(x.shape)}")
    ct = _ct(inputs[0].dtype)
    try:
        y = np.einsum(eq, *(x.astype(ct, copy=False) for x in inputs), optimize=True)
    except ValueError as e:
        raise ModelError(f"Einsum: '{equation}' on shapes {', '.join(str(list(x.shape)) for x in inputs)}: "
                         f"{e}") from None
    return np.asarray(y).astype(inputs[0].dtype, copy=False)
