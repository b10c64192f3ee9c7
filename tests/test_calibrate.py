"""Calibration observers and the calibration-data checks."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.errors import InputError
from lowbit.graph.onnx_import import from_onnx_model
from lowbit.quant.calibrate import TensorStats, calibrate


def _stats(values):
    st = TensorStats()
    st.update(np.asarray(values, np.float32), np.random.default_rng(0))
    return st


def test_minmax_is_exact_and_contains_zero():
    assert _stats([1.0, 2.0, 3.0]).range("minmax") == (0.0, 3.0)
    assert _stats([-4.0, 2.5]).range("minmax") == (-4.0, 2.5)


def test_percentile_clips_outliers():
    x = np.concatenate([np.random.default_rng(1).standard_normal(100000), [1000.0]])
    lo, hi = _stats(x).range("percentile", percentile=99.9)
    assert 2.5 < hi < 4.5 and -4.5 < lo < -2.5


@pytest.mark.parametrize("observer", ["entropy", "mse"])
def test_histogram_observers_clip_a_long_tail_but_keep_the_bulk(observer):
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_normal(60000), rng.standard_normal(30) * 60])
    lo, hi = _stats(x).range(observer, bits=8)
    full = max(-x.min(), x.max())
    assert 2.0 < hi < full and -full < lo < -2.0


def test_sentinels_are_left_out_of_ranges():
    # attention masks spelled Where(mask, 0, -3.4e38): the sentinel must not set the scale
    st = _stats([-3.4e38, 0.5, -0.5, -3.4e38, 2.0])
    assert st.range("minmax") == (-0.5, 2.0) and st.sentinels == 2


def _model():
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "m",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return from_onnx_model(m)


def test_calibrate_records_every_tensor_and_batches_of_one():
    calib = {"x": np.array([[-1.0, 2.0, 3.0], [4.0, -5.0, 0.5]], np.float32)}  # stacked along the batch axis
    done = []
    stats = calibrate(_model(), calib, progress=lambda i, n: done.append((i, n)))
    assert stats["x"].range() == (-5.0, 4.0) and stats["y"].range() == (0.0, 4.0)
    assert done == [(1, 2), (2, 2)]


@pytest.mark.parametrize("calib,match", [
    ({"other": np.zeros((2, 3), np.float32)}, "lacks graph input"),
    ({"x": np.zeros((0, 3), np.float32)}, "N >= 1 samples"),
    ({"x": np.array([[1.0, np.nan, 0.0]], np.float32)}, "NaN/Inf"),
    ({"x": np.array([[1.0, np.inf, 0.0]], np.float32)}, "NaN/Inf"),
])
def test_bad_calibration_data(calib, match):
    with pytest.raises(InputError, match=match):
        calibrate(_model(), calib, source="calib.npz")


def _zoo_graph(name):
    from lowbit.quant.compile import bind_to_samples
    from lowbit.tools import zoo
    from lowbit.tools.api import load
    from lowbit.tools.files import load_npz
    calib = load_npz(str(zoo.path(name, "calib")))
    g = load(str(zoo.path(name)), optimize=False)
    bind_to_samples(g, calib, "calib")
    return g, {k: v[:8] for k, v in calib.items()}


@pytest.mark.parametrize("name", ["mobilenet_digits", "vit_digits"])
def test_ort_and_lowbit_calibration_agree_to_float32_rounding(name):
    """ONNX Runtime's forward passes (the fast path) and lowbit's float executor give the same ranges and
    per-channel means up to float32 rounding, on every tensor."""
    from lowbit.quant.calibrate import _ort_forward, calibrate
    g, calib = _zoo_graph(name)
    assert _ort_forward(g) is not None
    a = calibrate(g, calib, keep_samples=False, engine="ort")
    b = calibrate(g, calib, keep_samples=False, engine="lowbit")
    assert set(a) == set(b)
    for k, sb in b.items():
        sa, span = a[k], max(abs(b[k].min), abs(b[k].max), 1e-12)
        assert abs(sa.min - sb.min) <= 1e-5 * span and abs(sa.max - sb.max) <= 1e-5 * span, k
        for axis, (sums, n) in sb.channel_sums.items():
            np.testing.assert_allclose(sa.channel_sums[axis][0] / n, sums / n, rtol=1e-4, atol=1e-6 * span)


def test_graphs_with_lowbit_ops_calibrate_on_lowbit_executor():
    from lowbit.errors import InputError
    from lowbit.quant.calibrate import _ort_forward, calibrate
    g, calib = _zoo_graph("lmu_seqdigits")
    assert any(n.domain == "lowbit" for n in g.nodes) and _ort_forward(g) is None
    assert calibrate(g, calib, keep_samples=False)          # auto: lowbit's executor
    with pytest.raises(InputError, match="ONNX Runtime cannot run this graph"):
        calibrate(g, calib, keep_samples=False, engine="ort")
