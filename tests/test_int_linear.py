"""Integer Conv / FullyConnected / pools / Mean / (de/re)quantize kernels and their Prepare functions, on hard
cases, against plain-Python transcriptions of TFLite's reference loops (Python integers, taps outside the image
skipped, TFLite's rescale written out from gemmlowp's definitions). The bit-exact comparisons with LiteRT itself
are in test_tflite_linear.py.
"""
import math

import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant.prepare_linear import (activation_range, prepare_conv, prepare_dequantize, prepare_fully_connected,
                                         prepare_mean, prepare_quantize, prepare_requantize)
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.kernels.int import linear
from lowbit.runtime.kernels.int.linear import (Conv, FullyConnected, gemm_plan, int8_gemm_backend,
                                               ort_int8_gemm_is_exact)
from lowbit.runtime.kernels.int.pool import AvgPool, MaxPool, Mean
from lowbit.runtime.kernels.int.quantize import Dequantize, Quantize, Requantize

I32_MIN, I32_MAX = -(1 << 31), (1 << 31) - 1


# --- TFLite's rescale, written out on Python integers -----------------------------------------------------------
def _c_div(a: int, b: int) -> int:
    """C++ integer division (truncates toward zero)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def ref_mbqm(x: int, m: int, s: int) -> int:
    """MultiplyByQuantizedMultiplier, int32 (gemmlowp SRDHM then RoundingDivideByPOT)."""
    left, right = max(s, 0), max(-s, 0)
    a = x * (1 << left)
    if a == I32_MIN and m == I32_MIN:
        high = I32_MAX
    else:
        ab = a * m
        high = _c_div(ab + ((1 << 30) if ab >= 0 else 1 - (1 << 30)), 1 << 31)
    mask = (1 << right) - 1
    rem, thr = high & mask, (mask >> 1) + (1 if high < 0 else 0)
    return (high >> right) + (1 if rem > thr else 0)


def ref_mbqm64(x: int, m: int, s: int) -> int:
    """The int64 MultiplyByQuantizedMultiplier of TFLite's 16x8 kernels."""
    reduced = (m + (1 << 15)) >> 16 if m < 0x7FFF0000 else 0x7FFF
    total = 15 - s
    return (x * reduced + (1 << (total - 1))) >> total


def ref_rescale(acc, m, s, accumulator):
    return ref_mbqm64(acc, m, s) if accumulator == "int64" else ref_mbqm(acc, m, s)


# --- reference loops ---------------------------------------------------------------------------------------------
def ref_conv_nhwc(x, w, b, strides, dil, pads, group, attrs):
    """TFLite's ConvPerChannel / DepthwiseConvPerChannel loop over x [N, H, W, C], w [O, C/g, kH, kW] (ONNX)."""
    n, h, wd, _ = x.shape
    o, cg, kh, kw = w.shape
    oh = (h + pads[0] + pads[2] - (kh - 1) * dil[0] - 1) // strides[0] + 1
    ow = (wd + pads[1] + pads[3] - (kw - 1) * dil[1] - 1) // strides[1] + 1
    m = np.broadcast_to(attrs["multiplier"], (o,))
    sh = np.broadcast_to(attrs["shift"], (o,))
    y = np.zeros((n, oh, ow, o), np.int64)
    og = o // group
    xi = x.astype(np.int64) + attrs["input_offset"]
    wi = w.astype(np.int64)
    for bn in range(n):
        for oy in range(oh):
            for ox in range(ow):
                for oc in range(o):
                    g = oc // og
                    acc = 0
                    for i in range(kh):
                        iy = oy * strides[0] - pads[0] + i * dil[0]
                        for j in range(kw):
                            ix = ox * strides[1] - pads[1] + j * dil[1]
                            if 0 <= iy < h and 0 <= ix < wd:
                                acc += int(np.dot(wi[oc, :, i, j], xi[bn, iy, ix, g * cg:(g + 1) * cg]))
                    acc += 0 if b is None else int(b[oc])
                    v = ref_rescale(acc, int(m[oc]), int(sh[oc]), attrs["accumulator"]) + attrs["output_offset"]
                    y[bn, oy, ox, oc] = min(max(v, attrs["act_min"]), attrs["act_max"])
    return y.astype(x.dtype)


def _conv_attrs(rng, o, x_dtype, per_channel=True, zp=0, out_zp=0, act=(None, None)):
    info = np.iinfo(x_dtype)
    n = o if per_channel else 1
    return {"input_offset": -zp, "output_offset": out_zp,
            "multiplier": rng.integers(1 << 30, (1 << 31) - 1, size=n).astype(np.int32),
            "shift": rng.integers(-12, -6, size=n).astype(np.int32),
            "act_min": info.min if act[0] is None else act[0], "act_max": info.max if act[1] is None else act[1],
            "accumulator": "int64" if x_dtype == np.int16 else "int32", "rounding": "double"}


