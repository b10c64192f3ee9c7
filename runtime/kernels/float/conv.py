"""Convolutions: Conv and ConvTranspose over N-D inputs laid out [N, C, *spatial].

Conv picks one of four lowerings, all float32 (or float64) BLAS or vectorised NumPy:
- 1x1 kernels: one GEMM W [M, C] @ X [C, H*W] per image on X itself, no copy (strided ones subsample X first);
- 3x3 stride-1 convs on large maps: Winograd F(2x2, 3x3), 16 GEMMs with 2.25x fewer multiplies;
- depthwise (one input channel per group): a multiply-add per kernel tap, no BLAS;
- everything else: im2col, a strided window view of the padded input copied into one column buffer
  [C*prod(kernel), prod(out)] (reused image after image), times W [M, C*prod(kernel)].
float16 is computed in float32 and rounded once at the end. The window geometry helpers here are shared
with the pooling kernels.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import as_strided

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def spatial_attr(op: str, name: str, value, n: int, default: int) -> list[int]:
    """An N-D attribute (strides, dilations, ...) as a list of ``n`` ints, ``default`` when absent."""
    if value is None or len(value) == 0:
        return [default] * n
    if len(value) != n:
        raise ModelError(f"{op}: '{name}' has {len(value)} values {list(value)}, the input has {n} spatial axes")
    return [int(v) for v in value]


def window_geometry(op: str, in_shape, kernel, strides, dilations, pads, auto_pad, ceil_mode=False):
    """Pads and output size of a sliding window (Conv, pools) along each spatial axis.

    Returns ``(begin, end, out)``: pads before and after each axis and the output size, from the ONNX rules:
    NOTSET uses ``pads``, out = floor_or_ceil((in + begin + end - (k-1)*d - 1) / s) + 1, and with ceil_mode
    a last window that would start in the end padding is dropped; VALID pads nothing; SAME_UPPER/SAME_LOWER
    make out = ceil(in / s) and split the padding this needs evenly, the odd one at the end (UPPER) or the
    beginning (LOWER).
    """
    n = len(in_shape)
    if auto_pad not in AUTO_PADS:
        raise ModelError(f"{op}: auto_pad '{auto_pad}' is not one of {', '.join(AUTO_PADS)}")
    begin, end, out = [0] * n, [0] * n, [0] * n
    if auto_pad == "NOTSET":
        p = spatial_attr(op, "pads", pads, 2 * n, 0)
        begin, end = p[:n], p[n:]
    for i in range(n):
        span = (kernel[i] - 1) * dilations[i] + 1
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out[i] = -(-in_shape[i] // strides[i])
            total = max(0, (out[i] - 1) * strides[i] + span - in_shape[i])
            small, large = total // 2, total - total // 2
            begin[i], end[i] = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
            continue
        room = in_shape[i] + begin[i] + end[i] - span
        if room < 0:
            raise ModelError(f"{op}: the window (kernel {kernel[i]}, dilation {dilations[i]}) is larger than "
                             f"spatial axis {i} of size {in_shape[i]} plus pads {begin[i]}+{end[i]}")
        if ceil_mode:
            out[i] = -(-room // strides[i]) + 1
            if (out[i] - 1) * strides[i] >= in_shape[i] + begin[i]:
                out[i] -= 1
        else:
            out[i] = room // strides[i] + 1
    return begin, end, out


def pad_spatial(x: np.ndarray, begin, end, value=0) -> np.ndarray:
    """``x`` [N, C, *spatial] with ``begin``/``end`` cells of ``value`` added around each spatial axis."""
    if not any(begin) and not any(end):
        return x
    shape = x.shape[:2] + tuple(s + b + e for s, b, e in zip(x.shape[2:], begin, end))
    xp = np.full(shape, value, dtype=x.dtype)
    xp[(slice(None), slice(None)) + tuple(slice(b, b + s) for b, s in zip(begin, x.shape[2:]))] = x
    return xp


def windows(xp: np.ndarray, kernel, strides, dilations, out) -> np.ndarray:
    """Read-only view [*lead, *kernel, *out] of the sliding windows over the trailing spatial axes of ``xp``."""
    n = len(kernel)
    lead, sp = xp.strides[:-n], xp.strides[-n:]
    shape = xp.shape[:-n] + tuple(kernel) + tuple(out)
    st = lead + tuple(s * d for s, d in zip(sp, dilations)) + tuple(s * t for s, t in zip(sp, strides))
    return as_strided(xp, shape, st, writeable=False)


def ensure_extent(xp: np.ndarray, kernel, strides, dilations, out, value=0) -> np.ndarray:
    """Pad the end of ``xp``'s spatial axes so that every window of the output fits (ceil_mode windows)."""
    n = len(kernel)
    need = [max(0, (o - 1) * s + (k - 1) * d + 1 - size)
            for o, s, k, d, size in zip(out, strides, kernel, dilations, xp.shape[-n:])]
    return pad_spatial(xp, [0] * n, need, value) if any(need) else xp


