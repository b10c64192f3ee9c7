"""The tflite target: lowbit's integer programs written as .tflite files must compute, in LiteRT's reference
kernels (BUILTIN_REF), exactly what lowbit's integer executor computes, element for element.

- small graphs covering every exporter path (tests/test_tflite_layout.py builds them), four precisions;
- the zoo CNN (float outputs, and raw integer outputs with integer I/O);
- every converter-made fixture in tests/data/tflite: imported by lowbit and exported again, it runs in LiteRT
  with outputs identical to the original file's (and with the same builtins);
- what cannot be exported is refused with the node and the constraint named;
- slow: the ONNX light models that compile to integer ops (python -m pytest -m slow tests/test_target_tflite.py).
"""
import glob
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from litert_ref import random_feeds, run_litert  # noqa: E402
from test_tflite_layout import GRAPHS, TFLITE_OPTIONS, _n, _w, compiled, onnx_graph, random_inputs  # noqa: E402

from lowbit.errors import LowbitError, UnsupportedOpError  # noqa: E402
from lowbit.graph.tflite import load_tflite  # noqa: E402
from lowbit.quant.compile import compile_graph  # noqa: E402
from lowbit.targets import get_target  # noqa: E402
from lowbit.targets.tflite_writer import export_tflite  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
TARGET = get_target("tflite")


def _builtins(path) -> list[str]:
    import tflite
    names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
    with open(path, "rb") as f:
        m = tflite.Model.GetRootAs(f.read(), 0)
    sg = m.Subgraphs(0)
    out = []
    for i in range(sg.OperatorsLength()):
        code = m.OperatorCodes(sg.Operators(i).OpcodeIndex())
        out.append(names[max(code.BuiltinCode(), code.DeprecatedBuiltinCode())])
    return out


def assert_bit_exact(art, path, inputs, raw_path=None):
    """LiteRT (reference kernels) on ``path`` equals lowbit's executor on ``art`` for every input dict; with
    ``raw_path`` (an integer-I/O export) the raw integer outputs are compared too."""
    names = [v.name for v in art.graph.outputs]
    for feeds in inputs:
        got = art.run(feeds)
        ref = TARGET.run(path, feeds)
        assert list(ref) == names
        for k in names:
            assert ref[k].dtype == got[k].dtype and ref[k].shape == got[k].shape, k
            diff = np.abs(ref[k].astype(np.float64) - got[k].astype(np.float64))
            assert np.array_equal(ref[k], got[k]), f"{k}: {int((diff > 0).sum())} of {diff.size} differ, max {diff.max()}"
        if raw_path is not None:
            codes = {v.name: v.consumers[0].outputs[0].quant.quantize(feeds[v.name]) for v in art.graph.inputs}
            raw = art.run(codes, raw=True)  # integer arrays for float inputs: taken as the quantized codes
            ref_raw = TARGET.run(raw_path, codes)
            for k in names:
                assert ref_raw[k].dtype == raw[k].dtype and np.array_equal(ref_raw[k], raw[k]), k


def _export(art, tmp_path, name="m", **kw) -> str:
    path = str(tmp_path / f"{name}.tflite")
    TARGET.export(art, path, **kw)
    return path


# --- small graphs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["w8a8", "w8a16", "w4a8", "w4a16"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_small_graphs_are_bit_exact_in_litert(name, precision, tmp_path):
    art, _ = compiled(name, precision)
    assert TARGET.place(art.graph).fallback == []
    path = _export(art, tmp_path)
    raw = _export(art, tmp_path, "raw", integer_io=True)
    assert_bit_exact(art, path, random_inputs(art.graph, 4), raw_path=raw)