CONV_CASES = {  # name: (x NHWC shape, w ONNX shape, group, strides, dilations, pads [t, l, b, r])
    "3x3_same": ((1, 7, 8, 3), (4, 3, 3, 3), 1, [1, 1], [1, 1], [1, 1, 1, 1]),
    "asym_pads_strided": ((2, 9, 7, 3), (5, 3, 3, 2), 1, [2, 3], [1, 1], [0, 2, 1, 0]),
    "dilated": ((1, 10, 9, 2), (3, 2, 3, 3), 1, [1, 1], [2, 3], [2, 1, 0, 3]),
    "grouped": ((1, 6, 7, 6), (9, 2, 3, 3), 3, [1, 2], [1, 1], [1, 1, 1, 1]),
    "pointwise": ((2, 5, 6, 8), (16, 8, 1, 1), 1, [1, 1], [1, 1], [0, 0, 0, 0]),
    "pointwise_strided": ((1, 7, 6, 8), (4, 8, 1, 1), 1, [2, 2], [1, 1], [0, 0, 0, 0]),
    "depthwise": ((2, 9, 9, 6), (6, 1, 3, 3), 6, [2, 2], [1, 1], [1, 1, 1, 1]),
    "depthwise_mult2": ((1, 8, 8, 4), (8, 1, 3, 5), 4, [1, 1], [1, 2], [1, 2, 1, 2]),
    "depthwise_odd": ((1, 11, 10, 3), (9, 1, 3, 3), 3, [2, 3], [2, 1], [2, 0, 1, 2]),
}


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("case", list(CONV_CASES))
def test_conv_matches_reference_loop(case, dtype, layout, rng):
    x_shape, w_shape, group, strides, dil, pads = CONV_CASES[case]
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=x_shape, endpoint=True).astype(dtype)
    x.reshape(-1)[:2] = [info.min, info.max]
    w = rng.integers(-127, 127, size=w_shape, endpoint=True).astype(np.int8)
    b = rng.integers(-5000, 5000, size=w_shape[0]).astype(np.int64 if dtype == np.int16 else np.int32)
    zp = 0 if dtype == np.int16 else 37
    attrs = _conv_attrs(rng, w_shape[0], dtype, per_channel=case != "pointwise", zp=zp,
                        out_zp=0 if dtype == np.int16 else -9, act=(None, None) if case != "3x3_same" else (-100, 90))
    expected = ref_conv_nhwc(x, w, b, strides, dil, pads, group, attrs)
    xin = x if layout == "NHWC" else x.transpose(0, 3, 1, 2)
    got = Conv(xin, w, b, layout=layout, strides=strides, dilations=dil, pads=pads, group=group, **attrs)
    if layout == "NCHW":
        got = got.transpose(0, 2, 3, 1)
    assert got.dtype == dtype and np.array_equal(got, expected)


def test_conv_read_only_weights_are_cached_and_writable_ones_are_not(rng):
    x = rng.integers(-128, 127, size=(1, 5, 5, 4)).astype(np.int8)
    w = rng.integers(-127, 127, size=(3, 4, 3, 3)).astype(np.int8)
    attrs = _conv_attrs(rng, 3, np.int8, zp=5)
    first = Conv(x, w, None, layout="NHWC", pads=[1, 1, 1, 1], **attrs)
    w[:] = -w  # a writable array may change between calls
    flipped = Conv(x, w, None, layout="NHWC", pads=[1, 1, 1, 1], **attrs)
    assert np.array_equal(flipped, ref_conv_nhwc(x, w, None, [1, 1], [1, 1], [1, 1, 1, 1], 1, attrs))
    assert not np.array_equal(first, flipped)
    w.flags.writeable = False
    again = [Conv(x, w, None, layout="NHWC", pads=[1, 1, 1, 1], **attrs) for _ in range(2)]
    assert np.array_equal(again[0], flipped) and np.array_equal(again[1], flipped)


def test_gemm_plan_exactness_bounds():
    assert gemm_plan(1024, 128, 127, "t") == (np.float32, 1024)  # 1024 * 128 * 127 < 2^24
    assert gemm_plan(1033, 128, 127, "t") == (np.float32, 1024)  # float32 in chunks of K <= 1032
    assert gemm_plan(4, 32768, 127, "t") == (np.float32, 4)  # int16 x int8: float32 only up to K = 4
    assert gemm_plan(5, 32768, 127, "t") == (np.float64, 5)
    with pytest.raises(ModelError, match="2\\^53"):
        gemm_plan(1 << 30, 32768, 32767, "t")


