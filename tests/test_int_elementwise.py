"""Integer element-wise, activation, softmax and batch-matmul kernels and their Prepare functions, at the hard
points: x.5 ties, saturation (and its count), int32/int16 wrap-around where TFLite's C++ wraps, int16
extremes, worst-case float-BLAS accumulations, and agreement with the float functions they approximate.
(Bit-exactness against LiteRT on converter models is tests/test_tflite_elementwise.py.)
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.quant import prepare_elementwise as P
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.kernels.int import activation as A
from lowbit.runtime.kernels.int import elementwise as E
from lowbit.runtime.kernels.int import matmul as MM
from lowbit.runtime.kernels.int import softmax as S

HALF = 1 << 30  # 0.5 as a Q31 multiplier
ALL_INT8 = np.arange(-128, 128).astype(np.int8)
ALL_INT16 = np.arange(-32768, 32768).astype(np.int16)


def _add_attrs(**kw):
    """Add/Sub attributes halving each input and passing the sum through: y = r(a/2) + r(b/2)."""
    attrs = dict(left_shift=0, a_offset=0, a_multiplier=HALF, a_shift=0, b_offset=0, b_multiplier=HALF,
                 b_shift=0, output_offset=0, output_multiplier=HALF, output_shift=1, act_min=-128, act_max=127)
    attrs.update(kw)
    return attrs


# -- rescale --------------------------------------------------------------------------------------------------
def test_rescale_ties_round_half_up_then_away_from_zero():
    # SRDHM rounds 0.5 -> 1 and -0.5 -> 0; RoundingDivideByPOT rounds ties away from zero
    assert E.rescale(np.array([1, -1, 3, -3]), HALF, 0).tolist() == [1, 0, 2, -1]
    assert E.rescale(np.array([2, -2, 6, -6]), HALF, -1).tolist() == [1, -1, 2, -2]  # 0.5, -0.5, 1.5, -1.5


def test_rescale_left_shift_wraps_like_int32():
    # TFLite computes x * (1 << shift) in int32: 2^30 * 2 wraps to -2^31
    assert int(E.rescale(1 << 30, HALF, 1)) == -(1 << 30)
    assert E.wrap32(np.array([1 << 31, -(1 << 31) - 1])).tolist() == [-(1 << 31), (1 << 31) - 1]


def test_rescale_single_rounding_variant():
    x = np.arange(-1000, 1000) * 12345
    np.testing.assert_array_equal(E.rescale(x, 1518500250, -3, "single"),
                                  fp.multiply_by_quantized_multiplier_single_round(x, 1518500250, -3))


# -- Add / Sub / Mul / SquaredDifference ------------------------------------------------------------------------
def test_add_halves_with_ties():
    a = np.array([1, -1, 3, -3, 127, -128], np.int8)
    y = E.Add(a, np.zeros_like(a), **_add_attrs())
    assert y.tolist() == [1, 0, 2, -1, 64, -64]


def test_add_offsets_broadcast_and_saturation_count():
    a = ALL_INT8.reshape(256, 1)
    b = ALL_INT8.reshape(1, 256)
    stats = {}
    y = E.Add(a, b, **_add_attrs(a_offset=10, b_offset=-3, output_offset=5, act_min=-20, act_max=30),
              _stats=stats)
    half = lambda v: np.floor(v / 2 + 0.5)  # noqa: E731  SRDHM by 0.5: round half up
    raw = half(a.astype(np.int64) + 10) + half(b.astype(np.int64) - 3) + 5
    np.testing.assert_array_equal(y, np.clip(raw, -20, 30))
    assert y.shape == (256, 256) and y.dtype == np.int8
    assert stats["saturated"] == int(np.count_nonzero((raw < -20) | (raw > 30)))


def test_sub_accepts_output_multiplier_above_one():
    a = np.array([10, -10, 0], np.int8)
    b = np.array([3, 3, 0], np.int8)
    # inputs passed through (multiplier 0.5, shift 1), output doubled (0.5 * 2^2)
    attrs = _add_attrs(a_shift=1, b_shift=1, output_shift=2)
    assert E.Sub(a, b, **attrs).tolist() == [14, -26, 0]


def test_mul_int16_extremes_saturate():
    a = np.array([-32768, -32768, 32767, 0], np.int16)
    b = np.array([-32768, 32767, 32767, -32768], np.int16)
    stats = {}
    # M = 2^-15: (-2^15)^2 * 2^-15 = 2^15 saturates
    y = E.Mul(a, b, a_offset=0, b_offset=0, output_offset=0, output_multiplier=HALF, output_shift=-14,
              act_min=-32768, act_max=32767, _stats=stats)
    assert y.tolist() == [32767, -32767, 32766, 0]
    assert stats["saturated"] == 1


def test_mul_int8_offsets_exhaustive():
    a, b = ALL_INT8.reshape(256, 1), ALL_INT8.reshape(1, 256)
    y = E.Mul(a, b, a_offset=128, b_offset=128, output_offset=-128, output_multiplier=HALF, output_shift=-7,
              act_min=-128, act_max=127)
    prod = (a.astype(np.int64) + 128) * (b.astype(np.int64) + 128)  # in [0, 65025], times 2^-8
    expected = np.clip(fp.rounding_divide_by_pot(fp.saturating_rounding_doubling_high_mul(prod, HALF), 7) - 128,
                       -128, 127)
    np.testing.assert_array_equal(y, expected)
    assert y[0, 0] == -128 and y[-1, -1] == 126  # 255 * 255 / 256 = 254.0


def test_squared_difference_int8():
    a = np.array([5, -5, 127, -128], np.int8)
    b = np.array([3, 3, -128, 127], np.int8)
    # inputs kept at 2^7 (multiplier 0.5 * 2^1), square scaled by 2^-14: y = (a - b)^2, saturated
    y = E.SquaredDifference(a, b, left_shift=7, a_offset=0, a_multiplier=HALF, a_shift=1, b_offset=0,
                            b_multiplier=HALF, b_shift=1, output_offset=0, output_multiplier=HALF,
                            output_shift=-13)
    assert y.tolist() == [4, 64, 127, 127]


def test_binary_ops_reject_mixed_types():
    with pytest.raises(ModelError, match="int8 or both int16"):
        E.Add(np.zeros(2, np.int8), np.zeros(2, np.int16), **_add_attrs())
    with pytest.raises(ModelError, match="do not broadcast"):
        E.Add(np.zeros(2, np.int8), np.zeros(3, np.int8), **_add_attrs())


# -- Rsqrt ------------------------------------------------------------------------------------------------------
def test_inv_sqrt_multiplier_matches_float():
    v = np.arange(2, 1 << 16)
    m, s = E.inv_sqrt_multiplier(v)
    approx = m * 2.0 ** (s.astype(np.float64) - 31)
    np.testing.assert_allclose(approx, 1 / np.sqrt(v), rtol=2e-6)
    m01, s01 = E.inv_sqrt_multiplier(np.array([0, 1]))
    assert m01.tolist() == [fp.INT32_MAX] * 2 and s01.tolist() == [0, 0]


def test_rsqrt_int8_exhaustive_against_float():
    xq, yq = QuantSpec(8, 4 / 255, -128), QuantSpec(8, 10 / 255, -128)
    op, attrs = P.prepare_rsqrt(xq, yq)
    assert op == "Rsqrt"
    y = E.Rsqrt(ALL_INT8, **attrs)
    assert y[0] == 127  # x at the zero point: "close to 0", the maximum
    xf = xq.dequantize(ALL_INT8).astype(np.float64)
    ok = xf > 0
    ref = np.minimum(1 / np.sqrt(xf[ok]), 255 * float(yq.scale))
    assert np.max(np.abs(yq.dequantize(y)[ok] - ref)) <= 0.5 * float(yq.scale) + 1e-9


def test_rsqrt_rejects_negative_values():
    _, attrs = P.prepare_rsqrt(QuantSpec(8, 0.02, 0), QuantSpec(8, 0.1, -128))
    with pytest.raises(ModelError, match="only defined for positive"):
        E.Rsqrt(np.array([5, -1], np.int8), **attrs)


# -- Lut --------------------------------------------------------------------------------------------------------
def test_lut_int8_is_indexed_by_x_plus_128():
    table = (-ALL_INT8.astype(np.int16) - 1).astype(np.int8)  # y = -x - 1
    np.testing.assert_array_equal(A.Lut(ALL_INT8, table=table), -ALL_INT8.astype(np.int16) - 1)


def test_lut_int16_interpolates_with_rounding():
    table = ((np.arange(513) - 256) * 64).astype(np.int16)  # y = x / 2
    y = A.Lut(ALL_INT16, table=table)
    np.testing.assert_array_equal(y, np.floor(ALL_INT16 / 2 + 0.5).astype(np.int16))


def test_lut_int16_slope_and_sum_wrap_like_int16():
    table = np.zeros(513, np.int16)
    table[256], table[257] = -32768, 32767  # slope 65535 stored in an int16 is -1
    y = A.Lut(np.array([0, 64, 65, 127], np.int16), table=table)
    # delta = (-x + 64) >> 7: 0 for x <= 64, -1 above; -32768 - 1 wraps to 32767
    assert y.tolist() == [-32768, -32768, 32767, 32767]


def test_lut_rejects_wrong_table_size():
    with pytest.raises(ModelError, match="256-entry"):
        A.Lut(ALL_INT8, table=np.zeros(513, np.int16))


# -- Relu / LeakyRelu / HardSwish -------------------------------------------------------------------------------
def test_relu6_bounds_and_requantization():
    xq, yq = QuantSpec(8, 0.05, -10), QuantSpec(8, 6 / 255, -128)
    attrs = P.prepare_relu(xq, yq, 0.0, 6.0)
    assert attrs["act_min"] == -128 and attrs["act_max"] == 127
    stats = {}
    y = A.Relu6(ALL_INT8, **attrs, _stats=stats)
    ref = np.clip(xq.dequantize(ALL_INT8).astype(np.float64), 0, 6)
    assert np.max(np.abs(yq.dequantize(y) - ref)) <= 0.5 * float(yq.scale) + 1e-6
    assert stats["saturated"] > 0


def test_relu_n1_to_1_int16_is_symmetric():
    xq, yq = QuantSpec(16, 1 / 1024, 0), QuantSpec(16, 1 / 16384, 0)
    attrs = P.prepare_relu(xq, yq, -1.0, 1.0)
    assert (attrs["act_min"], attrs["act_max"]) == (-16384, 16384)
    y = A.Relu(ALL_INT16, **attrs)
    assert y.min() == -16384 and y.max() == 16384 and y[32768 + 8] == 128


@pytest.mark.parametrize("alpha", [0.1, -0.3, 1.7])
def test_leaky_relu_against_float(alpha):
    xq, yq = QuantSpec(8, 8 / 255, 3), QuantSpec(8, 10 / 255, -20)
    y = A.LeakyRelu(ALL_INT8, **P.prepare_leaky_relu(xq, yq, alpha))
    xf = xq.dequantize(ALL_INT8).astype(np.float64)
    ref = np.clip(np.where(xf >= 0, xf, alpha * xf), float(yq.dequantize(np.int8(-128))),
                  float(yq.dequantize(np.int8(127))))
    # the alpha multiplier and the double rounding of the rescale allow up to one step
    assert np.max(np.abs(yq.dequantize(y) - ref)) <= float(yq.scale) + 1e-6


def test_hard_swish_against_float():
    xq, yq = QuantSpec(8, 10 / 255, -3), QuantSpec(8, 7 / 255, -60)
    y = A.HardSwish(ALL_INT8, **P.prepare_hard_swish(xq, yq))
    xf = xq.dequantize(ALL_INT8).astype(np.float64)
    ref = xf * np.clip(xf + 3, 0, 6) / 6
    assert np.max(np.abs(yq.dequantize(y) - ref)) <= 0.5 * float(yq.scale) + 1e-6


# -- int16 Tanh / Logistic --------------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [1 / 4096, 3e-4, 1 / 8192])
def test_int16_tanh_logistic_against_float(scale):
    xq, yq = QuantSpec(16, scale, 0), QuantSpec(16, 1 / 32768, 0)
    xf = xq.dequantize(ALL_INT16).astype(np.float64)
    op, attrs = P.prepare_tanh(xq, yq)
    assert op == "Tanh" and (attrs["input_multiplier"] == 0) == (scale == 1 / 4096)
    assert np.max(np.abs(yq.dequantize(A.Tanh(ALL_INT16, **attrs)) - np.tanh(xf))) < 3 / 32768
    op, attrs = P.prepare_logistic(xq, yq)
    assert op == "Logistic"
    assert np.max(np.abs(yq.dequantize(A.Logistic(ALL_INT16, **attrs)) - 1 / (1 + np.exp(-xf)))) < 1.5 / 32768


def test_int16_tanh_needs_pot_output_scale():
    with pytest.raises(P.PrepareError, match="2\\^-15"):
        P.prepare_tanh(QuantSpec(16, 1 / 4096, 0), QuantSpec(16, 1 / 30000, 0))


# -- Softmax ----------------------------------------------------------------------------------------------------
def _softmax8(x, scale=0.1, beta=1.0):
    return S.Softmax(x, **P.prepare_softmax(QuantSpec(8, scale, 0), QuantSpec(8, 1 / 256, -128), beta))


@pytest.mark.parametrize("n, value", [(1, 127), (2, 0), (4, -64), (8, -96), (256, -127)])
def test_softmax_int8_uniform_rows(n, value):
    assert np.all(_softmax8(np.full((3, n), 17, np.int8)) == value)


def test_softmax_int8_far_entries_drop_out():
    attrs = P.prepare_softmax(QuantSpec(8, 1.0, 0), QuantSpec(8, 1 / 256, -128))
    assert attrs["diff_min"] < 0
    x = np.array([[127, -128, 100, 126]], np.int8)
    y = S.Softmax(x, **attrs)
    assert y[0, 1] == -128 and y[0, 2] == -128  # d = -255, -27 with scale 1: exp below 2^-8
    assert y[0, 0] > y[0, 3] > -128


def test_softmax_int8_against_float():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (64, 40)).astype(np.int8)
    for beta in (0.5, 1.0, 2.0):
        y = _softmax8(x, 0.05, beta)
        xf = 0.05 * beta * x.astype(np.float64)
        ref = np.exp(xf - xf.max(-1, keepdims=True))
        ref /= ref.sum(-1, keepdims=True)
        assert np.max(np.abs((y.astype(np.float64) + 128) / 256 - ref)) <= 1.01 / 256


def test_softmax_int16_against_float_and_uniform_rows():
    attrs = P.prepare_softmax(QuantSpec(16, 1e-3, 0), QuantSpec(16, 1 / 32768, 0))
    assert attrs["exp_table"].shape == (513,) and attrs["one_over_one_plus_x_table"].shape == (513,)
    rng = np.random.default_rng(1)
    x = rng.integers(-32768, 32768, (16, 50)).astype(np.int16)
    y = S.Softmax(x, **attrs)
    xf = 1e-3 * x.astype(np.float64)
    ref = np.exp(xf - xf.max(-1, keepdims=True))
    ref /= ref.sum(-1, keepdims=True)
    assert np.max(np.abs(y / 32768 - ref)) < 4e-3  # TFLite's 513-entry exp and reciprocal tables
    u = S.Softmax(np.full((2, 4), 1000, np.int16), **attrs)
    assert np.all(u == u[0, 0]) and abs(int(u[0, 0]) - 8192) <= 1


def test_softmax_rejects_other_axes_and_output_scales():
    with pytest.raises(ModelError, match="last axis"):
        S.Softmax(np.zeros((2, 3), np.int8), axis=0, input_multiplier=HALF, input_left_shift=1, diff_min=-10)
    with pytest.raises(P.PrepareError, match="1/256"):
        P.prepare_softmax(QuantSpec(8, 0.1, 0), QuantSpec(8, 1 / 255, -128))


def test_gemmlowp_exp_and_reciprocal_against_float():
    a = -np.arange(0, 1 << 31, 1 << 21, dtype=np.int64)  # Q5.26 values in (-32, 0]
    got = S.exp_on_negative_values(a, 5) / 2.0 ** 31
    np.testing.assert_allclose(got, np.exp(a / 2.0 ** 26), atol=3e-7)
    r = np.arange(0, 1 << 31, 1 << 20, dtype=np.int64)  # Q0.31 in [0, 1)
    np.testing.assert_allclose(S.one_over_one_plus_x_for_x_in_0_1(r) / 2.0 ** 31, 1 / (1 + r / 2.0 ** 31),
                               atol=3e-7)


# -- BatchMatMul ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1023, 1024, 1025, 2049])
def test_integer_matmul_worst_case_is_exact(k):
    a = np.full((2, 3, k), -128, np.int8)
    b = np.full((2, k, 4), -128, np.int8)
    b[..., 0, :] = 127
    expected = np.matmul(a.astype(np.int64), b.astype(np.int64))
    np.testing.assert_array_equal(MM.integer_matmul(a, b), expected)


def test_integer_matmul_int16_is_exact():
    a = np.full((1, 2, 300), -32768, np.int16)
    b = np.full((1, 300, 3), -32768, np.int16)
    np.testing.assert_array_equal(MM.integer_matmul(a, b), np.full((1, 2, 3), 300 * 2 ** 30, np.int64))


@pytest.mark.parametrize("adj_x, adj_y", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_batch_matmul_offsets_adjoints_and_broadcast(adj_x, adj_y):
    rng = np.random.default_rng(adj_x * 2 + adj_y)
    a = rng.integers(-128, 128, (3, 1, 5, 7)).astype(np.int8)
    b = rng.integers(-128, 128, (1, 2, 7, 4)).astype(np.int8)
    a_in = np.swapaxes(a, -1, -2).copy() if adj_x else a
    b_in = np.swapaxes(b, -1, -2).copy() if adj_y else b
    stats = {}
    y = MM.BatchMatMul(a_in, b_in, adj_x=adj_x, adj_y=adj_y, a_offset=5, b_offset=-9, output_offset=3,
                       multiplier=HALF, shift=-8, act_min=-128, act_max=127, _stats=stats)
    acc = np.matmul(a.astype(np.int64) + 5, b.astype(np.int64) - 9)
    raw = fp.multiply_by_quantized_multiplier(acc, HALF, -8) + 3
    np.testing.assert_array_equal(y, np.clip(raw, -128, 127))
    assert y.shape == (3, 2, 5, 4) and stats["saturated"] == int(np.count_nonzero((raw < -128) | (raw > 127)))


def test_batch_matmul_int16_uses_int64_rescale():
    a = np.full((1, 1, 600), 32767, np.int16)
    b = np.full((1, 600, 1), 32767, np.int16)  # acc = 600 * 32767^2 > 2^31
    attrs = P.prepare_batch_matmul(QuantSpec(16, 1e-3, 0), QuantSpec(16, 1e-3, 0), QuantSpec(16, 1.0, 0))
    assert attrs["accumulator"] == "int64"
    y = MM.BatchMatMul(a, b, **attrs)
    acc = 600 * 32767 ** 2
    assert int(y[0, 0, 0]) == min(32767, int(fp.multiply_by_quantized_multiplier_int64(
        acc, attrs["multiplier"], attrs["shift"])))


def test_batch_matmul_shape_errors():
    with pytest.raises(ModelError, match="inner dimensions"):
        MM.BatchMatMul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8), a_offset=0, b_offset=0,
                       output_offset=0, multiplier=HALF, shift=0, act_min=-128, act_max=127)


# -- Prepare helpers --------------------------------------------------------------------------------------------
def test_tflite_round_and_float_to_int32():
    x = np.array([0.5, -0.5, 1.5, -2.5, 0.49999997, 2.0 ** 24 + 2], np.float32)
    assert P.tflite_round(x).tolist() == [1, -1, 2, -3, 0, 2.0 ** 24 + 2]
    assert P.float_to_int32(np.array([np.nan, np.inf, 3e9, -2.7, 2.7])).tolist() == \
        [fp.INT32_MIN, fp.INT32_MIN, fp.INT32_MIN, -2, 2]


def test_lut_int8_saturates_and_orders_by_value():
    table = P.lut_int8(lambda v: np.asarray(v, np.float32) * np.float32(4), QuantSpec(8, 0.1, 0),
                       QuantSpec(8, 0.1, 0))
    assert table[0] == -128 and table[-1] == 127 and table[128] == 0 and table[129] == 4


def test_lut_int16_of_identity_is_linear():
    q = QuantSpec(16, 1 / 1024, 0)
    table = P.lut_int16(lambda v: np.asarray(v, np.float32), q, q)
    # 512 steps span [-32768, 32767] input steps and outputs are scaled by 65536 / 65535 (TFLite's
    # output_scaling_inv): entry i is -32768.5 + 128 i, rounded
    assert np.max(np.abs(table[:512] - (-32768 * 65536 / 65535 + 128 * np.arange(512)))) <= 0.51
    assert table[0] == -32768 and table[512] == 32767
    assert np.max(np.abs(A.Lut(ALL_INT16, table=table).astype(np.int64) - ALL_INT16)) <= 1


def test_prepare_add_multipliers():
    a, b, out = QuantSpec(8, 0.02, 3), QuantSpec(8, 0.01, -5), QuantSpec(8, 0.03, 0)
    attrs = P.prepare_add(a, b, out, -128, 127)
    assert attrs["left_shift"] == 20 and (attrs["a_offset"], attrs["b_offset"]) == (-3, 5)
    assert attrs["a_multiplier"] == HALF and attrs["a_shift"] == 0  # 0.02 / 0.04
    assert attrs["b_multiplier"] == HALF and attrs["b_shift"] == -1  # 0.01 / 0.04
    real_out = attrs["output_multiplier"] * 2.0 ** (attrs["output_shift"] - 31)
    assert math.isclose(real_out, 0.04 / (2 ** 20 * 0.03), rel_tol=1e-7)
    with pytest.raises(P.PrepareError, match="\\(0, 1\\)"):
        P.prepare_add(a, b, QuantSpec(8, 1e-9, 0), -128, 127)
    assert P.prepare_sub(a, b, QuantSpec(8, 1e-9, 0), -128, 127)["output_shift"] > 0


def test_prepare_mul_uses_float32_product():
    a, b, out = QuantSpec(8, 0.1, 0), QuantSpec(8, 0.3, 0), QuantSpec(8, 0.7, 0)
    attrs = P.prepare_mul(a, b, out, -128, 127)
    real32 = float((np.float32(0.1) * np.float32(0.3)) / np.float32(0.7))
    assert (attrs["output_multiplier"], attrs["output_shift"]) == fp.quantize_multiplier(real32)


def test_prepare_rejects_per_channel_and_asymmetric_int16():
    with pytest.raises(P.PrepareError, match="per-tensor"):
        P.prepare_mul(QuantSpec(8, [0.1, 0.2], [0, 0], axis=0), QuantSpec(8, 0.1, 0), QuantSpec(8, 0.1, 0), -128,
                      127)
    with pytest.raises(P.PrepareError, match="zero point 0"):
        P.prepare_add(QuantSpec(16, 0.1, 3), QuantSpec(16, 0.1, 0), QuantSpec(16, 0.1, 0), -32768, 32767)


def test_lowbit_int_ops_are_registered():
    from lowbit.runtime.registry import INT_DOMAIN, INT_KERNELS

    for op in ("Add", "Sub", "Mul", "SquaredDifference", "Rsqrt", "Lut", "Relu", "Relu6", "LeakyRelu",
               "HardSwish", "Tanh", "Logistic", "Softmax", "BatchMatMul"):
        assert INT_KERNELS.supports(op, INT_DOMAIN), op


def test_count_leading_zeros32():
    x = np.array([0, 1, 2, 3, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1])
    assert E.count_leading_zeros32(x).tolist() == [32 - int(v).bit_length() for v in x]


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "SquaredDifference"])
def test_int8_pair_table_equals_the_formula(op):
    """int8 binary ops are served from a 256 x 256 table of the formula; it must equal the direct formula."""
    a = QuantSpec(8, 0.031, -7)
    b = QuantSpec(8, 0.017, 12)
    out = QuantSpec(8, 0.05, 3)
    attrs = {"Add": lambda: P.prepare_add(a, b, out, -100, 90), "Sub": lambda: P.prepare_sub(a, b, out, -128, 127),
             "Mul": lambda: P.prepare_mul(a, b, QuantSpec(8, 0.004, -1), -128, 127),
             "SquaredDifference": lambda: P.prepare_squared_difference(a, b, QuantSpec(8, 0.05, -128))}[op]()
    kernel = getattr(E, op)
    xa, xb = ALL_INT8.reshape(256, 1), ALL_INT8.reshape(1, 256)
    stats = {}
    got = kernel(xa, xb, **attrs, _stats=stats)
    direct = dict(attrs)
    lo, hi = direct.pop("act_min"), direct.pop("act_max")
    raw = E._RAW[op](xa, xb, rounding="double", **direct)
    np.testing.assert_array_equal(got, np.clip(raw, lo, hi))
    assert stats["saturated"] == int(np.count_nonzero((raw < lo) | (raw > hi)))


@pytest.mark.parametrize("b_shape", ["same", "per_channel", "scalar"])
def test_int8_binary_on_channels_last_views_keeps_their_layout(b_shape):
    """An NCHW view of NHWC data (what Conv returns) is evaluated in memory order, returned as the same kind of
    view, with the values and saturation count of the contiguous evaluation; broadcasting keeps working."""
    rng = np.random.default_rng(3)
    attrs = P.prepare_add(QuantSpec(8, 0.031, -7), QuantSpec(8, 0.017, 12), QuantSpec(8, 0.05, 3), 3, 127)
    a = rng.integers(-128, 128, size=(2, 5, 6, 8)).astype(np.int8).transpose(0, 3, 1, 2)  # NCHW view of NHWC
    b = {"same": rng.integers(-128, 128, size=(2, 5, 6, 8)).astype(np.int8).transpose(0, 3, 1, 2),
         "per_channel": rng.integers(-128, 128, size=(1, 8, 1, 1)).astype(np.int8),
         "scalar": np.array(-100, np.int8)}[b_shape]
    stats, stats_c = {}, {}
    got = E.Add(a, b, **attrs, _stats=stats)
    want = E.Add(np.ascontiguousarray(a), np.ascontiguousarray(b), **attrs, _stats=stats_c)
    assert np.array_equal(got, want) and stats == stats_c and stats["saturated"] > 0
    assert np.array_equal(E.Add(a, b, **attrs), want)  # without statistics: the plain int8 table
    if b_shape == "same":
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous


def test_int16_rescale_table_equals_direct():
    x = ALL_INT16
    attrs = P.prepare_add(QuantSpec(16, 3e-4, 0), QuantSpec(16, 1e-4, 0), QuantSpec(16, 4e-4, 0), -32768, 32767)
    big = E.Add(x, x[::-1].copy(), **attrs)  # 65536 elements: per-value tables
    small = np.concatenate([E.Add(x[i:i + 4096], x[::-1][i:i + 4096].copy(), **attrs)
                            for i in range(0, 65536, 4096)])  # 4096 elements: direct
    np.testing.assert_array_equal(big, small)


def test_executor_collects_saturation_counts():
    from lowbit.graph.ir import Graph
    from lowbit.runtime import int_executor

    g = Graph("g", {"": 21, "lowbit.int": 1})
    x = g.new_value("x", (4,), np.int8)
    y = g.new_value("y", (4,), np.int8)
    g.inputs, g.outputs = [x], [y]
    g.add_node("Relu", [x], [y], P.prepare_relu(QuantSpec(8, 0.1, 0), QuantSpec(8, 0.04, -128)),
               domain="lowbit.int", name="relu")
    stats = {}
    out = int_executor.run(g, {"x": np.array([-128, -10, 50, 127], np.int8)}, stats=stats)
    # 2.5 x - 128: -448, -153, -3, 189.5 -> 190
    assert out["y"].tolist() == [-128, -128, -3, 127] and stats["relu"]["saturated"] == 3


def test_int16_activation_table_equals_direct():
    attrs = P.prepare_leaky_relu(QuantSpec(16, 3e-4, 0), QuantSpec(16, 2e-4, 0), -0.7)
    big = A.LeakyRelu(ALL_INT16, **attrs)  # per-value table
    small = np.concatenate([A.LeakyRelu(ALL_INT16[i:i + 4096], **attrs) for i in range(0, 65536, 4096)])
    np.testing.assert_array_equal(big, small)
