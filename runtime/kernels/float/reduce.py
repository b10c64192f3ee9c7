"""Reductions over the ``axes`` input, ArgMax / ArgMin and CumSum.

``axes`` (an optional int64 input) omitted or empty means every axis, or none when noop_with_empty_axes=1:
then the input is not reduced but the element-wise part of the reduction still applies (ReduceL1 gives |x|,
ReduceSumSquare x*x, ReduceLogSum log(x)), as in ONNX Runtime. Reducing an empty set gives the identity of the
reduction: 0 for the sums (and ReduceMean, as ONNX Runtime does), 1 for ReduceProd, -inf / +inf or the
integer dtype's lowest / highest value for ReduceMax / ReduceMin, -inf for ReduceLogSum(Exp).

Integer reductions run in the input's dtype (wrapping on overflow); the log, sqrt and mean of integer sums are
computed as ONNX Runtime does, in float64 / integer arithmetic with a truncating cast back. float16 inputs are
accumulated in float32.
"""
import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.elementwise import trunc_div
from lowbit.runtime.registry import float_kernel


def _axes(op, x, axes, noop_with_empty_axes) -> tuple:
    """The axes to reduce, as sorted non-negative ints."""
    if axes is None or axes.size == 0:
        return () if noop_with_empty_axes else tuple(range(x.ndim))
    out = []
    for a in np.asarray(axes).reshape(-1).tolist():
        if not -x.ndim <= a < x.ndim:
            raise ModelError(f"{op}: axis {a} is out of range for an input of shape {list(x.shape)}")
        if a % x.ndim in out:
            raise ModelError(f"{op}: axes {np.asarray(axes).tolist()} name axis {a % x.ndim} twice")
        out.append(a % x.ndim)
    return tuple(sorted(out))


def _acc(x):
    """x in the dtype to accumulate in: float16 is widened to float32."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _sum(w, ax, keepdims):
    return np.asarray(np.sum(w, axis=ax, keepdims=bool(keepdims), dtype=w.dtype))


def _back(y, x):
    """The result in the input's dtype (a C cast: integer results of log/sqrt are truncated)."""
    return np.asarray(y).astype(x.dtype, copy=False)


