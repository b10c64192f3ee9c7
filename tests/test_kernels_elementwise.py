import math

import numpy as np
import pytest

from nodecheck import check_op
from lowbit.runtime.kernels.float.elementwise import erf64

NAN, INF = np.nan, np.inf
ALL_NUMERIC = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
               np.uint32, np.uint64]
# (shape of a, shape of b): equal, scalar either side, trailing 1s, rank mismatch, both sides stretched
BROADCASTS = [((3, 4), (3, 4)), ((), (2, 3)), ((2, 3), ()), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)),
              ((1,), (2, 3)), ((4, 1), (1, 5)), ((2, 0, 3), (3,))]


def _values(rng, shape, dtype, low=-9, high=10, nonzero=False):
    """Random values of ``dtype`` in [low, high) (clipped to the dtype), without 0 when ``nonzero``."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        v = rng.uniform(low, high, shape)
    elif dtype.kind == "b":
        v = rng.integers(0, 2, shape)
    else:
        lo = max(low, np.iinfo(dtype).min)
        v = rng.integers(lo, max(high, lo + 2), shape)
    if nonzero:
        v = np.where(v == 0, 1, v)
    return np.asarray(v).astype(dtype)


def _tol(dtype):
    return {"rtol": 2e-3, "atol": 2e-3} if dtype == np.float16 else {}


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", ALL_NUMERIC)
def test_arithmetic_dtypes(rng, op, dtype):
    low = 0 if np.dtype(dtype).kind == "u" else -9
    check_op(op, {"a": _values(rng, (3, 4), dtype, low), "b": _values(rng, (3, 4), dtype, low, nonzero=True)},
             **_tol(dtype))


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.int32])
def test_arithmetic_broadcast(rng, op, shapes, dtype):
    check_op(op, {"a": _values(rng, shapes[0], dtype), "b": _values(rng, shapes[1], dtype, nonzero=True)})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arithmetic_nan_inf(op):
    a = np.array([NAN, INF, -INF, INF, 1, -1, 0, 0], np.float32)
    b = np.array([1, INF, INF, 0, 0, 0, 0, -INF], np.float32)
    check_op(op, {"a": a, "b": b})


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64])
def test_integer_div_truncates_toward_zero(dtype):
    info = np.iinfo(dtype)
    a = np.array([7, -7, 7, -7, 6, -6, 1, -1, 0, info.max, info.min, info.min + 1], dtype)
    b = np.array([2, 2, -2, -2, 3, 3, 5, 5, -3, -1, 7, -1], dtype)
    got = check_op("Div", {"a": a, "b": b})[0]
    assert got[:4].tolist() == [3, -3, -3, 3]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint32, np.uint64])
def test_unsigned_div(dtype):
    info = np.iinfo(dtype)
    check_op("Div", {"a": np.array([7, 0, info.max, 5], dtype), "b": np.array([2, 3, 7, 9], dtype)})


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_mod_signs(fmod, dtype):
    signed = np.dtype(dtype).kind == "i"
    a = np.array([7, -7, 7, -7, 6, 0, -4, 13] if signed else [7, 9, 7, 200, 6, 0, 4, 13], dtype)
    b = np.array([3, 3, -3, -3, 3, 5, 7, -5] if signed else [3, 4, 2, 7, 3, 5, 7, 5], dtype)
    got = check_op("Mod", {"a": a, "b": b}, {"fmod": fmod})[0]
    if signed:
        assert got[:4].tolist() == ([1, -1, 1, -1] if fmod else [1, 2, -2, -1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_float_fmod(rng, dtype):
    a = np.array([5.5, -5.5, 5.5, -5.5, 0.0, INF, 3.0, NAN, 2.0], dtype)
    b = np.array([2.0, 2.0, -2.0, -2.0, 3.0, 2.0, INF, 1.0, 0.0], dtype)
    check_op("Mod", {"a": a, "b": b}, {"fmod": 1})
    check_op("Mod", {"a": _values(rng, (2, 3, 4), dtype), "b": _values(rng, (3, 1), dtype, nonzero=True)},
             {"fmod": 1}, **_tol(dtype))


def test_mod_broadcast(rng):
    check_op("Mod", {"a": _values(rng, (2, 3, 4), np.int32, -50, 50), "b": np.array(-7, np.int32)})


# base dtype, exponent dtype (the pairs ONNX Runtime implements)
POW_TYPES = [(np.float32, np.float32), (np.float32, np.int64), (np.float32, np.int32), (np.float32, np.float64),
             (np.float64, np.float64), (np.float64, np.float32), (np.float64, np.int64), (np.int32, np.int32),
             (np.int64, np.int64), (np.int32, np.int64), (np.int64, np.float32), (np.int32, np.float64),
             (np.float16, np.float16)]


@pytest.mark.parametrize("types", POW_TYPES, ids=lambda t: f"{np.dtype(t[0]).name}^{np.dtype(t[1]).name}")
def test_pow_mixed_dtypes(types):
    tx, ty = types
    x = np.array([2, 3, -2, 0, 1, 5, 4, -3], tx)
    y = np.array([3, 2, 3, 2, 7, -1, 0.5, 0.5] if np.dtype(ty).kind == "f" else [3, 2, 3, 2, 7, -1, 0, 1], ty)
    got = check_op("Pow", {"x": x, "y": y}, **_tol(tx))[0]
    assert got.dtype == tx


def test_pow_integer_edges():
    """2 ** -1 -> 0, overflow and 0 ** -1 take the C cast's value, big int64 powers are rounded like doubles."""
    check_op("Pow", {"x": np.array([2, 0, 3, 3, -2, 7], np.int64), "y": np.array([-1, -1, 39, 40, 63, 22], np.int64)})
    check_op("Pow", {"x": np.array([3, 2, -2, 0], np.int32), "y": np.array([21, 31, 31, -1], np.int32)})


