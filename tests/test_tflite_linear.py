"""TFLite import of conv / depthwise / dense / pool / mean / (de)quantize / data-movement models: lowbit's integer
executor must reproduce LiteRT's reference kernels (BUILTIN_REF) exactly, element for element.

The fixtures are made by tests/fixtures/tflite/make_linear_models.py (TensorFlow's converter, int8 and 16x8).
"""
import os
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from litert_ref import random_feeds, run_litert, time_litert  # noqa: E402
from lowbit.errors import ModelError, UnsupportedOpError  # noqa: E402
from lowbit.graph.tflite import CONVERTERS, load_tflite  # noqa: E402
from lowbit.runtime.int_executor import run  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
BOTH = ("int8", "16x8")
MODELS = {  # name -> the lowbit ops the import must produce
    "conv3x3": ["Conv"],
    "conv_stride_relu6": ["Conv"],
    "depthwise_m1": ["Conv"],
    "depthwise_m2": ["Conv"],
    "dilated": ["Conv", "Conv"],
    "inverted_residual": ["Conv", "Conv", "Conv", "Add"],
    "dense_softmax": ["FullyConnected", "FullyConnected", "Softmax"],
    "dense_3d": ["FullyConnected"],
    "dense_3d_pertensor": ["FullyConnected"],
    "pool_concat": None,  # 16x8 adds Requantize nodes before the concat
    "small_cnn": ["Conv", "MaxPool", "Conv", "Mean", "FullyConnected"],
    "small_cnn_pertensor": ["Conv", "MaxPool", "Conv", "Mean", "FullyConnected"],
    "small_cnn_floatio": ["Quantize", "Conv", "MaxPool", "Conv", "Mean", "FullyConnected", "Dequantize"],
    "movement": ["Conv", "Pad", "Slice", "Transpose", "Gather", "Slice", "Reshape"],
    "movement2": ["Conv", "Pad", "Slice", "Reshape", "Reshape", "Conv", "Reshape", "Slice"],
    "resnet_layer": ["Conv"],
}
INVALID = {"movement2_16x8"}  # the converter leaves PADV2's pad value float32; LiteRT refuses the model too
CASES = [f"{name}_{mode}" for name in MODELS for mode in BOTH if f"{name}_{mode}" not in INVALID]
CASES.append("depthwise_m2_pertensor_int8")


def _path(name: str) -> str:
    return os.path.join(DATA, f"{name}.tflite")


def _run_lowbit(graph, feeds):
    out = run(graph, {v.name: f for v, f in zip(graph.inputs, feeds)})
    return [out[v.name] for v in graph.outputs]


@pytest.mark.parametrize("case", CASES)
def test_bit_exact_vs_litert_reference(case):
    path = _path(case)
    graph = load_tflite(path)
    graph.verify()
    expected_ops = MODELS.get(case.rsplit("_", 1)[0])
    if expected_ops is not None:
        assert [n.op_type for n in graph.nodes] == expected_ops
    for seed in range(3):
        feeds = random_feeds(path, seed)
        ref = run_litert(path, feeds)
        got = _run_lowbit(graph, feeds)
        assert len(got) == len(ref)
        for r, g in zip(ref, got):
            assert g.dtype == r.dtype and g.shape == r.shape
            diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
            assert np.array_equal(g, r), f"{case} seed {seed}: {int((diff > 0).sum())} of {diff.size} differ, " \
                                         f"max {diff.max()}"


@pytest.mark.parametrize("mode", BOTH)
def test_extreme_inputs_saturate_identically(mode):
    """All-min and all-max inputs drive every accumulator and clamp to its extremes."""
    path = _path(f"small_cnn_{mode}")
    graph = load_tflite(path)
    x = random_feeds(path, 0)[0]
    info = np.iinfo(x.dtype)
    for value in (info.min, info.max, 0):
        feeds = [np.full_like(x, value)]
        assert np.array_equal(_run_lowbit(graph, feeds)[0], run_litert(path, feeds)[0])