def _conv_args(op, x, w, b, group, kernel_shape, strides, dilations):
    if x.ndim < 3 or w.ndim != x.ndim:
        raise ModelError(f"{op}: X {list(x.shape)} and W {list(w.shape)} must both be [N, C, *spatial] with "
                         f"at least one spatial axis")
    n = x.ndim - 2
    if kernel_shape is not None and len(kernel_shape) and list(kernel_shape) != list(w.shape[2:]):
        raise ModelError(f"{op}: kernel_shape {list(kernel_shape)} does not match W {list(w.shape)}")
    if group < 1:
        raise ModelError(f"{op}: group must be >= 1, got {group}")
    if b is not None and b.ndim != 1:
        raise ModelError(f"{op}: B must be 1-D, got {list(b.shape)}")
    return n, spatial_attr(op, "strides", strides, n, 1), spatial_attr(op, "dilations", dilations, n, 1)


def _compute_dtype(x):
    return np.float32 if x.dtype == np.float16 else x.dtype


@float_kernel("Conv")
def Conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
         strides=None):
    """Y[n, m, o] = B[m] + sum_{c, k} Xpad[n, g*C/G + c, o*strides + k*dilations] * W[m, c, k], g = m // (M/G).

    X [N, C, *in], W [M, C/G, *kernel], B [M] (optional), Y [N, M, *out].
    """
    n, strides, dilations = _conv_args("Conv", x, w, b, group, kernel_shape, strides, dilations)
    C = x.shape[1]
    M, Cg = w.shape[:2]
    kernel = list(w.shape[2:])
    if C != Cg * group or M % group:
        raise ModelError(f"Conv: X {list(x.shape)} has {C} channels and W {list(w.shape)} needs "
                         f"{Cg} x group {group} = {Cg * group}, with M={M} divisible by the group")
    if b is not None and b.shape[0] != M:
        raise ModelError(f"Conv: B {list(b.shape)} must have M={M} values (W {list(w.shape)})")
    begin, end, out = window_geometry("Conv", x.shape[2:], kernel, strides, dilations, pads, auto_pad)
    dtype = x.dtype
    ct = _compute_dtype(x)
    x, w = x.astype(ct, copy=False), w.astype(ct, copy=False)
    bias = None if b is None else b.astype(ct, copy=False)
    if kernel == [3, 3] and strides == [1, 1] and dilations == [1, 1] and group == 1 and \
            min(C, M) >= WINOGRAD_MIN_CHANNELS and out[0] * out[1] >= WINOGRAD_MIN_OUTPUTS:
        return _winograd(x, w, bias, begin, out).astype(dtype, copy=False)
    if group == C and Cg == 1 and group > 1:
        return _depthwise(x, w, bias, begin, kernel, strides, dilations, out).astype(dtype, copy=False)
    xp = pad_spatial(x, begin, end)
    if all(k == 1 for k in kernel):
        y = _pointwise(xp, w, group, strides, out)
    else:
        y = _im2col(xp, w, group, kernel, strides, dilations, out)
    if bias is not None:
        y += bias.reshape((M,) + (1,) * n)
    return y.astype(dtype, copy=False)