@pytest.mark.parametrize("shapes", BROADCASTS[:7], ids=str)
def test_pow_broadcast(rng, shapes):
    check_op("Pow", {"x": _values(rng, shapes[0], np.float32, 0, 3), "y": _values(rng, shapes[1], np.float32, -2, 3)})


def test_pow_special_values():
    x = np.array([NAN, 1, -1, 0, 0, INF, -INF, -8, 2], np.float32)
    y = np.array([0, NAN, INF, -1, 0, -1, 3, 1 / 3, -INF], np.float32)
    check_op("Pow", {"x": x, "y": y})


@pytest.mark.parametrize("op", ["Min", "Max", "Sum", "Mean"])
@pytest.mark.parametrize("shapes", [[(3, 4)], [(3, 4), (3, 4)], [(2, 3, 4), (4,), (3, 1)], [(), (2, 1), (1, 5)],
                                    [(1,), (1,), (1,), (1,)]], ids=str)
def test_variadic_broadcast(rng, op, shapes):
    check_op(op, {f"x{i}": _values(rng, s, np.float32) for i, s in enumerate(shapes)})


@pytest.mark.parametrize("op, dtypes", [
    ("Min", [np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64]),
    ("Max", [np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64]),
    ("Sum", [np.float64, np.float16]),
    ("Mean", [np.float16])])
def test_variadic_dtypes(rng, op, dtypes):
    for dtype in dtypes:
        low = 0 if np.dtype(dtype).kind == "u" else -9
        check_op(op, {"a": _values(rng, (2, 3), dtype, low), "b": _values(rng, (3,), dtype, low)}, **_tol(dtype))


@pytest.mark.parametrize("op", ["Min", "Max"])
def test_min_max_nan_propagates(op):
    a = np.array([1, NAN, -2, INF, -INF, NAN], np.float32)
    b = np.array([NAN, 1, 3, -INF, 1, NAN], np.float32)
    check_op(op, {"a": a, "b": b})


def test_sum_mean_nan_inf():
    a = np.array([1, NAN, INF, INF], np.float32)
    b = np.array([2, 1, -INF, 1], np.float32)
    check_op("Sum", {"a": a, "b": b})
    check_op("Mean", {"a": a, "b": b})


