"""targets/tflite_layout.py: the NCHW -> NHWC conversion for TFLite export.

Every case compiles a small float ONNX graph with lowbit, converts the integer graph to NHWC and checks (a) the
structure the pass promises (spatial ops NHWC, which Transposes remain) and (b) that lowbit's integer executor
gives bit-identical outputs before and after, on several inputs. No external runtime is needed. The graph
builders here are shared with tests/test_target_tflite.py.
"""
import numpy as np
import pytest
from onnx import helper

from lowbit.quant.compile import compile_graph
from lowbit.quant.spec import activation_spec
from lowbit.runtime.int_executor import run
from lowbit.targets.tflite_layout import clone_graph, to_nhwc
from graphs import float_graph as onnx_graph

TFLITE_OPTIONS = {"fc_requant": "float64", "output_softmax": "tflite"}  # TfliteTarget.lowering_options


# --- float graphs ------------------------------------------------------------------------------------------------

def _w(rng, *shape, scale=0.3):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def _cnn(rng):
    """conv 3x3 (stride 2, pads 1: not TFLite SAME) + ReLU, depthwise 3x3 + ReLU6, 1x1 conv, residual Add,
    GlobalAveragePool, Flatten, Gemm, Softmax."""
    nodes = [_n("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]), _n("Relu", ["c1"], ["r1"]),
             _n("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=8), _n("Clip", ["c2", "lo", "hi"], ["r2"]),
             _n("Conv", ["r2", "w3", "b3"], ["c3"]), _n("Add", ["c3", "r1"], ["a"]),
             _n("GlobalAveragePool", ["a"], ["p"]), _n("Flatten", ["p"], ["f"]),
             _n("Gemm", ["f", "wf", "bf"], ["g"], transB=1), _n("Softmax", ["g"], ["y"])]
    inits = [("w1", _w(rng, 8, 3, 3, 3)), ("b1", _w(rng, 8, scale=0.1)), ("w2", _w(rng, 8, 1, 3, 3)),
             ("lo", np.float32(0)), ("hi", np.float32(6)), ("w3", _w(rng, 8, 8, 1, 1)), ("b3", _w(rng, 8)),
             ("wf", _w(rng, 10, 8)), ("bf", _w(rng, 10, scale=0.1))]
    return onnx_graph(nodes, [("x", [1, 3, 16, 16])], ["y"], inits)


def _pools(rng):
    """Conv + Clip(0, 3) and a later Clip(0, 0.5) whose outputs get wider ranges (SPECS; no TFLite fused
    activation or RELU has those clamps), MaxPool with pads TFLite's SAME does not give (-> PADV2),
    AveragePool SAME, Sigmoid, a global AveragePool written with a kernel larger than its input."""
    nodes = [_n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), _n("Clip", ["c1", "lo", "hi3"], ["cc"]),
             _n("MaxPool", ["cc"], ["m"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
             _n("Clip", ["m", "lo", "hi"], ["cl"]),
             _n("AveragePool", ["cl"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             _n("Sigmoid", ["a"], ["s"]), _n("Conv", ["s", "w2"], ["c2"]),
             _n("AveragePool", ["c2"], ["y"], kernel_shape=[9, 9], pads=[0, 0, 1, 1])]
    inits = [("w1", _w(rng, 6, 2, 3, 3)), ("lo", np.float32(0)), ("hi3", np.float32(3)), ("hi", np.float32(0.5)),
             ("w2", _w(rng, 4, 6, 1, 1))]
    return onnx_graph(nodes, [("x", [1, 2, 16, 16])], ["y"], inits)


def _concat_mean(rng):
    """Two convs -> Concat(axis 1) -> Pad -> conv -> ReduceMean(axes 2, 3, keepdims 0)."""
    nodes = [_n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), _n("Conv", ["x", "w2"], ["c2"]),
             _n("Concat", ["c1", "c2"], ["cat"], axis=1), _n("Pad", ["cat", "pads"], ["pd"]),
             _n("Conv", ["pd", "w3"], ["c3"]), _n("ReduceMean", ["c3", "axes"], ["y"], keepdims=0)]
    inits = [("w1", _w(rng, 4, 3, 3, 3)), ("w2", _w(rng, 4, 3, 1, 1)), ("w3", _w(rng, 5, 8, 3, 3)),
             ("pads", np.array([0, 0, 1, 2, 0, 0, 2, 1], np.int64)), ("axes", np.array([2, 3], np.int64))]
    return onnx_graph(nodes, [("x", [1, 3, 10, 10])], ["y"], inits, opset=18)


def _axis_ops(rng):
    """Ops that depend on NCHW axes and keep an explicit Transpose: Softmax over W, Slice of channels,
    Flatten of a spatial map, per-channel Mul by a [1, C, 1, 1] constant, a second output."""
    nodes = [_n("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]), _n("Relu", ["c1"], ["r1"]),
             _n("Mul", ["r1", "scale"], ["m"]), _n("Softmax", ["m"], ["sm"], axis=-1),
             _n("Slice", ["sm", "st", "en", "ax"], ["sl"]), _n("Conv", ["sl", "w2"], ["c2"]),
             _n("Flatten", ["c2"], ["f"]), _n("Gemm", ["f", "wf"], ["y"], transB=1)]
    inits = [("w1", _w(rng, 6, 2, 3, 3)), ("scale", np.abs(_w(rng, 1, 6, 1, 1)) + 0.5),
             ("st", np.array([1], np.int64)), ("en", np.array([5], np.int64)), ("ax", np.array([1], np.int64)),
             ("w2", _w(rng, 3, 4, 1, 1)), ("wf", _w(rng, 4, 3 * 8 * 8))]
    return onnx_graph(nodes, [("x", [1, 2, 8, 8])], ["y", "m"], inits)


def _conv1d(rng):
    nodes = [_n("Conv", ["x", "w1", "b1"], ["c1"], pads=[2, 0], dilations=[2]), _n("Tanh", ["c1"], ["t"]),
             _n("Conv", ["t", "w2"], ["y"], strides=[2])]
    inits = [("w1", _w(rng, 6, 4, 3)), ("b1", _w(rng, 6)), ("w2", _w(rng, 5, 6, 2))]
    return onnx_graph(nodes, [("x", [1, 4, 16])], ["y"], inits)


GRAPHS = {"cnn": _cnn, "pools": _pools, "concat_mean": _concat_mean, "axis_ops": _axis_ops, "conv1d": _conv1d}
SPECS = {"pools": {"cc": (-4.0, 4.0), "cl": (-1.0, 1.0)}}  # fixed activation ranges (lowering activation_specs)


def compiled(name: str, precision: str, options=None, samples: int = 8, seed: int = 0):
    """(artifact, calibration dict) of GRAPHS[name] compiled by lowbit at ``precision``."""
    rng = np.random.default_rng(seed)
    g = GRAPHS[name](rng)
    calib = {v.name: rng.standard_normal((samples,) + tuple(v.shape)).astype(np.float32) for v in g.inputs}
    options = dict(TFLITE_OPTIONS if options is None else options)
    bits = 16 if precision.endswith("16") else 8
    options["activation_specs"] = {v: activation_spec(lo, hi, bits) for v, (lo, hi) in SPECS.get(name, {}).items()}
    art, _ = compile_graph(g, calib, precision, options=options)
    return art, calib


def random_inputs(graph, n: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield {v.name: (rng.standard_normal(v.shape) * 1.5).astype(np.float32) for v in graph.inputs}


def _ops(graph):
    return [n.op_type for n in graph.nodes]


def _assert_same_outputs(before, after, n=4):
    after.verify()
    for feeds in random_inputs(before, n):
        a, b = run(before, feeds), run(after, feeds)
        assert list(a) == list(b)
        for k in a:
            assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


def _nhwc(art):
    g = clone_graph(art.graph)
    assert to_nhwc(g)
    return g


# --- tests -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", ["w8a8", "w8a16", "w4a8"])
@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_nhwc_graph_computes_identical_integers(name, precision):
    art, _ = compiled(name, precision)
    g = _nhwc(art)
    spatial = [n for n in g.nodes if n.domain == "lowbit.int" and n.op_type in ("Conv", "MaxPool", "AvgPool")]
    assert spatial and all(n.attrs["layout"] == "NHWC" for n in spatial)
    _assert_same_outputs(art.graph, g)


def test_clone_leaves_the_artifact_graph_untouched():
    art, _ = compiled("cnn", "w8a8")
    before = [(n.name, n.op_type, dict(n.attrs).get("layout")) for n in art.graph.nodes]
    _nhwc(art)
    assert [(n.name, n.op_type, dict(n.attrs).get("layout")) for n in art.graph.nodes] == before
    art.graph.verify()


def test_transposes_cancel_in_a_cnn():
    """spatial_to_nhwc + fold_transpose_pair + sink_through_binary (residual Add) + sink_through_mean +
    transpose_into_reshape: only the input's Transpose is left."""
    art, _ = compiled("cnn", "w8a8")
    g = _nhwc(art)
    transposes = [n for n in g.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 1 and transposes[0].inputs[0].producer.op_type == "Quantize"
    assert transposes[0].attrs["perm"] == [0, 2, 3, 1]
    mean = next(n for n in g.nodes if n.op_type == "Mean")
    assert mean.attrs["axes"] == [1, 2]
    assert "Flatten" not in _ops(g)  # became one Reshape of the NHWC mean


def test_sink_through_unary_concat_pad_and_mean_without_keepdims():
    """Concat axis 1 -> 3, Pad pads permuted, Mean keepdims=0 over H, W gives [N, C] with no Transpose."""
    art, _ = compiled("concat_mean", "w8a8")
    g = _nhwc(art)
    assert _ops(g).count("Transpose") == 1
    cat = next(n for n in g.nodes if n.op_type == "Concat")
    assert cat.attrs["axis"] == 3
    pad = next(n for n in g.nodes if n.op_type == "Pad")
    assert pad.inputs[1].const.tolist() == [0, 1, 2, 0, 0, 2, 1, 0]
    mean = next(n for n in g.nodes if n.op_type == "Mean")
    assert mean.attrs["axes"] == [1, 2] and mean.outputs[0].consumers[0].op_type == "Dequantize"


def test_pools_and_unary_sink():
    art, _ = compiled("pools", "w8a8")
    g = _nhwc(art)
    assert _ops(g).count("Transpose") == 2  # the input's, and the output's (a graph output stays NCHW)
    for op in ("Relu", "Lut"):
        node = next(n for n in g.nodes if n.op_type == op)
        assert len(node.outputs[0].shape) == 4 and node.outputs[0].shape[-1] in (6,)  # NHWC channels last


def test_axis_dependent_ops_keep_explicit_transposes():
    """Softmax over W and a Flatten of a spatial map read NCHW data: a Transpose stays in front of each; the
    Slice of channels then reads the NCHW softmax (axis 1 unchanged); the per-channel Mul's constant is
    permuted instead."""
    art, _ = compiled("axis_ops", "w8a8")
    g = _nhwc(art)
    softmax = next(n for n in g.nodes if n.op_type == "Softmax")
    assert softmax.inputs[0].producer.op_type == "Transpose"
    slice_ = next(n for n in g.nodes if n.op_type == "Slice")
    assert slice_.inputs[0] is softmax.outputs[0] and slice_.inputs[3].const.tolist() == [1]
    mul = next(n for n in g.nodes if n.op_type == "Mul")
    const = next(v for v in mul.inputs if v.const is not None and v.const.size > 1)
    assert const.const.shape == (1, 1, 1, 6)
    flatten = next(n for n in g.nodes if n.op_type in ("Flatten", "Reshape") and n.outputs[0].shape == (1, 192))
    assert flatten.inputs[0].producer.op_type == "Transpose"
    _assert_same_outputs(art.graph, g)


def test_conv1d_becomes_2d_of_height_one():
    art, _ = compiled("conv1d", "w8a16")
    g = _nhwc(art)
    convs = [n for n in g.nodes if n.op_type == "Conv"]
    assert all(n.inputs[1].const.ndim == 4 and n.inputs[1].const.shape[2] == 1 for n in convs)
    assert convs[0].attrs["pads"] == [0, 2, 0, 0] and convs[0].attrs["dilations"] == [1, 2]
    assert convs[1].attrs["strides"] == [1, 2]


def test_layout_pass_on_the_zoo_cnn():
    from lowbit.tools import zoo
    from lowbit.tools.api import load
    calib = {k: v[:4] for k, v in zoo.load_calib("mobilenet_digits").items()}
    art, _ = compile_graph(load(str(zoo.path("mobilenet_digits")), optimize=False), calib, "w8a8",
                           options=TFLITE_OPTIONS)
    g = _nhwc(art)
    assert _ops(g).count("Transpose") == 1
    eval_ = zoo.load_eval("mobilenet_digits")
    for i in range(4):
        feeds = {"image": eval_["image"][i:i + 1]}
        assert np.array_equal(run(art.graph, feeds)["logits"], run(g, feeds)["logits"])


def test_sink_through_softmax_only_when_the_last_axis_stays_last():
    """sink_through_softmax: Softmax(Transpose(x, [1, 0, 2])) -> Transpose(Softmax(x)); perm [0, 2, 1] moves the
    softmax axis, so its Transpose stays."""
    from lowbit.graph.ir import Graph
    from lowbit.quant.prepare_elementwise import prepare_softmax
    from lowbit.quant.spec import QuantSpec
    from lowbit.targets.tflite_layout import sink_transposes
    xq, yq = QuantSpec(8, 0.05, 3), QuantSpec(8, 1 / 256, -128)
    for perm, sinks in (([1, 0, 2], True), ([0, 2, 1], False)):
        g = Graph("softmax", {"": 21, "lowbit.int": 1})
        x = g.new_value("x", (2, 3, 4), np.int8)
        t = g.new_value("t", tuple((2, 3, 4)[p] for p in perm), np.int8)
        y = g.new_value("y", t.shape, np.int8)
        x.quant, t.quant, y.quant = xq, xq, yq
        g.add_node("Transpose", [x], [t], {"perm": perm})
        g.add_node("Softmax", [t], [y], prepare_softmax(xq, yq), domain="lowbit.int")
        g.inputs, g.outputs = [x], [y]
        before = clone_graph(g)
        assert sink_transposes(g) == sinks
        softmax = next(n for n in g.nodes if n.op_type == "Softmax")
        assert (softmax.inputs[0] is g.inputs[0]) == sinks
        feeds = {"x": np.random.default_rng(0).integers(-128, 128, (2, 3, 4)).astype(np.int8)}
        assert np.array_equal(run(before, feeds)["y"], run(g, feeds)["y"])


def test_attention_qkv_split_becomes_a_channel_split_and_4d_transposes():
    """[B, T, 3*H*D] -> Reshape [B, T, 3, H, D] -> Transpose (2, 0, 3, 1, 4) -> Split axis 0 -> Squeeze: the split
    moves before the Transpose (split_before_transpose) and the Reshape (split_before_reshape), the Squeeze
    through the Transpose (squeeze_through_transpose): a channel split of the 3-D projection and 4-D
    Transposes, where Vela 5.2 made 13 operations of the 5-D Transpose and many of a strided split."""
    rng = np.random.default_rng(0)
    nodes = [_n("Reshape", ["x", "s"], ["r"]), _n("Transpose", ["r"], ["t"], perm=[2, 0, 3, 1, 4]),
             _n("Split", ["t", "sizes"], ["q5", "k5", "v5"], axis=0)]
    nodes += [_n("Squeeze", [f"{p}5", "ax0"], [p]) for p in "qkv"]
    nodes += [_n("Add", ["q", "k"], ["qk"]), _n("Add", ["qk", "v"], ["y"])]
    inits = [("s", np.array([1, 16, 3, 4, 16], np.int64)), ("sizes", np.array([1, 1, 1], np.int64)),
             ("ax0", np.array([0], np.int64))]
    g = onnx_graph(nodes, [("x", [1, 16, 192])], ["y"], inits, opset=18)
    art, _ = compile_graph(g, {"x": rng.standard_normal((8, 1, 16, 192)).astype(np.float32)}, "w8a8",
                           options=TFLITE_OPTIONS)
    assert any(n.op_type == "Transpose" and len(n.inputs[0].shape) == 5 for n in art.graph.nodes)
    out = _nhwc(art)
    transposes = [n for n in out.nodes if n.op_type == "Transpose"]
    # 4-D [B, T, H, D] -> [B, H, T, D]; here the Adds then sink through them and leave one, at the output
    assert transposes and all(len(n.inputs[0].shape) == 4 and n.attrs["perm"] == [0, 2, 1, 3] for n in transposes)
    split = next(n for n in out.nodes if n.op_type == "Split")
    assert split.inputs[0].shape == (1, 16, 192) and split.attrs["axis"] == 2
    _assert_same_outputs(art.graph, out)


def test_patch_embedding_tokens_need_no_transpose_after_the_conv():
    """Conv NCHW -> Reshape [B, C, h*w] -> Transpose [B, h*w, C] (a ViT's patch embedding): in NHWC the conv's
    output reshaped is already the tokens (sink_through_reshape), so only the input's Transpose is left and the
    per-channel Mul after it stays per channel (Vela 5.2 costs a depth-1 operand broadcast across channels 8
    cycles an element on U55)."""
    rng = np.random.default_rng(0)
    nodes = [_n("Conv", ["x", "w"], ["c"]), _n("Reshape", ["c", "s"], ["r"]),
             _n("Transpose", ["r"], ["t"], perm=[0, 2, 1]), _n("Mul", ["t", "g"], ["y"])]
    inits = [("w", _w(rng, 8, 2, 1, 1)), ("s", np.array([1, 8, 16], np.int64)),
             ("g", rng.uniform(0.5, 1.5, 8).astype(np.float32))]
    g = onnx_graph(nodes, [("x", [1, 2, 4, 4])], ["y"], inits)
    art, _ = compile_graph(g, {"x": rng.standard_normal((8, 1, 2, 4, 4)).astype(np.float32)}, "w8a8",
                           options=TFLITE_OPTIONS)
    out = _nhwc(art)
    transposes = [n for n in out.nodes if n.op_type == "Transpose"]
    assert len(transposes) == 1 and transposes[0].inputs[0].producer.op_type == "Quantize"
    mul = next(n for n in out.nodes if n.op_type == "Mul")
    assert mul.inputs[0].shape == (1, 16, 8)
    _assert_same_outputs(art.graph, out)
