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
The double-rounding rescale, output offset and clamp run fused (``fixedpoint.requantize_fast``).

int8 x int8 GEMMs (Conv with group 1, FullyConnected) may instead take their int32 sums from ONNX Runtime's
MatMulInteger (activations shifted to uint8, u8 x s8, the input zero point passed as MatMulInteger's):
integer sums are exact whatever computes them, provided that no int32 accumulator can overflow
(K * 255 * max|w| < 2^31, checked per call) and that the kernel has no int16
intermediate (MLAS's pre-VNNI x86 u8s8 kernels add products pairwise with int16 saturation; a worst-case
probe, ``ort_int8_gemm_is_exact``, must pass on this machine first). It clearly wins where MLAS has VNNI:
ResNet-50 W8A8 end to end, 1 thread, on a Zen 5 core (AVX-512 VNNI), ~42 ms with it vs ~106 ms with float
BLAS (``python -m lowbit.tools.bench.int_latency --runs 9``; ORT's sums take ~12 ms of the 42, float32 BLAS
~70 ms). So it is on by default; ``int8_gemm_backend("numpy")`` switches to the float-BLAS path, which stays
the definition that tests compare it with element for element.
"""
from __future__ import annotations

import contextlib
import functools
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


def exact_matmul(a: np.ndarray, b: np.ndarray, chunk: int, dtype=np.int64) -> np.ndarray:
    """a [..., M, K] @ b [..., K, N] as ``dtype`` (int64, or int32 when the caller knows the sums fit), both
    holding integers in a float type; the K axis is cut into ``chunk``-sized pieces whose (exact) float
    results are summed in ``dtype``."""
    k = a.shape[-1]
    if chunk >= k:
        return np.matmul(a, b).astype(dtype)
    acc = None
    for i in range(0, k, chunk):
        part = np.matmul(a[..., i:i + chunk], b[..., i:i + chunk, :]).astype(dtype)
        acc = part if acc is None else acc + part
    return acc


# --- exact int8 GEMM through ONNX Runtime's MatMulInteger -----------------------------------------------------
_BACKEND = {"int8_gemm": "auto"}
_INT32_LIMIT = 1 << 31


@contextlib.contextmanager
def int8_gemm_backend(name: str):
    """Within the block, int8 GEMMs use ``name``: "auto" (ONNX Runtime where provably exact, else NumPy) or
    "numpy" (float BLAS only, the definition)."""
    if name not in ("auto", "numpy"):
        raise ValueError(f"int8_gemm_backend: name must be 'auto' or 'numpy', got {name!r}")
    before = _BACKEND["int8_gemm"]
    _BACKEND["int8_gemm"] = name
    try:
        yield
    finally:
        _BACKEND["int8_gemm"] = before


def _ort_session(w_kn: np.ndarray):
    """One-node ONNX Runtime session: y int32 [M, N] = MatMulInteger(a uint8 [M, K], w, a_zero_point), with the
    int8 weights ``w_kn`` [K, N] as a constant (prepacked once by ORT)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_kn.shape
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w", "a_zero_point"], ["y"])],
        "lowbit_int8_gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, ["M", k]),
         helper.make_tensor_value_info("a_zero_point", TensorProto.UINT8, [])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, ["M", n])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(w_kn, np.int8), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _ort_gemm(session, a_u8: np.ndarray, zero_point: int) -> np.ndarray:
    return session.run(None, {"a": np.ascontiguousarray(a_u8), "a_zero_point": np.array(zero_point, np.uint8)})[0]


