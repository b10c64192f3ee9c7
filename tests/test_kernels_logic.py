import numpy as np
import pytest
from onnx import TensorProto, helper

from nodecheck import check_op
from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.logic import BitShift, Cast, Where

NAN, INF = np.nan, np.inf
NUMERIC = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
           np.uint32, np.uint64]
BROADCASTS = [((3, 4), (3, 4)), ((), (2, 3)), ((2, 3, 4), (4,)), ((2, 1, 4), (3, 1)), ((0, 3), (1,))]


def _ints(rng, shape, dtype, low=0, high=4):
    return rng.integers(low, high, shape).astype(dtype)


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
@pytest.mark.parametrize("dtype", NUMERIC)
def test_comparison_dtypes(rng, op, dtype):
    # few distinct values, so that equal pairs occur
    check_op(op, {"a": _ints(rng, (4, 5), dtype), "b": _ints(rng, (4, 5), dtype)})


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_comparison_broadcast(rng, op, shapes):
    check_op(op, {"a": _ints(rng, shapes[0], np.float32), "b": _ints(rng, shapes[1], np.float32)})


@pytest.mark.parametrize("op", ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"])
def test_comparison_nan_inf(op):
    a = np.array([NAN, NAN, 1, INF, -INF, INF, 0.0], np.float32)
    b = np.array([NAN, 1, NAN, INF, -INF, -INF, -0.0], np.float32)
    check_op(op, {"a": a, "b": b})


def test_equal_bool(rng):
    check_op("Equal", {"a": _ints(rng, (3, 4), bool, 0, 2), "b": _ints(rng, (4,), bool, 0, 2)})


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
@pytest.mark.parametrize("shapes", BROADCASTS, ids=str)
def test_logic(rng, op, shapes):
    check_op(op, {"a": _ints(rng, shapes[0], bool, 0, 2), "b": _ints(rng, shapes[1], bool, 0, 2)})


def test_not(rng):
    check_op("Not", {"x": _ints(rng, (3, 4), bool, 0, 2)})
    check_op("Not", {"x": np.array(True)})


@pytest.mark.parametrize("shapes", [((3, 4), (3, 4), (3, 4)), ((), (2, 3), ()), ((3, 1), (4,), (1, 1, 4)),
                                    ((2, 1, 1), (1, 3, 1), (1, 1, 4)), ((4,), (), (3, 4)), ((0, 1), (3,), ())],
                         ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8,
                                   np.uint32])
def test_where(rng, shapes, dtype):
    c, x, y = shapes
    check_op("Where", {"c": _ints(rng, c, bool, 0, 2), "x": _ints(rng, x, dtype, 0, 50),
                       "y": _ints(rng, y, dtype, 50, 100)})


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.uint64])
def test_bitshift(rng, direction, dtype):
    bits = np.dtype(dtype).itemsize * 8
    x = rng.integers(0, np.iinfo(dtype).max, (3, 5), dtype=dtype, endpoint=True)
    y = rng.integers(0, bits, (5,)).astype(dtype)
    check_op("BitShift", {"x": x, "y": y}, {"direction": direction})
    check_op("BitShift", {"x": x, "y": np.array(bits - 1, dtype)}, {"direction": direction})


# values every cast is tried on: NaN, infinities, out-of-range, halves, negatives for unsigned targets
CAST_VALUES = [NAN, INF, -INF, 3e9, -3e9, 1e20, -1e20, 300.7, -300.7, 70000.5, -129.9, 255.9, 256.2, -1.9, -0.5,
               0.5, 2.5, -0.0, 0.0, 1.0, 65504.0, 65520.0, 1e-8, 8589934597.0, 1.8e19]
CAST_DTYPES = [np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
               np.uint32, np.uint64, np.bool_]


# integers every cast from an integer dtype is tried on (those the source dtype holds), around the limits of
# the narrower dtypes and of float16/float32/float64 exactness
CAST_INTS = [0, 1, -1, 255, 256, -129, 65535, 65536, -32769, 2**24 + 1, 2**31, -2**31 - 1, 2**53 + 1, 2**62 + 1,
             2**63]


def _cast_source(dtype):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        with np.errstate(over="ignore"):
            return np.tile(np.array(CAST_VALUES).astype(dtype), 20)  # long enough for SIMD code paths
    if dtype.kind == "b":
        return np.array([True, False, True])
    info = np.iinfo(dtype)
    return np.array([v for v in [info.min, info.max, info.max // 3] + CAST_INTS if info.min <= v <= info.max],
                    dtype)


@pytest.mark.parametrize("to", CAST_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("src", CAST_DTYPES, ids=lambda d: np.dtype(d).name)
def test_cast(src, to):
    x = _cast_source(src)
    check_op("Cast", {"x": x}, {"to": helper.np_dtype_to_tensor_dtype(np.dtype(to))})


@pytest.mark.parametrize("to", [np.float32, np.float16, np.int8, np.uint8, np.int64, np.bool_],
                         ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("src", [np.float32, np.float64, np.int32, np.bool_], ids=lambda d: np.dtype(d).name)
def test_castlike(src, to):
    check_op("CastLike", {"x": _cast_source(src), "like": np.zeros((2, 0), to)})
    check_op("CastLike", {"x": _cast_source(src), "like": np.ones((1,), to)}, consts=("like",))


def test_cast_shapes():
    check_op("Cast", {"x": np.array(2.7, np.float32)}, {"to": TensorProto.INT32})
    check_op("Cast", {"x": np.zeros((0, 3), np.float32)}, {"to": TensorProto.FLOAT16})


@pytest.mark.parametrize("to", [TensorProto.STRING, TensorProto.BFLOAT16, TensorProto.FLOAT8E4M3FN, 99])
def test_cast_unsupported_target_names_the_dtype(to):
    with pytest.raises(ModelError, match="Cast: target dtype"):
        Cast(np.zeros(2, np.float32), to=to)


def test_bad_inputs_raise_model_errors():
    with pytest.raises(ModelError, match="Where: condition must be bool, got float32"):
        Where(np.zeros(2, np.float32), np.zeros(2), np.zeros(2))
    with pytest.raises(ModelError, match="BitShift: direction='UP'"):
        BitShift(np.zeros(2, np.uint8), np.zeros(2, np.uint8), direction="UP")
