"""Lowering float graphs to the integer IR: structure of the lowered graph, float islands, accuracy, and the
attention-mask trap real exports contain."""
import numpy as np
import pytest
from onnx import helper

from lowbit.quant.compile import compile_graph
from lowbit.runtime.float_executor import run as run_float
from graphs import float_graph as _model, sqnr as _sqnr


def _conv_relu6_net():
    RNG = np.random.default_rng(1)
    w1 = RNG.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3
    w2 = RNG.standard_normal((4, 8, 1, 1)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Clip", ["c1", "lo", "hi"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"]),
             helper.make_node("GlobalAveragePool", ["c2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    inits = [("w1", w1), ("b1", RNG.standard_normal(8).astype(np.float32) * 0.1), ("lo", np.float32(0)),
             ("hi", np.float32(6)), ("w2", w2), ("wf", RNG.standard_normal((5, 4)).astype(np.float32)),
             ("bf", np.zeros(5, np.float32))]
    return _model(nodes, [("x", [1, 3, 16, 16])], ["y"], inits)


@pytest.mark.parametrize("precision,min_db", [("w8a8", 30), ("w8a16", 35), ("w4a8", 12), ("w4a16", 12)])
def test_cnn_lowers_to_integer_ops_only(precision, min_db):
    RNG = np.random.default_rng(2)
    g = _conv_relu6_net()
    calib = {"x": RNG.standard_normal((16, 1, 3, 16, 16)).astype(np.float32)}
    art, low = compile_graph(g, calib, precision)
    ops = [(n.domain, n.op_type) for n in art.graph.nodes]
    assert low.float_islands == []
    assert ("", "Clip") not in ops and ("lowbit.int", "Relu") not in ops  # ReLU6 fused into the first Conv
    assert [o for d, o in ops if d == "lowbit.int"] == ["Quantize", "Conv", "Conv", "Mean", "FullyConnected",
                                                        "Dequantize"]
    conv = next(n for n in art.graph.nodes if n.op_type == "Conv")
    assert conv.attrs["act_min"] == conv.outputs[0].quant.zero_point  # clamp at real 0
    w = conv.inputs[1]
    bits = int(precision[1])
    assert w.const.dtype == np.int8 and np.abs(w.const).max() <= (7 if bits == 4 else 127)
    assert conv.inputs[2].const.dtype == (np.int64 if precision.endswith("16") else np.int32)
    x = {"x": RNG.standard_normal((1, 3, 16, 16)).astype(np.float32)}
    ref = run_float(g, x)["y"]
    assert _sqnr(ref, art.run(x)["y"]) > min_db


def test_ops_without_integer_lowering_become_reported_float_islands():
    RNG = np.random.default_rng(3)
    g = _model([helper.make_node("MatMul", ["x", "w"], ["a"]), helper.make_node("CumSum", ["a", "ax"], ["b"]),
                helper.make_node("Relu", ["b"], ["y"])], [("x", [2, 4])], ["y"],
               [("w", RNG.standard_normal((4, 4)).astype(np.float32)), ("ax", np.array(1, np.int64))])
    art, low = compile_graph(g, {"x": RNG.standard_normal((8, 2, 4)).astype(np.float32)}, "w8a8")
    assert low.float_islands == ["CumSum_1"]
    kinds = [(n.domain, n.op_type) for n in art.graph.nodes]
    assert ("", "CumSum") in kinds and ("lowbit.int", "Dequantize") in kinds and ("lowbit.int", "Quantize") in kinds
    x = {"x": RNG.standard_normal((2, 4)).astype(np.float32)}
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 25


def test_attention_mask_sentinel_does_not_ruin_softmax():
    """scores + Where(mask, 0, -3.4e38) -> Softmax -> @ V: the sentinel must not set any scale."""
    RNG = np.random.default_rng(4)
    d, t = 8, 6
    nodes = [helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Where", ["m", "zero", "neg"], ["mask"]),
             helper.make_node("Add", ["s", "mask"], ["sm"]),
             helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["y"])]
    causal = np.tril(np.ones((t, t), bool))
    g = _model(nodes, [("q", [t, d]), ("kt", [d, t]), ("v", [t, d])], ["y"],
               [("m", causal), ("zero", np.float32(0)), ("neg", np.float32(-3.4e38))])
    calib = {k: RNG.standard_normal((16, *s)).astype(np.float32) for k, s in (("q", (t, d)), ("kt", (d, t)), ("v", (t, d)))}
    art, low = compile_graph(g, calib, "w8a8")
    assert "Softmax" in [n.op_type for n in art.graph.nodes if n.domain == "lowbit.int"]
    feeds = {k: v[0] for k, v in calib.items()}
    assert _sqnr(run_float(g, feeds)["y"], art.run(feeds)["y"]) > 20