def test_float_io_extremes_and_ties():
    """Float inputs far outside the input range saturate in Quantize; x.5 ties round away from zero."""
    path = _path("small_cnn_floatio_int8")
    graph = load_tflite(path)
    q = next(n for n in graph.nodes if n.op_type == "Quantize")
    scale = np.float32(q.attrs["scale"])
    rng = np.random.default_rng(3)
    shape = graph.inputs[0].shape
    ties = (rng.integers(-140, 140, size=shape) + 0.5).astype(np.float32) * scale
    for x in (ties, np.full(shape, 1e6, np.float32), np.full(shape, -1e6, np.float32)):
        assert np.array_equal(_run_lowbit(graph, [x])[0], run_litert(path, [x])[0])


def test_graph_structure_conv_and_depthwise():
    g = load_tflite(_path("depthwise_m2_int8"))
    (node,) = g.nodes
    x, w, b = node.inputs
    assert node.domain == "lowbit.int" and node.attrs["layout"] == "NHWC"
    assert node.attrs["group"] == 3 and w.const.shape == (6, 1, 3, 3)  # C = 3, multiplier 2, ONNX order
    assert w.quant.per_channel and w.quant.axis == 0 and w.quant.scale.shape == (6,)
    assert b.const.dtype == np.int32 and node.attrs["accumulator"] == "int32"
    assert node.attrs["multiplier"].shape == (6,) and node.attrs["act_min"] == -128  # ReLU at zero point -128
    assert x.quant is not None and node.outputs[0].quant is not None
    g16 = load_tflite(_path("conv_stride_relu6_16x8"))
    (conv,) = g16.nodes
    assert conv.attrs["accumulator"] == "int64" and conv.inputs[2].const.dtype == np.int64
    assert conv.attrs["strides"] == [2, 2] and conv.attrs["pads"] == [1, 1, 1, 1]  # SAME, 9 -> 5
    assert conv.inputs[1].const.shape == (6, 4, 3, 3)
    conv, dw = load_tflite(_path("dilated_int8")).nodes
    assert conv.attrs["dilations"] == [2, 1] and conv.attrs["pads"] == [2, 1, 2, 1]
    assert dw.attrs["dilations"] == [1, 2] and dw.attrs["pads"] == [0, 0, 0, 0]


def test_graph_structure_fully_connected():
    g = load_tflite(_path("dense_softmax_int8"))
    fc = g.nodes[0]
    assert fc.op_type == "FullyConnected" and fc.attrs["requant"] == "float64"
    assert fc.attrs["effective_scale"].shape == (12,)  # per-channel weights
    assert fc.attrs["act_min"] == int(fc.outputs[0].quant.zero_point)  # fused ReLU
    gp = load_tflite(_path("dense_3d_pertensor_int8"))
    assert not gp.nodes[0].inputs[1].quant.per_channel


def test_fully_connected_without_keep_num_dims_flattens_the_input(monkeypatch):
    """keep_num_dims = False on a 3-D input: the import reshapes x to [B, K] and the result to the stored
    output shape; the numbers stay LiteRT's."""
    import lowbit.graph.tflite.reader as reader

    convert = reader.CONVERTERS["FULLY_CONNECTED"]

    def flattening(ctx):
        ctx.options["keep_num_dims"] = False
        convert(ctx)

    monkeypatch.setitem(reader.CONVERTERS, "FULLY_CONNECTED", flattening)
    path = _path("dense_3d_int8")
    graph = load_tflite(path)
    assert [n.op_type for n in graph.nodes] == ["Reshape", "FullyConnected", "Reshape"]
    assert graph.nodes[1].inputs[0].shape == (5, 16)
    feeds = random_feeds(path, 1)
    assert np.array_equal(_run_lowbit(graph, feeds)[0], run_litert(path, feeds)[0])