@pytest.mark.parametrize("k", [1024, 1500, 2048])
def test_conv_worst_case_sums_stay_exact(k):
    """Saturated inputs and weights: float32 partial sums would round past 2^24; the kernel must not."""
    x = np.full((1, 1, 2, k), -128, np.int8)
    x[0, 0, 1, ::2] = 127
    w = np.full((2, k, 1, 1), -127, np.int8)
    w[1, 1::3] = 127
    attrs = {"input_offset": 0, "output_offset": 0, "multiplier": np.array([1 << 30], np.int32),
             "shift": np.array([-18], np.int32), "act_min": -128, "act_max": 127, "accumulator": "int32"}
    got = Conv(x, w, np.array([1, -1], np.int32), layout="NHWC", **attrs)
    expected = ref_conv_nhwc(x, w, np.array([1, -1]), [1, 1], [1, 1], [0, 0, 0, 0], 1, attrs)
    assert np.array_equal(got, expected)


def test_depthwise_large_int16_kernel_uses_wide_accumulator():
    """23 x 23 taps of 32767 * 127 overflow int32; the depthwise path must switch to int64."""
    x = np.full((1, 23, 23, 2), 32767, np.int16)
    x[..., 1] = -32768
    w = np.full((2, 1, 23, 23), 127, np.int8)
    attrs = {"input_offset": 0, "output_offset": 0, "multiplier": np.array([1 << 30, 1 << 30], np.int32),
             "shift": np.array([-14, -14], np.int32), "act_min": -32768, "act_max": 32767, "accumulator": "int64"}
    got = Conv(x, w, None, layout="NHWC", group=2, **attrs)
    expected = ref_conv_nhwc(x, w, None, [1, 1], [1, 1], [0, 0, 0, 0], 2, attrs)
    assert np.array_equal(got, expected) and got[0, 0, 0, 0] == 32767  # and it saturates


def test_conv_counts_saturations_at_act_bounds(rng):
    x = rng.integers(-128, 127, size=(1, 6, 6, 3)).astype(np.int8)
    w = rng.integers(-127, 127, size=(4, 3, 3, 3)).astype(np.int8)
    attrs = _conv_attrs(rng, 4, np.int8, zp=-3, act=(-20, 20))
    stats = {}
    y = Conv(x, w, None, layout="NHWC", _stats=stats, **attrs)
    unclamped = ref_conv_nhwc(x, w, None, [1, 1], [1, 1], [0] * 4, 1, dict(attrs, act_min=-10 ** 9, act_max=10 ** 9))
    assert stats["saturated"] == int(((unclamped < -20) | (unclamped > 20)).sum()) > 0
    assert y.min() >= -20 and y.max() <= 20


def test_conv_int32_accumulator_extremes():
    """Accumulators at INT32_MAX / INT32_MIN (bias-driven) rescale like TFLite's int32 arithmetic."""
    x = np.zeros((1, 1, 1, 1), np.int8)
    w = np.ones((2, 1, 1, 1), np.int8)
    bias = np.array([I32_MAX, I32_MIN], np.int32)
    attrs = {"input_offset": 0, "output_offset": 3, "multiplier": np.array([I32_MAX, 1 << 30], np.int32),
             "shift": np.array([-24, -24], np.int32), "act_min": -128, "act_max": 127, "accumulator": "int32"}
    got = Conv(x, w, bias, layout="NHWC", **attrs)
    assert got.reshape(-1).tolist() == [min(127, ref_mbqm(I32_MAX, I32_MAX, -24) + 3),
                                        max(-128, ref_mbqm(I32_MIN, 1 << 30, -24) + 3)]


def test_conv_one_dimensional(rng):
    x = rng.integers(-128, 127, size=(2, 3, 9)).astype(np.int8)  # NCL
    w = rng.integers(-127, 127, size=(4, 3, 3)).astype(np.int8)
    attrs = _conv_attrs(rng, 4, np.int8, zp=2)
    got = Conv(x, w, None, strides=[2], pads=[1, 1], **attrs)
    expected = ref_conv_nhwc(x.transpose(0, 2, 1)[:, None], w[:, :, None, :], None, [1, 2], [1, 1], [0, 1, 0, 1], 1,
                             attrs)
    assert np.array_equal(got, expected[:, 0].transpose(0, 2, 1))


def test_conv_errors_name_the_problem(rng):
    x = np.zeros((1, 4, 4, 3), np.int8)
    with pytest.raises(ModelError, match="group"):
        Conv(x, np.zeros((4, 2, 3, 3), np.int8), layout="NHWC", multiplier=[1 << 30], shift=[0])
    with pytest.raises(ModelError, match="missing integer attribute"):
        Conv(x, np.zeros((4, 3, 3, 3), np.int8), layout="NHWC")


