import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.pad import Pad
from lowbit.runtime.kernels.float.resize import Resize
from nodecheck import check_op, make_node_model, run_lowbit

# --- Pad -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[0, 1, 2, 1, 0, 2], [1, 0, 0, 0, 2, 1], [0, -1, 1, 0, 1, -2], [-1, 0, -1, 0, 0, 0]])
def test_pad_modes(rng, mode, pads):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    check_op("Pad", {"x": x, "pads": np.array(pads, np.int64)}, {"mode": mode}, consts=("pads",))


@pytest.mark.parametrize("axes", [[1], [-1, 0], [2, -2]])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_axes(rng, axes, mode):
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    pads = np.array(([2, 1] * len(axes))[:len(axes)] + ([1, 2] * len(axes))[:len(axes)], np.int64)
    check_op("Pad", {"x": x, "pads": pads, "value": None, "axes": np.array(axes, np.int64)}, {"mode": mode},
             consts=("pads", "axes"))


@pytest.mark.parametrize("dtype", [np.float64, np.float16, np.int8, np.int32, np.int64, np.uint8, np.bool_])
def test_pad_constant_value_dtypes(rng, dtype):
    x = (rng.standard_normal((2, 3)) * 10).astype(dtype)
    value = np.array(1 if dtype == np.bool_ else 7, dtype=dtype)
    check_op("Pad", {"x": x, "pads": np.array([1, 0, 2, 3], np.int64), "value": value}, consts=("pads", "value"))


def test_pad_runtime_pads_and_crop_everything_but_one(rng):
    x = rng.standard_normal((1, 2, 6)).astype(np.float32)
    check_op("Pad", {"x": x, "pads": np.array([0, 0, -5, 0, 1, 0], np.int64)}, {"mode": "edge"})


def test_pad_constant_crop_past_the_input(rng):
    """Cropping 2 cells off a 1-cell axis and padding 2 leaves 1 cell of constant, as in ORT."""
    x = rng.standard_normal((3, 1)).astype(np.float32)
    check_op("Pad", {"x": x, "pads": np.array([1, -2, 0, 2], np.int64), "value": np.array(4.0, np.float32)},
             consts=("pads", "value"))


def test_pad_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ModelError, match="2 x 2"):
        Pad(x, np.array([1, 1, 1], np.int64))
    with pytest.raises(ModelError, match="mode"):
        Pad(x, np.array([1, 1, 1, 1], np.int64), mode="symmetric")
    with pytest.raises(ModelError, match="remove more"):
        Pad(x, np.array([-2, 0, -1, 0], np.int64))
    with pytest.raises(ModelError, match="axes"):
        Pad(x, np.array([1, 1], np.int64), axes=np.array([2], np.int64))
    with pytest.raises(ModelError, match="reflect"):
        Pad(x, np.array([0, 3, 0, 0], np.int64), mode="reflect")

# --- Resize ----------------------------------------------------------------------------------------------


COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric"]


