import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.norm import BatchNormalization, Dropout, GroupNormalization, LayerNormalization
from nodecheck import check_op, make_node_model, run_lowbit


def check_against_reference(op_type, inputs, attrs=None, rtol=1e-10, atol=1e-12):
    """check_op with ONNX's reference evaluator as the golden, for cases ORT's CPU provider refuses."""
    model = make_node_model(op_type, inputs, attrs)
    feeds = {k: v for k, v in inputs.items() if v is not None}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    got = run_lowbit(model, feeds)[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def _bn_inputs(rng, shape, dtype=np.float32):
    c = shape[1]
    return {"x": rng.standard_normal(shape).astype(dtype), "scale": rng.uniform(0.5, 1.5, c).astype(dtype),
            "b": rng.standard_normal(c).astype(dtype), "mean": rng.standard_normal(c).astype(dtype),
            "var": rng.uniform(0.5, 2.0, c).astype(dtype)}


@pytest.mark.parametrize("shape", [(2, 3), (2, 3, 5), (1, 4, 5, 6), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm(rng, shape, dtype):
    check_op("BatchNormalization", _bn_inputs(rng, shape, dtype), {"epsilon": 1e-3},
             consts=("scale", "b", "mean", "var"))


def test_batchnorm_float16(rng):
    check_op("BatchNormalization", _bn_inputs(rng, (1, 3, 4, 4), np.float16), rtol=1e-3, atol=1e-3)


def test_batchnorm_old_model_outputs(rng):
    """An opset-7 model may list running and saved mean/var outputs: inference returns them unchanged."""
    ins = _bn_inputs(rng, (1, 3, 4, 4))
    outs = BatchNormalization(*ins.values())
    assert len(outs) == 5
    for got, want in zip(outs[1:], [ins["mean"], ins["var"]] * 2):
        np.testing.assert_array_equal(got, want)


def test_batchnorm_training_mode(rng):
    """ORT's inference build has no training-mode BatchNormalization: check against the formulas."""
    ins = _bn_inputs(rng, (4, 3, 5, 5))
    y, rm, rv = BatchNormalization(*ins.values(), epsilon=1e-5, momentum=0.8, training_mode=1)[:3]
    x = ins["x"].astype(np.float64)
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expect = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5) * ins["scale"][:, None, None] \
        + ins["b"][:, None, None]
    np.testing.assert_allclose(y, expect, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(rm, ins["mean"] * 0.8 + mean * 0.2, rtol=1e-5)
    np.testing.assert_allclose(rv, ins["var"] * 0.8 + var * 0.2, rtol=1e-5)


def test_batchnorm_errors(rng):
    ins = _bn_inputs(rng, (1, 3, 4, 4))
    ins["scale"] = ins["scale"][:2]
    with pytest.raises(ModelError, match="scale"):
        BatchNormalization(*ins.values())


@pytest.mark.parametrize("shape", [(2, 3, 5), (1, 4, 5, 6), (2, 2, 3, 4, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_instance_norm(rng, shape, dtype):
    c = shape[1]
    inputs = {"x": (rng.standard_normal(shape) * 3 + 1).astype(dtype), "scale": rng.standard_normal(c).astype(dtype),
              "b": rng.standard_normal(c).astype(dtype)}
    if dtype == np.float64:  # ORT has no float64 InstanceNormalization
        check_against_reference("InstanceNormalization", inputs, {"epsilon": 1e-4})
    else:
        check_op("InstanceNormalization", inputs, {"epsilon": 1e-4}, consts=("scale", "b"), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axis", [-1, -2, 1, 0])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm(rng, axis, with_bias):
    shape = (2, 3, 4, 5)
    norm = shape[axis % 4:]
    check_op("LayerNormalization", {"x": (rng.standard_normal(shape) * 2 + 3).astype(np.float32),
                                    "scale": rng.standard_normal(norm).astype(np.float32),
                                    "b": rng.standard_normal(norm).astype(np.float32) if with_bias else None},
             {"axis": axis, "epsilon": 1e-3}, n_outputs=3, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float64, np.float16])
def test_layer_norm_dtypes(rng, dtype):
    """Mean/InvStdDev come out in the stash type float32 whatever X's dtype, as in ORT."""
    tol = {"rtol": 1e-2, "atol": 1e-2} if dtype == np.float16 else {"rtol": 1e-10, "atol": 1e-12}
    check_op("LayerNormalization", {"x": rng.standard_normal((3, 8)).astype(dtype),
                                    "scale": rng.standard_normal(8).astype(dtype),
                                    "b": rng.standard_normal(8).astype(dtype)}, n_outputs=3, **tol)


def test_layer_norm_broadcast_scale(rng):
    check_op("LayerNormalization", {"x": rng.standard_normal((2, 3, 4)).astype(np.float32),
                                    "scale": rng.standard_normal((1, 4)).astype(np.float32)},
             {"axis": 1}, rtol=1e-4, atol=1e-5)


def test_layer_norm_errors(rng):
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ModelError, match="axis"):
        LayerNormalization(x, np.ones(3, np.float32), axis=2)
    with pytest.raises(ModelError, match="stash_type"):
        LayerNormalization(x, np.ones(3, np.float32), stash_type=0)


@pytest.mark.parametrize("num_groups", [1, 2, 4])
@pytest.mark.parametrize("shape", [(2, 4, 5), (1, 4, 3, 3)])
def test_group_norm(rng, num_groups, shape):
    c = shape[1]
    check_op("GroupNormalization", {"x": (rng.standard_normal(shape) + 2).astype(np.float32),
                                    "scale": rng.standard_normal(c).astype(np.float32),
                                    "bias": rng.standard_normal(c).astype(np.float32)},
             {"num_groups": num_groups, "epsilon": 1e-3}, rtol=1e-4, atol=1e-5)


def test_group_norm_opset18_per_group_scale(rng):
    """GroupNormalization-18 had one scale per group; it is spread over the group's channels."""
    x = rng.standard_normal((1, 4, 3)).astype(np.float32)
    s, b = np.array([2.0, 3.0], np.float32), np.array([0.5, -1.0], np.float32)
    got = GroupNormalization(x, s, b, num_groups=2)
    want = GroupNormalization(x, np.repeat(s, 2), np.repeat(b, 2), num_groups=2)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ModelError, match="num_groups"):
        GroupNormalization(x, s, b, num_groups=3)


@pytest.mark.parametrize("size", [1, 3, 5, 9])
def test_lrn(rng, size):
    check_op("LRN", {"x": rng.standard_normal((2, 7, 3, 3)).astype(np.float32)},
             {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5}, rtol=1e-5)


@pytest.mark.parametrize("size, shape", [(2, (2, 7, 3, 3)), (4, (1, 6, 4)), (3, (1, 5, 2, 2, 2))])
def test_lrn_even_size_and_other_ranks(rng, size, shape):
    """ORT takes odd sizes and 4-D inputs only (and ONNX's reference LRN loops over the batch, not the
    channels), so the golden is the spec's formula, channel by channel; even sizes make the window asymmetric."""
    x = rng.standard_normal(shape)
    expected = np.empty_like(x)
    for c in range(shape[1]):
        lo, hi = max(0, c - (size - 1) // 2), min(shape[1] - 1, c + size // 2)
        square_sum = (x[:, lo:hi + 1] ** 2).sum(axis=1)
        expected[:, c] = x[:, c] / (1.0 + 0.0625 / size * square_sum) ** 0.75
    model = make_node_model("LRN", {"x": x}, {"size": size, "alpha": 0.0625, "beta": 0.75})  # exact in float32
    got = run_lowbit(model, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("axis", [-1, 0, 1, -3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_family(rng, op, axis, dtype):
    x = (rng.standard_normal((3, 4, 5)) * 10).astype(dtype)
    if op == "Hardmax" and dtype == np.float64:  # ORT has no float64 Hardmax
        check_against_reference(op, {"x": x}, {"axis": axis})
    else:
        check_op(op, {"x": x}, {"axis": axis})


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family_float16_and_default_axis(rng, op):
    check_op(op, {"x": rng.standard_normal((2, 6)).astype(np.float16)}, rtol=1e-3, atol=1e-3)


def test_softmax_large_and_ties():
    x = np.array([[1000.0, 1000.0, -1000.0], [3.0, 3.0, 3.0]], np.float32)
    for op in ("Softmax", "LogSoftmax", "Hardmax"):
        check_op(op, {"x": x})


@pytest.mark.parametrize("training", [None, False])
def test_dropout_inference(rng, training):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    t = None if training is None else np.array(training)
    check_op("Dropout", {"x": x, "ratio": np.array(0.3, np.float32), "t": t}, n_outputs=2)


def test_dropout_training_is_refused(rng):
    x = rng.standard_normal((2, 3)).astype(np.float32)
    y, mask = Dropout(x, np.array(0.0, np.float32), np.array(True))
    assert (y == x).all() and mask.all()
    with pytest.raises(ModelError, match="training_mode"):
        Dropout(x, np.array(0.5, np.float32), np.array(True))
