"""Indexing kernels (runtime/kernels/float/index_ops.py) against ONNX Runtime."""
import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float import index_ops as K
from nodecheck import check_op, make_node_model, run_lowbit, run_ort

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
DTYPES = [np.float32, np.int64, np.bool_]


def data(rng, shape, dtype=np.float32):
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def i64(*v):
    return np.array(v, dtype=np.int64)


# -- Gather ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,indices", [
    ((5, 3), 0, [0, 4, 2]), ((5, 3), 1, [[0, 2], [-1, -3]]), ((5, 3), -1, [-1]), ((5, 3), -2, [-5, 4, 0]),
    ((5, 3), 0, 3), ((5,), 0, -2), ((5, 3), 0, np.zeros((0,), np.int64)), ((2, 3, 4), 1, [[2, 1, 0, -1]]),
    ((5, 0), 0, [1, 2]),
])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_gather(rng, shape, axis, indices, dtype, index_dtype):
    check_op("Gather", {"x": data(rng, shape, dtype), "i": np.array(indices, index_dtype)}, {"axis": axis})


def test_gather_out_of_range():
    with pytest.raises(ModelError, match="Gather.*7.*-5..4"):
        K.Gather(np.zeros(5), i64(1, 7))
    with pytest.raises(ModelError, match="-6"):
        K.Gather(np.zeros(5), i64(-6))


# -- GatherElements ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,indices", [
    ((3, 3), 0, [[1, 2, 0], [2, 0, 0]]), ((3, 3), 1, [[0, 0], [1, 0], [2, 2]]), ((3, 3), -1, [[-1], [-3], [0]]),
    ((2, 3, 4), 1, np.array([[[0, 1, 2, -1]] * 5] * 2)), ((4,), 0, [3, -4, 0, 0, 1]), ((3, 3), 0, [[1, 2]]),
    ((3, 3), 1, np.zeros((3, 0), np.int64)),
])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_gather_elements(rng, shape, axis, indices, dtype, index_dtype):
    check_op("GatherElements", {"x": data(rng, shape, dtype), "i": np.array(indices, index_dtype)},
             {"axis": axis})


# -- GatherND ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,indices,batch_dims", [
    ((2, 2), [[0, 0], [1, 1]], 0), ((2, 2), [[1], [0]], 0), ((2, 2, 2), [[[0, 1]], [[1, 0]]], 0),
    ((2, 2, 2), [[1], [0]], 1), ((2, 3, 4), [[-1, 2], [0, -3]], 0), ((2, 3, 4), [[[1, 2]], [[0, 3]]], 1),
    ((2, 3, 4, 5), np.zeros((2, 3, 6, 1), np.int64) + 2, 2), ((2, 3), np.zeros((0, 2), np.int64), 0),
    ((2, 3), np.zeros((4, 0), np.int64), 0), ((3, 4), [2, -1], 0),
])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_nd(rng, shape, indices, batch_dims, dtype):
    check_op("GatherND", {"x": data(rng, shape, dtype), "i": np.array(indices, np.int64)},
             {"batch_dims": batch_dims})


def test_gather_nd_errors():
    with pytest.raises(ModelError, match="does not fit"):
        K.GatherND(np.zeros((2, 3)), np.zeros((3, 1), np.int64), batch_dims=1)
    with pytest.raises(ModelError, match="out of range"):
        K.GatherND(np.zeros((2, 3)), i64(1, 3))


# -- ScatterND, ScatterElements ------------------------------------------------------------------------------

