"""Indexing ops: Gather, GatherElements, GatherND, ScatterND, ScatterElements, TopK, NonZero, OneHot, Trilu.

Index tensors may be int32 or int64 and hold negative indices (counted from the back of their axis); an index
outside [-dim, dim-1] is a ModelError. Scatter ops write into a copy, never into ``data``.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.shape_ops import int_values, normalize_axis
from lowbit.runtime.registry import float_kernel

_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _indices(op: str, indices, dim: int) -> np.ndarray:
    """``indices`` as int64 in [0, dim): negative ones get ``dim`` added; out-of-range ones are an error."""
    idx = np.asarray(indices).astype(np.int64, copy=False)
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < -dim or hi >= dim:
            bad = lo if lo < -dim else hi
            raise ModelError(f"{op}: index value {bad} is out of range for a dim of size {dim} "
                             f"(expected {-dim}..{dim - 1})")
        if lo < 0:
            idx = np.where(idx < 0, idx + dim, idx)
    return idx


def _element_index(op: str, data, indices, axis: int) -> tuple[np.ndarray, ...]:
    """The full index tuple addressing data[i0, .., indices[i0, .., in], .., in] for every position of indices."""
    if indices.ndim != data.ndim:
        raise ModelError(f"{op}: indices shape {list(indices.shape)} and data shape {list(data.shape)} differ "
                         f"in rank")
    ax = normalize_axis(op, axis, data.ndim)
    too_big = [d for d in range(data.ndim) if d != ax and indices.shape[d] > data.shape[d]]
    if too_big:
        raise ModelError(f"{op}: indices shape {list(indices.shape)} exceeds data shape {list(data.shape)} on "
                         f"axes {too_big} (only axis {axis} may differ freely)")
    grid = list(np.indices(indices.shape, sparse=True))
    grid[ax] = _indices(op, indices, data.shape[ax])
    return tuple(grid)


def _reduction(op: str, reduction: str):
    if reduction != "none" and reduction not in _REDUCTIONS:
        raise ModelError(f"{op}: reduction '{reduction}' is not one of none, add, mul, max, min")
    return _REDUCTIONS.get(reduction)


@float_kernel("Gather")
def Gather(data, indices, *, axis=0):
    """y[i..., j..., k...] = data[i..., indices[j...], k...], with i... the axes before ``axis``."""
    ax = normalize_axis("Gather", axis, data.ndim)
    return np.asarray(np.take(data, _indices("Gather", indices, data.shape[ax]), axis=ax))


@float_kernel("GatherElements")
def GatherElements(data, indices, *, axis=0):
    """y[i0, .., in] = data[i0, .., indices[i0, .., in], .., in] (index replaced on ``axis``); y.shape =
    indices.shape."""
    return data[_element_index("GatherElements", data, indices, axis)]


def _nd_index(op: str, data, indices, batch_dims: int):
    """Split GatherND indices into per-axis index arrays over the flattened batch.

    Returns (data with its batch dims merged into one, index tuple of arrays of shape (B, Q), q_shape)."""
    b = batch_dims
    if indices.ndim < 1 or indices.ndim <= b:
        raise ModelError(f"{op}: indices of shape {list(indices.shape)} need rank > batch_dims = {b}")
    k = indices.shape[-1]
    if data.shape[:b] != indices.shape[:b] or b + k > data.ndim:
        raise ModelError(f"{op}: indices shape {list(indices.shape)} does not fit data shape "
                         f"{list(data.shape)} with batch_dims {b} (need equal batch dims and "
                         f"batch_dims + indices.shape[-1] <= data rank)")
    batch, q_shape = math.prod(data.shape[:b]), indices.shape[b:-1]
    q = math.prod(q_shape)
    flat = data.reshape((batch,) + data.shape[b:])
    idx = np.asarray(indices).reshape(batch, q, k)
    cols = [np.broadcast_to(np.arange(batch)[:, None], (batch, q))]
    cols += [_indices(op, idx[..., j], data.shape[b + j]) for j in range(k)]
    return flat, tuple(cols), q_shape


@float_kernel("GatherND")
def GatherND(data, indices, *, batch_dims=0):
    """y[b..., q...] = data[b..., indices[b..., q..., :]]: the last dim of indices addresses the leading
    non-batch dims of data; the first ``batch_dims`` dims of data and indices are matched, not indexed."""
    flat, cols, q_shape = _nd_index("GatherND", data, indices, batch_dims)
    k = indices.shape[-1]
    out = flat[cols]
    return out.reshape(data.shape[:batch_dims] + q_shape + data.shape[batch_dims + k:])


def _scatter(out, flat_index, updates, ufunc) -> None:
    """out.flat[flat_index[i]] = updates[i], or ufunc(out.flat[..], updates[i]) applied in order (so repeated
    indices accumulate); ``out`` is C-contiguous. A 1-D index keeps ufunc.at on NumPy's fast path."""
    if ufunc is None:
        out.reshape(-1)[flat_index.reshape(-1)] = updates.reshape(-1)
    else:
        ufunc.at(out.reshape(-1), flat_index.reshape(-1), updates.reshape(-1))


