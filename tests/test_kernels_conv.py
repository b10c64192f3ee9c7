import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float import conv as conv_module
from lowbit.runtime.kernels.float.conv import Conv, ConvTranspose
from nodecheck import check_op, make_node_model, run_lowbit

TOL = {np.float32: {"rtol": 1e-4, "atol": 1e-5}}


def check_against_reference(op_type, inputs, attrs, consts=()):
    """Like check_op, with ONNX's reference evaluator as the golden: ORT's CPU provider has no float64 Conv."""
    model = make_node_model(op_type, inputs, attrs, consts=consts)
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in consts}
    expected = ReferenceEvaluator(model).run(None, feeds)[0]
    got = run_lowbit(model, feeds)[0]
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


def _conv(rng, x_shape, w_shape, attrs, dtype=np.float32, bias=True, const_w=True, op="Conv"):
    x = rng.standard_normal(x_shape).astype(dtype)
    w = (rng.standard_normal(w_shape) * 0.3).astype(dtype)
    m = w_shape[0] if op == "Conv" else w_shape[1] * attrs.get("group", 1)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    consts = ("w", "b") if const_w else ()
    if dtype == np.float64:
        check_against_reference(op, {"x": x, "w": w, "b": b}, attrs, consts=consts)
    else:
        check_op(op, {"x": x, "w": w, "b": b}, attrs, consts=consts, **TOL[dtype])


