"""Shape and layout kernels (runtime/kernels/float/shape_ops.py) against ONNX Runtime."""
import numpy as np
import pytest
from onnx import helper, TensorProto

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float import shape_ops as K
from nodecheck import check_op, run_lowbit, run_ort

I64_MAX, I64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min
DTYPES = [np.float32, np.int64, np.bool_]


def i64(*v):
    return np.array(v, dtype=np.int64)


def data(rng, shape, dtype=np.float32):
    if dtype == np.bool_:
        return rng.random(shape) > 0.5
    if np.issubdtype(dtype, np.integer):
        return rng.integers(-50, 50, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


# -- Shape, Size ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("start,end", [(0, None), (1, None), (-1, None), (0, 2), (1, -1), (-10, 10), (3, 1),
                                       (2, 2), (-2, -1)])
def test_shape(rng, start, end):
    attrs = {"start": start} | ({} if end is None else {"end": end})
    check_op("Shape", {"x": data(rng, (2, 3, 4))}, attrs)


@pytest.mark.parametrize("shape", [(), (0,), (2, 0, 3), (5,)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_shape_size_corner_shapes(rng, shape, dtype):
    check_op("Shape", {"x": data(rng, shape, dtype)})
    check_op("Size", {"x": data(rng, shape, dtype)})


# -- Reshape, Flatten --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target,allowzero", [
    ((2, 3, 4), (4, 6), 0),
    ((2, 3, 4), (-1,), 0),
    ((2, 3, 4), (0, -1), 0),
    ((2, 3, 4), (0, 0, 2, 2), 0),
    ((2, 3, 4), (-1, 0, 4), 0),
    ((2, 3, 4), (1, 1, 24, 1), 0),
    ((0, 3), (-1, 3), 0),
    ((0, 3), (3, 0), 1),
    ((0, 3), (0, 3), 1),
    ((2, 0, 3), (0, 0, 5), 0),
    ((), (1,), 0),
    ((1,), (), 0),
    ((1, 1), (-1,), 0),
])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("const_shape", [True, False])
def test_reshape(rng, shape, target, allowzero, dtype, const_shape):
    check_op("Reshape", {"x": data(rng, shape, dtype), "shape": np.array(target, np.int64)},
             {"allowzero": allowzero}, consts=("shape",) if const_shape else ())


@pytest.mark.parametrize("shape,target,allowzero", [
    ((2, 3), (4, -1), 0), ((2, 3), (-1, -1), 0), ((2, 3), (0, 0, 0), 0), ((0, 3), (0, -1), 1),
    ((2, 3), (7,), 0), ((2, 3), (-2, 3), 0), ((0, 3), (0, -1), 0)])
def test_reshape_errors(shape, target, allowzero):
    with pytest.raises(ModelError, match="Reshape"):
        K.Reshape(np.zeros(shape, np.float32), np.array(target, np.int64), allowzero=allowzero)


@pytest.mark.parametrize("axis", range(-4, 5))
def test_flatten(rng, axis):
    check_op("Flatten", {"x": data(rng, (2, 3, 4, 5))}, {"axis": axis})