def test_exported_builtins_follow_the_graph(tmp_path):
    """PAD before a conv whose pads are not TFLite SAME, PADV2 (lowest code) before such a max pool, MINIMUM for
    a clamp no fused activation expresses, LEAKY_RELU (alpha 1) + MAXIMUM + MINIMUM for a clamp no RELU
    expresses, a global pool with a kernel larger than its input made VALID."""
    art, _ = compiled("pools", "w8a8")
    ops = _builtins(_export(art, tmp_path))
    assert ops == ["QUANTIZE", "TRANSPOSE", "CONV_2D", "MINIMUM", "PADV2", "MAX_POOL_2D", "LEAKY_RELU", "MAXIMUM",
                   "MINIMUM", "AVERAGE_POOL_2D", "LOGISTIC", "CONV_2D", "AVERAGE_POOL_2D", "TRANSPOSE", "DEQUANTIZE"]
    art, _ = compiled("cnn", "w8a16")
    ops = _builtins(_export(art, tmp_path, "cnn"))
    assert ops == ["QUANTIZE", "TRANSPOSE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "ADD", "MEAN",
                   "RESHAPE", "FULLY_CONNECTED", "SOFTMAX", "DEQUANTIZE"]


def _grouped(rng):
    nodes = [_n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], group=2), _n("Relu", ["c1"], ["y"])]
    return onnx_graph(nodes, [("x", [1, 4, 8, 8])], ["y"], [("w1", _w(rng, 6, 2, 3, 3)), ("b1", _w(rng, 6))])


@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
@pytest.mark.parametrize("grouped_conv", ["native", "split"])
def test_grouped_conv_native_or_split(grouped_conv, precision, tmp_path):
    rng = np.random.default_rng(0)
    g = _grouped(rng)
    art, _ = compile_graph(g, {"x": rng.standard_normal((8, 1, 4, 8, 8)).astype(np.float32)}, precision,
                           options=TFLITE_OPTIONS)
    path = str(tmp_path / "g.tflite")
    with open(path, "wb") as f:
        f.write(export_tflite(art.graph, grouped_conv=grouped_conv))
    ops = _builtins(path)
    assert ops.count("CONV_2D") == (1 if grouped_conv == "native" else 2)
    assert_bit_exact(art, path, random_inputs(art.graph, 3))


def test_int4_weights_are_tflite_int4_tensors(tmp_path):
    import tflite
    art, _ = compiled("cnn", "w4a8")
    with open(_export(art, tmp_path), "rb") as f:
        m = tflite.Model.GetRootAs(f.read(), 0)
    sg = m.Subgraphs(0)
    types = {sg.Tensors(i).Name().decode(): sg.Tensors(i).Type() for i in range(sg.TensorsLength())}
    int4 = [n for n, t in types.items() if t == tflite.TensorType.INT4]
    assert len(int4) == 4  # three convolutions and the fully-connected layer


# --- the zoo CNN ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
def test_zoo_mobilenet_is_bit_exact(precision, tmp_path):
    from lowbit.tools import zoo
    from lowbit.tools.api import load
    calib = {k: v[:8] for k, v in zoo.load_calib("mobilenet_digits").items()}
    art, _ = compile_graph(load(str(zoo.path("mobilenet_digits")), optimize=False), calib, precision,
                           options=dict(TARGET.lowering_options))
    path, raw = _export(art, tmp_path), _export(art, tmp_path, "raw", integer_io=True)
    images = zoo.load_eval("mobilenet_digits")["image"]
    assert_bit_exact(art, path, ({"image": images[i:i + 1]} for i in range(0, 360, 45)), raw_path=raw)
    assert _builtins(path).count("TRANSPOSE") == 1