@functools.lru_cache(maxsize=1)
def ort_int8_gemm_is_exact() -> bool:
    """Whether ONNX Runtime's u8 x s8 MatMulInteger returns exact sums on this machine, on the inputs that break
    kernels with int16 intermediates: every product pair 255 * 127 or 255 * (-128) (VPMADDUBSW saturates
    them), alternating signs, zero points 0, 128 and 255, random values, an odd K, one row (GEMV) and many.
    MLAS picks its kernels once per process from the CPU, so one probe answers for every session."""
    try:
        rng = np.random.default_rng(0)
        k = 259
        cols = [np.full(k, 127), np.full(k, -128), np.resize([127, -128], k), np.resize([-128, 127, 127], k),
                rng.integers(-128, 128, k)]
        w = np.stack(cols, axis=1).astype(np.int8)
        rows = [np.full(k, 255), np.zeros(k), np.resize([255, 0], k), rng.integers(0, 256, k),
                np.resize([255, 255, 1], k)]
        a = np.stack(rows + [rng.integers(0, 256, k) for _ in range(35)]).astype(np.uint8)
        session = _ort_session(w)
        for zp in (0, 128, 255):
            for rows_used in (a[:1], a[1:2], a):
                got = _ort_gemm(session, rows_used, zp)
                want = (rows_used.astype(np.int64) - zp) @ w.astype(np.int64)
                if got.dtype != np.int32 or not np.array_equal(got, want):
                    return False
        return True
    except Exception:  # noqa: BLE001 -- any failure (no onnxruntime, no such kernel) means: use NumPy
        return False


def _ort_usable(x_dtype, k: int, w_abs: int, input_offset: int) -> bool:
    """The ORT path applies to int8 activations whose zero point is an int8, when no int32 sum can overflow."""
    return (_BACKEND["int8_gemm"] == "auto" and x_dtype == np.int8 and -128 <= -int(input_offset) <= 127
            and k * 255 * w_abs < _INT32_LIMIT and ort_int8_gemm_is_exact())


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


