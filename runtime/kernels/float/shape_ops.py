"""Shape and layout ops: Shape, Size, Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Concat, Split, Slice,
Expand, Tile, DepthToSpace, SpaceToDepth.

Reshape, Flatten, Squeeze, Unsqueeze, Transpose, Slice and Split return views of their input when NumPy can
(kernels never write into their inputs, so sharing memory is safe); the others return fresh arrays.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel


def int_values(x) -> list[int]:
    """The elements of an integer tensor (scalar or 1-D) as Python ints, so that arithmetic on them such as
    INT64_MAX + dim cannot wrap around."""
    return [int(v) for v in np.asarray(x).reshape(-1)]


def normalize_axis(op: str, axis: int, rank: int, what: str = "axis") -> int:
    """``axis`` in [-rank, rank-1] -> [0, rank-1]; anything else is a ModelError naming ``op``."""
    if not -rank <= axis < rank:
        raise ModelError(f"{op}: {what} {axis} is out of range for a rank-{rank} input "
                         f"(expected {-rank}..{rank - 1})")
    return axis + rank if axis < 0 else axis


def _normalize_axes(op: str, axes, rank: int) -> list[int]:
    out = [normalize_axis(op, a, rank, "axes entry") for a in int_values(axes)]
    if len(set(out)) != len(out):
        raise ModelError(f"{op}: axes {int_values(axes)} repeat an axis (rank {rank})")
    return out


@float_kernel("Shape")
def Shape(data, *, start=0, end=None):
    """y = shape(data)[start:end] as int64; negative start/end count from the back, both clamp to [0, rank]."""
    rank = data.ndim
    lo = min(max(start + rank if start < 0 else start, 0), rank)
    hi = rank if end is None else min(max(end + rank if end < 0 else end, 0), rank)
    return np.array(data.shape[lo:hi], dtype=np.int64)


@float_kernel("Size")
def Size(data):
    """y = number of elements of data, an int64 scalar."""
    return np.array(data.size, dtype=np.int64)


@float_kernel("Reshape")
def Reshape(data, shape, *, allowzero=0):
    """y = data viewed with ``shape``: a 0 copies the input dim at that position (unless allowzero=1, when it
    means an empty dim), one -1 takes whatever size is left."""
    target = int_values(shape)
    if allowzero and 0 in target and -1 in target:
        raise ModelError(f"Reshape: shape {target} has both 0 and -1 with allowzero=1; the -1 cannot be inferred")
    dims = []
    for i, s in enumerate(target):
        if s == 0 and not allowzero:
            if i >= data.ndim:
                raise ModelError(f"Reshape: shape {target} copies input dim {i} (a 0) but the input "
                                 f"{list(data.shape)} has rank {data.ndim}")
            s = data.shape[i]
        elif s < -1:
            raise ModelError(f"Reshape: shape {target} has a negative dim other than -1")
        dims.append(s)
    if dims.count(-1) > 1:
        raise ModelError(f"Reshape: shape {target} has more than one -1")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        if known == 0 or data.size % known:
            raise ModelError(f"Reshape: cannot infer the -1 in shape {target} (resolved {dims}) for an input "
                             f"of shape {list(data.shape)} ({data.size} elements)")
        dims[dims.index(-1)] = data.size // known
    if math.prod(dims) != data.size:
        raise ModelError(f"Reshape: input of shape {list(data.shape)} ({data.size} elements) cannot take "
                         f"shape {target} (resolved {dims})")
    return data.reshape(dims)


@float_kernel("Flatten")
def Flatten(input, *, axis=1):
    """y = input reshaped to 2-D: (prod(shape[:axis]), prod(shape[axis:])); axis in [-rank, rank]."""
    rank = input.ndim
    if not -rank <= axis <= rank:
        raise ModelError(f"Flatten: axis {axis} is out of range for input shape {list(input.shape)} "
                         f"(expected {-rank}..{rank})")
    axis = axis + rank if axis < 0 else axis
    return input.reshape(math.prod(input.shape[:axis]), math.prod(input.shape[axis:]))


@float_kernel("Transpose")
def Transpose(data, *, perm=None):
    """y = data with its axes permuted: y.shape[i] = data.shape[perm[i]]; default perm reverses the axes."""
    if perm is None:
        return data.transpose()
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(data.ndim)):
        raise ModelError(f"Transpose: perm {perm} is not a permutation of the {data.ndim} axes of an input "
                         f"of shape {list(data.shape)}")
    return data.transpose(perm)


@float_kernel("Squeeze")
def Squeeze(data, axes=None):
    """y = data without the size-1 dims listed in ``axes`` (all size-1 dims when axes is absent or empty)."""
    if axes is None or np.asarray(axes).size == 0:
        return data.reshape([d for d in data.shape if d != 1])
    axes = _normalize_axes("Squeeze", axes, data.ndim)
    bad = [a for a in axes if data.shape[a] != 1]
    if bad:
        raise ModelError(f"Squeeze: axes {bad} of input shape {list(data.shape)} are not of size 1")
    return data.reshape([d for i, d in enumerate(data.shape) if i not in axes])


@float_kernel("Unsqueeze")
def Unsqueeze(data, axes):
    """y = data with size-1 dims inserted so that they sit at ``axes`` of the output (rank + len(axes))."""
    rank = data.ndim + np.asarray(axes).size
    axes = set(_normalize_axes("Unsqueeze", axes, rank))
    dims = iter(data.shape)
    return data.reshape([1 if i in axes else next(dims) for i in range(rank)])


@float_kernel("Concat")
def Concat(*inputs, axis):
    """y = the inputs joined along ``axis``; all other dims and the dtype must agree."""
    first = inputs[0]
    if first.ndim == 0:
        raise ModelError("Concat: inputs are scalars (rank 0); Concat needs rank >= 1")
    ax = normalize_axis("Concat", axis, first.ndim)
    for x in inputs[1:]:
        if x.dtype != first.dtype:
            raise ModelError(f"Concat: inputs mix dtypes {sorted({str(i.dtype) for i in inputs})}")
        if x.ndim != first.ndim or any(a != b for i, (a, b) in enumerate(zip(x.shape, first.shape)) if i != ax):
            raise ModelError(f"Concat: input shapes {[list(i.shape) for i in inputs]} differ outside axis {axis}")
    return np.concatenate(inputs, axis=ax)


@float_kernel("Split")
def Split(input, split=None, *, axis=0, num_outputs=None, _n_outputs=None):
    """Cut ``input`` along ``axis`` into pieces of sizes ``split``; or into ``num_outputs`` pieces (or, with
    neither, one per node output: ``_n_outputs``, supplied by the executor) of ceil(dim / n) elements each,
    the last one taking what is left."""
    ax = normalize_axis("Split", axis, input.ndim)
    dim = input.shape[ax]
    if split is not None and np.asarray(split).size == 0:
        split = None  # an empty split tensor means "not given" in ONNX Runtime
    if split is not None:
        if num_outputs is not None:
            raise ModelError("Split: give either the 'split' input or the 'num_outputs' attribute, not both")
        sizes = int_values(split)
        if sum(sizes) != dim or min(sizes) < 0:
            raise ModelError(f"Split: split sizes {sizes} do not add up to dim {dim} of axis {axis} of input "
                             f"shape {list(input.shape)}")
    else:
        n = num_outputs if num_outputs is not None else _n_outputs
        if n is None:
            raise ModelError("Split: neither the 'split' input nor the 'num_outputs' attribute is given, and the "
                             "executor did not say how many outputs the node has")
        if n < 1:
            raise ModelError(f"Split: num_outputs is {n}; it must be at least 1")
        chunk = -(-dim // n)
        sizes = [chunk] * (n - 1) + [dim - chunk * (n - 1)]
        if sizes[-1] < 0:
            raise ModelError(f"Split: dim {dim} of axis {axis} cannot be cut into {n} pieces of {chunk} with a "
                             f"smaller last piece (input shape {list(input.shape)})")
    index = [slice(None)] * input.ndim
    pieces, pos = [], 0
    for s in sizes:
        index[ax] = slice(pos, pos + s)
        pieces.append(input[tuple(index)])
        pos += s
    return tuple(pieces)


def _slice_1d(start: int, end: int, step: int, dim: int) -> slice:
    """ONNX Slice bounds for one axis as a Python slice: negative bounds count from the back, then clamp to
    [0, dim] for step > 0 and to [-1, dim-1] for step < 0, where -1 means "before the first element"."""
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return slice(min(max(start, 0), dim), min(max(end, 0), dim), step)
    if dim == 0:
        return slice(0, 0)
    start = min(max(start, 0), dim - 1)
    end = min(max(end, -1), dim - 1)
    return slice(start, end if end >= 0 else None, step)


@float_kernel("Slice")
def Slice(data, starts, ends, axes=None, steps=None):
    """y = data[starts[i]:ends[i]:steps[i] on axis axes[i]], with ONNX's clamping of out-of-range bounds
    (e.g. ends = INT64_MAX or INT64_MIN)."""
    starts, ends = int_values(starts), int_values(ends)
    n = len(starts)
    axes = list(range(n)) if axes is None else _normalize_axes("Slice", axes, data.ndim)
    steps = [1] * n if steps is None else int_values(steps)
    if not len(ends) == len(axes) == len(steps) == n:
        raise ModelError(f"Slice: starts {starts}, ends {ends}, axes {axes} and steps {steps} differ in length")
    if n > data.ndim:
        raise ModelError(f"Slice: {n} starts for an input of rank {data.ndim}")
    if 0 in steps:
        raise ModelError(f"Slice: steps {steps} contain 0")
    index = [slice(None)] * data.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        index[a] = _slice_1d(s, e, st, data.shape[a])
    return data[tuple(index)]


@float_kernel("Expand")
def Expand(input, shape):
    """y = input broadcast with ``shape`` (bidirectionally: the output shape is broadcast(input.shape, shape))."""
    target = int_values(shape)
    try:
        out_shape = np.broadcast_shapes(input.shape, tuple(target))
    except ValueError:
        raise ModelError(f"Expand: input shape {list(input.shape)} does not broadcast with shape {target}") from None
    # a copy: the broadcast view is read-only with zero strides, which a user holding a graph output would not expect
    return np.broadcast_to(input, out_shape).copy()


@float_kernel("Tile")
def Tile(input, repeats):
    """y = input repeated repeats[i] times along axis i."""
    reps = int_values(repeats)
    if len(reps) != input.ndim or min(reps, default=0) < 0:
        raise ModelError(f"Tile: repeats {reps} must hold {input.ndim} non-negative counts, one per axis of "
                         f"input shape {list(input.shape)}")
    return np.tile(input, reps)


def _blocks(op: str, x, blocksize: int, mode: str):
    if x.ndim != 4:
        raise ModelError(f"{op}: input shape {list(x.shape)} is not 4-D (N, C, H, W)")
    if blocksize < 1:
        raise ModelError(f"{op}: blocksize is {blocksize}; it must be at least 1")
    if mode not in ("DCR", "CRD"):
        raise ModelError(f"{op}: mode '{mode}' is neither 'DCR' nor 'CRD'")
    return x.shape


@float_kernel("DepthToSpace")
def DepthToSpace(input, *, blocksize, mode="DCR"):
    """Move channel blocks into bs x bs spatial blocks: (N, C, H, W) -> (N, C/bs^2, H*bs, W*bs).
    DCR: channels split as (bs, bs, C/bs^2); CRD: as (C/bs^2, bs, bs)."""
    n, c, h, w = _blocks("DepthToSpace", input, blocksize, mode)
    bs = blocksize
    if c % (bs * bs):
        raise ModelError(f"DepthToSpace: channels {c} of input shape {list(input.shape)} are not a multiple of "
                         f"blocksize^2 = {bs * bs}")
    if mode == "DCR":
        t = input.reshape(n, bs, bs, c // (bs * bs), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        t = input.reshape(n, c // (bs * bs), bs, bs, h, w).transpose(0, 1, 4, 2, 5, 3)
    return t.reshape(n, c // (bs * bs), h * bs, w * bs)


@float_kernel("SpaceToDepth")
def SpaceToDepth(input, *, blocksize, mode="DCR"):
    """Move bs x bs spatial blocks into channels: (N, C, H, W) -> (N, C*bs^2, H/bs, W/bs), the inverse of
    DepthToSpace with the same mode."""
    n, c, h, w = _blocks("SpaceToDepth", input, blocksize, mode)
    bs = blocksize
    if h % bs or w % bs:
        raise ModelError(f"SpaceToDepth: spatial dims of input shape {list(input.shape)} are not multiples of "
                         f"blocksize {bs}")
    t = input.reshape(n, c, h // bs, bs, w // bs, bs)
    t = t.transpose(0, 3, 5, 1, 2, 4) if mode == "DCR" else t.transpose(0, 1, 3, 5, 2, 4)
    return t.reshape(n, c * bs * bs, h // bs, w // bs)