def _pointwise(xp, w, group, strides, out):
    """1x1 kernel: a plain GEMM per image on X itself (strided X is subsampled first)."""
    N, C = xp.shape[:2]
    M = w.shape[0]
    if any(s != 1 for s in strides) or list(xp.shape[2:]) != list(out):
        xp = xp[(slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in zip(out, strides))]
    P = math.prod(out)
    y = np.empty((N, group, M // group, P), dtype=xp.dtype)
    np.matmul(w.reshape(group, M // group, C // group), xp.reshape(N, group, C // group, P), out=y)
    return y.reshape((N, M) + tuple(out))


def _im2col(xp, w, group, kernel, strides, dilations, out):
    """One column buffer [G, C/G * prod(kernel), prod(out)], reused image after image, times W."""
    N = xp.shape[0]
    M, Cg = w.shape[:2]
    P, K = math.prod(out), Cg * math.prod(kernel)
    wg = w.reshape(group, M // group, K)
    y = np.empty((N, group, M // group, P), dtype=xp.dtype)
    cols = np.empty((group, Cg) + tuple(kernel) + tuple(out), dtype=xp.dtype)
    for i in range(N):
        view = windows(xp[i], kernel, strides, dilations, out)
        np.copyto(cols, view.reshape(cols.shape))
        np.matmul(wg, cols.reshape(group, K, P), out=y[i])
    return y.reshape((N, M) + tuple(out))


def _depthwise(x, w, bias, begin, kernel, strides, dilations, out):
    """One input channel per group: Y[n, c*mult + j] = B + sum_k window_k(X[n, c]) * W[c*mult + j, 0, k].

    Each tap is one multiply-add over long contiguous runs: the padded input is split into stride phases
    (tap k along an axis reads phase (k*d) % s shifted by (k*d) // s) and flattened, and the output is
    computed on a "wide" grid as wide as the phase image; the spare columns are dropped with the bias add.
    """
    N, C = x.shape[:2]
    M = w.shape[0]
    mult = M // C
    shift = [((k - 1) * d) // s for k, d, s in zip(kernel, dilations, strides)]
    Q = [o + q for o, q in zip(out, shift)]  # phase image extent
    row = [math.prod(Q[i + 1:]) for i in range(len(Q))]  # flat stride of each axis in a phase image
    L = out[0] * row[0]  # wide output: out[0] x Q[1] x ... flattened
    slack = sum(q * r for q, r in zip(shift[1:], row[1:]))
    phases = list(np.ndindex(*strides))
    buf = np.zeros((N, C, len(phases), math.prod(Q) + slack), dtype=x.dtype)
    for p, phase in enumerate(phases):
        dst, src = [], []
        for size, b, s, ph, q in zip(x.shape[2:], begin, strides, phase, Q):
            r0 = max(0, -((ph - b) // s))  # first phase index whose padded position r*s + ph is inside X
            start = r0 * s + ph - b
            count = max(0, min(q - r0, -(-(size - start) // s)))
            dst.append(slice(r0, r0 + count))
            src.append(slice(start, start + (count - 1) * s + 1, s) if count else slice(0, 0))
        buf[:, :, p, :math.prod(Q)].reshape((N, C) + tuple(Q))[(slice(None),) * 2 + tuple(dst)] = \
            x[(slice(None),) * 2 + tuple(src)]
    wk = w.reshape(C, mult, 1, -1)
    y = np.empty((N, C, mult, L), dtype=x.dtype)
    tmp = np.empty_like(y)
    for t, k in enumerate(np.ndindex(*kernel)):
        pos = [kk * d for kk, d in zip(k, dilations)]
        p = phases.index(tuple(v % s for v, s in zip(pos, strides)))
        off = sum((v // s) * r for v, s, r in zip(pos, strides, row))
        np.multiply(buf[:, :, p, None, off:off + L], wk[..., t], out=y if t == 0 else tmp)
        if t:
            y += tmp
    wide = y.reshape((N, M, out[0]) + tuple(Q[1:]))
    crop = wide[(slice(None),) * 3 + tuple(slice(0, o) for o in out[1:])]
    if bias is None:
        return np.ascontiguousarray(crop)
    return np.add(crop, bias.reshape((M,) + (1,) * len(out)))


# Winograd F(2x2, 3x3) (Lavin & Gray, 2016) for 3x3 stride-1 convs on large enough maps. Each 2x2 output
# tile Y of a 4x4 input tile d is, with U = G g G^T per (output, input) channel pair,
#     Y = A^T [sum_c U[m, c] * (B^T d_c B)] A
#     B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
#     G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]        A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
# so the sum over c becomes 16 GEMMs [M, C] @ [C, tiles]: 16 multiplies per 4 outputs instead of 36. The
# coefficients are 0, +-1 and +-1/2, so the rounding error stays that of a direct conv (measured 3-6e-7 of the
# output range in float32 on ResNet50's 3x3 layers, like im2col's). Below these sizes the weight transform
# and the tile shuffling cost more than the saved multiplies (measured on ResNet50's layers):
WINOGRAD_MIN_CHANNELS = 32
WINOGRAD_MIN_OUTPUTS = 14 * 14
_WINOGRAD_G = np.array([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]])
_WINOGRAD_GG = np.kron(_WINOGRAD_G, _WINOGRAD_G)  # [16, 9]: U[4a + b] = sum_ij G[a, i] G[b, j] g[3i + j]


def _winograd(x, w, bias, begin, out):
    """X [N, C, H, W] -> [N, M, *out]; ``begin`` are the top/left pads. Layouts keep every NumPy step on
    long contiguous runs: the input is split by row and column parity so that tile neighbours are plain
    shifted slices, and a spare column per tile row is computed and dropped at the end."""
    N, C = x.shape[:2]
    M, dt = w.shape[0], x.dtype
    U = np.matmul(_WINOGRAD_GG.astype(dt), np.ascontiguousarray(w.reshape(M * C, 9).T)).reshape(16, M, C)
    th, tw = -(-out[0] // 2), -(-out[1] // 2)
    y = np.empty((N, M) + tuple(out), dt)
    for n in range(N):
        even = out[0] == 2 * th and out[1] == 2 * tw
        dst = y[n].reshape(M, th, 2, tw, 2) if even else np.empty((M, th, 2, tw, 2), dt)
        _winograd_image(x[n], U, bias, begin, th, tw, dst)
        if not even:
            y[n] = dst.reshape(M, 2 * th, 2 * tw)[:, :out[0], :out[1]]
    return y


def _winograd_image(x, U, bias, begin, th, tw, dst):
    """One image [C, H, W] into dst [M, th, 2, tw, 2] (output row 2i + a, column 2j + b)."""
    C, M, dt = x.shape[0], U.shape[1], x.dtype
    (pt, pl), L = begin, 2 * C * (th + 1) * (tw + 1)
    # P[cp, rp, c, i, j] = Xpad[c, 2i + rp, 2j + cp], zero outside X
    P = np.zeros((2, 2, C, th + 1, tw + 1), dt)
    for rp in (0, 1):
        r0 = (rp - pt) % 2
        rows = x[:, r0::2][:, :max(0, th + 1 - (r0 + pt) // 2)]
        for cp in (0, 1):
            c0 = (cp - pl) % 2
            src = rows[:, :, c0::2][:, :, :max(0, tw + 1 - (c0 + pl) // 2)]
            i0, j0 = (r0 + pt) // 2, (c0 + pl) // 2
            P[cp, rp, :, i0:i0 + src.shape[1], j0:j0 + src.shape[2]] = src
    # d B along columns: tile column j reads even[j], odd[j], even[j+1], odd[j+1] (a shift of one element)
    even, odd = P[0].reshape(L), P[1].reshape(L)
    u = np.empty((4, L), dt)
    u[:, -1] = 0  # the spare column of the last row: never read into an output
    np.subtract(even[:-1], even[1:], out=u[0, :-1])
    np.add(odd[:-1], even[1:], out=u[1, :-1])
    np.subtract(even[1:], odd[:-1], out=u[2, :-1])
    np.subtract(odd[:-1], odd[1:], out=u[3, :-1])
    # B^T (.) along rows, likewise with even/odd rows shifted by one tile row
    u = u.reshape(4, 2, C, th + 1, tw + 1)
    e0, e1, o0, o1 = u[:, 0, :, :th], u[:, 0, :, 1:], u[:, 1, :, :th], u[:, 1, :, 1:]
    V = np.empty((4, 4, C, th, tw + 1), dt)
    np.subtract(e0, e1, out=V[0])
    np.add(o0, e1, out=V[1])
    np.subtract(e1, o0, out=V[2])
    np.subtract(o0, o1, out=V[3])
    T = th * (tw + 1)
    prod = np.matmul(U, V.reshape(16, C, T)).reshape(4, 4 * M * T)
    # A^T (.) A: rows, then columns
    s = np.empty((2, 4 * M * T), dt)
    np.add(prod[0], prod[1], out=s[0])
    s[0] += prod[2]
    np.subtract(prod[1], prod[2], out=s[1])
    s[1] -= prod[3]
    s = s.reshape(2, 4, M * T)
    z = np.empty((2, 2, M * T), dt)
    np.add(s[:, 0], s[:, 1], out=z[:, 0])
    z[:, 0] += s[:, 2]
    np.subtract(s[:, 1], s[:, 2], out=z[:, 1])
    z[:, 1] -= s[:, 3]
    z = z.reshape(2, 2, M, th, tw + 1)
    for a in (0, 1):
        for b in (0, 1):
            if bias is None:
                dst[:, :, a, :, b] = z[a, b, :, :, :tw]
            else:
                np.add(z[a, b, :, :, :tw], bias.reshape(M, 1, 1), out=dst[:, :, a, :, b])


@float_kernel("ConvTranspose")
def ConvTranspose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
                  output_padding=None, output_shape=None, pads=None, strides=None):
    """Y[n, m, i*strides + k*dilations - pads_begin] += X[n, c, i] * W[c, m', k] (m = g*M/G + m'), plus B[m].

    X [N, C, *in], W [C, M/G, *kernel]. Full size = strides*(in-1) + output_padding + (kernel-1)*dilations + 1;
    ``output_shape`` (or SAME_* auto_pad, output = min(in*strides, full)) sets the pads: total = full - output,
    split in halves with the odd one at the end for SAME_UPPER and at the beginning otherwise; an output_shape
    beyond the full size is zero-extended at the end (as ONNX Runtime does).
    """
    n, strides, dilations = _conv_args("ConvTranspose", x, w, b, group, kernel_shape, strides, dilations)
    N, C = x.shape[:2]
    kernel = list(w.shape[2:])
    if w.shape[0] != C or C % group:
        raise ModelError(f"ConvTranspose: W {list(w.shape)} must have C={C} (X {list(x.shape)}) rows, "
                         f"divisible by group {group}")
    Mg = w.shape[1]
    M = Mg * group
    if b is not None and b.shape[0] != M:
        raise ModelError(f"ConvTranspose: B {list(b.shape)} must have M={M} values")
    begin, _, outs = _transpose_geometry(x.shape[2:], kernel, strides, dilations, output_padding,
                                         output_shape, pads, auto_pad)
    dtype, ct = x.dtype, _compute_dtype(x)
    x, w = x.astype(ct, copy=False), w.astype(ct, copy=False)
    ins = x.shape[2:]
    P, Cg = math.prod(ins), C // group
    # cols[n, g, m', k, i] = sum_c W[g*Cg + c, m', k] * X[n, g*Cg + c, i]
    wt = w.reshape(group, Cg, Mg * math.prod(kernel)).transpose(0, 2, 1)
    cols = np.matmul(wt, x.reshape(N, group, Cg, P)).reshape((N, M, -1) + tuple(ins))
    # scatter-add each kernel tap into a buffer holding every written position and the requested output
    full = [(i - 1) * s + (k - 1) * d + 1 for i, s, k, d in zip(ins, strides, kernel, dilations)]
    buf = np.zeros((N, M) + tuple(max(f, bg + o) for f, bg, o in zip(full, begin, outs)), dtype=ct)
    for t, k in enumerate(np.ndindex(*kernel)):
        idx = tuple(slice(kk * d, kk * d + (i - 1) * s + 1, s) for kk, d, i, s in zip(k, dilations, ins, strides))
        buf[(slice(None), slice(None)) + idx] += cols[:, :, t]
    y = buf[(slice(None), slice(None)) + tuple(slice(bg, bg + o) for bg, o in zip(begin, outs))]
    if b is not None:
        y = y + b.astype(ct, copy=False).reshape((M,) + (1,) * n)
    return np.ascontiguousarray(y).astype(dtype, copy=False)


def _transpose_geometry(ins, kernel, strides, dilations, output_padding, output_shape, pads, auto_pad):
    n = len(ins)
    if auto_pad not in AUTO_PADS:
        raise ModelError(f"ConvTranspose: auto_pad '{auto_pad}' is not one of {', '.join(AUTO_PADS)}")
    adj = spatial_attr("ConvTranspose", "output_padding", output_padding, n, 0)
    full = [s * (i - 1) + a + (k - 1) * d + 1 for i, s, a, k, d in zip(ins, strides, adj, kernel, dilations)]
    if output_shape is not None and len(output_shape):
        outs = [int(v) for v in list(output_shape)[-n:]]
        if len(output_shape) not in (n, n + 2):
            raise ModelError(f"ConvTranspose: output_shape {list(output_shape)} must list the {n} spatial sizes")
    elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):  # in * strides, or the full size if that is smaller (as ORT)
        outs = [min(i * s, f) for i, s, f in zip(ins, strides, full)]
    else:
        p = [0] * 2 * n if auto_pad == "VALID" else spatial_attr("ConvTranspose", "pads", pads, 2 * n, 0)
        if min(p) < 0:
            raise ModelError(f"ConvTranspose: pads {p} must not be negative")
        outs = [f - bg - e for f, bg, e in zip(full, p[:n], p[n:])]
        if any(o <= 0 for o in outs):
            raise ModelError(f"ConvTranspose: pads {p} leave an empty output {outs} for input {list(ins)}")
        return p[:n], p[n:], outs
    total = [max(0, f - o) for f, o in zip(full, outs)]  # a larger output_shape is zero-extended at the end
    if auto_pad == "SAME_UPPER":
        begin = [t // 2 for t in total]
    else:
        begin = [t - t // 2 for t in total]
    return begin, [t - bg for t, bg in zip(total, begin)], outs