# --- refusals ------------------------------------------------------------------------------------------------
def test_export_names_the_node_and_the_constraint(tmp_path):
    rng = np.random.default_rng(0)
    g = onnx_graph([_n("Conv", ["x", "w"], ["c"]), _n("Erf", ["c"], ["y"])], [("x", [1, 2, 4, 4])], ["y"],
                   [("w", _w(rng, 3, 2, 1, 1))])
    art, _ = compile_graph(g, {"x": rng.standard_normal((4, 1, 2, 4, 4)).astype(np.float32)}, "w8a8",
                           options=TFLITE_OPTIONS)
    placement = TARGET.place(art.graph)
    assert [(p.op, p.node) for p in placement.fallback] == [("lowbit.int.Lut", "Erf_1")]
    assert "TFLite has no custom lookup tables" in placement.fallback[0].reasons[0]
    with pytest.raises(UnsupportedOpError, match=r"lowbit.int.Lut node 'Erf_1': TFLite has no custom lookup"):
        _export(art, tmp_path)
    assert not os.path.exists(tmp_path / "m.tflite")


def test_export_refuses_integer_multiplier_fully_connected(tmp_path):
    art, _ = compiled("cnn", "w8a8", options={"output_softmax": "tflite"})  # FC requant "multiplier"
    placement = TARGET.place(art.graph)
    assert [p.op for p in placement.fallback] == ["lowbit.int.FullyConnected"]
    with pytest.raises(UnsupportedOpError, match="FullyConnected node 'Gemm_8': LiteRT's reference.*float64.*"
                                                 "--target tflite"):
        _export(art, tmp_path)
    path = _export(art, tmp_path, convert_fc=True)  # accepted on request: at most one step apart
    for feeds in random_inputs(art.graph, 3):
        a, b = TARGET.run(path, feeds)["y"], art.run(feeds)["y"]
        assert np.abs(a - b).max() <= 2.0 / 32768


def test_export_refuses_lowbits_softmax_tail(tmp_path):
    art, _ = compiled("cnn", "w8a8", options={"fc_requant": "float64"})  # model-output softmax with exp_cutoff
    placement = TARGET.place(art.graph)
    assert [p.op for p in placement.fallback] == ["lowbit.int.Softmax"]
    assert "output_softmax=tflite" in placement.fallback[0].reasons[0]
    with pytest.raises(UnsupportedOpError, match="Softmax node"):
        _export(art, tmp_path)
    path = _export(art, tmp_path, convert_softmax=True)  # TFLite's SOFTMAX: the tail is exp(-10), not 0
    assert "SOFTMAX" in _builtins(path)


@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
def test_zoo_vit_exports_with_layer_norm_as_ops_and_is_bit_exact(precision, tmp_path):
    """The tflite target's layer_norm="ops": each LayerNormalization as MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL,
    MUL, ADD (TensorFlow's converter's form), so the whole ViT exports and LiteRT computes lowbit's integers."""
    from lowbit.tools import zoo
    from lowbit.tools.api import load
    calib = {k: v[:8] for k, v in zoo.load_calib("vit_digits").items()}
    art, _ = compile_graph(load(str(zoo.path("vit_digits")), optimize=False), calib, precision,
                           options=dict(TARGET.lowering_options))
    assert not TARGET.place(art.graph).fallback
    path, raw = _export(art, tmp_path), _export(art, tmp_path, "raw", integer_io=True)
    images = zoo.load_eval("vit_digits")["image"]
    assert_bit_exact(art, path, ({"image": images[i:i + 1]} for i in range(0, 360, 45)), raw_path=raw)
    ops = _builtins(path)
    assert ops.count("MEAN") == 2 * 7 + 1 and ops.count("RSQRT") == 7  # 7 LayerNorms, and the token mean


def test_integer_layer_norm_is_refused_without_layer_norm_as_ops():
    from lowbit.tools import zoo
    from lowbit.tools.api import load
    calib = {k: v[:2] for k, v in zoo.load_calib("vit_digits").items()}
    options = {k: v for k, v in TARGET.lowering_options.items() if k != "layer_norm"}
    art, _ = compile_graph(load(str(zoo.path("vit_digits")), optimize=False), calib, "w8a8", options=options)
    placement = TARGET.place(art.graph)
    assert {p.op for p in placement.fallback} == {"lowbit.int.LayerNorm"}
    assert all(p.reasons == ["TFLite has no integer LayerNormalization builtin"] for p in placement.fallback)
    assert placement.op_fraction > 0.85