REDUCTIONS = ["none", "add", "mul", "max", "min"]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,indices", [
    ((4, 4, 4), [[0], [2]]), ((4, 3), [[1, 2], [3, 0], [0, 0]]), ((8,), [[4], [3], [1], [7]]),
    ((2, 3, 4), [[[0, 1], [1, 2]]]), ((4, 3), np.zeros((0, 1), np.int64)), ((4, 3), [[-1], [-4]]),
])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_scatter_nd(rng, reduction, shape, indices, dtype):
    indices = np.array(indices, np.int64)
    updates = data(rng, indices.shape[:-1] + shape[indices.shape[-1]:], dtype)
    check_op("ScatterND", {"x": data(rng, shape, dtype), "i": indices, "u": updates}, {"reduction": reduction})


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_nd_duplicates_accumulate(rng, reduction):
    indices = i64(0, 2, 0, 0, 2).reshape(5, 1)
    check_op("ScatterND", {"x": data(rng, (4, 3)), "i": indices, "u": data(rng, (5, 3))}, {"reduction": reduction})


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape,axis,indices", [
    ((3, 3), 0, [[1, 0, 2], [0, 2, 1]]), ((3, 3), 1, [[2, 0], [1, 2], [0, 1]]), ((1, 5), 1, [[1, -2, 4]]),
    ((2, 3, 4), -1, np.array([[[3, 0, 1]] * 3] * 2)), ((4,), 0, [0, 3]), ((3, 3), 0, np.zeros((0, 3), np.int64)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_scatter_elements(rng, reduction, shape, axis, indices, dtype):
    indices = np.array(indices, np.int64)
    check_op("ScatterElements", {"x": data(rng, shape, dtype), "i": indices, "u": data(rng, indices.shape, dtype)},
             {"axis": axis, "reduction": reduction})


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_elements_duplicates_accumulate(rng, reduction):
    indices = i64(1, 1, 1, 0, 3, 1).reshape(1, 6)
    check_op("ScatterElements", {"x": data(rng, (2, 4)), "i": indices, "u": data(rng, (1, 6))},
             {"axis": 1, "reduction": reduction})


def test_scatter_errors():
    x = np.zeros((3, 3), np.float32)
    with pytest.raises(ModelError, match="reduction"):
        K.ScatterElements(x, np.zeros((1, 1), np.int64), np.ones((1, 1), np.float32), reduction="sum")
    with pytest.raises(ModelError, match="out of range"):
        K.ScatterElements(x, np.full((1, 1), 3), np.ones((1, 1), np.float32))
    with pytest.raises(ModelError, match="do not fit"):
        K.ScatterND(x, i64(0).reshape(1, 1), np.ones((1, 2), np.float32))


# -- TopK ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,k", [((3, 4), -1, 2), ((3, 4), 0, 3), ((3, 4), -2, 1), ((5,), 0, 5),
                                          ((5,), 0, 0), ((2, 7, 3), 1, 4), ((2, 0), 1, 0)])
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64, np.int32])
def test_topk(rng, shape, axis, k, largest, dtype):
    check_op("TopK", {"x": data(rng, shape, dtype), "k": i64(k)}, {"axis": axis, "largest": largest}, n_outputs=2)


@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_topk_ties_lower_index_first(rng, largest, axis):
    x = rng.integers(0, 3, (6, 9, 4)).astype(np.float32)
    x[0, 0, 0] = -0.0  # equal to +0.0: a tie as well
    check_op("TopK", {"x": x, "k": i64(4)}, {"axis": axis, "largest": largest}, n_outputs=2)


@pytest.mark.parametrize("k", [1, 37, 199, 200])
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("dtype", [np.float32, np.int64])
def test_topk_many_ties_at_the_cut(rng, k, largest, dtype):
    """Few distinct values (and NaNs for floats): the k-th value is tied many times, so the cut must take the
    lowest-indexed of the tied elements."""
    x = rng.integers(0, 5, (6, 200)).astype(dtype)
    if dtype == np.float32:
        x[rng.random(x.shape) < 0.1] = np.nan
    check_op("TopK", {"x": x, "k": i64(k)}, {"largest": largest}, n_outputs=2)


@pytest.mark.parametrize("largest", [1, 0])
def test_topk_nan(largest):
    x = np.array([[1, np.nan, 3, 5, np.nan, -1]], np.float32)
    check_op("TopK", {"x": x, "k": i64(3)}, {"largest": largest}, n_outputs=2)


@pytest.mark.parametrize("largest", [1, 0])
def test_topk_unsorted_same_set(rng, largest):
    """sorted=0 leaves the order unspecified: compare the selected (value, index) pairs as sets."""
    x = rng.standard_normal((4, 10)).astype(np.float32)
    inputs = {"x": x, "k": i64(5)}
    model = make_node_model("TopK", inputs, {"sorted": 0, "largest": largest}, n_outputs=2)
    (ev, ei), (gv, gi) = run_ort(model, inputs), run_lowbit(model, inputs)
    assert gv.dtype == ev.dtype and gi.dtype == ei.dtype == np.int64
    np.testing.assert_array_equal(np.sort(gi, axis=-1), np.sort(ei, axis=-1))
    np.testing.assert_array_equal(np.take_along_axis(x, gi, -1), gv)


def test_topk_errors():
    with pytest.raises(ModelError, match="TopK"):
        K.TopK(np.zeros((2, 3)), i64(4))
    with pytest.raises(ModelError, match="TopK"):
        K.TopK(np.zeros((2, 3)), i64(-1))