def _resize(x, attrs, scales=None, sizes=None, roi=None, axes_len=None, **tol):
    inputs = {"x": x, "roi": roi, "scales": scales, "sizes": sizes}
    check_op("Resize", inputs, attrs, consts=("roi", "scales", "sizes"), **tol)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("ctm", COORDS)
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 3.0], [1, 1, 0.5, 0.75], [1, 1, 1.7, 0.6]])
def test_resize_nearest(rng, nearest_mode, ctm, scales):
    x = rng.standard_normal((1, 2, 4, 5)).astype(np.float32)
    _resize(x, {"mode": "nearest", "nearest_mode": nearest_mode, "coordinate_transformation_mode": ctm},
            scales=np.array(scales, np.float32))


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("ctm", COORDS)
@pytest.mark.parametrize("scales", [[1, 1, 2.0, 3.0], [1, 1, 0.5, 0.6], [1, 1, 1.5, 0.8]])
def test_resize_linear_cubic(rng, mode, ctm, scales):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    _resize(x, {"mode": mode, "coordinate_transformation_mode": ctm}, scales=np.array(scales, np.float32),
            rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("sizes", [[1, 2, 9, 4], [1, 2, 3, 11], [1, 2, 1, 1]])
def test_resize_sizes(rng, mode, sizes):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    _resize(x, {"mode": mode}, sizes=np.array(sizes, np.int64), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_keep_aspect_ratio(rng, policy, mode):
    x = rng.standard_normal((1, 1, 4, 6)).astype(np.float32)
    _resize(x, {"mode": mode, "keep_aspect_ratio_policy": policy, "axes": [2, 3]}, sizes=np.array([7, 8], np.int64),
            rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axes", [[2, 3], [-1], [3, -2]])
def test_resize_axes(rng, axes):
    x = rng.standard_normal((1, 3, 4, 5)).astype(np.float32)
    scales = np.array([2.0, 1.5][:len(axes)], np.float32)
    _resize(x, {"mode": "linear", "axes": axes}, scales=scales, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("a, exclude", [(-0.75, 0), (-0.5, 1), (-0.75, 1)])
def test_resize_cubic_options(rng, a, exclude):
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    _resize(x, {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude},
            scales=np.array([1, 1, 1.6, 0.7], np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.5, 0.4], [1, 1, 0.7, 1.5]])
def test_resize_antialias(rng, mode, scales):
    x = rng.standard_normal((1, 2, 10, 10)).astype(np.float32)
    _resize(x, {"mode": mode, "antialias": 1}, scales=np.array(scales, np.float32), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_tf_crop_and_resize(rng, mode):
    x = rng.standard_normal((1, 1, 6, 7)).astype(np.float32)
    roi = np.array([0, 0, -0.2, 0.3, 1, 1, 0.7, 1.2], np.float32)
    _resize(x, {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 9.0},
            sizes=np.array([1, 1, 5, 4], np.int64), roi=roi, rtol=1e-5, atol=1e-5)


def test_resize_3d_and_batch_channel_axes(rng):
    x = rng.standard_normal((2, 3, 4, 5, 6)).astype(np.float32)
    _resize(x, {"mode": "linear"}, scales=np.array([1, 1, 1.5, 0.8, 2], np.float32), rtol=1e-5, atol=1e-5)
    _resize(x, {"mode": "nearest"}, scales=np.array([2, 0.67, 1, 1, 1], np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
def test_resize_integers_nearest(rng, dtype):
    x = rng.integers(0, 100, (1, 2, 4, 4)).astype(dtype)
    _resize(x, {"mode": "nearest"}, scales=np.array([1, 1, 2, 1.5], np.float32))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32])
@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_resize_integers_interpolated_are_rounded(rng, dtype, mode):
    """Interpolated integers are rounded as in ONNX's reference; ORT truncates them toward zero instead.
    (Asymmetric coordinates at scales 1.5 and 2.5 keep every exact result a multiple of 1/15: no .5 ties.)"""
    x = rng.integers(-100 if dtype != np.uint8 else 0, 100, (1, 2, 4, 4)).astype(dtype)
    scales = np.array([1, 1, 1.5, 2.5], np.float32)
    inputs = {"x": x, "roi": None, "scales": scales}
    model = make_node_model("Resize", inputs, {"mode": mode, "coordinate_transformation_mode": "asymmetric"},
                            consts=("scales",))
    expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(run_lowbit(model, {"x": x})[0], expected)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
def test_resize_same_length_axis_still_resamples(rng, mode):
    """An axis whose length does not change (floor(4 * 1.12) = 4, or a tf_crop_and_resize box) is still
    resampled with its scale and box, as ONNX's reference does; ORT 1.32 copies such axes unchanged."""
    x = rng.standard_normal((1, 1, 4, 6)).astype(np.float32)
    for inputs, attrs in [({"scales": np.array([1, 1, 1.12, 1.5], np.float32)}, {}),
                          ({"roi": np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 1.2], np.float32),
                            "sizes": np.array([1, 1, 4, 8], np.int64)},
                           {"coordinate_transformation_mode": "tf_crop_and_resize"})]:
        feeds = {"x": x, "roi": inputs.get("roi"), "scales": inputs.get("scales"), "sizes": inputs.get("sizes")}
        model = make_node_model("Resize", feeds, {"mode": mode, **attrs}, consts=("roi", "scales", "sizes"))
        expected = ReferenceEvaluator(model).run(None, {"x": x})[0]
        np.testing.assert_allclose(run_lowbit(model, {"x": x})[0], expected, rtol=1e-5, atol=1e-6)


def test_resize_float16(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float16)
    _resize(x, {"mode": "nearest"}, scales=np.array([1, 1, 2, 1.5], np.float32))


def test_resize_errors():
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ModelError, match="exactly one"):
        Resize(x)
    with pytest.raises(ModelError, match="exactly one"):
        Resize(x, None, np.ones(4, np.float32), np.ones(4, np.int64))
    with pytest.raises(ModelError, match="one value"):
        Resize(x, None, np.ones(3, np.float32))
    with pytest.raises(ModelError, match="mode"):
        Resize(x, None, np.ones(4, np.float32), mode="bilinear")
    with pytest.raises(ModelError, match="coordinate_transformation_mode"):
        Resize(x, None, np.ones(4, np.float32), coordinate_transformation_mode="tf_half_pixel_for_nn")
