import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.pool import AveragePool, MaxPool
from nodecheck import check_op, make_node_model, run_lowbit


def check_against_reference(op_type, inputs, attrs=None):
    """check_op with ONNX's reference evaluator as the golden, for float64 pools ORT's CPU provider lacks."""
    model = make_node_model(op_type, inputs, attrs)
    expected = ReferenceEvaluator(model).run(None, inputs)[0]
    got = run_lowbit(model, inputs)[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)

WINDOWS = {
    "plain": ((2, 3, 7, 8), {"kernel_shape": [3, 3]}),
    "strides": ((1, 2, 9, 8), {"kernel_shape": [3, 2], "strides": [2, 3]}),
    "pads": ((1, 2, 6, 6), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "asym_pads": ((1, 2, 7, 6), {"kernel_shape": [3, 4], "pads": [0, 2, 2, 1]}),
    "dilations": ((1, 2, 10, 9), {"kernel_shape": [2, 3], "dilations": [3, 2], "pads": [1, 0, 1, 2]}),
    "ceil": ((1, 2, 8, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    "ceil_pads": ((1, 2, 7, 7), {"kernel_shape": [3, 2], "strides": [3, 2], "pads": [1, 1, 1, 0], "ceil_mode": 1}),
    "ceil_last_window_dropped": ((1, 1, 5, 5), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [1, 1, 1, 1],
                                                "ceil_mode": 1}),
    "same_upper": ((1, 2, 7, 8), {"kernel_shape": [3, 4], "strides": [2, 3], "auto_pad": "SAME_UPPER"}),
    "same_lower": ((1, 2, 7, 8), {"kernel_shape": [3, 4], "strides": [2, 3], "auto_pad": "SAME_LOWER"}),
    "valid": ((1, 2, 7, 8), {"kernel_shape": [3, 3], "strides": [2, 2], "auto_pad": "VALID"}),
    "resnet": ((1, 4, 16, 16), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "1d": ((2, 3, 11), {"kernel_shape": [3], "strides": [2], "pads": [1, 2]}),
    "3d": ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [1, 2, 2], "pads": [1, 0, 1, 0, 1, 1]}),
}


@pytest.mark.parametrize("case", list(WINDOWS))
def test_maxpool(rng, case):
    shape, attrs = WINDOWS[case]
    check_op("MaxPool", {"x": rng.standard_normal(shape).astype(np.float32)}, attrs)


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.uint8])
def test_maxpool_dtypes(rng, dtype):
    x = (rng.standard_normal((1, 3, 6, 7)) * 50).astype(dtype)
    check_op("MaxPool", {"x": x}, {"kernel_shape": [2, 3], "pads": [1, 1, 0, 1], "strides": [2, 1]})


@pytest.mark.parametrize("case", ["plain", "pads", "asym_pads", "dilations", "ceil", "same_lower", "1d", "3d"])
@pytest.mark.parametrize("storage_order", [0, 1])
def test_maxpool_indices(rng, case, storage_order):
    shape, attrs = WINDOWS[case]
    x = rng.standard_normal(shape).astype(np.float32)
    check_op("MaxPool", {"x": x}, {**attrs, "storage_order": storage_order}, n_outputs=2)


def test_maxpool_indices_ties_pick_first(rng):
    x = np.zeros((2, 2, 4, 4), np.float32)
    check_op("MaxPool", {"x": x}, {"kernel_shape": [2, 2], "pads": [1, 1, 0, 0]}, n_outputs=2)


@pytest.mark.parametrize("case", list(WINDOWS))
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_averagepool(rng, case, count_include_pad):
    shape, attrs = WINDOWS[case]
    x = rng.standard_normal(shape).astype(np.float32)
    check_op("AveragePool", {"x": x}, {**attrs, "count_include_pad": count_include_pad})


def test_averagepool_float16(rng):
    x = rng.standard_normal((1, 3, 6, 7)).astype(np.float16)
    check_op("AveragePool", {"x": x}, {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "count_include_pad": 1},
             rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("count_include_pad", [0, 1])
@pytest.mark.parametrize("case", ["pads", "ceil_pads", "same_upper"])
def test_averagepool_float64(rng, case, count_include_pad):
    shape, attrs = WINDOWS[case]
    x = rng.standard_normal(shape)
    check_against_reference("AveragePool", {"x": x}, {**attrs, "count_include_pad": count_include_pad})


@pytest.mark.parametrize("p", [1, 2, 3])
@pytest.mark.parametrize("case", ["plain", "pads", "strides", "3d"])
def test_lppool(rng, case, p):
    shape, attrs = WINDOWS[case]
    check_op("LpPool", {"x": rng.standard_normal(shape).astype(np.float32)}, {**attrs, "p": p}, rtol=1e-5)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 5, 6), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_pools(rng, op, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    if dtype == np.float32:
        check_op(op, {"x": x})
        return
    # ORT has no float64 global pools and ONNX's reference evaluator lacks GlobalLpPool: use the formulas
    axes = tuple(range(2, x.ndim))
    expected = {"GlobalAveragePool": lambda: x.mean(axis=axes, keepdims=True),
                "GlobalMaxPool": lambda: x.max(axis=axes, keepdims=True),
                "GlobalLpPool": lambda: np.sqrt((x * x).sum(axis=axes, keepdims=True))}[op]()
    got = run_lowbit(make_node_model(op, {"x": x}), {"x": x})[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_global_average_pool_float16(rng):
    check_op("GlobalAveragePool", {"x": rng.standard_normal((1, 3, 7, 7)).astype(np.float16)}, rtol=1e-3,
             atol=1e-3)


def test_pool_errors():
    x = np.zeros((1, 2, 5, 5), np.float32)
    with pytest.raises(ModelError, match="kernel_shape"):
        MaxPool(x)
    with pytest.raises(ModelError, match="kernel_shape"):
        AveragePool(x, kernel_shape=[3])
    with pytest.raises(ModelError, match="pads"):
        MaxPool(x, kernel_shape=[2, 2], pads=[2, 0, 0, 0])
    with pytest.raises(ModelError, match="spatial"):
        MaxPool(np.zeros((2, 3), np.float32), kernel_shape=[2])