def test_run_without_litert_gives_a_one_line_hint(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    with pytest.raises(LowbitError, match=r"pip install ai-edge-litert") as e:
        TARGET.run(str(tmp_path / "m.tflite"), {})
    assert "\n" not in str(e.value)


# --- converter-made fixtures: import, export again ------------------------------------------------------------
def _fixtures():
    out = []
    for path in sorted(glob.glob(os.path.join(DATA, "*.tflite"))):
        name = os.path.basename(path)[:-len(".tflite")]
        if name.startswith("unsupported_") or name in ("movement2_16x8", "squared_difference_16x8",
                                                       "elu_patched_int8"):
            continue  # lowbit does not import these (or LiteRT's reference resolver has no ELU)
        out.append(name)
    return out


@pytest.mark.parametrize("name", _fixtures())
def test_converter_fixture_round_trip(name, tmp_path):
    src = os.path.join(DATA, f"{name}.tflite")
    out = str(tmp_path / f"{name}.tflite")
    with open(out, "wb") as f:
        f.write(export_tflite(load_tflite(src)))
    assert _builtins(out) == ["STRIDED_SLICE" if op == "SLICE" else op for op in _builtins(src)]
    for seed in range(2):
        feeds = random_feeds(src, seed)
        if name.startswith("rsqrt"):
            feeds = [np.maximum(x, 1).astype(x.dtype) for x in feeds]  # LiteRT rejects RSQRT of x <= 0
        for a, b in zip(run_litert(src, feeds), run_litert(out, feeds)):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)


# --- the ONNX light models (slow) ----------------------------------------------------------------------------------
LIGHT = ["squeezenet", "resnet50", "inception_v1", "inception_v2", "densenet121", "alexnet", "zfnet512", "vgg19"]
# float LRN islands: LiteRT's reference LOCAL_RESPONSE_NORMALIZATION sums the channels [c - r, c + r) (one short
# of ONNX's and its own optimized kernel's window): outputs (int16 softmax, steps of 2^-15) within 16 steps
LRN_MODELS = {"inception_v1", "alexnet", "zfnet512"}


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
@pytest.mark.parametrize("name", LIGHT)
def test_light_models_are_bit_exact(name, precision, tmp_path):
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.tools.light_models import realize
    g = from_onnx_model(realize(name))
    rng = np.random.default_rng(0)
    shape = tuple(d if isinstance(d, int) else 1 for d in g.inputs[0].shape)
    art, _ = compile_graph(g, {g.inputs[0].name: rng.standard_normal((2,) + shape).astype(np.float32)}, precision,
                           options=dict(TARGET.lowering_options))
    path = _export(art, tmp_path)
    inputs = [{g.inputs[0].name: rng.standard_normal(shape).astype(np.float32)} for _ in range(2)]
    if name in LRN_MODELS:
        for feeds in inputs:
            k = art.graph.outputs[0].name
            assert np.abs(TARGET.run(path, feeds)[k] - art.run(feeds)[k]).max() <= 16.0 / 32768
        return
    assert_bit_exact(art, path, inputs)


@pytest.mark.slow
def test_shufflenet_average_pools_are_refused():
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.tools.light_models import realize
    g = from_onnx_model(realize("shufflenet"))
    rng = np.random.default_rng(0)
    art, _ = compile_graph(g, {g.inputs[0].name: rng.standard_normal((2, 1, 3, 224, 224)).astype(np.float32)},
                           "w8a8", options=dict(TARGET.lowering_options))
    placement = TARGET.place(art.graph)
    assert {p.op for p in placement.fallback} == {"lowbit.int.AvgPool"} and len(placement.fallback) == 3