def test_model_output_softmax_runs_at_16_bits_with_exact_zero_tail():
    """1,000 classes with peaked logits: TFLite's int16 kernel clamps exp below a difference of -10 to
    exp(-10); lowbit's output softmax cuts it to 0, so the top probability stays ~1."""
    from lowbit.quant.prepare_elementwise import prepare_softmax
    from lowbit.quant.spec import QuantSpec
    from lowbit.runtime.kernels.int.softmax import Softmax
    x_spec, out_spec = QuantSpec(16, 40.0 / 32767, 0), QuantSpec(16, 1 / 32768, 0)
    logits = np.full((1, 1000), -30.0)
    logits[0, 7] = 5.0
    q = x_spec.quantize(logits)
    attrs = prepare_softmax(x_spec, out_spec)
    tflite = out_spec.dequantize(Softmax(q, **attrs))
    cut = out_spec.dequantize(Softmax(q, **attrs, exp_cutoff=1))
    assert tflite[0, 7] < 0.96 and np.all(tflite[0, :7] > 0)       # 999 * exp(-10) of spurious mass
    assert cut[0, 7] > 0.9999 and np.count_nonzero(cut) == 1
    g = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [("x", [1, 1000])], ["y"])
    art, _ = compile_graph(g, {"x": logits[None].astype(np.float32)}, "w8a8")
    sm = next(n for n in art.graph.nodes if n.op_type == "Softmax")
    assert sm.inputs[0].quant.bits == 16 and sm.attrs.get("exp_cutoff") == 1


def test_matmul_bias_add_fuses_into_fully_connected_and_pad_stays_integer():
    rng = np.random.default_rng(5)
    g = _model([helper.make_node("Pad", ["x", "pads"], ["p"]),
                helper.make_node("MatMul", ["p", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["a"]),
                helper.make_node("Relu", ["a"], ["y"])], [("x", [2, 3, 6])], ["y"],
               [("pads", np.array([0, 0, 1, 0, 0, 1], np.int64)), ("w", rng.standard_normal((8, 5)).astype(np.float32)),
                ("b", rng.standard_normal(5).astype(np.float32))])
    art, low = compile_graph(g, {"x": rng.standard_normal((8, 2, 3, 6)).astype(np.float32)}, "w8a8")
    assert low.float_islands == []
    assert [n.op_type for n in art.graph.nodes] == ["Quantize", "Pad", "FullyConnected", "Dequantize"]
    fc = art.graph.nodes[2]
    assert fc.inputs[2] is not None and fc.attrs["act_min"] == fc.outputs[0].quant.zero_point
    x = {"x": rng.standard_normal((2, 3, 6)).astype(np.float32)}
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 30


def test_mixed_activation_bits_requantize_between_layers(tmp_path):
    """An a16 layer under an a8 plan gets its inputs requantized to int16 (and back for a8 consumers)."""
    plan = tmp_path / "mixed.toml"
    plan.write_text('[[override]]\nposition = "last"\nprecision = "w8a16"\n')
    from lowbit.quant.plan import make_plan
    g = _conv_relu6_net()
    calib = {"x": np.random.default_rng(6).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)}
    art, low = compile_graph(g, calib, make_plan("w8a8", str(plan)))
    fc = next(n for n in art.graph.nodes if n.op_type == "FullyConnected")
    assert fc.inputs[0].dtype == np.int16 and fc.outputs[0].dtype == np.int16 and fc.attrs["accumulator"] == "int64"
    assert any(n.op_type == "Requantize" and n.outputs[0].dtype == np.int16 for n in art.graph.nodes)
    x = {"x": calib["x"][0]}
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 25
