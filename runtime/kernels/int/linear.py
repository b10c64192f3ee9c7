"""Integer Conv (regular, grouped, depthwise) and FullyConnected: TFLite's reference integer kernels.

Both compute, for each output element,

    acc  = sum_k w[k] * (x[k] + input_offset) + bias          (int32 or int64, exact)
    y    = clamp(rescale(acc) + output_offset, act_min, act_max)

and differ only in how the sum is formed. The sums are exact: GEMM-shaped work goes through float BLAS, which
is exact as long as every partial sum is an integer the float type represents (float32 below 2^24, float64
below 2^53; the bound is checked from K, the input dtype and max |w|, and a long K is cut into float32 chunks
whose exact results are added in int64), and depthwise convolutions accumulate tap by tap in int32 (int64
when the bound needs it). Float weight matrices are built once per constant weight array
and cached. The input offset is folded out of the GEMM:

    sum_k w[k] * (x[k] + off) = sum_k w[k] * x[k] + off * sum_k w[k]

where cells in the padding hold the input zero point (= -off), so that they contribute nothing, exactly as
TFLite's kernels skip taps outside the image.

``rescale`` is selected by ``accumulator`` and ``rounding`` (docs/integer_ir.md): int32 accumulators use
MultiplyByQuantizedMultiplier (double rounding, or single rounding), int64 accumulators (16x8) its int64 form.
"""
from __future__ import annotations

import weakref

import numpy as np
from numpy.lib.stride_tricks import as_strided

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.registry import int_kernel

_F32_EXACT = float(1 << 24)
_F64_EXACT = float(1 << 53)

# --- constant-weight cache ---------------------------------------------------------------------------------
_CACHE: dict[tuple, tuple] = {}


def _cached(w: np.ndarray, key: tuple, build):
    """``build(w)`` memoised per read-only weight array (graph constants are read-only); writable arrays are
    never cached, since their contents may change between calls."""
    if w.flags.writeable:
        return build(w)
    full = (id(w),) + key
    hit = _CACHE.get(full)
    if hit is not None and hit[0]() is w:
        return hit[1]
    value = build(w)
    try:
        ref = weakref.ref(w, lambda _r, k=full: _CACHE.pop(k, None))
    except TypeError:
        return value
    _CACHE[full] = (ref, value)
    return value


def _abs_max(a: np.ndarray) -> int:
    return int(np.max(np.abs(a.astype(np.int64)))) if a.size else 0


def _dtype_abs_max(dtype, offset: int = 0) -> int:
    info = np.iinfo(dtype)
    return max(abs(int(info.min) + offset), abs(int(info.max) + offset))