@float_kernel("ScatterND")
def ScatterND(data, indices, updates, *, reduction="none"):
    """y = copy of data; y[indices[q..., :]] = updates[q...] (or combined with it by add/mul/max/min, applied
    once per update, so repeated indices accumulate)."""
    ufunc = _reduction("ScatterND", reduction)
    k = indices.shape[-1] if indices.ndim else data.ndim + 1
    if k > data.ndim or updates.shape != indices.shape[:-1] + data.shape[k:]:
        raise ModelError(f"ScatterND: data {list(data.shape)}, indices {list(indices.shape)} and updates "
                         f"{list(updates.shape)} do not fit (updates must have shape indices.shape[:-1] + "
                         f"data.shape[indices.shape[-1]:])")
    idx = np.asarray(indices).reshape(math.prod(indices.shape[:-1]), k)
    rows = np.zeros(idx.shape[0], np.int64)  # row-major linear index over data.shape[:k]
    for j in range(k):
        rows = rows * data.shape[j] + _indices("ScatterND", idx[:, j], data.shape[j])
    size = math.prod(data.shape[k:])
    out = data.copy()
    _scatter(out, rows[:, None] * size + np.arange(size), updates, ufunc)
    return out


@float_kernel("ScatterElements")
def ScatterElements(data, indices, updates, *, axis=0, reduction="none"):
    """y = copy of data; y[i0, .., indices[i0, .., in], .., in] = updates[i0, .., in] (or combined with it by
    add/mul/max/min, once per update)."""
    ufunc = _reduction("ScatterElements", reduction)
    if updates.shape != indices.shape:
        raise ModelError(f"ScatterElements: updates shape {list(updates.shape)} differs from indices shape "
                         f"{list(indices.shape)}")
    index = np.broadcast_arrays(*_element_index("ScatterElements", data, indices, axis))
    out = data.copy()
    _scatter(out, np.ravel_multi_index(tuple(index), data.shape), updates, ufunc)
    return out


def _topk_positions(rows, k: int, largest: bool) -> np.ndarray:
    """For each row of 2-D ``rows``, the positions of its k best elements, best first; equal values rank by lower
    position and NaN ranks above every number (NumPy's sort order).

    Selection before sorting keeps this O(n + k log k) per row: t = the k-th best value (np.partition); take
    every element better than t and, of those equal to t, the lowest-positioned ones until there are k; then
    sort just those k by value with a stable sort (they are already in position order).
    """
    m, n = rows.shape
    if k == 0:
        return np.zeros((m, 0), np.int64)
    kth = n - k if largest else k - 1
    t = np.partition(rows, kth, axis=-1)[:, kth:kth + 1]
    better, equal = (rows > t) if largest else (rows < t), rows == t
    if rows.dtype.kind in "fc":
        nan_x, nan_t = np.isnan(rows), np.isnan(t)
        better |= (nan_x & ~nan_t) if largest else (~nan_x & nan_t)
        equal |= nan_x & nan_t
    need = k - better.sum(axis=-1, keepdims=True)
    chosen = better | (equal & (np.cumsum(equal, axis=-1) <= need))
    pos = np.nonzero(chosen)[1].reshape(m, k)
    vals = np.take_along_axis(rows, pos, axis=-1)
    if largest:  # a stable ascending sort of the reversed row, read backwards: descending, ties by position
        order = (k - 1) - np.flip(np.argsort(np.flip(vals, -1), axis=-1, kind="stable"), -1)
    else:
        order = np.argsort(vals, axis=-1, kind="stable")
    return np.take_along_axis(pos, order, axis=-1).astype(np.int64, copy=False)