# -- NonZero -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 4), (7,), (2, 3, 4), (0, 3), ()])
@pytest.mark.parametrize("dtype", DTYPES)
def test_nonzero(rng, shape, dtype):
    x = data(rng, shape, dtype)
    if dtype != np.bool_:
        x = np.where(rng.random(shape) > 0.5, x, 0).astype(dtype)
    check_op("NonZero", {"x": x})


@pytest.mark.parametrize("x", [np.zeros((3, 2), np.float32), np.array(0, np.int64), np.array(True)])
def test_nonzero_no_hits_and_scalars(x):
    check_op("NonZero", {"x": x})


# -- OneHot --------------------------------------------------------------------------------------------------------

# the (indices, depth, values) dtype combinations ONNX Runtime has a OneHot kernel for
ONEHOT_DTYPES = [(np.int64, np.int64, np.float32), (np.int64, np.int64, np.int64), (np.int64, np.int32, np.float32),
                 (np.int64, np.float32, np.float32), (np.int64, np.float32, np.int32),
                 (np.int32, np.int32, np.float32), (np.int32, np.float32, np.float32),
                 (np.float32, np.int64, np.int64), (np.float32, np.float32, np.float32)]


@pytest.mark.parametrize("indices,depth,axis", [
    ([0, 2, 1], 3, -1), ([[1, 9], [2, 4]], 10, 1), ([[1, 9], [2, 4]], 10, 0), ([[1, 9], [2, 4]], 10, -2),
    ([[-1, -3], [0, 3]], 3, -1), ([5, -5, 2, -4], 4, 0), ([[]], 4, -1), ([2], 1, 0),
])
@pytest.mark.parametrize("index_dtype,depth_dtype,value_dtype", ONEHOT_DTYPES)
def test_onehot(indices, depth, axis, index_dtype, depth_dtype, value_dtype):
    inputs = {"i": np.array(indices, index_dtype), "d": np.array(depth, depth_dtype),
              "v": np.array([2, 7], value_dtype)}
    check_op("OneHot", inputs, {"axis": axis}, consts=("d", "v"))


def test_onehot_fractional_indices_and_depth():
    inputs = {"i": np.array([1.7, -1.2, 2.9, -0.5], np.float32), "d": np.array([3.8], np.float32),
              "v": np.array([0, 1], np.float32)}
    check_op("OneHot", inputs, consts=("d", "v"))


# -- Trilu ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(4, 5), (5, 4), (3, 3), (2, 3, 4), (1, 5), (0, 3), (2, 0, 2)])
@pytest.mark.parametrize("k", [None, 0, 1, -1, 3, -4, 100, -100, I64_MAX, I64_MIN])
@pytest.mark.parametrize("upper", [1, 0])
def test_trilu(rng, shape, k, upper):
    inputs = {"x": data(rng, shape)}
    if k is not None:
        inputs["k"] = np.array(k, np.int64)
    check_op("Trilu", inputs, {"upper": upper})


@pytest.mark.parametrize("dtype", [np.int64, np.bool_, np.float64])
@pytest.mark.parametrize("upper", [1, 0])
def test_trilu_dtypes(rng, dtype, upper):
    check_op("Trilu", {"x": data(rng, (3, 4), dtype), "k": np.array(1, np.int64)}, {"upper": upper},
             consts=("k",))


# -- read-only inputs ------------------------------------------------------------------------------------------

def _ro(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_kernels_never_write_into_inputs():
    x = _ro(np.arange(12, dtype=np.float32).reshape(3, 4))
    idx = _ro(i64(0, 2, 0).reshape(3, 1))
    K.Gather(x, _ro(i64(-1, 0)), axis=1)
    K.GatherElements(x, _ro(np.zeros((3, 4), np.int64)), axis=0)
    K.GatherND(x, idx)
    for reduction in REDUCTIONS:
        K.ScatterND(x, idx, _ro(np.ones((3, 4), np.float32)), reduction=reduction)
        K.ScatterElements(x, _ro(np.zeros((3, 4), np.int64)), _ro(np.ones((3, 4), np.float32)), reduction=reduction)
    K.TopK(x, _ro(i64(2)))
    K.TopK(x, _ro(i64(2)), largest=0)
    K.NonZero(x)
    K.OneHot(_ro(i64(0, 1)), _ro(i64(3)), _ro(np.array([0, 1], np.float32)))
    K.Trilu(x, _ro(np.array(1)))
