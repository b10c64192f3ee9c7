"""Pooling over [N, C, *spatial]: MaxPool (with Indices), AveragePool, LpPool and their Global forms.

The window geometry is Conv's, plus ceil_mode. Max, average and Lp pooling are separable: they reduce one
spatial axis at a time, one vectorised operation per kernel tap of that axis over every output, skipping
taps that fall in the padding. MaxPool's Indices need the whole window, tap by tap, over a padded copy.
float16 accumulates in float32.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.conv import ensure_extent, pad_spatial, spatial_attr, window_geometry, windows
from lowbit.runtime.registry import float_kernel


def _pool_setup(op, x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, pad_value, padded=True):
    """(x padded with ``pad_value`` if ``padded``, kernel, strides, dilations, begin pads, end pads, output
    size) of a pooling node."""
    if x.ndim < 3:
        raise ModelError(f"{op}: input {list(x.shape)} must be [N, C, *spatial] with at least one spatial axis")
    n = x.ndim - 2
    if kernel_shape is None or len(kernel_shape) != n:
        raise ModelError(f"{op}: kernel_shape {kernel_shape} must give one size per spatial axis of "
                         f"{list(x.shape)}")
    kernel = [int(k) for k in kernel_shape]
    strides = spatial_attr(op, "strides", strides, n, 1)
    dilations = spatial_attr(op, "dilations", dilations, n, 1)
    begin, end, out = window_geometry(op, x.shape[2:], kernel, strides, dilations, pads, auto_pad,
                                      ceil_mode=bool(ceil_mode))
    if any(max(b, e) > (k - 1) * d for b, e, k, d in zip(begin, end, kernel, dilations)):
        raise ModelError(f"{op}: pads {list(begin) + list(end)} must leave every window an input cell "
                         f"(kernel_shape {kernel}, dilations {dilations})")
    if padded:
        x = ensure_extent(pad_spatial(x, begin, end, pad_value), kernel, strides, dilations, out, pad_value)
    return x, kernel, strides, dilations, begin, end, out


def _taps(xp, kernel, strides, dilations, out):
    """The window view split into one strided view [N, C, *out] per kernel tap, in row-major tap order."""
    view = windows(xp, kernel, strides, dilations, out)
    return [view[(slice(None), slice(None)) + k] for k in np.ndindex(*kernel)]


def _separable(x, kernel, strides, dilations, begin, out, combine, init):
    """Reduce the windows over unpadded ``x`` axis by axis with the associative ``combine`` (maximum, add),
    starting from ``init``: sum(kernel) passes instead of prod(kernel), and taps that fall in the padding
    are skipped rather than read from a padded copy."""
    y = x
    for axis, (k, s, d, b, o) in enumerate(zip(kernel, strides, dilations, begin, out), start=2):
        n = y.shape[axis]
        acc = np.full(y.shape[:axis] + (o,) + y.shape[axis + 1:], init, dtype=y.dtype)
        lead = (slice(None),) * axis
        for t in range(k):
            off = t * d - b  # this tap reads input index o * s + off
            lo, hi = max(0, -(off // s)), min(o, (n - 1 - off) // s + 1)
            if hi > lo:
                dst = acc[lead + (slice(lo, hi),)]
                combine(dst, y[lead + (slice(lo * s + off, (hi - 1) * s + off + 1, s),)], out=dst)
        y = acc
    return y


def _lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


@float_kernel("MaxPool")
def MaxPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
            storage_order=0, strides=None, _n_outputs=1):
    """Y[n, c, o] = max_k Xpad[n, c, o*strides + k*dilations] (pads never win).

    Indices (second output, int64) hold the flat position of the first maximum in X [N, C, *in], row-major
    over the spatial axes (storage_order=0) or column-major (storage_order=1), batch and channel included.
    """
    xp, kernel, strides, dilations, begin, _, out = _pool_setup(
        "MaxPool", x, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, _lowest(x.dtype),
        padded=_n_outputs > 1)
    if _n_outputs < 2:
        return _separable(x, kernel, strides, dilations, begin, out, np.maximum, _lowest(x.dtype))
    taps = _taps(xp, kernel, strides, dilations, out)
    y = taps[0].copy()
    arg = np.zeros(y.shape, dtype=np.int64)
    better = np.empty(y.shape, dtype=bool)
    for t, tap in enumerate(taps[1:], 1):
        np.greater(tap, y, out=better)
        np.copyto(y, tap, where=better)
        np.copyto(arg, t, where=better)
    return y, _max_indices(x.shape, arg, kernel, strides, dilations, begin, out, storage_order)


def _max_indices(shape, arg, kernel, strides, dilations, begin, out, storage_order):
    """Flat input positions of the winning taps: nc * prod(in) + the spatial offset of (window start + tap)."""
    spatial = shape[2:]
    order = range(len(spatial)) if storage_order else reversed(range(len(spatial)))
    elem, step = [0] * len(spatial), 1
    for i in order:
        elem[i], step = step, step * spatial[i]
    tap_offset = np.array([sum(k * d * e for k, d, e in zip(ks, dilations, elem)) for ks in np.ndindex(*kernel)],
                          dtype=np.int64)
    base = np.zeros((), dtype=np.int64)
    for i, (o, s, b, e) in enumerate(zip(out, strides, begin, elem)):
        axis = (np.arange(o, dtype=np.int64) * s - b) * e
        base = base + axis.reshape((o,) + (1,) * (len(out) - 1 - i))
    nc = np.arange(shape[0] * shape[1], dtype=np.int64).reshape(shape[:2] + (1,) * len(out)) * step
    return tap_offset[arg] + base + nc


def _window_counts(in_shape, kernel, strides, dilations, begin, end, out, include_pad):
    """How many taps of each window fall inside the input (or inside input + pads), as [*out]."""
    count = np.ones((), dtype=np.int64)
    for i, (size, k, s, d, b, e, o) in enumerate(zip(in_shape, kernel, strides, dilations, begin, end, out)):
        pos = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b
        lo, hi = (-b, size + e) if include_pad else (0, size)
        c = ((pos >= lo) & (pos < hi)).sum(axis=1)
        count = count * c.reshape((o,) + (1,) * (len(out) - 1 - i))
    return count


@float_kernel("AveragePool")
def AveragePool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None, kernel_shape=None,
                pads=None, strides=None):
    """Y[n, c, o] = sum_k Xpad[n, c, o*strides + k*dilations] / count, where count is the number of taps in X
    (count_include_pad=0) or in X plus its explicit pads (count_include_pad=1; ceil_mode overhang never counts).
    """
    ct = np.float32 if x.dtype == np.float16 else x.dtype
    xc = x.astype(ct, copy=False)
    _, kernel, strides, dilations, begin, end, out = _pool_setup(
        "AveragePool", xc, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, 0, padded=False)
    y = _separable(xc, kernel, strides, dilations, begin, out, np.add, 0)
    y /= _window_counts(x.shape[2:], kernel, strides, dilations, begin, end, out, count_include_pad).astype(ct)
    return y.astype(x.dtype, copy=False)


@float_kernel("LpPool")
def LpPool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2, pads=None,
           strides=None):
    """Y[n, c, o] = (sum_k |Xpad[n, c, o*strides + k*dilations]|^p)^(1/p), pads counting as zeros."""
    ct = np.float32 if x.dtype == np.float16 else x.dtype
    xc = x.astype(ct, copy=False)
    _, kernel, strides, dilations, begin, _, out = _pool_setup(
        "LpPool", xc, kernel_shape, strides, dilations, pads, auto_pad, ceil_mode, 0, padded=False)
    y = _separable(_abs_pow(xc, p), kernel, strides, dilations, begin, out, np.add, 0)
    return _root(y, p).astype(x.dtype, copy=False)


def _abs_pow(x, p):
    return np.square(x) if p == 2 else np.power(np.abs(x), np.asarray(p, dtype=x.dtype))


def _root(y, p):
    return np.sqrt(y) if p == 2 else np.power(y, np.asarray(1.0 / p, dtype=y.dtype))


def _spatial_axes(op, x):
    if x.ndim < 3:
        raise ModelError(f"{op}: input {list(x.shape)} must be [N, C, *spatial] with at least one spatial axis")
    return tuple(range(2, x.ndim))


@float_kernel("GlobalAveragePool")
def GlobalAveragePool(x):
    """Y[n, c, 1, ...] = mean over all spatial positions of X[n, c]."""
    axes = _spatial_axes("GlobalAveragePool", x)
    flat = x.reshape(x.shape[:2] + (-1,))
    ct = np.float32 if x.dtype == np.float16 else x.dtype
    y = flat.mean(axis=-1, dtype=ct)
    return y.reshape(x.shape[:2] + (1,) * len(axes)).astype(x.dtype, copy=False)


@float_kernel("GlobalMaxPool")
def GlobalMaxPool(x):
    """Y[n, c, 1, ...] = max over all spatial positions of X[n, c]."""
    return x.max(axis=_spatial_axes("GlobalMaxPool", x), keepdims=True)


@float_kernel("GlobalLpPool")
def GlobalLpPool(x, *, p=2):
    """Y[n, c, 1, ...] = (sum over all spatial positions of |X[n, c]|^p)^(1/p)."""
    axes = _spatial_axes("GlobalLpPool", x)
    ct = np.float32 if x.dtype == np.float16 else x.dtype
    s = _abs_pow(x.astype(ct, copy=False), p).sum(axis=axes, keepdims=True)
    return _root(s, p).astype(x.dtype, copy=False)