# --- FullyConnected ------------------------------------------------------------------------------------------------
def ref_fc(x, w, b, attrs):
    xm = x.reshape(-1, x.shape[-1]).astype(np.int64) + attrs["input_offset"]
    out = np.zeros((xm.shape[0], w.shape[0]), np.int64)
    for r in range(xm.shape[0]):
        for n in range(w.shape[0]):
            acc = int(np.dot(w[n].astype(np.int64), xm[r])) + (0 if b is None else int(b[n]))
            if attrs.get("requant") == "float64":
                v = float(acc) * float(np.broadcast_to(attrs["effective_scale"], (w.shape[0],))[n])
                v = int(math.copysign(math.floor(abs(v) + 0.5), v))  # std::round: half away from zero
            else:
                m = int(np.broadcast_to(attrs["multiplier"], (w.shape[0],))[n])
                s = int(np.broadcast_to(attrs["shift"], (w.shape[0],))[n])
                v = ref_rescale(acc, m, s, attrs["accumulator"])
            out[r, n] = min(max(v + attrs["output_offset"], attrs["act_min"]), attrs["act_max"])
    return out.reshape(x.shape[:-1] + (w.shape[0],)).astype(x.dtype)


@pytest.mark.parametrize("requant", ["multiplier", "float64"])
@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("shape", [(1, 16), (3, 5, 40), (2, 1300)])
def test_fully_connected_matches_reference_loop(shape, dtype, requant, rng):
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    w = rng.integers(-127, 127, size=(6, shape[-1]), endpoint=True).astype(np.int8)
    w[0] = -127
    x.reshape(-1, shape[-1])[0] = info.min  # a worst-case row
    b = rng.integers(-3000, 3000, size=6).astype(np.int64 if dtype == np.int16 else np.int32)
    in_q = QuantSpec(16 if dtype == np.int16 else 8, 0.02, 0 if dtype == np.int16 else -7)
    out_q = QuantSpec(16 if dtype == np.int16 else 8, 2.5 if dtype == np.int8 else 0.4, 0 if dtype == np.int16 else 4)
    w_q = QuantSpec(8, rng.uniform(0.001, 0.01, size=6), np.zeros(6, np.int64), 0, narrow=True)
    attrs = prepare_fully_connected(in_q, w_q, out_q, None, None, requant=requant)
    got = FullyConnected(x, w, b, **attrs)
    assert got.shape == shape[:-1] + (6,) and np.array_equal(got, ref_fc(x, w, b, attrs))


@pytest.mark.parametrize("requant", ["multiplier", "float64"])
def test_fully_connected_int8_input_int16_output_matches_reference_loop(requant, rng):
    """``to="int16"`` (a LIF's input current): the int32 accumulator rescaled to an int16 spec; the loop is the
    same with the int16 clamp."""
    x = rng.integers(-128, 127, size=(4, 50), endpoint=True).astype(np.int8)
    w = rng.integers(-127, 127, size=(6, 50), endpoint=True).astype(np.int8)
    b = rng.integers(-3000, 3000, size=6).astype(np.int32)
    in_q, out_q = QuantSpec(8, 0.02, -7), QuantSpec(16, 0.0005, 0)
    w_q = QuantSpec(8, rng.uniform(0.001, 0.01, size=6), np.zeros(6, np.int64), 0, narrow=True)
    attrs = prepare_fully_connected(in_q, w_q, out_q, None, None, requant=requant)
    assert attrs["to"] == "int16" and attrs["accumulator"] == "int32"
    got = FullyConnected(x, w, b, **attrs)
    assert got.dtype == np.int16 and np.abs(got.astype(np.int64)).max() > 127
    expected = ref_fc(x.astype(np.int16), w, b, attrs)  # the loop's output dtype is its input's
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("case", ["3x3_same", "depthwise"])
def test_conv_int8_input_int16_output_matches_reference_loop(case, rng):
    x_shape, w_shape, group, strides, dil, pads = CONV_CASES[case]
    x = rng.integers(-128, 127, size=x_shape, endpoint=True).astype(np.int8)
    w = rng.integers(-127, 127, size=w_shape, endpoint=True).astype(np.int8)
    b = rng.integers(-5000, 5000, size=w_shape[0]).astype(np.int32)
    attrs = {**_conv_attrs(rng, w_shape[0], np.int8, zp=11), "act_min": -32768, "act_max": 32767, "to": "int16"}
    attrs["shift"] = np.full(w_shape[0], -2, np.int32)  # outputs well past the int8 range
    got = Conv(x, w, b, layout="NHWC", strides=strides, dilations=dil, pads=pads, group=group, **attrs)
    expected = ref_conv_nhwc(x.astype(np.int16), w, b, strides, dil, pads, group, attrs)
    assert got.dtype == np.int16 and np.abs(got.astype(np.int64)).max() > 127 and np.array_equal(got, expected)


def test_linear_output_dtype_is_never_narrower_than_the_input():
    x = np.zeros((1, 4), np.int16)
    with pytest.raises(ModelError, match="'to' must be 'int8' or 'int16' and at least as wide"):
        FullyConnected(x, np.ones((2, 4), np.int8), None, multiplier=[1 << 30], shift=[0], to="int8")
    with pytest.raises(ValueError, match="at least as wide as the input"):
        prepare_fully_connected(QuantSpec(16, 0.1, 0), QuantSpec(8, 0.1, 0, narrow=True), QuantSpec(8, 0.1, 0))


