"""Generator kernels (runtime/kernels/float/generate.py) against ONNX Runtime."""
import numpy as np
import pytest
from onnx import helper, TensorProto

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float import generate as K
from nodecheck import check_op


# -- Constant --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("attrs", [
    {"value": helper.make_tensor("v", TensorProto.FLOAT, [2, 3], np.arange(6, dtype=np.float32))},
    {"value": helper.make_tensor("v", TensorProto.INT64, [], [7])},
    {"value": helper.make_tensor("v", TensorProto.BOOL, [3], [True, False, True])},
    {"value": helper.make_tensor("v", TensorProto.INT32, [0, 2], [])},
    {"value_float": 2.5},
    {"value_floats": [1.5, -2.0, 3.25]},
    {"value_int": -3},
    {"value_ints": [4, 5, -6]},
], ids=["tensor", "int64_scalar", "bool", "empty_int32", "value_float", "value_floats", "value_int", "value_ints"])
def test_constant(attrs):
    check_op("Constant", {}, attrs)


def test_constant_empty_list():
    """An empty value_ints (onnx.helper cannot spell one) is an empty int64 vector."""
    y = K.Constant(value_ints=[])
    assert y.shape == (0,) and y.dtype == np.int64


def test_constant_errors():
    with pytest.raises(ModelError, match="exactly one"):
        K.Constant()
    with pytest.raises(ModelError, match="exactly one"):
        K.Constant(value_int=1, value_float=2.0)
    with pytest.raises(ModelError, match="not supported"):
        K.Constant(value_string="a")


# -- ConstantOfShape ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(2, 3), (4,), (), (0,), (2, 0, 3)])
@pytest.mark.parametrize("value", [None, np.array([1.5], np.float32), np.array([-7], np.int64),
                                   np.array([True]), np.array([3], np.int32), np.array([0.25], np.float64)],
                         ids=["default", "float32", "int64", "bool", "int32", "float64"])
@pytest.mark.parametrize("const_shape", [True, False])
def test_constant_of_shape(shape, value, const_shape):
    attrs = {} if value is None else {"value": helper.make_tensor("v", helper.np_dtype_to_tensor_dtype(value.dtype),
                                                                  [1], value)}
    check_op("ConstantOfShape", {"shape": np.array(shape, np.int64)}, attrs,
             consts=("shape",) if const_shape else ())


def test_constant_of_shape_errors():
    with pytest.raises(ModelError, match="negative"):
        K.ConstantOfShape(np.array([2, -1], np.int64))
    with pytest.raises(ModelError, match="one element"):
        K.ConstantOfShape(np.array([2], np.int64), value=np.zeros(2, np.float32))


# -- Range ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("start,limit,delta", [(0, 10, 1), (3, 9, 3), (10, 4, -2), (1, 10, 4), (5, 5, 1),
                                               (5, 1, 1), (1, 5, -1), (-7, 8, 5), (10, -11, -3)])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16])
def test_range_int(start, limit, delta, dtype):
    check_op("Range", {"s": np.array(start, dtype), "l": np.array(limit, dtype), "d": np.array(delta, dtype)})


@pytest.mark.parametrize("start,limit,delta", [(0.0, 1.0, 0.1), (0.1, 1.0, 0.3), (1.0, 5.0, 2.0), (10.0, 4.0, -1.5),
                                               (-2.5, 2.5, 0.7), (1.0, 1.0, 0.5), (3.0, -3.0, 0.5),
                                               (0.0, 1.0, 0.01), (1e6, 1e6 + 3.0, 0.25)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_range_float(start, limit, delta, dtype):
    check_op("Range", {"s": np.array(start, dtype), "l": np.array(limit, dtype), "d": np.array(delta, dtype)})


def test_range_long_float32():
    """y[i] = start + i * delta rounded once, as the spec writes it. ONNX Runtime instead adds delta n times in
    float32, which drifts: the length must agree, the values within that drift only."""
    s, lim, d = np.array(0.0, np.float32), np.array(100.0, np.float32), np.array(0.01, np.float32)
    got = check_op("Range", {"s": s, "l": lim, "d": d}, rtol=2e-4, atol=1e-6)[0]
    exact = (np.float64(s) + np.arange(got.size) * np.float64(d)).astype(np.float32)
    np.testing.assert_array_equal(got, exact)


def test_range_errors():
    with pytest.raises(ModelError, match="delta is 0"):
        K.Range(np.array(0, np.int64), np.array(3, np.int64), np.array(0, np.int64))
    with pytest.raises(ModelError, match="dtype"):
        K.Range(np.array(0, np.int64), np.array(3, np.int32), np.array(1, np.int64))


# -- EyeLike ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 3), (3, 5), (5, 2), (0, 3)])
@pytest.mark.parametrize("k", [0, 1, -2, 7, -7])
@pytest.mark.parametrize("dtype_attr", [None, TensorProto.INT64, TensorProto.DOUBLE, TensorProto.INT32])
def test_eyelike(shape, k, dtype_attr):
    attrs = {"k": k} | ({} if dtype_attr is None else {"dtype": dtype_attr})
    check_op("EyeLike", {"x": np.ones(shape, np.float32)}, attrs)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.float64])
def test_eyelike_input_dtypes(dtype):
    check_op("EyeLike", {"x": np.ones((3, 4), dtype)}, {"k": 1})


def test_eyelike_errors():
    with pytest.raises(ModelError, match="2-D"):
        K.EyeLike(np.ones((2, 2, 2)))
    with pytest.raises(ModelError, match="dtype 8"):
        K.EyeLike(np.ones((2, 2)), dtype=TensorProto.STRING)
