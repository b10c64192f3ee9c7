import numpy as np
import pytest

from nodecheck import check_op
from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.activation import Clip, Gelu, PRelu

NAN, INF = np.nan, np.inf
SPECIALS = [NAN, INF, -INF, 0.0, -0.0, 1e-8, -1e-8, 30.0, -30.0, 100.0, -100.0]


def _input(rng, dtype, shape=(3, 40), scale=4.0):
    x = rng.standard_normal(shape) * scale
    x.reshape(-1)[:len(SPECIALS)] = SPECIALS
    return x.astype(dtype)


def _tol(dtype):
    return {"rtol": 2e-3, "atol": 2e-3} if dtype == np.float16 else {}


# op -> the attribute sets to try, and the float dtypes ONNX Runtime implements it for
ACTIVATIONS = {
    "Relu": ([{}], "edf"),
    "LeakyRelu": ([{}, {"alpha": 0.2}, {"alpha": -1.5}], "ef"),
    "ThresholdedRelu": ([{}, {"alpha": 0.5}, {"alpha": -2.0}], "ef"),
    "Sigmoid": ([{}], "edf"),
    "HardSigmoid": ([{}, {"alpha": 0.5, "beta": 0.1}, {"alpha": -0.3}], "ef"),
    "HardSwish": ([{}], "ef"),
    "Elu": ([{}, {"alpha": 0.5}, {"alpha": 2.0}], "ef"),
    "Selu": ([{}, {"alpha": 2.0, "gamma": 3.0}], "ef"),
    "Celu": ([{}, {"alpha": 2.0}, {"alpha": 0.3}], "f"),
    "Softplus": ([{}], "ef"),
    "Softsign": ([{}], "ef"),
    "Mish": ([{}], "ef"),
    "Gelu": ([{}, {"approximate": "none"}, {"approximate": "tanh"}], "ef"),
}


@pytest.mark.parametrize("op, attrs, dtype", [
    (op, attrs, np.dtype(k).type) for op, (attr_sets, kinds) in ACTIVATIONS.items()
    for attrs in attr_sets for k in kinds], ids=lambda v: str(v) if not isinstance(v, type) else v.__name__)
def test_activation(rng, op, attrs, dtype):
    check_op(op, {"x": _input(rng, dtype)}, attrs, **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.int8, np.int32])
def test_relu_integer(dtype):
    info = np.iinfo(dtype)
    check_op("Relu", {"x": np.array([info.min, -1, 0, 1, info.max], dtype)})


@pytest.mark.parametrize("shape", [(), (0, 3), (1,), (2, 3, 4, 5)], ids=str)
def test_activation_shapes(rng, shape):
    for op in ("Sigmoid", "Gelu", "LeakyRelu", "Softplus"):
        check_op(op, {"x": rng.standard_normal(shape).astype(np.float32)})


@pytest.mark.parametrize("slope_shape", [(), (1,), (4,), (3, 1), (2, 3, 4), (1, 3, 1)], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_prelu_broadcast(rng, slope_shape, dtype):
    x = _input(rng, dtype, (2, 3, 4))
    slope = rng.standard_normal(slope_shape).astype(dtype)
    check_op("PRelu", {"x": x, "slope": slope}, **_tol(dtype))
    check_op("PRelu", {"x": x, "slope": slope}, consts=("slope",), **_tol(dtype))


def test_gelu_accuracy_near_erf_breakpoints():
    x = np.concatenate([np.linspace(-9, 9, 3001), [0.84375 * np.sqrt(2), 1.25 * np.sqrt(2)]]).astype(np.float32)
    check_op("Gelu", {"x": x}, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8])
@pytest.mark.parametrize("bounds", [(None, None), (-2, None), (None, 3), (-2, 3), (5, 1), (0, 0)], ids=str)
def test_clip(rng, dtype, bounds):
    kind = np.dtype(dtype).kind
    x = rng.uniform(-6, 6, (3, 7)) if kind != "u" else rng.uniform(0, 10, (3, 7))
    x = x.astype(dtype)
    lo, hi = bounds
    if kind == "u":
        lo, hi = (None if lo is None else abs(lo)), hi
    inputs = {"x": x, "min": None if lo is None else np.array(lo, dtype),
              "max": None if hi is None else np.array(hi, dtype)}
    check_op("Clip", inputs, **_tol(dtype))
    check_op("Clip", inputs, consts=("min", "max"), **_tol(dtype))


def test_clip_nan_inf_and_integer_extremes():
    x = np.array([NAN, INF, -INF, 1.5, -1.5], np.float32)
    check_op("Clip", {"x": x, "min": np.array(-1, np.float32), "max": np.array(1, np.float32)})
    check_op("Clip", {"x": x, "min": np.array(NAN, np.float32), "max": np.array(1, np.float32)})
    check_op("Clip", {"x": x, "min": np.array(-1, np.float32), "max": np.array(NAN, np.float32)})
    info = np.iinfo(np.int64)
    check_op("Clip", {"x": np.array([info.min, -5, 0, info.max], np.int64), "min": np.array(info.min, np.int64),
                      "max": np.array(info.max - 1, np.int64)})


def test_clip_one_element_bounds(rng):
    """Exporters sometimes give min/max shape [1]; the output keeps the input's shape."""
    x = rng.standard_normal(()).astype(np.float32)
    check_op("Clip", {"x": x, "min": np.array([-0.1], np.float32), "max": np.array([0.1], np.float32)})


def test_bad_inputs_raise_model_errors():
    with pytest.raises(ModelError, match=r"PRelu: slope of shape \[3\] does not broadcast to the input's shape "
                                         r"\[2, 4\]"):
        PRelu(np.zeros((2, 4), np.float32), np.zeros(3, np.float32))
    with pytest.raises(ModelError, match="PRelu: slope of shape"):
        PRelu(np.zeros((4,), np.float32), np.zeros((2, 4), np.float32))  # would grow the output
    with pytest.raises(ModelError, match="Gelu: approximate='erf'"):
        Gelu(np.zeros(2, np.float32), approximate="erf")
    with pytest.raises(ModelError, match=r"Clip: min must be a scalar, got shape \[2\]"):
        Clip(np.zeros(2, np.float32), np.zeros(2, np.float32))