def test_fully_connected_float64_requant_ties_round_away_from_zero():
    x = np.array([[3], [-3], [1], [-1], [5]], np.int8)
    w = np.ones((1, 1), np.int8)
    attrs = {"input_offset": 0, "output_offset": 0, "act_min": -128, "act_max": 127, "requant": "float64",
             "effective_scale": np.array([0.5])}
    assert FullyConnected(x, w, None, **attrs).reshape(-1).tolist() == [2, -2, 1, -1, 3]


def test_fully_connected_rejects_bad_shapes():
    with pytest.raises(ModelError, match="K"):
        FullyConnected(np.zeros((2, 5), np.int8), np.zeros((3, 4), np.int8), multiplier=[1], shift=[0])


# --- the ONNX Runtime int8 GEMM path against the NumPy (float BLAS) path ---------------------------------------
def _both_backends(fn):
    """fn() under the default backend (ONNX Runtime where provably exact) and under NumPy only."""
    auto = fn()
    with int8_gemm_backend("numpy"):
        numpy_only = fn()
    return auto, numpy_only


def _count_ort_calls(monkeypatch):
    calls = []
    real = linear._ort_gemm
    monkeypatch.setattr(linear, "_ort_gemm", lambda *a: calls.append(a[1].shape) or real(*a))
    return calls


WORST_CONV = {  # name: (x NHWC shape, w ONNX shape, strides, pads); K up to 4608 = 3 * 3 * 512
    "3x3x512": ((1, 4, 5, 512), (8, 512, 3, 3), [1, 1], [1, 1, 1, 1]),
    "1x1x2048_strided": ((1, 5, 5, 2048), (6, 2048, 1, 1), [2, 2], [0, 0, 0, 0]),
    "7x7x3_s2": ((1, 12, 11, 3), (5, 3, 7, 7), [2, 2], [3, 3, 3, 3]),
}