def test_every_integer_value_carries_quantization():
    for case in ("small_cnn_int8", "movement_16x8", "pool_concat_16x8"):
        g = load_tflite(_path(case))
        for node in g.nodes:
            for v in [node.inputs[0]] + node.outputs:
                if v is not None and v.dtype is not None and v.dtype.kind == "i" and v.dtype.itemsize <= 2:
                    assert v.quant is not None, f"{case}: {v.name} has no QuantSpec"


def test_unsupported_float_model_names_the_operator():
    with pytest.raises(UnsupportedOpError) as e:
        load_tflite(_path("unsupported_float"))
    msg = str(e.value)
    assert "unsupported_float.tflite" in msg and "#0 CONV_2D" in msg and "float32" in msg


def test_unsupported_builtin_is_listed_once_with_index():
    with pytest.raises(UnsupportedOpError) as e:
        load_tflite(_path("unsupported_cumsum"))
    msg = str(e.value)
    assert "1 TFLite operator(s) of type CUMSUM" in msg and "#3 CUMSUM" in msg and "no converter" in msg
    assert "FULLY_CONNECTED" in msg  # the list of supported builtins


def test_converter_bug_is_refused_like_litert_does():
    with pytest.raises(UnsupportedOpError, match="#1 PADV2.*pad value is float32 but the input int16"):
        load_tflite(_path("movement2_16x8"))
    with pytest.raises(RuntimeError, match="PADV2"):
        run_litert(_path("movement2_16x8"), random_feeds(_path("movement2_int8"), 0))


def test_truncated_file(tmp_path):
    data = Path(_path("small_cnn_int8")).read_bytes()
    for cut in (6, 200, len(data) // 2, len(data) - 100):
        p = tmp_path / f"cut{cut}.tflite"
        p.write_bytes(data[:cut])
        with pytest.raises(ModelError, match=f"cut{cut}.tflite"):
            load_tflite(p)


def test_not_a_tflite_file(tmp_path):
    p = tmp_path / "model.onnx.tflite"
    p.write_bytes(b"\x08\x07\x12\x04onnx" + bytes(100))
    with pytest.raises(ModelError, match="not a TFLite model"):
        load_tflite(p)
    with pytest.raises(ModelError, match="cannot read"):
        load_tflite(tmp_path / "missing.tflite")


def test_corrupt_flatbuffer(tmp_path):
    data = bytearray(Path(_path("conv3x3_int8")).read_bytes())
    data[0:4] = (len(data) + 1000).to_bytes(4, "little")  # root table offset past the end
    p = tmp_path / "corrupt.tflite"
    p.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupt.tflite"):
        load_tflite(p)


def test_registry_covers_this_family():
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "MAX_POOL_2D", "AVERAGE_POOL_2D", "MEAN",
               "CONCATENATION", "RESHAPE", "SQUEEZE", "TRANSPOSE", "PAD", "PADV2", "STRIDED_SLICE", "SLICE",
               "GATHER", "QUANTIZE", "DEQUANTIZE"):
        assert op in CONVERTERS


@pytest.mark.slow
@pytest.mark.parametrize("mode", BOTH)
def test_resnet_layer_speed(mode):
    """lowbit's Conv on a ResNet-50 3x3 layer (1x56x56x64 -> 64) against LiteRT, single-threaded."""
    from threadpoolctl import threadpool_limits

    path = _path(f"resnet_layer_{mode}")
    graph = load_tflite(path)
    feeds = random_feeds(path, 0)
    with threadpool_limits(1):
        _run_lowbit(graph, feeds)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            _run_lowbit(graph, feeds)
            best = min(best, time.perf_counter() - t0)
    ref_ms = time_litert(path, feeds, "ref", repeat=3)
    default_ms = time_litert(path, feeds, "default", repeat=5)
    print(f"\nresnet_layer_{mode}: lowbit {best * 1e3:.1f} ms, LiteRT reference {ref_ms:.1f} ms, "
          f"LiteRT default {default_ms:.2f} ms")
    assert best * 1e3 < 3 * ref_ms