@float_kernel("ReduceSum")
def ReduceSum(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = sum(data) over axes"""
    ax = _axes("ReduceSum", data, axes, noop_with_empty_axes)
    return _back(_sum(_acc(data), ax, keepdims), data)


@float_kernel("ReduceMean")
def ReduceMean(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = sum(data) / n over axes, n the number of elements reduced; integer means truncate toward
    zero; the mean of an empty set is 0."""
    ax = _axes("ReduceMean", data, axes, noop_with_empty_axes)
    s = _sum(_acc(data), ax, keepdims)
    n = int(np.prod([data.shape[a] for a in ax]))
    if n == 0:
        return np.zeros(s.shape, data.dtype)
    if s.dtype.kind in "iu":
        return trunc_div(s, np.asarray(n, s.dtype))
    return _back(s / np.asarray(n, s.dtype), data)


def _extreme(fn, x, ax, keepdims, initial):
    # NumPy needs a start value only to reduce an empty set; NaN wins (NaN propagates) as in ONNX's reference
    kw = {"initial": initial} if x.size == 0 else {}
    return np.asarray(fn(x, axis=ax, keepdims=bool(keepdims), **kw))


def _lowest(dtype):
    dtype = np.dtype(dtype)
    return False if dtype == np.bool_ else -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _highest(dtype):
    dtype = np.dtype(dtype)
    return True if dtype == np.bool_ else np.inf if dtype.kind == "f" else np.iinfo(dtype).max


@float_kernel("ReduceMax")
def ReduceMax(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = max(data) over axes"""
    ax = _axes("ReduceMax", data, axes, noop_with_empty_axes)
    return _extreme(np.max, data, ax, keepdims, _lowest(data.dtype))


@float_kernel("ReduceMin")
def ReduceMin(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = min(data) over axes"""
    ax = _axes("ReduceMin", data, axes, noop_with_empty_axes)
    return _extreme(np.min, data, ax, keepdims, _highest(data.dtype))


@float_kernel("ReduceProd")
def ReduceProd(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = product(data) over axes"""
    ax = _axes("ReduceProd", data, axes, noop_with_empty_axes)
    w = _acc(data)
    return _back(np.prod(w, axis=ax, keepdims=bool(keepdims), dtype=w.dtype), data)


@float_kernel("ReduceL1")
def ReduceL1(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = sum(|data|) over axes"""
    ax = _axes("ReduceL1", data, axes, noop_with_empty_axes)
    return _back(_sum(np.abs(_acc(data)), ax, keepdims), data)


@float_kernel("ReduceL2")
def ReduceL2(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = sqrt(sum(data^2)) over axes"""
    ax = _axes("ReduceL2", data, axes, noop_with_empty_axes)
    w = _acc(data)
    return _back(np.sqrt(_sum(w * w, ax, keepdims)), data)


@float_kernel("ReduceSumSquare")
def ReduceSumSquare(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = sum(data^2) over axes"""
    ax = _axes("ReduceSumSquare", data, axes, noop_with_empty_axes)
    w = _acc(data)
    return _back(_sum(w * w, ax, keepdims), data)


@float_kernel("ReduceLogSum")
def ReduceLogSum(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = log(sum(data)) over axes"""
    ax = _axes("ReduceLogSum", data, axes, noop_with_empty_axes)
    return _back(np.log(_sum(_acc(data), ax, keepdims)), data)


@float_kernel("ReduceLogSumExp")
def ReduceLogSumExp(data, axes=None, *, keepdims=1, noop_with_empty_axes=0):
    """reduced = log(sum(exp(data))) over axes, computed as m + log(sum(exp(data - m))) with m the max
    (taken as 0 where it is infinite or the set is empty). For integers each exp(data - m) is truncated, as
    ONNX Runtime does."""
    ax = _axes("ReduceLogSumExp", data, axes, noop_with_empty_axes)
    w = _acc(data)
    m = _extreme(np.max, w, ax, True, _lowest(w.dtype))
    m = np.where(np.isfinite(m) & (w.size > 0), m, np.zeros((), m.dtype))
    e = np.exp(w - m).astype(w.dtype, copy=False)
    y = np.log(_sum(e, ax, True)).astype(w.dtype, copy=False) + m
    return _back(y if keepdims else np.squeeze(y, ax), data)


def _axis(op, x, axis):
    if not -x.ndim <= axis < x.ndim:
        raise ModelError(f"{op}: axis {axis} is out of range for an input of shape {list(x.shape)}")
    return axis % x.ndim


def _arg(op, data, axis, keepdims, select_last_index, find_max):
    axis = _axis(op, data, axis)
    if data.shape[axis] == 0:
        raise ModelError(f"{op}: axis {axis} of the input of shape {list(data.shape)} is empty")
    pick = np.argmax if find_max else np.argmin
    if data.dtype.kind == "f" and np.isnan(data).any():
        idx = _arg_skipping_nan(data, axis, select_last_index, find_max)
    elif select_last_index:
        idx = data.shape[axis] - 1 - pick(np.flip(data, axis), axis=axis)
    else:
        idx = pick(data, axis=axis)
    idx = np.asarray(idx, np.int64)
    return np.expand_dims(idx, axis) if keepdims else idx


def _arg_skipping_nan(x, axis, last, find_max):
    """ONNX Runtime scans from the first element and moves to a strictly greater (smaller) one, or an equal
    one with select_last_index: NaN is skipped, but a NaN in the first place is never replaced."""
    best = (np.fmax if find_max else np.fmin).reduce(x, axis=axis, keepdims=True)
    hit = x == best
    if last:
        idx = x.shape[axis] - 1 - np.argmax(np.flip(hit, axis), axis=axis)
    else:
        idx = np.argmax(hit, axis=axis)
    stuck = np.isnan(np.take(x, 0, axis=axis)) | ~hit.any(axis=axis)
    return np.where(stuck, 0, idx)


@float_kernel("ArgMax")
def ArgMax(data, *, axis=0, keepdims=1, select_last_index=0):
    """reduced = int64 index of the largest element along axis (the first one, or the last with
    select_last_index=1)"""
    return _arg("ArgMax", data, axis, keepdims, select_last_index, True)


@float_kernel("ArgMin")
def ArgMin(data, *, axis=0, keepdims=1, select_last_index=0):
    """reduced = int64 index of the smallest element along axis (the first one, or the last with
    select_last_index=1)"""
    return _arg("ArgMin", data, axis, keepdims, select_last_index, False)


@float_kernel("CumSum")
def CumSum(x, axis, *, exclusive=0, reverse=0):
    """y[..., i, ...] = sum of x[..., j, ...] along axis for j <= i (j < i with exclusive=1; j >= i, or
    j > i, with reverse=1)"""
    if axis.size != 1:
        raise ModelError(f"CumSum: axis must be a scalar, got shape {list(axis.shape)}")
    a = _axis("CumSum", x, int(axis.reshape(-1)[0]))
    w = _acc(x)
    if reverse:
        w = np.flip(w, a)
    y = np.cumsum(w, axis=a, dtype=w.dtype)
    if exclusive:
        shifted = np.zeros_like(y)
        dst = [slice(None)] * y.ndim
        src = list(dst)
        dst[a], src[a] = slice(1, None), slice(None, -1)
        shifted[tuple(dst)] = y[tuple(src)]
        y = shifted
    if reverse:
        y = np.flip(y, a)
    return _back(y, x)
