"""Normalisations (BatchNormalization, InstanceNormalization, LayerNormalization, GroupNormalization, LRN),
the softmax family (Softmax, LogSoftmax, Hardmax) and inference-time Dropout.

Statistics of float16 inputs are computed in float32 (the ``stash_type=1`` precision) and results rounded
once; float32 stays float32 throughout. The softmax family computes in the input's own dtype, as ONNX's
reference does (its float16 node cases are exact to about one ulp).
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel


def _ct(dtype):
    """The dtype statistics are computed in: float32 for half types, the input's own dtype otherwise."""
    return np.dtype(np.float32) if np.dtype(dtype).itemsize < 4 else np.dtype(dtype)


def _channel_param(op, name, p, x, channels):
    """A per-channel parameter [C] shaped to broadcast against x [N, C, *spatial]."""
    if p.shape != (channels,):
        raise ModelError(f"{op}: {name} {list(p.shape)} must be [C] = [{channels}] for input {list(x.shape)}")
    return p.reshape((channels,) + (1,) * (x.ndim - 2))


@float_kernel("BatchNormalization")
def BatchNormalization(x, scale, b, input_mean, input_var, *, epsilon=1e-5, momentum=0.9, training_mode=0):
    """Y = (X - mean) / sqrt(var + epsilon) * scale + B, per channel (axis 1).

    Inference (training_mode=0) uses the running statistics and returns them unchanged as the optional outputs
    (old models listing running/saved mean and var get them all). training_mode=1 normalises with the batch
    statistics and returns running_mean = input_mean * momentum + batch_mean * (1 - momentum), likewise var.
    """
    if x.ndim < 2:
        raise ModelError(f"BatchNormalization: input {list(x.shape)} must be [N, C, ...]")
    C, ct = x.shape[1], _ct(x.dtype)
    params = [_channel_param("BatchNormalization", n, p, x, C).astype(ct, copy=False)
              for n, p in (("scale", scale), ("B", b), ("input_mean", input_mean), ("input_var", input_var))]
    s, bias, mean, var = params
    eps = np.asarray(epsilon, dtype=ct)
    extra = (input_mean, input_var, input_mean, input_var)
    if training_mode:
        axes = (0,) + tuple(range(2, x.ndim))
        xc = x.astype(ct, copy=False)
        mean, var = xc.mean(axis=axes, keepdims=True), xc.var(axis=axes, keepdims=True)
        m = np.asarray(momentum, dtype=ct)
        extra = tuple((r.astype(ct, copy=False) * m + batch.reshape(-1) * (1 - m)).astype(r.dtype, copy=False)
                      for r, batch in ((input_mean, mean), (input_var, var)))
    a = 1 / np.sqrt(var + eps) * s  # as ONNX Runtime: Y = X * a + (B - mean * a), two passes over X
    y = np.multiply(x, a, dtype=ct)
    y += bias - mean * a
    return (y.astype(x.dtype, copy=False),) + extra


@float_kernel("InstanceNormalization")
def InstanceNormalization(x, scale, b, *, epsilon=1e-5):
    """Y[n, c] = (X[n, c] - mean(X[n, c])) / sqrt(var(X[n, c]) + epsilon) * scale[c] + B[c], over spatial axes."""
    if x.ndim < 3:
        raise ModelError(f"InstanceNormalization: input {list(x.shape)} must be [N, C, *spatial]")
    ct = _ct(x.dtype)
    C = x.shape[1]
    s = _channel_param("InstanceNormalization", "scale", scale, x, C).astype(ct, copy=False)
    bias = _channel_param("InstanceNormalization", "B", b, x, C).astype(ct, copy=False)
    y = _standardise(x.astype(ct, copy=False), tuple(range(2, x.ndim)), epsilon)[0]
    y *= s
    y += bias
    return y.astype(x.dtype, copy=False)


def _standardise(x, axes, epsilon):
    """(X - mean) / sqrt(var + epsilon) over ``axes``, with the mean and 1/sqrt(var + epsilon) (keepdims)."""
    mean = x.mean(axis=axes, keepdims=True)
    y = x - mean
    var = np.mean(np.square(y), axis=axes, keepdims=True)
    inv_std = 1 / np.sqrt(var + np.asarray(epsilon, dtype=x.dtype))
    y *= inv_std
    return y, mean, inv_std


