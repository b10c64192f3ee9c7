"""Pad: constant, reflect, edge and wrap padding over chosen axes; negative pads crop."""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel

MODES = ("constant", "reflect", "edge", "wrap")


@float_kernel("Pad")
def Pad(data, pads, constant_value=None, axes=None, *, mode="constant"):
    """Y = X with pads[i] cells added before and pads[i + len(axes)] after axis axes[i] (all axes by default).

    Negative pads remove cells first; the positive ones are then filled with ``constant_value`` (default 0),
    the mirror image without the border cell (reflect), the border cell (edge) or the far side (wrap).
    """
    if mode not in MODES:
        raise ModelError(f"Pad: mode '{mode}' is not one of {', '.join(MODES)}")
    rank = data.ndim
    axes = list(range(rank)) if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if any(not -rank <= a < rank for a in axes) or len({a % max(rank, 1) for a in axes}) != len(axes):
        raise ModelError(f"Pad: axes {axes} are out of range or repeated for input {list(data.shape)}")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    if len(pads) != 2 * len(axes):
        raise ModelError(f"Pad: pads {pads} must hold 2 x {len(axes)} values (begin and end per axis), "
                         f"input {list(data.shape)}")
    width = [[0, 0] for _ in range(rank)]
    for i, a in enumerate(axes):
        width[a % rank] = [pads[i], pads[i + len(axes)]]
    out = tuple(n + b + e for n, (b, e) in zip(data.shape, width))
    if any(o < 0 for o in out):
        raise ModelError(f"Pad: negative pads {pads} remove more than input {list(data.shape)} holds")
    # the part of X that survives the cropping, and where it lands in Y
    src = tuple(slice(max(0, -b), min(n, n + e)) for n, (b, e) in zip(data.shape, width))
    if mode == "constant":
        value = 0 if constant_value is None or np.asarray(constant_value).size == 0 else \
            np.asarray(constant_value).reshape(-1)[0]
        y = np.full(out, value, dtype=data.dtype)
        if all(sl.stop > sl.start for sl in src):
            y[tuple(slice(max(0, b), max(0, b) + sl.stop - sl.start) for (b, _), sl in zip(width, src))] = data[src]
        return y
    x = data[src]
    grow = [(max(0, b), max(0, e)) for b, e in width]
    for a, (b, e) in enumerate(grow):
        if (b or e) and x.shape[a] == 0:
            raise ModelError(f"Pad: mode '{mode}' cannot pad axis {a}: nothing of input {list(data.shape)} is "
                             f"left there after the negative pads {pads}")
        if mode == "reflect" and max(b, e) >= x.shape[a]:
            raise ModelError(f"Pad: reflect pads {[b, e]} must be smaller than axis {a} of size {x.shape[a]}")
    return np.pad(x, grow, mode=mode) if any(b or e for b, e in grow) else x.copy()
