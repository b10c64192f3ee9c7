"""Integer LayerNorm / RMSNorm (runtime/kernels/int/norm.py, quant/prepare_norm.py): the integer square root
exactly, the kernels against the float op (float64, on the dequantized input) within the docstring's bound,
and the hard points (constant rows, zero rows, ties, saturation, sign of gamma, prepare refusals)."""
import math

import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.prepare_norm import BIAS_FRAC_BITS, prepare_norm
from lowbit.quant.spec import QuantSpec, activation_spec
from lowbit.runtime.kernels.int.norm import LayerNorm, RMSNorm, bit_length, inverse_sqrt, isqrt_normalised

BOUND = 0.5 + 2.0 ** -(BIAS_FRAC_BITS - 1) + 2.0 ** -12  # output steps, before clamping (kernel docstring)


def _deq(q, spec):
    """Dequantize in float64 (the float32 of QuantSpec.dequantize would blur the reference by ~1e-6 relative)."""
    return (q.astype(np.float64) - int(spec.zero_point)) * float(spec.scale)


def _layer_norm(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _rms_norm(x, g, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def test_isqrt_is_exact_on_the_normalised_range():
    rng = np.random.default_rng(0)
    n = rng.integers(1 << 60, 1 << 62, 100_000, dtype=np.int64)
    roots = np.array([1 << 30, (1 << 31) - 1, 1518500249, 2**30 + 12345])
    edges = np.concatenate([[1 << 60, (1 << 62) - 1, 1 << 61], roots * roots, roots * roots - 1,
                            np.minimum(roots * roots + 2 * roots, (1 << 62) - 1)])
    n = np.concatenate([n, edges])
    assert np.array_equal(isqrt_normalised(n), [math.isqrt(int(v)) for v in n])


def test_bit_length_and_inverse_sqrt():
    rng = np.random.default_rng(1)
    d = np.concatenate([[1, 2, 3, 4, (1 << 62) - 1, 1 << 62, (1 << 63) - 1], rng.integers(1, 1 << 62, 20_000)])
    assert np.array_equal(bit_length(d), [int(v).bit_length() for v in d])
    m, e = inverse_sqrt(d)
    assert np.all((m >= 1 << 30) & (m < 1 << 31))
    approx = m.astype(np.float64) * np.exp2(e.astype(np.float64) - 61)
    exact = 1 / np.sqrt(d.astype(np.float64))
    assert np.max(np.abs(approx / exact - 1)) < 2.0 ** -29


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [2, 16, 64, 768])
@pytest.mark.parametrize("op", ["LayerNorm", "RMSNorm"])
def test_matches_float_within_bound(bits, channels, op):
    rng = np.random.default_rng(channels * bits + len(op))
    for _ in range(12):
        lo, hi = -rng.uniform(0.05, 20), rng.uniform(0.05, 20)
        xs = activation_spec(lo, hi, bits)
        x = rng.normal(rng.uniform(lo, hi) / 2, rng.uniform(0.01, 2) * (hi - lo), (40, channels)).clip(lo, hi)
        g = rng.normal(0, rng.uniform(0.1, 3), channels)
        b = rng.normal(0, 1, channels) if op == "LayerNorm" else None
        eps = float(10.0 ** rng.uniform(-8, -2))
        xq = xs.quantize(x)
        xd = _deq(xq, xs)
        y = _layer_norm(xd, g, b, eps) if op == "LayerNorm" else _rms_norm(xd, g, eps)
        os_ = activation_spec(y.min() * rng.uniform(0.7, 1.2), y.max() * rng.uniform(0.7, 1.2), bits)
        kernel = LayerNorm if op == "LayerNorm" else RMSNorm
        stats = {}
        q = kernel(xq, **prepare_norm(xs, os_, g, b, eps, op), _stats=stats)
        assert q.dtype == xq.dtype
        exact = y / float(os_.scale) + int(os_.zero_point)
        inside = (exact > os_.qmin) & (exact < os_.qmax)
        assert np.max(np.abs(q - exact)[inside], initial=0) <= BOUND
        assert np.all(q[exact >= os_.qmax + BOUND] == os_.qmax) and np.all(q[exact <= os_.qmin - BOUND] == os_.qmin)
        assert stats["saturated"] >= np.count_nonzero((exact >= os_.qmax + BOUND) | (exact <= os_.qmin - BOUND))


def test_constant_rows_give_beta_with_ties_rounded_up():
    """A constant row has zero variance: LayerNorm returns beta; beta / s_out = +-2.5 rounds half up (3, -2)."""
    xs, os_ = QuantSpec(8, 0.1, 3), QuantSpec(8, 0.2, -1)
    x = np.full((3, 4), 17, np.int8)
    x[1] = -128
    beta = np.array([0.5, -0.5, 0.0, 1.0])  # / 0.2 = 2.5, -2.5, 0, 5
    q = LayerNorm(x, **prepare_norm(xs, os_, np.array([1.0, -2.0, 0.0, 3.0]), beta, 1e-5))
    assert np.array_equal(q, np.tile(np.array([3, -2, 0, 5]) - 1, (3, 1)))


def test_rms_norm_of_zeros_is_zero_and_single_channel_layer_norm_is_beta():
    xs = QuantSpec(16, 1e-3, 0)
    os_ = QuantSpec(16, 1e-3, 0)
    assert np.array_equal(RMSNorm(np.zeros((2, 8), np.int16), **prepare_norm(xs, os_, np.ones(8), None, 1e-6,
                                                                                "RMSNorm")), np.zeros((2, 8)))
    q = LayerNorm(np.array([[1234], [-77]], np.int16), **prepare_norm(xs, os_, np.ones(1), np.array([0.25]), 1e-5))
    assert np.array_equal(q, [[250], [250]])


def test_gamma_sign_and_zero_and_saturation_count():
    xs, os_ = QuantSpec(8, 0.05, 0), QuantSpec(8, 0.01, 0)
    x = np.array([[-100, 0, 100, 0]], np.int8)  # z = [-sqrt2, 0, sqrt2, 0]
    g = np.array([0.05, 1.0, -0.05, 0.0])
    stats = {}
    q = LayerNorm(x, **prepare_norm(xs, os_, g, None, 0.0), _stats=stats)
    # -sqrt2 * 0.05 / 0.01 = -7.07 -> -7; 0; sqrt2 * -0.05 / 0.01 -> -7; gamma 0 -> 0
    assert np.array_equal(q, [[-7, 0, -7, 0]])
    assert stats["saturated"] == 0
    q = LayerNorm(x, **prepare_norm(xs, os_, np.full(4, 2.0), None, 0.0), _stats=stats)
    assert np.array_equal(q, [[-128, 0, 127, 0]]) and stats["saturated"] == 2  # +-282.8 steps, clamped


def test_kernel_and_prepare_refusals():
    xs = QuantSpec(8, 0.1, 0)
    attrs = prepare_norm(xs, xs, np.ones(8), None, 1e-5)
    with pytest.raises(ModelError, match="8 channels"):
        LayerNorm(np.zeros((2, 9), np.int8), **attrs)
    with pytest.raises(PrepareError, match="int8 -> int8 or int16 -> int16"):
        prepare_norm(xs, QuantSpec(16, 0.1, 0), np.ones(8), None, 1e-5)
    with pytest.raises(PrepareError, match="overflow"):
        prepare_norm(QuantSpec(16, 0.1, 0), QuantSpec(16, 0.1, 0), np.ones(1 << 16), None, 1e-5)
    with pytest.raises(PrepareError, match="too large for int64"):
        prepare_norm(QuantSpec(16, 1e-12, 0), QuantSpec(16, 0.1, 0), np.ones(64), None, 1e6)