@float_kernel("LayerNormalization")
def LayerNormalization(x, scale, b=None, *, axis=-1, epsilon=1e-5, stash_type=1):
    """Y = (X - mean) / sqrt(var + epsilon) * Scale + B, statistics over axes [axis, rank).

    Also returns Mean and InvStdDev = 1/sqrt(var + epsilon), shaped X.shape[:axis] + [1] * (rank - axis), in
    the stash type float32 (as ONNX Runtime; float64 inputs are normalised in float64 all the same).
    """
    if stash_type != 1:
        raise ModelError(f"LayerNormalization: stash_type {stash_type} is not supported (only 1, float32)")
    if not -x.ndim <= axis < x.ndim:
        raise ModelError(f"LayerNormalization: axis {axis} is out of range for input {list(x.shape)}")
    axes = tuple(range(axis % x.ndim, x.ndim))
    ct = _ct(x.dtype)
    y, mean, inv_std = _standardise(x.astype(ct, copy=False), axes, epsilon)
    y *= scale.astype(ct, copy=False)
    if b is not None:
        y += b.astype(ct, copy=False)
    return y.astype(x.dtype, copy=False), mean.astype(np.float32), inv_std.astype(np.float32)


@float_kernel("GroupNormalization")
def GroupNormalization(x, scale, bias, *, epsilon=1e-5, num_groups=None, stash_type=1):
    """Y[n, c] = (X[n, c] - mean_g) / sqrt(var_g + epsilon) * scale[c] + bias[c], statistics over the channels of
    group g = c // (C / num_groups) and all spatial positions. (The opset-18 form, scale and bias per group, is
    read too: a [num_groups] scale is spread over the group's channels.)"""
    if stash_type != 1:
        raise ModelError(f"GroupNormalization: stash_type {stash_type} is not supported (only 1, float32)")
    if x.ndim < 2 or num_groups is None or num_groups < 1 or x.shape[1] % num_groups:
        raise ModelError(f"GroupNormalization: num_groups {num_groups} must divide the channels of input "
                         f"{list(x.shape)}")
    N, C = x.shape[:2]
    ct = _ct(x.dtype)
    grouped = x.astype(ct, copy=False).reshape(N, num_groups, -1)
    y = _standardise(grouped, (2,), epsilon)[0].reshape(x.shape)
    for name, p in (("scale", scale), ("bias", bias)):
        if p.shape == (num_groups,) and num_groups != C:
            p = np.repeat(p, C // num_groups)
        p = _channel_param("GroupNormalization", name, p, x, C).astype(ct, copy=False)
        y = np.multiply(y, p, out=y) if name == "scale" else np.add(y, p, out=y)
    return y.astype(x.dtype, copy=False)


@float_kernel("LRN")
def LRN(x, *, alpha=0.0001, beta=0.75, bias=1.0, size=None):
    """Y[n, c] = X[n, c] / (bias + alpha / size * sum_{c' in window(c)} X[n, c']^2) ^ beta, where the window is
    [c - floor((size-1)/2), c + ceil((size-1)/2)] clipped to the channels."""
    if size is None or size < 1 or x.ndim < 2:
        raise ModelError(f"LRN: needs size >= 1 (got {size}) and an input [N, C, ...] (got {list(x.shape)})")
    ct = _ct(x.dtype)
    C = x.shape[1]
    lo = (size - 1) // 2
    sq = np.square(x.astype(ct, copy=False))
    padded = np.zeros((x.shape[0], C + size - 1) + x.shape[2:], dtype=ct)
    padded[:, lo:lo + C] = sq
    total = padded[:, :C].copy()
    for i in range(1, size):
        total += padded[:, i:i + C]
    total *= np.asarray(alpha / size, dtype=ct)
    total += np.asarray(bias, dtype=ct)
    return (x / np.power(total, np.asarray(beta, dtype=ct))).astype(x.dtype, copy=False)


def _axis(op, x, axis):
    if not -max(x.ndim, 1) <= axis < max(x.ndim, 1):
        raise ModelError(f"{op}: axis {axis} is out of range for input {list(x.shape)}")
    return axis


@float_kernel("Softmax")
def Softmax(x, *, axis=-1):
    """Y = exp(X - max(X)) / sum(exp(X - max(X))) along ``axis``."""
    axis = _axis("Softmax", x, axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


@float_kernel("LogSoftmax")
def LogSoftmax(x, *, axis=-1):
    """Y = X - max(X) - log(sum(exp(X - max(X)))) along ``axis``."""
    axis = _axis("LogSoftmax", x, axis)
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


@float_kernel("Hardmax")
def Hardmax(x, *, axis=-1):
    """Y = 1 at the first maximum of X along ``axis``, 0 elsewhere."""
    axis = _axis("Hardmax", x, axis)
    y = np.zeros_like(x)
    if x.size:
        np.put_along_axis(y, np.expand_dims(x.argmax(axis=axis), axis), 1, axis=axis)
    return y


@float_kernel("Dropout")
def Dropout(data, ratio=None, training_mode=None, *, seed=None):
    """Inference: Y = X and mask = all True. Training mode with ratio > 0 drops at random and is refused."""
    if training_mode is not None and bool(np.asarray(training_mode)) and \
            (ratio is None or float(np.asarray(ratio)) > 0):
        raise ModelError("Dropout: training_mode=True with a ratio > 0 drops values at random; lowbit runs "
                         "inference only, export the model in eval mode")
    return data, np.ones(data.shape, dtype=bool)