@float_kernel("TopK")
def TopK(X, K, *, axis=-1, largest=1, sorted=1):
    """(values, indices) of the k largest (or smallest) elements along ``axis``, best first; equal values are
    ordered by lower index first, as ONNX Runtime does; NaN counts as larger than any number. Always sorted
    (sorted=0 leaves the order unspecified)."""
    k_values = int_values(K)
    ax = normalize_axis("TopK", axis, X.ndim)
    n = X.shape[ax]
    if len(k_values) != 1 or not 0 <= k_values[0] <= n:
        raise ModelError(f"TopK: k = {k_values} must be one value in 0..{n} (axis {axis} of input shape "
                         f"{list(X.shape)})")
    k = k_values[0]
    moved = np.moveaxis(X, ax, -1)
    pos = _topk_positions(moved.reshape(math.prod(moved.shape[:-1]), n), k, bool(largest))
    idx = np.moveaxis(pos.reshape(moved.shape[:-1] + (k,)), -1, ax)
    return np.take_along_axis(X, idx, axis=ax), idx


@float_kernel("NonZero")
def NonZero(X):
    """y[:, j] = the index (one row per axis) of the j-th non-zero element of X in row-major order, int64; a
    scalar counts as a 1-element vector, as in ONNX Runtime."""
    x = X.reshape(1) if X.ndim == 0 else X
    return np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


@float_kernel("OneHot")
def OneHot(indices, depth, values, *, axis=-1):
    """y = values[1] where the new axis ``axis`` equals indices (negative indices count from depth), values[0]
    elsewhere; indices outside [-depth, depth-1] give an all-off row. Float indices and depth are truncated."""
    d = np.asarray(depth).reshape(-1)
    v = np.asarray(values).reshape(-1)
    if d.size != 1 or v.size != 2:
        raise ModelError(f"OneHot: depth must hold one value and values two (off, on); got {d.size} and {v.size}")
    d = int(d[0])
    if d < 1:
        raise ModelError(f"OneHot: depth is {d}; it must be at least 1")
    rank = indices.ndim + 1
    if not -rank <= axis < rank:
        raise ModelError(f"OneHot: axis {axis} is out of range for indices of rank {indices.ndim} "
                         f"(expected {-rank}..{rank - 1})")
    ax = axis + rank if axis < 0 else axis
    idx = np.asarray(indices).astype(np.int64)
    idx = np.where(idx < 0, idx + d, idx)  # still-negative or too-large ones match no class: all off
    classes = np.arange(d).reshape([d if i == ax else 1 for i in range(rank)])
    return np.where(np.expand_dims(idx, ax) == classes, v[1], v[0]).astype(v.dtype, copy=False)


@float_kernel("Trilu")
def Trilu(input, k=None, *, upper=1):
    """Keep the upper (j - i >= k) or lower (j - i <= k) triangle of the last two dims, zero the rest."""
    if input.ndim < 2:
        raise ModelError(f"Trilu: input shape {list(input.shape)} has rank < 2")
    kk = 0 if k is None else int_values(k)[0]
    rows, cols = input.shape[-2:]
    kk = min(max(kk, -rows), cols)  # beyond these every element is kept or zeroed alike; avoids int overflow
    return np.triu(input, kk) if upper else np.tril(input, kk)