@pytest.mark.parametrize("zp", [-128, 0, 127])
@pytest.mark.parametrize("case", list(WORST_CONV))
def test_conv_ort_gemm_equals_numpy_on_saturated_inputs(case, zp, rng, monkeypatch):
    """Saturated activations (-128/127 in the rows that maximise every sum), weights at -128/127 and the
    extreme zero points: the int32 sums of the ORT path are exact, and the outputs and saturation counts equal
    the NumPy path's element for element (with and without a fused ReLU)."""
    x_shape, w_shape, strides, pads = WORST_CONV[case]
    x = rng.choice(np.array([-128, 127], np.int8), size=x_shape)
    x[0, 0] = 127
    x[0, 1] = -128
    w = rng.choice(np.array([-128, 127], np.int8), size=w_shape)
    w[0] = 127
    w[1] = -128
    w.flags.writeable = False
    bias = np.array([(1 << 24) * (-1) ** i for i in range(w_shape[0])], np.int32)
    calls = _count_ort_calls(monkeypatch)
    for act_min, out_zp in ((-128, 3), (3, 3), (-128, -128)):
        attrs = _conv_attrs(rng, w_shape[0], np.int8, zp=zp, out_zp=out_zp, act=(act_min, 127))
        attrs["shift"][:] = -16  # typical sums land inside the int8 range, the maximal ones saturate
        stats_auto, stats_numpy = {}, {}
        auto = Conv(x, w, bias, layout="NHWC", strides=strides, pads=pads, _stats=stats_auto, **attrs)
        with int8_gemm_backend("numpy"):
            numpy_only = Conv(x, w, bias, layout="NHWC", strides=strides, pads=pads, _stats=stats_numpy, **attrs)
        assert np.array_equal(auto, numpy_only) and stats_auto == stats_numpy
    assert len(calls) == (3 if ort_int8_gemm_is_exact() else 0)
    # the sums themselves, before any rescale, against int64 arithmetic
    out = [(x_shape[1 + i] + pads[i] + pads[i + 2] - w_shape[2 + i]) // strides[i] + 1 for i in range(2)]
    xp = np.pad(x.astype(np.int64) - zp, [(0, 0), (pads[0], pads[2]), (pads[1], pads[3]), (0, 0)])
    want = np.zeros((1, out[0], out[1], w_shape[0]), np.int64) + bias
    for i in range(w_shape[2]):
        for j in range(w_shape[3]):
            tap = xp[:, i:i + (out[0] - 1) * strides[0] + 1:strides[0], j:j + (out[1] - 1) * strides[1] + 1:strides[1]]
            want += tap @ w[:, :, i, j].T.astype(np.int64)
    for backend in ("auto", "numpy"):
        with int8_gemm_backend(backend):
            acc, bound, addend = linear._conv_gemm(x, w, bias, 1, -zp, strides, [1, 1], pads, out)
        assert np.array_equal(acc.astype(np.int64) + addend, want) and np.abs(acc).max() <= bound


@pytest.mark.parametrize("case", [c for c in CONV_CASES if CONV_CASES[c][2] == 1])
def test_conv_ort_gemm_equals_numpy_and_reference(case, rng):
    x_shape, w_shape, group, strides, dil, pads = CONV_CASES[case]
    x = rng.integers(-128, 128, size=x_shape).astype(np.int8)
    w = rng.integers(-128, 128, size=w_shape).astype(np.int8)
    b = rng.integers(-50000, 50000, size=w_shape[0]).astype(np.int32)
    for zp, out_zp, act in ((37, -9, (None, None)), (-128, -128, (-128, 127)), (5, 2, (2, 100))):
        attrs = _conv_attrs(rng, w_shape[0], np.int8, zp=zp, out_zp=out_zp, act=act)
        def run(attrs=attrs):
            return Conv(x.transpose(0, 3, 1, 2), w, b, layout="NCHW", strides=strides, dilations=dil, pads=pads,
                        **attrs).transpose(0, 2, 3, 1)
        auto, numpy_only = _both_backends(run)
        assert np.array_equal(auto, numpy_only)
        assert np.array_equal(auto, ref_conv_nhwc(x, w, b, strides, dil, pads, group, attrs))


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("requant", ["multiplier", "float64"])
def test_fully_connected_ort_gemm_equals_numpy(requant, rows, rng, monkeypatch):
    k = 2048
    x = rng.choice(np.array([-128, 127], np.int8), size=(rows, k))
    x[0] = 127  # a saturated row
    w = rng.choice(np.array([-128, 127], np.int8), size=(7, k))
    b = rng.integers(-(1 << 20), 1 << 20, size=7).astype(np.int32)
    in_q, out_q = QuantSpec(8, 0.02, 127), QuantSpec(8, 40.0, -3)
    w_q = QuantSpec(8, rng.uniform(0.001, 0.01, size=7), np.zeros(7, np.int64), 0, narrow=True)
    attrs = prepare_fully_connected(in_q, w_q, out_q, None, None, requant=requant)
    calls = _count_ort_calls(monkeypatch)
    auto, numpy_only = _both_backends(lambda: FullyConnected(x, w, b, **attrs))
    assert np.array_equal(auto, numpy_only) and np.array_equal(auto, ref_fc(x, w, b, attrs))
    assert len(calls) == (1 if ort_int8_gemm_is_exact() else 0)


def test_ort_gemm_is_used_only_where_int32_sums_cannot_overflow(monkeypatch):
    monkeypatch.setattr(linear, "ort_int8_gemm_is_exact", lambda: True)
    assert linear._ort_usable(np.dtype(np.int8), 65793, 128, 0)  # 65793 * 255 * 128 < 2^31
    assert not linear._ort_usable(np.dtype(np.int8), 65794, 128, 0)
    assert not linear._ort_usable(np.dtype(np.int16), 16, 127, 0)  # int16 activations: NumPy
    assert not linear._ort_usable(np.dtype(np.int8), 16, 127, 129)  # a zero point outside int8
    with int8_gemm_backend("numpy"):
        assert not linear._ort_usable(np.dtype(np.int8), 16, 127, 0)
    monkeypatch.setattr(linear, "ort_int8_gemm_is_exact", lambda: False)  # e.g. a pre-VNNI x86 machine
    assert not linear._ort_usable(np.dtype(np.int8), 16, 127, 0)


def test_ort_probe_agrees_with_a_direct_worst_case_check():
    """The probe's verdict is the truth on this machine: where it says exact, 255 * 127 pairs sum exactly."""
    if not ort_int8_gemm_is_exact():
        pytest.skip("ONNX Runtime's u8 x s8 GEMM is not exact here; lowbit uses its NumPy path")
    w = np.full((512, 3), 127, np.int8)
    w[:, 1] = -128
    session = linear._ort_session(w)
    a = np.full((2, 512), 255, np.uint8)
    assert linear._ort_gemm(session, a, 0).tolist() == [[512 * 255 * 127, -512 * 255 * 128, 512 * 255 * 127]] * 2


def test_ort_sessions_are_cached_per_read_only_weight(rng):
    x = rng.integers(-128, 128, size=(1, 4, 4, 8)).astype(np.int8)
    w = rng.integers(-127, 127, size=(3, 8, 1, 1)).astype(np.int8)
    attrs = _conv_attrs(rng, 3, np.int8, zp=1)
    Conv(x, w, None, layout="NHWC", **attrs)
    assert not any(k[0] == id(w) for k in linear._CACHE)  # writable: nothing cached
    w.flags.writeable = False
    Conv(x, w, None, layout="NHWC", **attrs)
    keys = [k for k in linear._CACHE if k[0] == id(w)]
    assert ((id(w), "ort") in keys) == ort_int8_gemm_is_exact()


# --- pools and mean ---------------------------------------------------------------------------------------------
def ref_pool(x, kernel, strides, pads, kind, act):
    n, h, w, c = x.shape
    oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
    y = np.zeros((n, oh, ow, c), np.int64)
    for b in range(n):
        for oy in range(oh):
            for ox in range(ow):
                y0, x0 = oy * strides[0] - pads[0], ox * strides[1] - pads[1]
                win = x[b, max(y0, 0):min(y0 + kernel[0], h), max(x0, 0):min(x0 + kernel[1], w)].astype(np.int64)
                for ch in range(c):
                    cells = win[..., ch].reshape(-1)
                    if kind == "max":
                        v = int(cells.max())
                    else:
                        acc, cnt = int(cells.sum()), cells.size
                        v = _c_div(acc + cnt // 2, cnt) if acc > 0 else _c_div(acc - cnt // 2, cnt)
                    y[b, oy, ox, ch] = min(max(v, act[0]), act[1])
    return y.astype(x.dtype)


POOL_CASES = [((1, 9, 9, 4), [3, 3], [2, 2], [1, 1, 1, 1]), ((2, 7, 8, 3), [2, 3], [2, 1], [0, 1, 1, 1]),
              ((1, 5, 5, 2), [5, 5], [1, 1], [2, 2, 2, 2]), ((1, 6, 4, 1), [2, 2], [2, 2], [0, 0, 0, 0])]


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pools_match_reference_loop(kind, case, dtype, rng):
    shape, kernel, strides, pads = POOL_CASES[case]
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    act = (int(info.min) // 2, int(info.max)) if case == 1 else (int(info.min), int(info.max))
    op = MaxPool if kind == "max" else AvgPool
    got = op(x, layout="NHWC", kernel_shape=kernel, strides=strides, pads=pads, act_min=act[0], act_max=act[1])
    assert np.array_equal(got, ref_pool(x, kernel, strides, pads, kind, act))
    got_nchw = op(x.transpose(0, 3, 1, 2), layout="NCHW", kernel_shape=kernel, strides=strides, pads=pads,
                  act_min=act[0], act_max=act[1])
    assert np.array_equal(got_nchw.transpose(0, 2, 3, 1), got)


def test_avg_pool_ties_round_away_from_zero():
    x = np.array([[1, 2], [-1, -2], [0, 3], [0, -3]], np.int8).reshape(1, 4, 2, 1)  # pairs of cells
    y = AvgPool(x, layout="NHWC", kernel_shape=[1, 2], strides=[1, 2])
    assert y.reshape(-1).tolist() == [2, -2, 2, -2]


def ref_mean(x, axes, attrs):
    n = int(np.prod([x.shape[a] for a in axes]))
    k = min(n.bit_length() - 1, 32, 31 + attrs["shift"])
    m, s = (attrs["multiplier"] << k) // n, attrs["shift"] - k
    sums = x.astype(np.int64).sum(axis=tuple(axes))
    info = np.iinfo(x.dtype)
    out = [min(max(ref_mbqm(int(v) + attrs["input_offset"] * n, m, s) + attrs["output_offset"], info.min), info.max)
           for v in sums.reshape(-1)]
    return np.array(out, np.int64).reshape(sums.shape).astype(x.dtype)


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("axes", [[1, 2], [2], [0, 1, 2, 3], [-1]])
def test_mean_matches_reference(axes, dtype, rng):
    bits = 16 if dtype == np.int16 else 8
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=(2, 5, 7, 3), endpoint=True).astype(dtype)
    in_q = QuantSpec(bits, 0.05, 0 if bits == 16 else 11)
    out_q = QuantSpec(bits, 0.03, 0 if bits == 16 else -20)
    attrs = prepare_mean(in_q, out_q)
    got = Mean(x, axes=axes, keepdims=0, **attrs)
    expected = ref_mean(x, [a % 4 for a in axes], attrs)
    assert np.array_equal(got, expected)
    kept = Mean(x, axes=axes, keepdims=1, **attrs)
    assert kept.ndim == 4 and np.array_equal(kept.reshape(expected.shape), expected)


# --- quantize / dequantize / requantize ---------------------------------------------------------------------------
def test_quantize_ties_saturation_and_nan():
    x = np.array([1.25, -1.25, 0.75, -0.75, 1e9, -1e9, np.inf, np.nan], np.float32)
    q = Quantize(x, scale=0.5, zero_point=-3, to="int8")
    assert q.tolist() == [0, -6, -1, -5, 127, -128, 127, -3]
    stats = {}
    Quantize(x, scale=0.5, zero_point=-3, qmin=-100, qmax=100, to="int8", _stats=stats)
    assert stats["saturated"] == 3


def test_quantize_divides_in_float32():
    """Find inputs whose float32 quotient rounds differently from the float64 one: TFLite uses float32."""
    rng = np.random.default_rng(5)
    scale = np.float32(0.1)
    x = ((rng.integers(-1000, 1000, size=200000) + 0.5) * scale).astype(np.float32)
    x = x + rng.integers(-2, 3, size=x.size).astype(np.float32) * np.spacing(x)
    f32 = x / scale
    f64 = x.astype(np.float64) / float(scale)
    rnd = lambda v: np.trunc(v) + np.where(np.abs(v - np.trunc(v)) >= 0.5, np.sign(v), 0)
    differ = rnd(f32.astype(np.float64)) != rnd(f64)
    assert differ.any()
    q = Quantize(x[differ], scale=float(scale), zero_point=0, to="int16")
    assert np.array_equal(q, rnd(f32[differ].astype(np.float64)).astype(np.int16))


def test_dequantize_uses_double_product():
    q = np.array([-128, -1, 0, 1, 127], np.int8)
    scale = float(np.float32(0.0123))
    got = Dequantize(q, scale=scale, zero_point=-1)
    assert got.dtype == np.float32
    assert np.array_equal(got, (scale * (q.astype(np.float64) + 1)).astype(np.float32))


def test_requantize_ties_and_clamps():
    attrs = prepare_requantize(QuantSpec(16, 0.001, 0), QuantSpec(8, 0.002, 10))
    q = np.array([1, -1, 3, -3, 32767, -32768], np.int16)
    got = Requantize(q, **attrs)
    expected = [min(max(ref_mbqm(int(v), attrs["multiplier"], attrs["shift"]) + 10, -128), 127) for v in q]
    assert got.dtype == np.int8 and got.tolist() == expected
    assert got.tolist()[:4] == [11, 10, 12, 9]  # M = 0.5 exactly: SRDHM sends ties up (0.5 -> 1, -1.5 -> -1)


# --- prepare -------------------------------------------------------------------------------------------------------
def test_activation_range_matches_tflite():
    q8 = QuantSpec(8, 0.0235, -128)
    assert activation_range(q8, "NONE") == (-128, 127)
    assert activation_range(q8, "RELU") == (-128, 127)
    assert activation_range(q8, "RELU6") == (-128, -128 + round(6 / np.float32(0.0235)))
    assert activation_range(QuantSpec(8, 0.01, 5), "RELU_N1_TO_1") == (-95, 105)
    assert activation_range(QuantSpec(16, 6 / 32767, 0), "RELU6") == (0, 32767)
    with pytest.raises(ValueError, match="TANH"):
        activation_range(q8, "TANH")


def test_prepare_conv_rounds_scales_to_float32_then_multiplies_in_double():
    from lowbit.quant.fixedpoint import quantize_multiplier

    in_q, out_q = QuantSpec(8, 0.1, 3), QuantSpec(8, 0.7, -2)
    w_q = QuantSpec(8, [0.01, 0.003], [0, 0], 0, narrow=True)
    attrs = prepare_conv(in_q, w_q, out_q, None, None)
    for c, s in enumerate([0.01, 0.003]):
        eff = float(np.float32(0.1)) * float(np.float32(s)) / float(np.float32(0.7))
        assert (attrs["multiplier"][c], attrs["shift"][c]) == quantize_multiplier(eff)
    assert attrs["input_offset"] == -3 and attrs["output_offset"] == -2 and attrs["accumulator"] == "int32"
    assert prepare_conv(QuantSpec(16, 0.1, 0), w_q, QuantSpec(16, 0.2, 0))["accumulator"] == "int64"


def test_prepare_rejects_what_the_kernels_cannot_run():
    w_asym = QuantSpec(8, 0.01, 3)
    with pytest.raises(ValueError, match="symmetric"):
        prepare_conv(QuantSpec(8, 0.1, 0), w_asym, QuantSpec(8, 0.1, 0))
    with pytest.raises(ValueError, match="int16"):
        prepare_fully_connected(QuantSpec(16, 0.1, 4), QuantSpec(8, 0.01, 0), QuantSpec(16, 0.1, 0))
    with pytest.raises(ValueError, match="range"):
        prepare_conv(QuantSpec(8, 0.1, 0), QuantSpec(8, 0.01, 0), QuantSpec(8, 0.1, 0), -200, 0)


def test_prepare_quantize_and_dequantize():
    q = prepare_quantize(QuantSpec(8, 0.1, -4))
    assert q == {"scale": float(np.float32(0.1)), "zero_point": -4, "qmin": -128, "qmax": 127, "to": "int8"}
    assert prepare_quantize(QuantSpec(16, 0.001, 0))["qmin"] == -32768
    assert prepare_dequantize(QuantSpec(8, 0.1, -4)) == {"scale": float(np.float32(0.1)), "zero_point": -4}
