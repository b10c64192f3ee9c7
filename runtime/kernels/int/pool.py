"""Integer pooling and mean: MaxPool, AvgPool (TFLite MAX_POOL_2D / AVERAGE_POOL_2D) and Mean (TFLite MEAN).

Pools keep the input's quantization (TFLite requires equal input and output scale and zero point), so they
only clamp to the fused activation's [act_min, act_max]. Windows never read the padding: TFLite's reference
kernels clip each window to the image, and AvgPool divides by the number of cells actually read.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.int.linear import finish, rescale
from lowbit.runtime.registry import int_kernel


def _pool_geometry(op, x, layout, kernel_shape, strides, pads):
    """(x as NHWC, kernel, strides, pads [t, l, b, r], output size) of a 2-D pool."""
    if layout not in ("NCHW", "NHWC"):
        raise ModelError(f"{op}: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if x.ndim != 4:
        raise ModelError(f"{op}: input {list(x.shape)} must be 4-D ({layout})")
    if kernel_shape is None or len(kernel_shape) != 2:
        raise ModelError(f"{op}: kernel_shape {kernel_shape} must give a height and a width")
    xh = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x
    kernel = [int(k) for k in kernel_shape]
    strides = [1, 1] if strides is None else [int(s) for s in strides]
    pads = [0, 0, 0, 0] if pads is None else [int(p) for p in pads]
    out = []
    for i in range(2):
        o = (xh.shape[1 + i] + pads[i] + pads[i + 2] - kernel[i]) // strides[i] + 1
        if o < 1 or max(pads[i], pads[i + 2]) >= kernel[i]:
            raise ModelError(f"{op}: input {list(x.shape)} ({layout}), kernel {kernel}, strides {strides} and "
                             f"pads {pads} leave a window with no input cell")
        out.append(o)
    return xh, kernel, strides, pads, out


def _window_reduce(x, axis, k, s, begin, out, combine, init):
    """Reduce windows of size ``k`` and stride ``s`` along ``axis`` of x, the first starting ``begin`` cells
    before index 0; cells outside x are skipped (they start as ``init``)."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = out
    acc = np.full(shape, init, dtype=x.dtype)
    lead = (slice(None),) * axis
    for t in range(k):
        off = t - begin  # output o reads input o * s + off
        lo, hi = max(0, -(off // s)), min(out, (n - 1 - off) // s + 1)
        if hi > lo:
            dst = acc[lead + (slice(lo, hi),)]
            combine(dst, x[lead + (slice(lo * s + off, (hi - 1) * s + off + 1, s),)], out=dst)
    return acc


def _valid_count(n, k, s, begin, out) -> np.ndarray:
    """How many cells of each window (size k, stride s, starting ``begin`` before 0) lie inside [0, n)."""
    start = np.arange(out) * s - begin
    return np.minimum(start + k, n) - np.maximum(start, 0)


@int_kernel("MaxPool")
def MaxPool(x, *, layout="NCHW", kernel_shape=None, strides=None, pads=None, act_min=None, act_max=None,
            _stats=None):
    """y[n, y, x, c] = clamp(max over the window cells inside the image, act_min, act_max); pads [t, l, b, r]."""
    x = np.asarray(x)
    xh, kernel, strides, pads, out = _pool_geometry("MaxPool", x, layout, kernel_shape, strides, pads)
    low = np.iinfo(x.dtype).min
    y = _window_reduce(xh, 1, kernel[0], strides[0], pads[0], out[0], np.maximum, low)
    y = _window_reduce(y, 2, kernel[1], strides[1], pads[1], out[1], np.maximum, low)
    y = finish(y, 0, act_min, act_max, x.dtype, _stats)
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


@int_kernel("AvgPool")
def AvgPool(x, *, layout="NCHW", kernel_shape=None, strides=None, pads=None, act_min=None, act_max=None,
            _stats=None):
    """TFLite's integer average pool; pads [t, l, b, r], windows clipped to the image:

        acc = sum of the window cells inside the image (int32),  count = how many there are
        y = clamp(acc > 0 ? (acc + count/2) / count : (acc - count/2) / count, act_min, act_max)

    with C++ division (truncation toward zero): the average rounded to nearest, ties away from zero.
    """
    x = np.asarray(x)
    xh, kernel, strides, pads, out = _pool_geometry("AvgPool", x, layout, kernel_shape, strides, pads)
    acc = _window_reduce(xh.astype(np.int64), 1, kernel[0], strides[0], pads[0], out[0], np.add, 0)
    acc = _window_reduce(acc, 2, kernel[1], strides[1], pads[1], out[1], np.add, 0)
    count = (_valid_count(xh.shape[1], kernel[0], strides[0], pads[0], out[0])[:, None]
             * _valid_count(xh.shape[2], kernel[1], strides[1], pads[1], out[1])[None, :])[None, :, :, None]
    half = count // 2
    avg = np.where(acc > 0, (acc + half) // count, -((half - acc) // count))
    y = finish(avg, 0, act_min, act_max, x.dtype, _stats)
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


@int_kernel("Mean")
def Mean(x, *, axes=None, keepdims=1, input_offset=0, output_offset=0, multiplier=None, shift=None,
         rounding="double", _stats=None):
    """TFLite's integer MEAN (reference QuantizedMeanOrSum) over ``axes`` (all axes when None):

        n     = number of reduced elements,  acc = sum(x) + input_offset * n      (exact)
        k     = min(floor(log2 n), 32, 31 + shift)
        M'    = (multiplier << k) // n,  shift' = shift - k                         (1/n folded in, integers)
        y     = clamp(rescale(acc, M', shift') + output_offset, dtype range)

    ``multiplier``/``shift`` encode s_in / s_out (quant.prepare_linear.prepare_mean); the rescale is the int32
    MultiplyByQuantizedMultiplier (``rounding`` "double" or "single") for int8 and int16 alike.
    """
    if multiplier is None or shift is None:
        raise ModelError("Mean: missing integer attribute(s) multiplier/shift (see docs/integer_ir.md)")
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axes is None or len(axes) == 0 else \
        tuple(sorted({int(a) % x.ndim for a in axes}))
    n = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
    if n == 0:
        raise ModelError(f"Mean: reduces an empty axis of {list(x.shape)}")
    total = x.sum(axis=axes, dtype=np.int64, keepdims=bool(keepdims)) + int(input_offset) * n
    k = min(n.bit_length() - 1, 32, 31 + int(shift))
    m = (int(multiplier) << k) // n
    y = rescale(total, m, int(shift) - k, "int32", rounding)
    return finish(y, output_offset, None, None, x.dtype, _stats)