SPECIALS = [NAN, INF, -INF, 0.0, -0.0]
# op -> (low, high) of the random inputs, and the float dtypes ONNX Runtime implements it for
UNARY_FLOAT = {
    "Exp": ((-10, 10), "edf"), "Log": ((0.01, 100), "edf"), "Sqrt": ((0, 100), "edf"),
    "Reciprocal": ((-10, 10), "edf"), "Floor": ((-5, 5), "edf"), "Ceil": ((-5, 5), "edf"),
    "Round": ((-5, 5), "edf"), "Sin": ((-7, 7), "edf"), "Cos": ((-7, 7), "edf"), "Tan": ((-1.5, 1.5), "ef"),
    "Asin": ((-1, 1), "ef"), "Acos": ((-1, 1), "ef"), "Atan": ((-10, 10), "ef"), "Sinh": ((-5, 5), "ef"),
    "Cosh": ((-5, 5), "ef"), "Tanh": ((-5, 5), "edf"), "Asinh": ((-10, 10), "ef"), "Acosh": ((1, 10), "ef"),
    "Atanh": ((-0.99, 0.99), "ef"), "Erf": ((-4, 4), "ef"), "Abs": ((-5, 5), "edf"), "Neg": ((-5, 5), "edf"),
    "Sign": ((-5, 5), "edf")}


@pytest.mark.parametrize("op, dtype", [(op, np.dtype(k).type) for op in sorted(UNARY_FLOAT)
                                        for k in UNARY_FLOAT[op][1]])
def test_unary_float(rng, op, dtype):
    (low, high), _ = UNARY_FLOAT[op]
    x = rng.uniform(low, high, (4, 25))
    x[0, :5] = SPECIALS
    x[0, 5:9] = [low, high, -1.0, 1.0]
    if op == "Sign" and dtype == np.float16:
        x[0, 0] = 1.0  # ONNX Runtime's float16 Sign gives 0 for NaN (float32/64: NaN); lowbit keeps NaN
    check_op(op, {"x": x.astype(dtype)}, **_tol(dtype))


def test_unary_out_of_domain():
    """NaN and infinities outside the real domain, as ONNX Runtime gives them."""
    check_op("Log", {"x": np.array([-1, 0, -0.0, INF], np.float32)})
    check_op("Sqrt", {"x": np.array([-1, -0.0, INF], np.float32)})
    check_op("Asin", {"x": np.array([-1.5, 2], np.float32)})
    check_op("Acosh", {"x": np.array([0.5, -1], np.float32)})
    check_op("Atanh", {"x": np.array([-1, 1, 2], np.float32)})
    check_op("Reciprocal", {"x": np.array([0, -0.0, INF], np.float32)})


def test_round_half_to_even():
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999998, 2.5000002, 1e8 + 2, -0.0], np.float32)
    got = check_op("Round", {"x": x})[0]
    assert got[:6].tolist() == [0, 2, 2, 0, -2, -2]


@pytest.mark.parametrize("op, dtype", [(op, t) for op in ["Abs", "Neg", "Sign"]
                                        for t in [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint32]
                                        if op != "Neg" or np.dtype(t).kind == "i"])
def test_unary_integer(op, dtype):
    info = np.iinfo(dtype)
    values = [info.min, info.min + 1, -3, 0, 3, info.max] if info.min else [0, 1, 3, info.max]
    check_op(op, {"x": np.array(values, dtype)})


def test_erf_matches_libm_in_float32_and_float64(rng):
    """erf64 is correctly rounded for float32 and within 1 ulp in float64 (golden: the C library's erf)."""
    x = np.concatenate([rng.standard_normal(20000) * 2, np.linspace(-6.5, 6.5, 20001),
                        [0.84375, 1.25, 1 / 0.35, 6.0, 1e-30, 5e-324]])
    want = np.array([math.erf(v) for v in x])
    got = erf64(x)
    assert np.max(np.abs(got - want) / np.spacing(np.abs(want) + 1e-300)) <= 1
    x32 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_array_equal(erf64(x32).astype(np.float32),
                                  np.array([math.erf(v) for v in x32]).astype(np.float32))


def test_erf_against_ort_dense(rng):
    check_op("Erf", {"x": np.linspace(-5, 5, 4001, dtype=np.float32)}, rtol=2e-7, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("attrs", [{}, {"detect_negative": 0}, {"detect_positive": 0},
                                   {"detect_negative": 0, "detect_positive": 0}], ids=str)
def test_isinf_isnan(dtype, attrs):
    x = np.array([[1, NAN, INF], [-INF, 0, -NAN]], dtype)
    check_op("IsInf", {"x": x}, attrs)
    check_op("IsNaN", {"x": x})


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.int64, np.uint8, np.bool_])
def test_identity(rng, dtype):
    check_op("Identity", {"x": _values(rng, (2, 3), dtype, 0, 2)})
    check_op("Identity", {"x": np.zeros((0, 3), dtype)})