def gemm_plan(k: int, x_abs_max: int, w_abs_max: int, what: str) -> tuple[type, int]:
    """(float type, K chunk) in which a K-deep integer dot product is computed exactly.

    float32 while every partial sum stays below 2^24, over K split into chunks small enough for that (each
    chunk's exact result is then added in int64) when the chunks can hold at least 64 products; float64
    otherwise (exact below 2^53)."""
    per_product = max(1, x_abs_max * w_abs_max)
    if k * per_product < _F32_EXACT:
        return np.float32, k
    chunk = int((_F32_EXACT - 1) // per_product) // 64 * 64
    if chunk >= 64:
        return np.float32, chunk
    if k * per_product < _F64_EXACT:
        return np.float64, k
    raise ModelError(f"{what}: integer dot products of depth {k} with |x| <= {x_abs_max}, |w| <= {w_abs_max} "
                     f"can exceed 2^53 and cannot be computed exactly")


def exact_matmul(a: np.ndarray, b: np.ndarray, chunk: int) -> np.ndarray:
    """a [..., M, K] @ b [..., K, N] as int64, both holding integers in a float type; the K axis is cut into
    ``chunk``-sized pieces whose (exact) float results are summed in int64."""
    k = a.shape[-1]
    if chunk >= k:
        return np.matmul(a, b).astype(np.int64)
    acc = None
    for i in range(0, k, chunk):
        part = np.matmul(a[..., i:i + chunk], b[..., i:i + chunk, :]).astype(np.int64)
        acc = part if acc is None else acc + part
    return acc


# --- rescale and clamp, shared with other integer kernels ----------------------------------------------------
def rescale(acc, multiplier, shift, accumulator: str = "int32", rounding: str = "double") -> np.ndarray:
    """acc * M with M = (multiplier, shift), per docs/integer_ir.md: int32 accumulators use TFLite's
    MultiplyByQuantizedMultiplier (``rounding`` "double" or "single"), int64 accumulators its int64 form."""
    m = np.asarray(multiplier, np.int64)
    s = np.asarray(shift, np.int64)
    if accumulator == "int64":
        return fp.multiply_by_quantized_multiplier_int64(acc, m, s)
    if accumulator != "int32":
        raise ModelError(f"accumulator must be 'int32' or 'int64', got {accumulator!r}")
    if rounding == "double":
        return fp.multiply_by_quantized_multiplier(acc, m, s)
    if rounding == "single":
        return fp.multiply_by_quantized_multiplier_single_round(acc, m, s)
    raise ModelError(f"rounding must be 'double' or 'single', got {rounding!r}")


def round_half_away(v: np.ndarray) -> np.ndarray:
    """std::round on float arrays: to the nearest integer, ties away from zero (exact, no +0.5 trick)."""
    t = np.trunc(v)
    return t + np.where(np.abs(v - t) >= 0.5, np.sign(v), 0.0).astype(v.dtype)


def finish(y, output_offset: int, act_min: int, act_max: int, dtype, stats) -> np.ndarray:
    """y + output_offset, clamped to [act_min, act_max] and cast to ``dtype``; clamped values are counted."""
    y = np.asarray(y, np.int64) + int(output_offset)
    info = np.iinfo(dtype)
    lo = int(info.min) if act_min is None else int(act_min)
    hi = int(info.max) if act_max is None else int(act_max)
    if not info.min <= lo <= hi <= info.max:
        raise ModelError(f"act_min/act_max [{lo}, {hi}] must lie in the {np.dtype(dtype).name} range")
    if stats is not None:
        stats["saturated"] = stats.get("saturated", 0) + fp.saturate_count(y, lo, hi)
    return np.clip(y, lo, hi).astype(dtype)


def _bias(bias, n: int, op: str) -> np.ndarray | int:
    if bias is None:
        return 0
    b = np.asarray(bias).reshape(-1)
    if b.size != n:
        raise ModelError(f"{op}: bias has {b.size} values for {n} output channels")
    return b.astype(np.int64)


def _required(op: str, **attrs):
    missing = [k for k, v in attrs.items() if v is None]
    if missing:
        raise ModelError(f"{op}: missing integer attribute(s) {', '.join(missing)} (see docs/integer_ir.md)")


# --- Conv ----------------------------------------------------------------------------------------------------
def _conv_geometry(x_hw, k_hw, strides, dilations, pads):
    strides = [1, 1] if strides is None else [int(s) for s in strides]
    dilations = [1, 1] if dilations is None else [int(d) for d in dilations]
    pads = [0, 0, 0, 0] if pads is None else [int(p) for p in pads]
    if len(strides) != 2 or len(dilations) != 2 or len(pads) != 4 or min(strides + dilations) < 1 or min(pads) < 0:
        raise ModelError(f"Conv: strides {strides}, dilations {dilations}, pads {pads} must be 2, 2 and 4 "
                         f"values (positive strides/dilations, non-negative pads)")
    out = []
    for i in range(2):
        span = (k_hw[i] - 1) * dilations[i] + 1
        o = (x_hw[i] + pads[i] + pads[i + 2] - span) // strides[i] + 1
        if o < 1:
            raise ModelError(f"Conv: input {list(x_hw)} with pads {pads} is smaller than the kernel "
                             f"{list(k_hw)} (dilations {dilations})")
        out.append(o)
    return strides, dilations, pads, out


def _pad_nhwc(x: np.ndarray, pads, out, k_hw, strides, dilations, value) -> np.ndarray:
    """x [N, H, W, C] padded with ``value``: ``pads`` at the top/left and just enough at the bottom/right for
    every window of ``out`` (extra end padding that no window reads is dropped)."""
    need_h = (out[0] - 1) * strides[0] + (k_hw[0] - 1) * dilations[0] + 1
    need_w = (out[1] - 1) * strides[1] + (k_hw[1] - 1) * dilations[1] + 1
    n, h, w, c = x.shape
    top, left = pads[0], pads[1]
    if top == 0 and left == 0 and need_h <= h and need_w <= w:
        return x
    xp = np.full((n, max(need_h, top + h), max(need_w, left + w), c), value, dtype=x.dtype)
    xp[:, top:top + h, left:left + w, :] = x
    return xp


def _windows_nhwc(xp: np.ndarray, k_hw, strides, dilations, out) -> np.ndarray:
    """Read-only view [N, OH, OW, kH, kW, C] of the sliding windows of ``xp`` [N, Hp, Wp, C]."""
    sn, sh, sw, sc = xp.strides
    shape = (xp.shape[0], out[0], out[1], k_hw[0], k_hw[1], xp.shape[3])
    st = (sn, sh * strides[0], sw * strides[1], sh * dilations[0], sw * dilations[1], sc)
    return as_strided(xp, shape, st, writeable=False)


def _conv_weights(w: np.ndarray, group: int, ftype):
    """(weights as float [g, kH*kW*Cg, Og], sum over each output channel's taps (int64 [O]), max |w|)."""
    o, cg, kh, kw = w.shape
    og = o // group
    wm = w.reshape(group, og, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(group, kh * kw * cg, og)
    return np.ascontiguousarray(wm, dtype=ftype), w.reshape(o, -1).astype(np.int64).sum(axis=1)


def _conv_gemm(xh, w, group, input_offset, strides, dilations, pads, out):
    n = xh.shape[0]
    o, cg, kh, kw = w.shape
    k = kh * kw * cg
    w_abs = _cached(w, ("absmax",), _abs_max)
    ftype, chunk = gemm_plan(k, _dtype_abs_max(xh.dtype), w_abs, "Conv")
    wm, wsum = _cached(w, ("conv", group, np.dtype(ftype).str), lambda a: _conv_weights(a, group, ftype))
    xp = _pad_nhwc(xh, pads, out, (kh, kw), strides, dilations, -int(input_offset)).astype(ftype)
    m = n * out[0] * out[1]
    if (kh, kw) == (1, 1) and strides == [1, 1] and xp.shape[1:3] == tuple(out):
        patches = xp.reshape(m, group, cg)
    else:
        view = _windows_nhwc(xp, (kh, kw), strides, dilations, out)  # [N, OH, OW, kH, kW, C]
        if group == 1:
            patches = view.reshape(m, 1, k)
        else:
            patches = view.reshape(n, out[0], out[1], kh, kw, group, cg).transpose(0, 1, 2, 5, 3, 4, 6)
            patches = patches.reshape(m, group, k)
    if group == 1:
        acc = exact_matmul(patches.reshape(m, k), wm[0], chunk)  # [M, O]
    else:
        acc = exact_matmul(patches.transpose(1, 0, 2), wm, chunk).transpose(1, 0, 2).reshape(m, o)
    if input_offset:
        acc += int(input_offset) * wsum
    return acc.reshape(n, out[0], out[1], o)


def _conv_depthwise(xh, w, input_offset, strides, dilations, pads, out):
    """acc[n, y, x, c*m + j] = sum_taps (x + off)[n, y*s + i*d, x*s + t*d, c] * w[c*m + j, 0, i, t]."""
    n, _, _, c = xh.shape
    o, _, kh, kw = w.shape
    mult = o // c
    w_abs = _cached(w, ("absmax",), _abs_max)
    bound = kh * kw * _dtype_abs_max(xh.dtype, int(input_offset)) * w_abs
    acc_type = np.int32 if bound < (1 << 31) else np.int64
    xs = xh.astype(acc_type)
    if input_offset:
        xs += acc_type(input_offset)
    xp = _pad_nhwc(xs, pads, out, (kh, kw), strides, dilations, 0)
    wt = _cached(w, ("dw", np.dtype(acc_type).str),
                 lambda a: np.ascontiguousarray(a.reshape(c, mult, kh, kw).transpose(2, 3, 0, 1), acc_type))
    acc = np.zeros((n, out[0], out[1], c, mult), acc_type)
    tmp = np.empty_like(acc)
    for i in range(kh):
        for t in range(kw):
            y0, x0 = i * dilations[0], t * dilations[1]
            tap = xp[:, y0:y0 + (out[0] - 1) * strides[0] + 1:strides[0],
                     x0:x0 + (out[1] - 1) * strides[1] + 1:strides[1], :]
            np.multiply(tap[..., None], wt[i, t], out=tmp)
            acc += tmp
    return acc.reshape(n, out[0], out[1], o).astype(np.int64)


@int_kernel("Conv")
def Conv(x, w, bias=None, *, layout="NCHW", strides=None, pads=None, dilations=None, group=1, kernel_shape=None,
         input_offset=0, output_offset=0, multiplier=None, shift=None, act_min=None, act_max=None,
         accumulator="int32", rounding="double", _stats=None):
    """2-D integer convolution (TFLite CONV_2D / DEPTHWISE_CONV_2D reference arithmetic).

    x: int8/int16 [N, C, H, W] (layout "NCHW") or [N, H, W, C] ("NHWC"); w: int8 [O, C/group, kH, kW] (ONNX
    order, for both layouts); bias: int32/int64 [O] or None. pads = [top, left, bottom, right].

        acc[n, o, y, x] = bias[o] + sum_{c, i, j} w[o, c, i, j] * (x[n, g*C/group + c, y*sH + i*dH - top,
                                                                    x*sW + j*dW - left] + input_offset)
        (taps outside the image are skipped; g = o // (O/group))
        y = clamp(rescale(acc, multiplier[o], shift[o]) + output_offset, act_min, act_max)

    The output has the input's dtype. multiplier/shift hold one entry per output channel, or one for all.
    A 1-D convolution ([N, C, L] / [N, L, C], 1-D attributes) runs as a 2-D one of height 1.
    """
    _required("Conv", multiplier=multiplier, shift=shift)
    x, w = np.asarray(x), np.asarray(w)
    if layout not in ("NCHW", "NHWC"):
        raise ModelError(f"Conv: layout must be 'NCHW' or 'NHWC', got {layout!r}")
    if x.ndim == 3 and w.ndim == 3:  # 1-D: add a unit height
        x = x[:, :, None, :] if layout == "NCHW" else x[:, None, :, :]
        w = w[:, :, None, :]
        strides = None if strides is None else [1] + list(strides)
        dilations = None if dilations is None else [1] + list(dilations)
        pads = None if pads is None else [0, pads[0], 0, pads[1]]
        y = Conv(x, w, bias, layout=layout, strides=strides, pads=pads, dilations=dilations, group=group,
                 input_offset=input_offset, output_offset=output_offset, multiplier=multiplier, shift=shift,
                 act_min=act_min, act_max=act_max, accumulator=accumulator, rounding=rounding, _stats=_stats)
        return y[:, :, 0, :] if layout == "NCHW" else y[:, 0, :, :]
    if x.ndim != 4 or w.ndim != 4:
        raise ModelError(f"Conv: x {list(x.shape)} and w {list(w.shape)} must be 4-D (1-D and 2-D convolutions "
                         f"are supported)")
    xh = x.transpose(0, 2, 3, 1) if layout == "NCHW" else x
    c = xh.shape[3]
    o, cg, kh, kw = w.shape
    group = int(group)
    if group < 1 or c != cg * group or o % group:
        raise ModelError(f"Conv: x has {c} channels, w {list(w.shape)} and group {group} do not match "
                         f"(need C = w.shape[1] * group and O divisible by group)")
    if kernel_shape is not None and [int(k) for k in kernel_shape] != [kh, kw]:
        raise ModelError(f"Conv: kernel_shape {list(kernel_shape)} does not match w {list(w.shape)}")
    strides, dilations, pads, out = _conv_geometry(xh.shape[1:3], (kh, kw), strides, dilations, pads)
    if group > 1 and cg == 1:
        acc = _conv_depthwise(xh, w, input_offset, strides, dilations, pads, out)
    else:
        acc = _conv_gemm(xh, w, group, input_offset, strides, dilations, pads, out)
    acc += _bias(bias, o, "Conv")
    y = finish(rescale(acc, multiplier, shift, accumulator, rounding), output_offset, act_min, act_max,
               x.dtype, _stats)
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


# --- FullyConnected --------------------------------------------------------------------------------------------
def _fc_weights(w: np.ndarray, ftype):
    return np.ascontiguousarray(w.T, dtype=ftype), w.astype(np.int64).sum(axis=1)


@int_kernel("FullyConnected")
def FullyConnected(x, w, bias=None, *, input_offset=0, output_offset=0, multiplier=None, shift=None,
                   act_min=None, act_max=None, accumulator="int32", rounding="double", requant="multiplier",
                   effective_scale=None, _stats=None):
    """Integer fully-connected layer (TFLite FULLY_CONNECTED): x [..., K], w [N, K], bias [N] -> y [..., N].

        acc[b, n] = bias[n] + sum_k w[n, k] * (x[b, k] + input_offset)
        requant = "multiplier":  y = clamp(rescale(acc, multiplier[n], shift[n]) + output_offset, act_min, act_max)
        requant = "float64":     y = clamp(round_half_away(double(acc) * effective_scale[n]) + output_offset, ...)

    "float64" is the rescale of LiteRT's reference FULLY_CONNECTED kernel (IEEE double product, std::round,
    saturated to int32 before the offset); it is the one place an integer kernel multiplies by a float, kept
    so that imported .tflite models match LiteRT's reference bit for bit. The output has the input's dtype.
    """
    x, w = np.asarray(x), np.asarray(w)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ModelError(f"FullyConnected: x {list(x.shape)} must end in K = w.shape[1] of w {list(w.shape)} "
                         f"[N, K]")
    n, k = w.shape
    w_abs = _cached(w, ("absmax",), _abs_max)
    ftype, chunk = gemm_plan(k, _dtype_abs_max(x.dtype), w_abs, "FullyConnected")
    wt, wsum = _cached(w, ("fc", np.dtype(ftype).str), lambda a: _fc_weights(a, ftype))
    acc = exact_matmul(x.reshape(-1, k).astype(ftype), wt, chunk)
    if input_offset:
        acc += int(input_offset) * wsum
    acc += _bias(bias, n, "FullyConnected")
    if requant == "float64":
        _required("FullyConnected", effective_scale=effective_scale)
        scaled = round_half_away(acc.astype(np.float64) * np.asarray(effective_scale, np.float64).reshape(-1))
        y = np.clip(scaled, fp.INT32_MIN, fp.INT32_MAX).astype(np.int64)
    elif requant == "multiplier":
        _required("FullyConnected", multiplier=multiplier, shift=shift)
        y = rescale(acc, np.asarray(multiplier).reshape(-1), np.asarray(shift).reshape(-1), accumulator, rounding)
    else:
        raise ModelError(f"FullyConnected: requant must be 'multiplier' or 'float64', got {requant!r}")
    y = finish(y, output_offset, act_min, act_max, x.dtype, _stats)
    return y.reshape(x.shape[:-1] + (n,))
