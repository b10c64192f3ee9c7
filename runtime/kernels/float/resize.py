"""Resize: nearest, linear and cubic interpolation, one axis at a time.

Each resized axis becomes a small table of source indices and weights, [out, taps]: nearest has one tap of
weight 1, linear two, cubic four, and antialiased downscaling widens the linear/cubic kernel by 1/scale. The
axis is then resampled as sum_t take(X, index[:, t]) * weight[:, t]. Indices outside the input are clamped to
its border (ONNX's edge padding); ``exclude_outside`` gives them weight 0 instead.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel

MODES = ("nearest", "linear", "cubic")
COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                    "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
POLICIES = ("stretch", "not_larger", "not_smaller")


def _check(name, value, allowed):
    if value not in allowed:
        raise ModelError(f"Resize: {name} '{value}' is not one of {', '.join(allowed)}")


@float_kernel("Resize")
def Resize(x, roi=None, scales=None, sizes=None, *, antialias=0, axes=None,
           coordinate_transformation_mode="half_pixel", cubic_coeff_a=-0.75, exclude_outside=0,
           extrapolation_value=0.0, keep_aspect_ratio_policy="stretch", mode="nearest",
           nearest_mode="round_prefer_floor"):
    """Y[o] = sum_t X[index_t(o)] * weight_t(o) along each resized axis, where the source coordinate of output
    position o follows coordinate_transformation_mode, e.g. half_pixel: (o + 0.5) / scale - 0.5.

    Exactly one of ``scales`` (out = floor(in * scale)) and ``sizes`` (scale = out / in, or one common scale
    under keep_aspect_ratio_policy not_larger/not_smaller with out = round(scale * in)) gives the output size,
    for ``axes`` (default all). tf_crop_and_resize samples the box ``roi`` and writes extrapolation_value
    outside the input.
    """
    _check("mode", mode, MODES)
    _check("coordinate_transformation_mode", coordinate_transformation_mode, COORDINATE_MODES)
    _check("nearest_mode", nearest_mode, NEAREST_MODES)
    _check("keep_aspect_ratio_policy", keep_aspect_ratio_policy, POLICIES)
    rank = x.ndim
    axes = list(range(rank)) if axes is None else [int(a) % rank if -rank <= a < rank else rank for a in axes]
    if any(a >= rank for a in axes) or len(set(axes)) != len(axes):
        raise ModelError(f"Resize: axes are out of range or repeated for input {list(x.shape)}")
    scale, out = _output_size(x.shape, axes, scales, sizes, keep_aspect_ratio_policy)
    box = _roi(roi, axes, coordinate_transformation_mode)
    ct = np.float64 if x.dtype.kind != "f" else np.float32 if x.dtype == np.float16 else x.dtype
    y = x
    for i, a in enumerate(axes):
        if out[i] == x.shape[a] and scale[i] == 1 and box[i] == (0.0, 1.0):
            continue
        coord = _source_coordinate(coordinate_transformation_mode, x.shape[a], out[i], scale[i], box[i])
        index, weight = _taps(mode, coord, x.shape[a], scale[i], nearest_mode, cubic_coeff_a,
                              bool(antialias), bool(exclude_outside))
        outside = None
        if coordinate_transformation_mode == "tf_crop_and_resize":
            outside = (coord < 0) | (coord > x.shape[a] - 1)
        y = _resample(y, a, index, weight, ct, outside, extrapolation_value)
    if y is x:
        return x.copy()
    if x.dtype.kind in "iu":  # rounded, as ONNX's reference does (ONNX Runtime truncates toward zero)
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return y.astype(x.dtype, copy=False)


def _output_size(shape, axes, scales, sizes, policy):
    """Per resized axis: the float32 scale of the coordinate transform and the output length.

    Scales and output lengths are computed in float32 arithmetic, as ONNX Runtime does: out = floor(in * 0.7)
    is 7 for in = 10 although the float32 value of 0.7 is a little under 0.7.
    """
    have_scales = scales is not None and scales.size > 0
    have_sizes = sizes is not None and sizes.size > 0
    if have_scales == have_sizes:
        raise ModelError("Resize: give exactly one of 'scales' and 'sizes' (the other omitted or empty)")
    given = (scales if have_scales else sizes).reshape(-1)
    if given.size != len(axes):
        raise ModelError(f"Resize: {'scales' if have_scales else 'sizes'} {given.tolist()} must have one value "
                         f"per resized axis ({len(axes)}) of input {list(shape)}")
    ins = np.array([shape[a] for a in axes], dtype=np.float32)
    if have_scales:
        scale = given.astype(np.float32)
        if (scale <= 0).any():
            raise ModelError(f"Resize: scales {scale.tolist()} must be positive")
        return scale, [int(v) for v in np.floor(ins * scale)]
    out = given.astype(np.float32)
    scale = out / ins
    if policy != "stretch":
        scale = np.full_like(scale, scale.min() if policy == "not_larger" else scale.max())
        out = np.floor(scale * ins + np.float32(0.5))
    return scale, [int(v) for v in out]


def _roi(roi, axes, ctm):
    if ctm != "tf_crop_and_resize" or roi is None or roi.size == 0:
        return [(0.0, 1.0)] * len(axes)
    r = roi.reshape(-1).astype(np.float64)
    if r.size != 2 * len(axes):
        raise ModelError(f"Resize: roi {r.tolist()} must hold a start and an end per resized axis ({len(axes)})")
    return [(float(r[i]), float(r[i + len(axes)])) for i in range(len(axes))]


def _source_coordinate(ctm, n_in, n_out, scale, box):
    """The input coordinate each output position samples, [n_out], in float32 arithmetic like ONNX Runtime
    (so that nearest rounding agrees with it at the exact halves)."""
    f = np.float32
    o = np.arange(n_out, dtype=f)
    half = f(0.5)
    if ctm == "half_pixel":
        return (o + half) / scale - half
    if ctm == "half_pixel_symmetric":  # ORT mixes in double precision here
        offset = f(n_in) / f(2) * (f(1) - f(n_out) / (scale * f(n_in)))
        return (np.float64(offset) + (o.astype(np.float64) + 0.5) / np.float64(scale) - 0.5).astype(f)
    if ctm == "pytorch_half_pixel":
        return (o + half) / scale - half if n_out > 1 else np.zeros(n_out, f)
    if ctm == "align_corners":
        return o * f(n_in - 1) / f(n_out - 1) if n_out > 1 else np.zeros(n_out, f)
    if ctm == "asymmetric":
        return o / scale
    start, end = (f(v) for v in box)
    if n_out > 1:
        return start * f(n_in - 1) + o * (end - start) * f(n_in - 1) / f(n_out - 1)
    return np.full(n_out, (start + end) * half * f(n_in - 1), dtype=f)


def _taps(mode, coord, n_in, scale, nearest_mode, a, antialias, exclude_outside):
    """(index [n_out, taps] clamped into the input, weight [n_out, taps]) of one resized axis."""
    if mode == "nearest":
        rounding = {"round_prefer_floor": lambda c: np.ceil(c - 0.5), "round_prefer_ceil": lambda c: np.floor(c + 0.5),
                    "floor": np.floor, "ceil": np.ceil}[nearest_mode]
        index = rounding(coord).astype(np.int64)[:, None]
        return np.clip(index, 0, n_in - 1), None
    # base tap x0 = ceil(c) - 1 and ratio = c - x0 in (0, 1], as ONNX's reference picks the neighbours
    coord = coord.astype(np.float64)
    base = np.ceil(coord) - 1
    ratio = coord - base
    support = 1 if mode == "linear" else 2
    s = min(float(scale), 1.0) if antialias else 1.0
    first = math.floor(-support / s) + 1
    offsets = np.arange(first, 2 - first)
    dist = np.abs(offsets[None, :] - ratio[:, None]) * s
    if mode == "linear":
        weight = np.clip(1 - dist, 0, None)
    else:
        weight = np.where(dist <= 1, ((a + 2) * dist - (a + 3)) * dist * dist + 1,
                          np.where(dist < 2, ((a * dist - 5 * a) * dist + 8 * a) * dist - 4 * a, 0.0))
    index = base.astype(np.int64)[:, None] + offsets[None, :]
    if antialias:
        weight /= weight.sum(axis=1, keepdims=True)
    if exclude_outside:
        weight = np.where((index < 0) | (index >= n_in), 0.0, weight)
        total = weight.sum(axis=1, keepdims=True)
        weight /= np.where(total == 0, 1.0, total)
    return np.clip(index, 0, n_in - 1), weight


def _resample(x, axis, index, weight, ct, outside, fill):
    """sum_t take(x, index[:, t], axis) * weight[:, t], with ``fill`` where ``outside``."""
    bshape = (1,) * axis + (-1,) + (1,) * (x.ndim - axis - 1)
    if weight is None:
        y = np.take(x, index[:, 0], axis=axis)
    else:
        weight = weight.astype(ct)
        y = np.take(x, index[:, 0], axis=axis).astype(ct, copy=False) * weight[:, 0].reshape(bshape)
        for t in range(1, index.shape[1]):
            y += np.take(x, index[:, t], axis=axis) * weight[:, t].reshape(bshape)
    if outside is not None and outside.any():
        y = np.where(outside.reshape(bshape), np.asarray(fill).astype(y.dtype), y)
    return y
