import numpy as np
import pytest

from nodecheck import check_op
from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.reduce import ArgMax, ReduceSum

NAN, INF = np.nan, np.inf
REDUCES = ["ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceSumSquare", "ReduceLogSum", "ReduceLogSumExp"]
# axes input (None = omitted), for an input of rank 3
AXES = [None, [], [1], [-1], [0, 2], [-3, 1], [2, 0, 1]]


def _data(rng, op, dtype, shape=(2, 3, 4)):
    """Values the reduction is well defined on: positive for the logarithms, small for the products."""
    kind = np.dtype(dtype).kind
    if kind == "f":
        low = 0.1 if op == "ReduceLogSum" else -2.0
        return rng.uniform(low, 2.0, shape).astype(dtype)
    low = 1 if op == "ReduceLogSum" else -3
    return rng.integers(low, 4, shape).astype(dtype)


def _tol(dtype):
    return {"rtol": 3e-3, "atol": 3e-3} if dtype == np.float16 else {"rtol": 1e-5, "atol": 1e-5}


def _axes_input(axes):
    return None if axes is None else np.array(axes, np.int64)


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("axes", AXES, ids=str)
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("noop", [0, 1])
def test_reduce_axes(rng, op, axes, keepdims, noop):
    attrs = {"keepdims": keepdims, "noop_with_empty_axes": noop}
    check_op(op, {"data": _data(rng, op, np.float32), "axes": _axes_input(axes)}, attrs, consts=("axes",))


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64])
@pytest.mark.parametrize("axes", [None, [1], [0, 2]], ids=str)
def test_reduce_dtypes(rng, op, dtype, axes):
    check_op(op, {"data": _data(rng, op, dtype), "axes": _axes_input(axes)}, **_tol(dtype))


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.bool_])
def test_reduce_max_min_small_dtypes(rng, op, dtype):
    data = rng.integers(0, 2 if dtype == np.bool_ else 100, (3, 4)).astype(dtype)
    check_op(op, {"data": data, "axes": np.array([1], np.int64)})
    check_op(op, {"data": data}, {"keepdims": 0})


def test_reduce_axes_as_graph_input(rng):
    """axes fed at run time rather than stored in the model."""
    for op in ("ReduceSum", "ReduceMean", "ReduceMax"):
        check_op(op, {"data": _data(rng, op, np.float32), "axes": np.array([0, -1], np.int64)})


@pytest.mark.parametrize("op", REDUCES)
@pytest.mark.parametrize("dtype", [np.float32, np.int32, np.int64])
def test_reduce_empty_set(op, dtype):
    """Reducing a zero-length axis gives the reduction's identity (as ONNX Runtime defines it)."""
    data = np.zeros((2, 0, 3), dtype)
    check_op(op, {"data": data, "axes": np.array([1], np.int64)}, consts=("axes",))
    check_op(op, {"data": data, "axes": np.array([0], np.int64)}, {"keepdims": 0}, consts=("axes",))


@pytest.mark.parametrize("op", REDUCES)
def test_reduce_scalar_and_single_element(rng, op):
    check_op(op, {"data": np.array(1.5, np.float32)})
    check_op(op, {"data": np.array([[1.5]], np.float32)}, {"keepdims": 0})


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2",
                                "ReduceSumSquare", "ReduceLogSumExp"])
def test_reduce_nan_inf(op):
    data = np.array([[1, NAN, 2], [INF, 1, 2], [-INF, -INF, 0], [INF, -INF, 1]], np.float32)
    check_op(op, {"data": data, "axes": np.array([1], np.int64)})


def test_reduce_log_sum_exp_is_stable():
    data = np.array([[1000, 1000, 999], [-1000, -1001, -1002]], np.float32)
    check_op("ReduceLogSumExp", {"data": data, "axes": np.array([1], np.int64)})


def test_reduce_mean_integer_truncates():
    data = np.array([[-7, 0, 0], [-8, 0, 0], [7, 1, 0], [5, 5, 5]], np.int32)
    check_op("ReduceMean", {"data": data, "axes": np.array([1], np.int64)})
    check_op("ReduceMean", {"data": data.astype(np.int64)}, {"keepdims": 0})


def test_reduce_bad_axes():
    with pytest.raises(ModelError, match="ReduceSum: axis 3 is out of range"):
        ReduceSum(np.zeros((2, 3, 4)), np.array([3]))
    with pytest.raises(ModelError, match="twice"):
        ReduceSum(np.zeros((2, 3, 4)), np.array([1, -2]))


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
@pytest.mark.parametrize("keepdims", [0, 1])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_attributes(rng, op, axis, keepdims, last):
    data = rng.integers(0, 3, (3, 4, 5)).astype(np.float32)  # many ties
    check_op(op, {"data": data}, {"axis": axis, "keepdims": keepdims, "select_last_index": last})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8])
def test_arg_dtypes(rng, op, dtype):
    data = rng.integers(0, 4, (4, 6)).astype(dtype)
    check_op(op, {"data": data}, {"axis": 1})
    check_op(op, {"data": data}, {"axis": 0, "select_last_index": 1, "keepdims": 0})


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_arg_nan_as_onnxruntime_scans(op, last):
    """ONNX Runtime skips NaN, except a NaN in the first place, which is never replaced."""
    data = np.array([[NAN, 2, 1, 3], [1, NAN, 3, 3], [3, 3, NAN, -1], [NAN, NAN, NAN, NAN], [-INF, NAN, -INF, NAN],
                     [INF, NAN, INF, 0], [2, 2, 2, 2], [0.0, -0.0, 0.0, NAN]], np.float32)
    check_op(op, {"data": data}, {"axis": 1, "select_last_index": last})
    check_op(op, {"data": np.ascontiguousarray(data.T)}, {"axis": 0, "select_last_index": last, "keepdims": 0})


def test_arg_bad_axis():
    with pytest.raises(ModelError, match="ArgMax: axis 2 is out of range"):
        ArgMax(np.zeros((2, 3)), axis=2)


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
def test_cumsum_attributes(rng, axis, exclusive, reverse):
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    check_op("CumSum", {"x": x, "axis": np.array(axis, np.int64)}, {"exclusive": exclusive, "reverse": reverse})


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int32, np.int64])
@pytest.mark.parametrize("axis_dtype", [np.int32, np.int64])
def test_cumsum_dtypes(rng, dtype, axis_dtype):
    x = rng.integers(-5, 6, (3, 5)).astype(dtype)
    for attrs in ({}, {"exclusive": 1, "reverse": 1}):
        check_op("CumSum", {"x": x, "axis": np.array(-1, axis_dtype)}, attrs, consts=("axis",), **_tol(dtype))
    check_op("CumSum", {"x": x, "axis": np.array([0], axis_dtype)}, **_tol(dtype))


def test_cumsum_edges():
    check_op("CumSum", {"x": np.zeros((0, 3), np.float32), "axis": np.array(0, np.int64)})
    check_op("CumSum", {"x": np.array([1, NAN, 2, INF, -INF, 1], np.float32), "axis": np.array(0, np.int64)},
             {"reverse": 1})
    info = np.iinfo(np.int32)
    check_op("CumSum", {"x": np.array([info.max, 1, 1], np.int32), "axis": np.array(0, np.int64)})  # wraps