def _act_range(act_min, act_max, dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    lo = int(info.min) if act_min is None else int(act_min)
    hi = int(info.max) if act_max is None else int(act_max)
    if not info.min <= lo <= hi <= info.max:
        raise ModelError(f"act_min/act_max [{lo}, {hi}] must lie in the {np.dtype(dtype).name} range")
    return lo, hi


def finish(y, output_offset: int, act_min: int, act_max: int, dtype, stats) -> np.ndarray:
    """y + output_offset, clamped to [act_min, act_max] and cast to ``dtype``; clamped values are counted."""
    y = np.asarray(y, np.int64) + int(output_offset)
    lo, hi = _act_range(act_min, act_max, dtype)
    if stats is not None:
        stats["saturated"] = stats.get("saturated", 0) + fp.saturate_count(y, lo, hi)
    return np.clip(y, lo, hi).astype(dtype)


def requantize(acc, acc_abs_max, bias, multiplier, shift, output_offset, act_min, act_max, accumulator, rounding,
               dtype, stats) -> np.ndarray:
    """finish(rescale(acc + bias, multiplier, shift, accumulator, rounding), output_offset, ...), per channel
    along the last axis; ``acc_abs_max`` bounds |acc|, ``bias`` is int64 [channels]. The int32 double-rounding
    case runs fused: the bias goes into the rescale's constant under a fused ReLU (act_min >= output_offset,
    where the rescale needs no sign test), else into acc first (in place, in int32 when it fits)."""
    if accumulator == "int32" and rounding == "double":
        lo, hi = _act_range(act_min, act_max, dtype)
        bias_abs = int(np.max(np.abs(bias))) if bias.size else 0
        if lo < int(output_offset) and bias_abs:
            acc, acc_abs_max, bias = _plus_bias(acc, acc_abs_max, bias, bias_abs), acc_abs_max + bias_abs, None
        y, saturated = fp.requantize_fast(acc, multiplier, shift, bias=bias, offset=int(output_offset), lo=lo,
                                          hi=hi, dtype=dtype, x_abs_max=acc_abs_max, count=stats is not None)
        if stats is not None:
            stats["saturated"] = stats.get("saturated", 0) + saturated
        return y
    return finish(rescale(acc.astype(np.int64) + bias, multiplier, shift, accumulator, rounding), output_offset,
                  act_min, act_max, dtype, stats)


def _output_dtype(op: str, x_dtype, to) -> np.dtype:
    """The output dtype: the input's, or ``to`` when given (int8 or int16, never narrower than the input)."""
    if to is None:
        return np.dtype(x_dtype)
    if to not in ("int8", "int16") or np.dtype(to).itemsize < np.dtype(x_dtype).itemsize:
        raise ModelError(f"{op}: 'to' must be 'int8' or 'int16' and at least as wide as the input "
                         f"({np.dtype(x_dtype).name}), got {to!r}")
    return np.dtype(to)


def _bias(bias, n: int, op: str) -> np.ndarray:
    """The bias as int64 [n] (zeros when there is none)."""
    if bias is None:
        return np.zeros(n, np.int64)
    b = np.asarray(bias).reshape(-1)
    if b.size != n:
        raise ModelError(f"{op}: bias has {b.size} values for {n} output channels")
    return b.astype(np.int64)


def _plus_bias(acc: np.ndarray, acc_abs_max: int, bias: np.ndarray, bias_abs: int) -> np.ndarray:
    """acc + bias (per channel, last axis); in place in int32 when |acc| + |bias| fits one."""
    if acc.dtype == np.int32 and acc_abs_max + bias_abs < _INT32_LIMIT:
        r = fp.tile_factor(acc, bias.size)
        rows = acc.reshape(-1, r * bias.size) if r > 1 else acc
        rows += np.tile(bias.astype(np.int32), r)
        return acc
    return acc.astype(np.int64) + bias


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


def _patches(xp: np.ndarray, k_hw, strides, dilations, out, group: int) -> np.ndarray:
    """im2col of the padded NHWC ``xp``: [M, group, kH*kW*C/group] (taps in (kH, kW, C) order)."""
    n, c = xp.shape[0], xp.shape[3]
    kh, kw = k_hw
    cg = c // group
    m = n * out[0] * out[1]
    if (kh, kw) == (1, 1) and strides == [1, 1] and xp.shape[1:3] == tuple(out):
        return xp.reshape(m, group, cg)
    view = _windows_nhwc(xp, (kh, kw), strides, dilations, out)  # [N, OH, OW, kH, kW, C]
    if group == 1:
        return view.reshape(m, 1, kh * kw * c)
    patches = view.reshape(n, out[0], out[1], kh, kw, group, cg).transpose(0, 1, 2, 5, 3, 4, 6)
    return patches.reshape(m, group, kh * kw * cg)


def _to_uint8(x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """int8 -> uint8 by adding 128 (flipping the sign bit), into ``out`` if given."""
    if out is None:
        out = np.empty(x.shape, np.uint8)
    return np.bitwise_xor(x.view(np.uint8), np.uint8(0x80), out=out)


def _conv_gemm(xh, w, bias, group, input_offset, strides, dilations, pads, out):
    """(acc, a bound on |acc|, addend [O]) with acc [N, OH, OW, O] + addend = bias + sum w * (x + input_offset)."""
    n = xh.shape[0]
    o, cg, kh, kw = w.shape
    k = kh * kw * cg
    m = n * out[0] * out[1]
    w_abs = _cached(w, ("absmax",), _abs_max)
    b = _bias(bias, o, "Conv")
    if group == 1 and _ort_usable(xh.dtype, k, w_abs, input_offset):
        zero_point = 128 - int(input_offset)  # the input zero point, shifted like x
        need_h = (out[0] - 1) * strides[0] + (kh - 1) * dilations[0] + 1
        need_w = (out[1] - 1) * strides[1] + (kw - 1) * dilations[1] + 1
        _, h, wd, c = xh.shape
        if pads[0] == 0 and pads[1] == 0 and need_h <= h and need_w <= wd:
            xp = _to_uint8(xh)
        else:
            xp = np.full((n, max(need_h, pads[0] + h), max(need_w, pads[1] + wd), c), zero_point, np.uint8)
            _to_uint8(xh, xp[:, pads[0]:pads[0] + h, pads[1]:pads[1] + wd, :])
        patches = _patches(xp, (kh, kw), strides, dilations, out, 1).reshape(m, k)
        session = _cached(w, ("ort",), lambda a: _ort_session(_conv_weights(a, 1, np.int8)[0][0]))
        acc = _ort_gemm(session, patches, zero_point)
        return acc.reshape(n, out[0], out[1], o), k * 255 * w_abs, b
    x_abs = _dtype_abs_max(xh.dtype)
    ftype, chunk = gemm_plan(k, x_abs, w_abs, "Conv")
    wm, wsum = _cached(w, ("conv", group, np.dtype(ftype).str), lambda a: _conv_weights(a, group, ftype))
    xp = _pad_nhwc(xh, pads, out, (kh, kw), strides, dilations, -int(input_offset)).astype(ftype)
    patches = _patches(xp, (kh, kw), strides, dilations, out, group)
    bound = k * x_abs * w_abs
    acc_type = np.int32 if bound < _INT32_LIMIT else np.int64
    if group == 1:
        acc = exact_matmul(patches.reshape(m, k), wm[0], chunk, acc_type)  # [M, O]
    else:
        acc = exact_matmul(patches.transpose(1, 0, 2), wm, chunk, acc_type).transpose(1, 0, 2).reshape(m, o)
    return acc.reshape(n, out[0], out[1], o), bound, int(input_offset) * wsum + b


def _conv_depthwise(xh, w, bias, input_offset, strides, dilations, pads, out):
    """(acc, bound on |acc|, bias): acc[n, y, x, c*m + j] = sum_taps (x + off)[n, y*s + i*d, x*s + t*d, c]
    * w[c*m + j, 0, i, t]."""
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
    return acc.reshape(n, out[0], out[1], o), bound, _bias(bias, o, "Conv")


@int_kernel("Conv")
def Conv(x, w, bias=None, *, layout="NCHW", strides=None, pads=None, dilations=None, group=1, kernel_shape=None,
         input_offset=0, output_offset=0, multiplier=None, shift=None, act_min=None, act_max=None,
         accumulator="int32", rounding="double", to=None, _stats=None):
    """2-D integer convolution (TFLite CONV_2D / DEPTHWISE_CONV_2D reference arithmetic).

    x: int8/int16 [N, C, H, W] (layout "NCHW") or [N, H, W, C] ("NHWC"); w: int8 [O, C/group, kH, kW] (ONNX
    order, for both layouts); bias: int32/int64 [O] or None. pads = [top, left, bottom, right].

        acc[n, o, y, x] = bias[o] + sum_{c, i, j} w[o, c, i, j] * (x[n, g*C/group + c, y*sH + i*dH - top,
                                                                    x*sW + j*dW - left] + input_offset)
        (taps outside the image are skipped; g = o // (O/group))
        y = clamp(rescale(acc, multiplier[o], shift[o]) + output_offset, act_min, act_max)

    The output has the input's dtype, or ``to`` ("int8" / "int16"): an int8 input may give an int16 output
    (the int32 accumulator rescaled to a 16-bit spec; no TFLite builtin does this, lowbit uses it for the input
    current of a LIF neuron, see quant/lower_recurrent.py). multiplier/shift hold one entry per output
    channel, or one for all. A 1-D convolution ([N, C, L] / [N, L, C], 1-D attributes) runs as a 2-D one of height 1.
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
                 act_min=act_min, act_max=act_max, accumulator=accumulator, rounding=rounding, to=to,
                 _stats=_stats)
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
        acc, bound, addend = _conv_depthwise(xh, w, bias, input_offset, strides, dilations, pads, out)
    else:
        acc, bound, addend = _conv_gemm(xh, w, bias, group, input_offset, strides, dilations, pads, out)
    y = requantize(acc, bound, addend, multiplier, shift, output_offset, act_min, act_max, accumulator, rounding,
                   _output_dtype("Conv", x.dtype, to), _stats)
    return y.transpose(0, 3, 1, 2) if layout == "NCHW" else y


# --- FullyConnected --------------------------------------------------------------------------------------------
def _fc_weights(w: np.ndarray, ftype):
    return np.ascontiguousarray(w.T, dtype=ftype), w.astype(np.int64).sum(axis=1)


@int_kernel("FullyConnected")
def FullyConnected(x, w, bias=None, *, input_offset=0, output_offset=0, multiplier=None, shift=None,
                   act_min=None, act_max=None, accumulator="int32", rounding="double", requant="multiplier",
                   effective_scale=None, to=None, _stats=None):
    """Integer fully-connected layer (TFLite FULLY_CONNECTED): x [..., K], w [N, K], bias [N] -> y [..., N].

        acc[b, n] = bias[n] + sum_k w[n, k] * (x[b, k] + input_offset)
        requant = "multiplier":  y = clamp(rescale(acc, multiplier[n], shift[n]) + output_offset, act_min, act_max)
        requant = "float64":     y = clamp(round_half_away(double(acc) * effective_scale[n]) + output_offset, ...)

    "float64" is the rescale of LiteRT's reference FULLY_CONNECTED kernel (IEEE double product, std::round,
    saturated to int32 before the offset); it is the one place an integer kernel multiplies by a float, kept
    so that imported .tflite models match LiteRT's reference bit for bit. The output has the input's dtype, or
    ``to`` (an int8 input may give an int16 output, as for Conv).
    """
    x, w = np.asarray(x), np.asarray(w)
    if w.ndim != 2 or x.ndim < 1 or x.shape[-1] != w.shape[1]:
        raise ModelError(f"FullyConnected: x {list(x.shape)} must end in K = w.shape[1] of w {list(w.shape)} "
                         f"[N, K]")
    n, k = w.shape
    out_dtype = _output_dtype("FullyConnected", x.dtype, to)
    if requant not in ("multiplier", "float64"):
        raise ModelError(f"FullyConnected: requant must be 'multiplier' or 'float64', got {requant!r}")
    w_abs = _cached(w, ("absmax",), _abs_max)
    addend = _bias(bias, n, "FullyConnected")
    x2 = x.reshape(-1, k)
    if _ort_usable(x.dtype, k, w_abs, input_offset):
        session = _cached(w, ("ort",), lambda a: _ort_session(a.T))
        acc = _ort_gemm(session, _to_uint8(x2), 128 - int(input_offset))
        bound = k * 255 * w_abs
    else:
        x_abs = _dtype_abs_max(x.dtype)
        ftype, chunk = gemm_plan(k, x_abs, w_abs, "FullyConnected")
        wt, wsum = _cached(w, ("fc", np.dtype(ftype).str), lambda a: _fc_weights(a, ftype))
        bound = k * x_abs * w_abs
        acc = exact_matmul(x2.astype(ftype), wt, chunk, np.int32 if bound < _INT32_LIMIT else np.int64)
        addend = addend + int(input_offset) * wsum
    if requant == "float64":
        _required("FullyConnected", effective_scale=effective_scale)
        acc = acc.astype(np.float64) + addend
        scaled = round_half_away(acc * np.asarray(effective_scale, np.float64).reshape(-1))
        y = finish(np.clip(scaled, fp.INT32_MIN, fp.INT32_MAX).astype(np.int64), output_offset, act_min, act_max,
                   out_dtype, _stats)
    else:
        _required("FullyConnected", multiplier=multiplier, shift=shift)
        y = requantize(acc, bound, addend, np.asarray(multiplier).reshape(-1), np.asarray(shift).reshape(-1),
                       output_offset, act_min, act_max, accumulator, rounding, out_dtype, _stats)
    return y.reshape(x.shape[:-1] + (n,))
