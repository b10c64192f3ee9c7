"""Fixed-point helpers against the values TFLite publishes in quantization_util_test.cc, and against exact
rational arithmetic at the hard points (x.5 ties, INT32_MIN, negative and large shifts)."""
from fractions import Fraction

import numpy as np
import pytest

from lowbit.quant import fixedpoint as fp

I32MIN, I32MAX = fp.INT32_MIN, fp.INT32_MAX


@pytest.mark.parametrize("real,expected", [
    (-4, (-1073741824, 3)), (-2, (-1073741824, 2)), (-0.125, (-1073741824, -2)), (0, (0, 0)),
    (0.125, (1073741824, -2)), (0.25, (1073741824, -1)), (0.5, (1073741824, 0)), (1, (1073741824, 1)),
    (4, (1073741824, 3)), (0.75, (1610612736, 0)), (1 - 1e-9, (2147483646, 0)), (0.5 - 5e-9, (2147483627, -1)),
    (0.5 - 1e-10, (1073741824, 0)), (1.25, (1342177280, 1)), (1.75, (1879048192, 1)),
    (2 - 1e-9, (2147483647, 1)), (2 - 1e-11, (1073741824, 2)),
    (2.0 ** -31, (1073741824, -30)), (2.0 ** -32, (1073741824, -31)), (0.99 * 2.0 ** -32, (0, 0)),
    (2.0 ** -33, (0, 0)),
])
def test_quantize_multiplier_published_values(real, expected):
    assert fp.quantize_multiplier(real) == expected


def _qm(x, real):
    m0, sh = fp.quantize_multiplier(real)
    return int(fp.multiply_by_quantized_multiplier(x, m0, sh))


@pytest.mark.parametrize("x,real,expected", [
    (0, 0.1, 0), (1, 0, 0), (10000, 0.00097656, 10), (-10000, 0.00097656, -10),
    (I32MIN, 0.00001, -21475), (I32MAX, 0.00001, 21475),
    (10000, -0.00097656, -10), (-10000, -0.00097656, 10), (I32MIN, -0.00001, 21475), (I32MAX, -0.00001, -21475),
])
def test_multiply_by_quantized_multiplier_published_values(x, real, expected):
    assert _qm(x, real) == expected


def test_multiply_by_quantized_multiplier_extremes():
    expected = round(Fraction(I32MAX * I32MAX, 2 ** 34))
    assert int(fp.multiply_by_quantized_multiplier(I32MAX, I32MAX, -3)) == expected
    assert int(fp.multiply_by_quantized_multiplier(-I32MAX, I32MAX, -3)) == -expected


@pytest.mark.parametrize("x,real,expected", [
    (0, 0.1, 0), (1, 0, 0), (10000, 0.00097656, 10), (-10000, 0.00097656, -10),
    (-(1 << 47), 0.00001, -1407385600), ((1 << 47) - 1, 0.00001, 1407385600),
])
def test_int64_variant_published_values(x, real, expected):
    m0, sh = fp.quantize_multiplier(real)
    assert int(fp.multiply_by_quantized_multiplier_int64(x, m0, sh)) == expected


def test_int64_variant_extreme():
    x = (1 << 47) - 1
    assert int(fp.multiply_by_quantized_multiplier_int64(x, I32MAX, -31)) == 65534
    assert int(fp.multiply_by_quantized_multiplier_int64(-x, I32MAX, -31)) == -65534


def test_srdhm_saturates_only_at_int32_min_squared():
    assert int(fp.saturating_rounding_doubling_high_mul(I32MIN, I32MIN)) == I32MAX
    assert int(fp.saturating_rounding_doubling_high_mul(I32MIN, I32MAX)) == -I32MAX
    # gemmlowp's nudge makes ties round toward +infinity: 0.5 -> 1, -0.5 -> 0, -1.5 -> -1
    assert int(fp.saturating_rounding_doubling_high_mul(1 << 30, 1)) == 1
    assert int(fp.saturating_rounding_doubling_high_mul(-(1 << 30), 1)) == 0
    assert int(fp.saturating_rounding_doubling_high_mul(-3 * (1 << 30), 1)) == -1
    assert int(fp.saturating_rounding_doubling_high_mul((1 << 30) - 1, 1)) == 0


@pytest.mark.parametrize("x,e,expected", [(5, 1, 3), (-5, 1, -3), (3, 1, 2), (-3, 1, -2), (6, 2, 2), (-6, 2, -2),
                                          (7, 0, 7), (I32MIN, 31, -1), (I32MAX, 31, 1), (-1, 31, 0)])
def test_rounding_divide_by_pot_ties_away_from_zero(x, e, expected):
    assert int(fp.rounding_divide_by_pot(x, e)) == expected


def test_rounding_divide_by_pot_matches_exact_rounding():
    rng = np.random.default_rng(0)
    x = rng.integers(I32MIN, I32MAX, 2000, dtype=np.int64)
    for e in (1, 5, 17, 30):
        got = fp.rounding_divide_by_pot(x, e)
        exact = [int(np.sign(v)) * int((abs(Fraction(int(v), 2 ** e)) + Fraction(1, 2)) // 1) for v in x]
        assert got.tolist() == exact


def test_single_rounding_differs_from_double_by_at_most_one_and_rounds_half_up():
    rng = np.random.default_rng(1)
    x = rng.integers(-(1 << 24), 1 << 24, 20000)
    for real in (0.0031, 0.7, 0.000123, 1.9):
        m0, sh = fp.quantize_multiplier(real)
        d = fp.multiply_by_quantized_multiplier(x, m0, sh)
        s = fp.multiply_by_quantized_multiplier_single_round(x, m0, sh)
        assert np.max(np.abs(d - s)) <= 1
        exact = [Fraction(int(v) * m0, 2 ** (31 - sh)) for v in x[:200]]
        assert s[:200].tolist() == [int((q + Fraction(1, 2)) // 1) for q in exact]


def test_per_channel_vectorised_shifts():
    m0, sh = fp.quantize_multipliers([0.5, 0.001, 3.0])
    x = np.array([[100, 100, 100], [-7, -7, -7]])
    got = fp.multiply_by_quantized_multiplier(x, m0, sh)
    assert got.tolist() == [[_qm(100, 0.5), _qm(100, 0.001), _qm(100, 3.0)],
                            [_qm(-7, 0.5), _qm(-7, 0.001), _qm(-7, 3.0)]]


def test_saturate_and_count():
    x = np.array([-300, -128, 0, 127, 300])
    assert fp.saturate(x, np.int8).tolist() == [-128, -128, 0, 127, 127]
    assert fp.saturate_count(x, -128, 127) == 2


def test_rounding_right_shift_half_up():
    assert fp.rounding_right_shift(np.array([5, -5, 4, -4, 6]), 1).tolist() == [3, -2, 2, -2, 3]
    assert fp.rounding_right_shift(np.array([5]), 0).tolist() == [5]
