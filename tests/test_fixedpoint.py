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


# --- the fused fast path equals the definition -----------------------------------------------------------------
def _fast_cases():
    """(x, m0, shift, bias): ties (m0 = 2^30 makes SRDHM = floor((x + 1) / 2), so every RoundingDivideByPOT tie
    occurs), m0 at both ends of [2^30, 2^31), every shift from -31 to 30, int32 extremes, per-channel vectors."""
    # around +-2^e and +-3 * 2^e, SRDHM (m0 = 2^30) gives y = +-2^(e-1): RoundingDivideByPOT's ties for every e
    pot = np.array([(1 << e) * k + d for e in range(1, 31) for k in (-3, -1, 1, 3) for d in (-2, -1, 0, 1)])
    extremes = np.array([I32MIN + 2, -(1 << 24) - 1, (1 << 24) + 1, I32MAX - 1])  # |x| < 2^31 - 1: fast path
    base = np.concatenate([np.arange(-300, 300), pot[np.abs(pot) < I32MAX - 4], extremes])
    for m0 in (1 << 30, (1 << 30) + 1, 3 << 29, I32MAX):
        for shift in list(range(-31, 1)) + [1, 2, 7, 30]:
            x = base[np.abs(base << max(shift, 0)) <= I32MAX]  # TFLite computes x * 2^left in int32
            yield x, m0, shift, None
            xb = x[np.abs((x - 3) << max(shift, 0)) <= I32MAX]
            if xb.size:
                yield xb, m0, shift, np.array([-3])
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(1, 17))
        m0 = rng.integers(1 << 30, 1 << 31, n)
        m0[rng.random(n) < 0.2] = 1 << 30
        shift = rng.integers(-20, 3, n)
        bias = None if rng.random() < 0.3 else rng.integers(-(1 << 20), 1 << 20, n)
        x = rng.integers(-(1 << 21), 1 << 21, (int(rng.integers(1, 60)), n))
        x = (x >> int(rng.integers(0, 16))) << int(rng.integers(0, 8))  # low bits zero: more ties
        yield x, m0, shift, bias


@pytest.mark.parametrize("x_type", [np.int32, np.int64])
def test_fast_multiply_equals_definition(x_type):
    for x, m0, shift, bias in _fast_cases():
        for offset in (0, -128, 37):
            assert fp._fast_plan(m0, shift, bias, offset, int(np.abs(x).max()), x_type == np.int32) is not None
            want = fp.multiply_by_quantized_multiplier(x + (0 if bias is None else bias), m0, shift) + offset
            got = fp.multiply_by_quantized_multiplier_fast(x.astype(x_type), m0, shift, bias=bias, offset=offset)
            assert got.dtype == np.int64 and np.array_equal(got, want), (m0, shift, offset)


@pytest.mark.parametrize("x_type", [np.int32, np.int64])
def test_requantize_fast_equals_clipped_definition_and_counts_clips(x_type):
    """Includes lo == offset (a fused ReLU), where the fast path skips the tie correction of negative values:
    outputs and saturation counts must still equal the definition's, also at y = -2^(e-1) exactly."""
    for x, m0, shift, bias in _fast_cases():
        for offset, lo, hi in ((-128, -128, 127), (-128, -128, -128), (5, 5, 127), (5, 6, 20), (3, -128, 127),
                               (-3, -20, 20)):
            assert fp._fast_plan(m0, shift, bias, offset, int(np.abs(x).max()), x_type == np.int32) is not None
            raw = fp.multiply_by_quantized_multiplier(x + (0 if bias is None else bias), m0, shift) + offset
            y, n = fp.requantize_fast(x.astype(x_type), m0, shift, bias=bias, offset=offset, lo=lo, hi=hi,
                                      dtype=np.int8)
            assert y.dtype == np.int8 and np.array_equal(y, np.clip(raw, lo, hi)), (m0, shift, offset, lo)
            assert n == fp.saturate_count(raw, lo, hi), (m0, shift, offset, lo)


def test_fast_path_keeps_the_definition_outside_its_preconditions():
    """m0 below 2^30 or negative, |x| near 2^31 with a large bias, products reaching 2^62: the fast functions
    fall back to multiply_by_quantized_multiplier, so results never differ."""
    x = np.array([I32MIN, -12345, -1, 0, 1, 777, I32MAX])
    for m0, shift, bias in ((5, -3, None), (-(1 << 30), -4, None), (1 << 30, 30, None), (I32MAX, -2, np.array([9]))):
        xb = x + (0 if bias is None else bias)
        want = fp.multiply_by_quantized_multiplier(xb, m0, shift)
        assert np.array_equal(fp.multiply_by_quantized_multiplier_fast(x, m0, shift, bias=bias), want)
        y, n = fp.requantize_fast(x, m0, shift, bias=bias, lo=-128, hi=127, dtype=np.int8)
        assert np.array_equal(y, np.clip(want, -128, 127)) and n == fp.saturate_count(want, -128, 127)
    assert fp._fast_plan(np.array([5]), np.array([0]), None, 0, 100, True) is None  # m0 < 2^30
    assert fp._fast_plan(np.array([1 << 30]), np.array([0]), None, 0, I32MAX, True) is None  # |x| bound too big


def test_fast_path_uses_a_given_bound_and_the_sign_trick_only_where_valid():
    m0, shift = np.array([1 << 30, 3 << 29]), np.array([-5, -5])
    assert fp._fast_plan(m0[1:], shift[1:], None, 0, 1 << 20, True).neg == "sign"
    assert fp._fast_plan(m0, shift, None, 0, 1 << 20, True).neg == "below"  # m0 = 2^30: ties at x = -1 differ
    assert fp._fast_plan(m0[1:], shift[1:], np.array([4]), 0, 1 << 20, True).neg == "below"
    assert fp._fast_plan(m0[1:], np.array([2]), None, 0, 1 << 20, True).neg == "none"
    x = np.arange(-3000, 3000, dtype=np.int32).reshape(-1, 2)
    got = fp.multiply_by_quantized_multiplier_fast(x, m0, shift, x_abs_max=3000)
    assert np.array_equal(got, fp.multiply_by_quantized_multiplier(x, m0, shift))