@pytest.mark.parametrize("shape,axis", [((), 0), ((3,), 0), ((3,), 1), ((2, 0, 3), 1), ((2, 0, 3), 2)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_corner_shapes(rng, shape, axis, dtype):
    check_op("Flatten", {"x": data(rng, shape, dtype)}, {"axis": axis})


# -- Transpose -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,perm", [((2, 3, 4), None), ((2, 3, 4), [1, 0, 2]), ((2, 3, 4), [2, 0, 1]),
                                        ((2, 3, 4, 5), [0, 2, 3, 1]), ((3,), None), ((2, 0, 3), [2, 0, 1]),
                                        ((), None)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose(rng, shape, perm, dtype):
    check_op("Transpose", {"x": data(rng, shape, dtype)}, {} if perm is None else {"perm": perm})


# -- Squeeze, Unsqueeze --------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axes", [((1, 3, 1, 2), None), ((1, 3, 1, 2), [0]), ((1, 3, 1, 2), [-2]),
                                        ((1, 3, 1, 2), [2, 0]), ((1,), [0]), ((1, 1), None), ((3, 1, 0), [1]),
                                        ((3, 1, 0), None), ((1, 3, 1), [])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_squeeze(rng, shape, axes, dtype):
    inputs = {"x": data(rng, shape, dtype)}
    if axes is not None:  # not an empty-named input: ONNX Runtime's Squeeze rejects that
        inputs["axes"] = np.array(axes, np.int64)
    check_op("Squeeze", inputs, consts=("axes",))


def test_squeeze_errors():
    with pytest.raises(ModelError, match="not of size 1"):
        K.Squeeze(np.zeros((1, 3)), i64(1))
    with pytest.raises(ModelError, match="out of range"):
        K.Squeeze(np.zeros((1, 3)), i64(2))


@pytest.mark.parametrize("shape,axes", [((3, 4), [0]), ((3, 4), [2]), ((3, 4), [-1]), ((3, 4), [0, 3]),
                                        ((3, 4), [4, 0, -2]), ((), [0]), ((), [0, 1]), ((0, 2), [1]),
                                        ((3, 4), [1, 2])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_unsqueeze(rng, shape, axes, dtype):
    check_op("Unsqueeze", {"x": data(rng, shape, dtype), "axes": np.array(axes, np.int64)}, consts=("axes",))


def test_unsqueeze_errors():
    with pytest.raises(ModelError, match="repeat"):
        K.Unsqueeze(np.zeros((3,)), i64(1, -2))
    with pytest.raises(ModelError, match="out of range"):
        K.Unsqueeze(np.zeros((3,)), i64(2))


# -- Concat --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shapes,axis", [([(2, 3), (4, 3)], 0), ([(2, 3), (2, 1), (2, 5)], 1),
                                         ([(2, 3), (2, 1)], -1), ([(2, 3, 4), (2, 2, 4)], -2),
                                         ([(2, 3), (0, 3)], 0), ([(0, 3), (0, 3)], 0), ([(4,)], 0),
                                         ([(2, 3), (2, 0), (2, 2)], 1)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_concat(rng, shapes, axis, dtype):
    check_op("Concat", {f"x{i}": data(rng, s, dtype) for i, s in enumerate(shapes)}, {"axis": axis})


def test_concat_errors():
    with pytest.raises(ModelError, match="differ outside axis"):
        K.Concat(np.zeros((2, 3)), np.zeros((3, 3)), axis=1)
    with pytest.raises(ModelError, match="mix dtypes"):
        K.Concat(np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float64), axis=0)
    with pytest.raises(ModelError, match="out of range"):
        K.Concat(np.zeros((2, 3)), axis=2)


# -- Split -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,axis,split", [((6,), 0, [2, 4]), ((2, 6), 1, [1, 2, 3]), ((2, 6), -1, [6]),
                                              ((2, 6), 1, [0, 6, 0]), ((4, 3), -2, [1, 1, 2]),
                                              ((0, 3), 0, [0, 0])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_split_sizes(rng, shape, axis, split, dtype):
    check_op("Split", {"x": data(rng, shape, dtype), "split": np.array(split, np.int64)}, {"axis": axis},
             consts=("split",), n_outputs=len(split))


@pytest.mark.parametrize("dim,n", [(6, 3), (7, 3), (5, 2), (6, 4), (4, 4), (1, 1), (0, 2)])
def test_split_num_outputs(rng, dim, n):
    check_op("Split", {"x": data(rng, (2, dim))}, {"axis": -1, "num_outputs": n}, n_outputs=n)


@pytest.mark.parametrize("dim,n", [(6, 3), (6, 1), (8, 4)])
def test_split_into_node_outputs(rng, dim, n):
    """Opset-13 form: no split, no num_outputs; the executor passes the node's output count."""
    check_op("Split", {"x": data(rng, (dim, 2))}, {"axis": 0}, n_outputs=n, opset=13)


def test_split_errors():
    x = np.zeros((5,), np.float32)
    with pytest.raises(ModelError, match="negative|smaller"):
        K.Split(x, num_outputs=4)
    with pytest.raises(ModelError, match="add up"):
        K.Split(x, i64(2, 2))
    with pytest.raises(ModelError, match="not both"):
        K.Split(x, i64(2, 3), num_outputs=2)
    with pytest.raises(ModelError, match="number of outputs|neither"):
        K.Split(x)


# -- Slice -------------------------------------------------------------------------------------------------------

SLICE_CASES = [
    # starts, ends, axes, steps
    ([1], [3], None, None),
    ([0, 1], [2, 3], [0, 1], None),
    ([-3], [-1], [1], None),
    ([1], [I64_MAX], [2], None),
    ([0], [I64_MIN], [0], None),
    ([-1], [I64_MIN], [2], [-1]),
    ([I64_MAX], [I64_MIN], [1], [-2]),
    ([I64_MAX], [0], [1], [-1]),
    ([-1], [-1000], [0], [-1]),
    ([10], [1000], [1], None),
    ([-100], [2], [-1], None),
    ([0, 4], [4, 0], [-3, -1], [2, -2]),
    ([0], [5], [2], [3]),
    ([3], [1], [1], None),
    ([2, 0, 1], [0, 4, 5], None, [-1, 1, 2]),
    ([1], [-1], [-2], [1]),
]


@pytest.mark.parametrize("starts,ends,axes,steps", SLICE_CASES)
@pytest.mark.parametrize("index_dtype", [np.int64, np.int32])
def test_slice(rng, starts, ends, axes, steps, index_dtype):
    if index_dtype == np.int32:
        clip = lambda v: np.clip(np.array(v, np.int64), np.iinfo(np.int32).min, np.iinfo(np.int32).max)
        starts, ends = clip(starts), clip(ends)
    arr = lambda v: None if v is None else np.array(v, index_dtype)
    inputs = {"x": data(rng, (3, 4, 5)), "starts": arr(starts), "ends": arr(ends), "axes": arr(axes),
              "steps": arr(steps)}
    check_op("Slice", inputs, consts=("starts", "ends", "axes", "steps"))


@pytest.mark.parametrize("shape,starts,ends,steps", [((0, 3), [0], [5], [1]), ((0, 3), [-1], [I64_MIN], [-1]),
                                                     ((4,), [1], [3], [1]), ((4,), [3], [-5], [-1])])
@pytest.mark.parametrize("dtype", DTYPES)
def test_slice_corner_shapes(rng, shape, starts, ends, steps, dtype):
    inputs = {"x": data(rng, shape, dtype), "starts": i64(*starts), "ends": i64(*ends), "axes": i64(0),
              "steps": i64(*steps)}
    check_op("Slice", inputs, consts=("starts", "ends", "axes", "steps"))


def test_slice_dynamic_bounds(rng):
    """starts/ends as graph inputs (computed at run time), not initializers."""
    check_op("Slice", {"x": data(rng, (3, 4)), "starts": i64(1, -3), "ends": i64(I64_MAX, -1)})


def test_slice_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(ModelError, match="steps"):
        K.Slice(x, i64(0), i64(2), i64(0), i64(0))
    with pytest.raises(ModelError, match="repeat"):
        K.Slice(x, i64(0, 0), i64(2, 2), i64(0, -2))
    with pytest.raises(ModelError, match="length"):
        K.Slice(x, i64(0, 0), i64(2), i64(0))


# -- Expand, Tile ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((3, 1), (3, 4)), ((3, 4), (1, 1)),
                                          ((3, 4), (4,)), ((1, 4), (3, 1)), ((), (2, 3)), ((3, 1), ()),
                                          ((3, 1), (0, 3, 1)), ((2, 1, 1), (1, 0, 5))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_expand(rng, shape, target, dtype):
    check_op("Expand", {"x": data(rng, shape, dtype), "shape": np.array(target, np.int64)}, consts=("shape",))


def test_expand_error():
    with pytest.raises(ModelError, match="broadcast"):
        K.Expand(np.zeros((3, 2)), i64(3, 4))


@pytest.mark.parametrize("shape,repeats", [((2, 3), (1, 1)), ((2, 3), (2, 3)), ((2, 3), (0, 2)),
                                           ((3,), (4,)), ((2, 0, 2), (2, 2, 1))])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile(rng, shape, repeats, dtype):
    check_op("Tile", {"x": data(rng, shape, dtype), "repeats": np.array(repeats, np.int64)})


# -- DepthToSpace, SpaceToDepth --------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("shape,bs", [((1, 8, 2, 3), 2), ((2, 18, 2, 1), 3), ((1, 4, 0, 2), 2), ((1, 3, 2, 2), 1)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # ONNX Runtime has no integer kernel
def test_depth_to_space(rng, mode, shape, bs, dtype):
    check_op("DepthToSpace", {"x": data(rng, shape, dtype)}, {"blocksize": bs, "mode": mode})


@pytest.mark.parametrize("shape,bs", [((1, 2, 4, 6), 2), ((2, 3, 3, 6), 3), ((1, 1, 0, 2), 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_space_to_depth(rng, shape, bs, dtype):
    check_op("SpaceToDepth", {"x": data(rng, shape, dtype)}, {"blocksize": bs})


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_inverts_depth_to_space(rng, mode):
    """SpaceToDepth-28's mode attribute (newer than ONNX Runtime's opsets): mode-for-mode the inverse."""
    x = data(rng, (2, 4, 4, 6))
    y = K.SpaceToDepth(x, blocksize=2, mode=mode)
    np.testing.assert_array_equal(K.DepthToSpace(np.ascontiguousarray(y), blocksize=2, mode=mode), x)


def test_depth_to_space_errors():
    with pytest.raises(ModelError, match="multiple"):
        K.DepthToSpace(np.zeros((1, 6, 2, 2)), blocksize=2)
    with pytest.raises(ModelError, match="multiples"):
        K.SpaceToDepth(np.zeros((1, 1, 3, 2)), blocksize=2)


# -- memory: views, read-only inputs, chains of views ------------------------------------------------------------

def _readonly(a):
    a = np.array(a)
    a.flags.writeable = False
    return a


def test_views_are_zero_copy():
    x = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert np.shares_memory(K.Reshape(x, i64(6, 4)), x)
    assert np.shares_memory(K.Flatten(x, axis=2), x)
    assert np.shares_memory(K.Squeeze(x, i64(0)), x)
    assert np.shares_memory(K.Squeeze(x), x)
    assert np.shares_memory(K.Unsqueeze(x, i64(0, -1)), x)
    assert np.shares_memory(K.Transpose(x, perm=[0, 3, 1, 2]), x)
    assert np.shares_memory(K.Slice(x, i64(1), i64(3), i64(-1)), x)
    assert all(np.shares_memory(p, x) for p in K.Split(x, i64(1, 2), axis=2))


def test_kernels_never_write_into_inputs():
    """Read-only inputs: any kernel writing into one would raise."""
    x = _readonly(np.arange(24, dtype=np.float32).reshape(2, 3, 4))
    K.Reshape(x, _readonly(i64(4, -1)))
    K.Flatten(x, axis=-1)
    K.Transpose(x)
    K.Squeeze(_readonly(x.reshape(1, 24)))
    K.Unsqueeze(x, _readonly(i64(1)))
    K.Concat(x, x, axis=1)
    K.Split(x, _readonly(i64(1, 2)), axis=1)
    K.Slice(x, _readonly(i64(0)), _readonly(i64(I64_MAX)), _readonly(i64(1)), _readonly(i64(-1)))
    K.Expand(x, _readonly(i64(2, 2, 3, 4)))
    K.Tile(x, _readonly(i64(1, 2, 1)))
    K.DepthToSpace(_readonly(x.reshape(1, 4, 3, 2)), blocksize=2)
    K.SpaceToDepth(_readonly(x.reshape(1, 1, 4, 6)), blocksize=2)


def test_chain_of_views_matches_ort(rng):
    """Transpose -> Reshape -> Slice -> Split -> Concat -> Unsqueeze -> Squeeze: each kernel reads the view the
    previous one returned (non-contiguous, offset, negative strides)."""
    nodes = [
        helper.make_node("Transpose", ["x"], ["t"], perm=[2, 0, 1]),
        helper.make_node("Reshape", ["t", "s"], ["r"]),
        helper.make_node("Slice", ["r", "st", "en", "ax", "sp"], ["sl"]),
        helper.make_node("Split", ["sl"], ["a", "b"], axis=1, num_outputs=2),
        helper.make_node("Concat", ["b", "a"], ["c"], axis=0),
        helper.make_node("Unsqueeze", ["c", "u"], ["us"]),
        helper.make_node("Flatten", ["us"], ["f"], axis=2),
        helper.make_node("Squeeze", ["f"], ["y"]),
    ]
    inits = [helper.make_tensor("s", TensorProto.INT64, [2], [4, 6]),
             helper.make_tensor("st", TensorProto.INT64, [1], [-1]),
             helper.make_tensor("en", TensorProto.INT64, [1], [I64_MIN]),
             helper.make_tensor("ax", TensorProto.INT64, [1], [1]),
             helper.make_tensor("sp", TensorProto.INT64, [1], [-1]),
             helper.make_tensor("u", TensorProto.INT64, [1], [0])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    feeds = {"x": data(rng, (2, 3, 4))}
    (expected,), (got,) = run_ort(model, feeds), run_lowbit(model, feeds)
    np.testing.assert_array_equal(got, expected)