CONV2D = {
    "plain": ((1, 3, 7, 8), (4, 3, 3, 3), {}),
    "pads": ((2, 3, 7, 8), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    "asym_pads": ((1, 3, 7, 8), (4, 3, 3, 2), {"pads": [0, 2, 1, 0]}),
    "strides": ((1, 3, 9, 8), (5, 3, 3, 3), {"strides": [2, 3], "pads": [1, 0, 1, 2]}),
    "dilations": ((1, 2, 10, 9), (3, 2, 3, 3), {"dilations": [2, 3], "pads": [2, 1, 0, 3]}),
    "groups": ((2, 6, 7, 7), (9, 2, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),
    "depthwise": ((2, 6, 9, 9), (6, 1, 3, 3), {"group": 6, "pads": [1, 1, 1, 1], "strides": [2, 2]}),
    "depthwise_mult": ((1, 4, 8, 8), (12, 1, 3, 5), {"group": 4, "pads": [1, 2, 1, 2], "dilations": [1, 2]}),
    "depthwise_strided_dilated": ((2, 4, 11, 10), (8, 1, 3, 3), {"group": 4, "strides": [2, 3], "dilations": [2, 1],
                                                               "pads": [2, 0, 1, 2]}),
    "depthwise_stride_over_kernel": ((1, 3, 10, 9), (3, 1, 2, 2), {"group": 3, "strides": [3, 4]}),
    "depthwise_same_upper": ((1, 5, 9, 8), (5, 1, 5, 5), {"group": 5, "strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    "pointwise": ((2, 8, 5, 6), (16, 8, 1, 1), {}),
    "pointwise_strided": ((1, 8, 7, 6), (4, 8, 1, 1), {"strides": [2, 2]}),
    "pointwise_pads": ((1, 8, 4, 4), (4, 8, 1, 1), {"pads": [1, 0, 0, 1]}),
    "pointwise_groups": ((1, 8, 4, 5), (6, 4, 1, 1), {"group": 2}),
    "kernel_shape_attr": ((1, 3, 6, 6), (2, 3, 2, 2), {"kernel_shape": [2, 2]}),
    "large_kernel": ((1, 3, 20, 20), (8, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),
    "same_upper": ((1, 2, 7, 8), (3, 2, 3, 4), {"auto_pad": "SAME_UPPER", "strides": [2, 3]}),
    "same_lower": ((1, 2, 7, 8), (3, 2, 3, 4), {"auto_pad": "SAME_LOWER", "strides": [2, 3]}),
    "valid": ((1, 2, 7, 8), (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
}


@pytest.mark.parametrize("case", list(CONV2D))
def test_conv2d(rng, case):
    x_shape, w_shape, attrs = CONV2D[case]
    _conv(rng, x_shape, w_shape, attrs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["pads", "strides", "dilations", "groups", "depthwise", "depthwise_mult",
                                  "depthwise_strided_dilated", "pointwise", "pointwise_strided"])
def test_conv_no_bias_dtypes(rng, case, dtype):
    x_shape, w_shape, attrs = CONV2D[case]
    _conv(rng, x_shape, w_shape, attrs, dtype=dtype, bias=False)


@pytest.mark.parametrize("auto_pad, pads", [("SAME_UPPER", [1, 1, 2, 1]), ("SAME_LOWER", [2, 1, 1, 1])])
def test_conv_same_dilated(rng, auto_pad, pads):
    """ORT refuses SAME_* with dilations; ONNX pads for the dilated span (k-1)*d+1 (as its reference does),
    which equals ORT with those pads written out."""
    x = rng.standard_normal((1, 2, 9, 9)).astype(np.float32)
    w = rng.standard_normal((3, 2, 2, 2)).astype(np.float32)
    expected = check_op("Conv", {"x": x, "w": w}, {"dilations": [3, 2], "pads": pads}, consts=("w",))[0]
    np.testing.assert_array_equal(Conv(x, w, auto_pad=auto_pad, dilations=[3, 2]), expected)


WINOGRAD = {
    "pads": ((2, 3, 7, 8), {"pads": [1, 1, 1, 1]}),
    "no_pads_odd_out": ((1, 2, 8, 7), {}),
    "asym_pads": ((1, 3, 6, 9), {"pads": [0, 2, 2, 1]}),
    "big_pads": ((1, 2, 5, 5), {"pads": [2, 3, 3, 2]}),
    "same_lower": ((1, 2, 7, 6), {"auto_pad": "SAME_LOWER"}),
    "one_row": ((1, 2, 3, 9), {}),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(WINOGRAD))
def test_conv_winograd_forced(rng, monkeypatch, case, dtype):
    """The Winograd path on small, odd and asymmetric shapes (its size thresholds lowered to 1)."""
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv_module, "WINOGRAD_MIN_OUTPUTS", 1)
    x_shape, attrs = WINOGRAD[case]
    _conv(rng, x_shape, (5, x_shape[1], 3, 3), attrs, dtype=dtype, bias=case != "one_row")


def test_conv_winograd_resnet_layer(rng):
    """A ResNet 3x3 layer large enough to take the Winograd path by itself, against ORT."""
    assert 32 >= conv_module.WINOGRAD_MIN_CHANNELS and 15 * 16 >= conv_module.WINOGRAD_MIN_OUTPUTS
    _conv(rng, (1, 32, 15, 16), (48, 32, 3, 3), {"pads": [1, 1, 1, 1]})


def test_conv_weights_as_input(rng):
    _conv(rng, (1, 3, 6, 6), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, const_w=False)


def test_conv_float16_against_float32(rng):
    """ORT's CPU provider has no float16 Conv: lowbit computes it in float32 and rounds once."""
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float16)
    w = (rng.standard_normal((3, 4, 3, 3)) * 0.3).astype(np.float16)
    b = rng.standard_normal(3).astype(np.float16)
    y = Conv(x, w, b, pads=[1, 1, 1, 1])
    ref = Conv(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32), pads=[1, 1, 1, 1])
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, ref.astype(np.float16))


@pytest.mark.parametrize("attrs", [{}, {"strides": [2], "pads": [1, 2]}, {"dilations": [3], "group": 2},
                                   {"auto_pad": "SAME_LOWER", "strides": [3]}])
def test_conv1d(rng, attrs):
    _conv(rng, (2, 4, 17), (6, 4 // attrs.get("group", 1), 3), attrs)


def test_conv1d_depthwise(rng):
    _conv(rng, (1, 5, 20), (5, 1, 4), {"group": 5, "pads": [2, 1]})


@pytest.mark.parametrize("attrs", [{"pads": [1, 0, 1, 1, 0, 1]}, {"strides": [2, 1, 2], "dilations": [1, 2, 1]},
                                   {"group": 2, "auto_pad": "SAME_UPPER"}])
def test_conv3d(rng, attrs):
    _conv(rng, (1, 4, 5, 6, 7), (4, 4 // attrs.get("group", 1), 3, 2, 3), attrs)


def test_conv3d_depthwise(rng):
    _conv(rng, (1, 3, 5, 5, 5), (3, 1, 3, 3, 3), {"group": 3, "pads": [1] * 6})


def test_conv_resnet_stem(rng):
    _conv(rng, (1, 3, 32, 32), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]})


def test_conv_errors():
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ModelError, match="channels"):
        Conv(x, np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(ModelError, match="kernel_shape"):
        Conv(x, np.zeros((2, 4, 3, 3), np.float32), kernel_shape=[2, 2])
    with pytest.raises(ModelError, match="larger than"):
        Conv(x, np.zeros((2, 4, 7, 7), np.float32))
    with pytest.raises(ModelError, match="auto_pad"):
        Conv(x, np.zeros((2, 4, 3, 3), np.float32), auto_pad="SAME")
    with pytest.raises(ModelError, match="strides"):
        Conv(x, np.zeros((2, 4, 3, 3), np.float32), strides=[1, 1, 1])


def _convt(rng, x_shape, w_shape, attrs, dtype=np.float32, bias=True):
    _conv(rng, x_shape, w_shape, attrs, dtype=dtype, bias=bias, op="ConvTranspose")


CONVT = {
    "plain": ((1, 3, 4, 5), (3, 2, 3, 3), {}),
    "strides": ((2, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 3]}),
    "pads": ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 2], "pads": [1, 0, 2, 1]}),
    "output_padding": ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [3, 2], "output_padding": [1, 1]}),
    "output_shape": ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [3, 2], "output_shape": [10, 12]}),
    "dilations": ((1, 2, 4, 4), (2, 3, 3, 2), {"dilations": [2, 3], "strides": [2, 1]}),
    "group": ((1, 4, 3, 3), (4, 3, 2, 2), {"group": 2, "strides": [2, 2]}),
    "depthwise": ((1, 4, 3, 3), (4, 1, 3, 3), {"group": 4, "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    "kernel_1x1": ((1, 4, 3, 3), (4, 5, 1, 1), {"strides": [2, 2]}),
    "kernel_larger_than_stride_gap": ((1, 2, 3, 3), (2, 2, 2, 2), {"strides": [4, 4]}),
    "valid": ((1, 3, 4, 5), (3, 2, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}),
    "same_stride_over_kernel": ((1, 2, 5, 4), (2, 2, 1, 2), {"auto_pad": "SAME_LOWER", "strides": [3, 3],
                                                             "dilations": [2, 1]}),
    "output_shape_beyond_full": ((1, 2, 3, 3), (2, 2, 2, 2), {"strides": [2, 3], "output_shape": [7, 9]}),
}


@pytest.mark.parametrize("case", list(CONVT))
def test_conv_transpose(rng, case):
    x_shape, w_shape, attrs = CONVT[case]
    _convt(rng, x_shape, w_shape, attrs)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER"])
@pytest.mark.parametrize("k", [3, 4])
def test_conv_transpose_same(rng, auto_pad, k):
    """Total padding odd (k=3) puts the odd cell at the end for SAME_UPPER, at the beginning for SAME_LOWER."""
    _convt(rng, (1, 2, 3, 4), (2, 2, k, k), {"auto_pad": auto_pad, "strides": [2, 2]})


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv_transpose_1d_3d(rng, dtype):
    _convt(rng, (2, 3, 6), (3, 2, 3), {"strides": [2], "pads": [1, 0]}, dtype=dtype, bias=False)
    _convt(rng, (1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2], "output_padding": [1, 0, 1]},
           dtype=dtype)


def test_conv_transpose_errors():
    x = np.zeros((1, 4, 3, 3), np.float32)
    with pytest.raises(ModelError, match="rows"):
        ConvTranspose(x, np.zeros((3, 2, 3, 3), np.float32))
    with pytest.raises(ModelError, match="empty output"):
        ConvTranspose(x, np.zeros((4, 2, 1, 1), np.float32), pads=[2, 2, 2, 2])
