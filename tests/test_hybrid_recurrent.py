"""Lowering of the recurrent and spiking layers (quant/lower_recurrent.py): the structure of lowered graphs
(1-D convs, BatchNorms, LIF with BN folded, spike layers, the LMU, the selective scan), their numbers against
the float graphs, and streaming: each zoo sequence model's step graph, lowered with its whole-sequence specs
and fed integer state, reproduces the whole-sequence integer logits bit for bit on the whole eval set."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.graph.onnx_import import from_onnx_model
from lowbit.quant import lower_streaming as streaming
from lowbit.quant.calibrate import calibrate
from lowbit.quant.compile import compile_graph
from lowbit.quant.lower import lower
from lowbit.quant.pinned import bind_and_optimize
from lowbit.quant.plan import make_plan
from lowbit.runtime.float_executor import run as run_float
from lowbit.runtime.int_executor import run as run_int
from lowbit.tools import zoo

SEQ_MODELS = ["lmu_seqdigits", "lmuformer_seqdigits", "spiking_lmuformer_seqdigits", "mamba_seqdigits"]
PLANS = {"spiking_lmuformer_seqdigits": "spiking.toml", "mamba_seqdigits": "mamba.toml"}  # their w4a16 plans


def _model(nodes, inputs, outputs, inits=(), lowbit_ops=False):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("lowbit", 1)] if lowbit_ops else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 8
    return from_onnx_model(m)


def _sqnr(ref, x):
    ref = np.asarray(ref, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - x) ** 2))


def _int_ops(graph):
    return [n.op_type for n in graph.nodes if n.domain == "lowbit.int"]


def _bn_inits(rng, prefix, c):
    return [(f"{prefix}_g", rng.uniform(0.5, 2, c).astype(np.float32)),
            (f"{prefix}_b", rng.uniform(-0.5, 0.5, c).astype(np.float32)),
            (f"{prefix}_m", rng.uniform(-0.2, 0.2, c).astype(np.float32)),
            (f"{prefix}_v", rng.uniform(0.5, 2, c).astype(np.float32))]


# --- 1-D convolutions ------------------------------------------------------------------------------------------------
def test_causal_conv1d_with_bn_and_relu_behind_transpose_is_one_integer_conv():
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[2, 2], kernel_shape=[3]),
             helper.make_node("Slice", ["c", "zero", "len", "two"], ["s"]),
             helper.make_node("BatchNormalization", ["s", "bn_g", "bn_b", "bn_m", "bn_v"], ["n"]),
             helper.make_node("Transpose", ["n"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Relu", ["t"], ["y"])]
    inits = [("w", rng.standard_normal((8, 3, 3)).astype(np.float32) * 0.5),
             ("b", rng.standard_normal(8).astype(np.float32) * 0.1), ("zero", np.array([0], np.int64)),
             ("len", np.array([20], np.int64)), ("two", np.array([2], np.int64))] + _bn_inits(rng, "bn", 8)
    g = _model(nodes, [("x", [2, 3, 20])], ["y"], inits)
    art, low = compile_graph(g, {"x": rng.standard_normal((8, 2, 3, 20)).astype(np.float32)}, "w8a8")
    assert low.float_islands == [] and _int_ops(art.graph) == ["Quantize", "Conv", "Dequantize"]
    conv = next(n for n in art.graph.nodes if n.op_type == "Conv")
    assert conv.name == next(n.name for n in g.nodes if n.op_type == "Conv")  # the integer conv keeps its name
    assert conv.attrs["pads"] == [0, 2, 0, 0] and conv.inputs[1].const.shape == (8, 3, 1, 3)  # causal, [N,C,1,L]
    assert conv.attrs["act_min"] == conv.outputs[0].quant.zero_point  # the Relu is the clamp
    assert [n.op_type for n in art.graph.nodes if n.domain == ""] == ["Unsqueeze", "Squeeze", "Transpose"]
    x = {"x": rng.standard_normal((2, 3, 20)).astype(np.float32)}
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 35


def test_depthwise_causal_conv1d_at_16_bits():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[3, 3], group=6, kernel_shape=[4]),
             helper.make_node("Slice", ["c", "zero", "len", "two"], ["y"])]
    inits = [("w", rng.standard_normal((6, 1, 4)).astype(np.float32)), ("b", np.zeros(6, np.float32)),
             ("zero", np.array([0], np.int64)), ("len", np.array([-3], np.int64)), ("two", np.array([2], np.int64))]
    g = _model(nodes, [("x", [1, 6, 16])], ["y"], inits)
    art, low = compile_graph(g, {"x": rng.standard_normal((8, 1, 6, 16)).astype(np.float32)}, "w8a16")
    conv = next(n for n in art.graph.nodes if n.op_type == "Conv")
    assert low.float_islands == [] and conv.attrs["group"] == 6 and conv.attrs["pads"] == [0, 3, 0, 0]
    x = {"x": rng.standard_normal((1, 6, 16)).astype(np.float32)}
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 35  # 8-bit weights, 4 taps per channel


def test_batchnorm_on_3d_and_4d_tensors_becomes_a_depthwise_integer_conv():
    rng = np.random.default_rng(2)
    for shape in ([2, 5, 12], [2, 5, 3, 4]):
        g = _model([helper.make_node("BatchNormalization", ["x", "bn_g", "bn_b", "bn_m", "bn_v"], ["y"])],
                   [("x", shape)], ["y"], _bn_inits(rng, "bn", 5))
        art, low = compile_graph(g, {"x": rng.standard_normal([8] + shape).astype(np.float32)}, "w8a8")
        conv = next(n for n in art.graph.nodes if n.op_type == "Conv")
        assert low.float_islands == [] and conv.attrs["group"] == 5 and conv.inputs[1].const.shape == (5, 1, 1, 1)
        x = {"x": rng.standard_normal(shape).astype(np.float32)}
        assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 38


# --- LIF with a folded BatchNorm, spike layers --------------------------------------------------------------------------
def _spiking_net(rng):
    """x [N, T, 4] -> MatMul -> Transpose -> BN -> Transpose -> LIF -> MatMul(head); two LIF trains summed."""
    lif = dict(domain="lowbit", tau=2.0, v_threshold=1.0, v_reset=0.0)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Transpose", ["h"], ["ht"], perm=[0, 2, 1]),
             helper.make_node("BatchNormalization", ["ht", "bn_g", "bn_b", "bn_m", "bn_v"], ["hn"]),
             helper.make_node("Transpose", ["hn"], ["hb"], perm=[0, 2, 1]),
             helper.make_node("LIF", ["hb", "v0"], ["s1", "v1"], **lif),
             helper.make_node("LIF", ["h", "v0"], ["s2", "v2"], **lif),
             helper.make_node("Add", ["s1", "s2"], ["s"]),
             helper.make_node("MatMul", ["s", "w2"], ["y"])]
    inits = [("w1", rng.standard_normal((4, 6)).astype(np.float32)), ("v0", np.zeros((1, 6), np.float32)),
             ("w2", rng.standard_normal((6, 3)).astype(np.float32))] + _bn_inits(rng, "bn", 6)
    return _model(nodes, [("x", [2, 16, 4])], ["y"], inits, lowbit_ops=True)


def test_lif_absorbs_its_batchnorm_and_spike_layers_count_accumulates():
    rng = np.random.default_rng(3)
    g = _spiking_net(rng)
    art, low = compile_graph(g, {"x": rng.standard_normal((8, 2, 16, 4)).astype(np.float32) * 2}, "w8a8")
    assert low.float_islands == []
    ops = _int_ops(art.graph)
    assert "BatchNormalization" not in [n.op_type for n in art.graph.nodes] and ops.count("LIF") == 2
    assert ops == ["Quantize", "FullyConnected", "LIF", "LIF", "Add", "SpikeFullyConnected", "Dequantize"]
    folded = next(n for n in art.graph.nodes if n.op_type == "LIF" and np.size(n.attrs["input_multiplier"]) == 6)
    assert folded.attrs["threshold"] * float(folded.outputs[1].quant.scale) == 1.0
    spikes = [n.outputs[0].quant for n in art.graph.nodes if n.op_type in ("LIF", "Add")]
    assert all(float(s.scale) == 1.0 and int(s.zero_point) == 0 for s in spikes)  # codes = spike counts
    x = {"x": rng.standard_normal((2, 16, 4)).astype(np.float32) * 2}
    stats = {}
    run_int(art.graph, x, stats=stats)
    head = next(n for n in art.graph.nodes if n.op_type == "SpikeFullyConnected")
    lifs = [stats[n.name] for n in art.graph.nodes if n.op_type == "LIF"]
    assert stats[head.name]["spikes"] == sum(s["spikes"] for s in lifs)
    assert stats[head.name]["ac"] == 3 * stats[head.name]["spikes"]
    assert 0 < lifs[0]["firing_rate"] < 1
    assert _sqnr(run_float(g, x)["y"], art.run(x)["y"]) > 10  # spikes flip near the threshold


# --- the zoo's sequence models -----------------------------------------------------------------------------------------
def _lower_pair(name, precision="w8a8", batch=360, plan_file=None):
    """(whole float graph, step float graph, whole Lowered, step Lowered) at ``batch``, calibrated on the zoo's
    calibration set (64 sequences)."""
    import lowbit
    g0 = lowbit.load(str(zoo.path(name)), optimize=False)
    s0 = lowbit.load(str(zoo.path(name, "step")), optimize=False)
    calib = dict(np.load(zoo.path(name, "calib")))
    stats = calibrate(bind_and_optimize(g0, {"x": (8, 64, 1)}), {"x": calib["x"].reshape(8, 8, 64, 1)})
    plan = make_plan(precision, plan_file)
    whole_f = bind_and_optimize(g0, {"x": (batch, 64, 1)})
    precisions = plan.resolve(whole_f)
    whole = lower(whole_f, stats, precisions)
    step_f = bind_and_optimize(s0, {v.name: (batch,) + tuple(v.shape[1:]) for v in s0.inputs})
    step = streaming.lower_step(step_f, whole_f, whole, precisions, plan.default)
    return whole_f, step_f, whole, step


def _run_keeping_states(graph, feeds):
    """Run an integer graph; also return the state output (output 1) of every LMUMemory / LIF / scan node."""
    states = {}

    def keep(node, outs):
        if node.domain == "lowbit.int" and node.op_type in ("LMUMemory", "LIF", "SelectiveScan"):
            states[node.name] = outs[1]
    return run_int(graph, feeds, observe=keep), states


EXPECTED_OPS = {
    "lmu_seqdigits": {"LMUMemory"},
    "lmuformer_seqdigits": {"LMUMemory", "Conv", "Mean"},
    "spiking_lmuformer_seqdigits": {"LMUMemory", "LIF", "SpikeConv", "SpikeFullyConnected", "Mean"},
    "mamba_seqdigits": {"SelectiveScan", "Conv", "RMSNorm"},
}


@pytest.mark.parametrize("name", SEQ_MODELS)
def test_streaming_is_bit_exact_with_the_whole_sequence_on_the_eval_set(name):
    whole_f, step_f, whole, step = _lower_pair(name)
    assert whole.float_islands == [] and step.float_islands == []
    assert EXPECTED_OPS[name] <= set(_int_ops(whole.graph))
    assert not {"BatchNormalization", "Softplus"} & {n.op_type for n in whole.graph.nodes}
    ev = dict(np.load(zoo.path(name, "eval")))
    x = ev["x"]
    out, final = _run_keeping_states(whole.graph, {"x": x})
    states = streaming.zero_states(step.graph, len(x))
    kinds = {k: v.dtype for k, v in states.items()}
    assert kinds and all(d.kind == "i" for d in kinds.values())  # the state is carried as integer codes
    for t in range(x.shape[1]):
        res, step_final = _run_keeping_states(step.graph, {"x": x[:, t:t + 1], **states})
        states = {k.replace("state_out_", "state_in_"): v for k, v in res.items() if k.startswith("state_out_")}
        assert {k: v.dtype for k, v in states.items()} == kinds
    assert np.array_equal(res["logits"], out["logits"])  # dequantized from equal integer codes
    prefix = streaming.name_prefix(step_f, whole_f)
    assert step_final and {streaming._strip_prefix(k, prefix) for k in step_final} == set(final)
    for k, v in step_final.items():  # after the last step, every carried state is the whole run's final state
        assert np.array_equal(v, final[streaming._strip_prefix(k, prefix)]), k


@pytest.mark.parametrize("name", ["spiking_lmuformer_seqdigits", "mamba_seqdigits"])
def test_recurrent_artifacts_survive_save_and_load(name, tmp_path):
    from lowbit.runtime.artifact import Artifact
    _, _, whole, _ = _lower_pair(name, batch=4)
    art = Artifact(whole.graph, {"precision": "w8a8"}, name)
    path = str(tmp_path / "a.onnx")
    art.save(path)
    x = {"x": dict(np.load(zoo.path(name, "eval")))["x"][:4]}
    assert np.array_equal(Artifact.load(path).run(x, raw=True)["logits"], art.run(x, raw=True)["logits"])


def test_scan_absorbs_softplus_and_gate_and_keeps_an_int32_state():
    _, _, whole, step = _lower_pair("mamba_seqdigits", "w8a8", batch=2)
    scans = [n for n in whole.graph.nodes if n.op_type == "SelectiveScan"]
    assert len(scans) == 2 and all("delta_table" in n.attrs and len(n.inputs) == 6 for n in scans)  # gate input
    assert all(n.outputs[1].quant.bits == 32 for n in scans)
    assert all(whole.float_of[n.outputs[0].name].endswith("Mul_2_output_0") for n in scans)  # y * SiLU(z)
    assert {v.quant.bits for v in step.graph.inputs if v.name.endswith("ssm_h")} == {32}


def _plan_path(name):
    from pathlib import Path
    return str(Path(zoo.__file__).parent / "plans" / PLANS[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQ_MODELS)
@pytest.mark.parametrize("precision", ["w8a16", "w4a8", "w4a16", "plan"])
def test_streaming_is_bit_exact_at_every_precision(name, precision):
    if precision == "plan" and name not in PLANS:
        pytest.skip("no mixed plan for this family")
    plan = _plan_path(name) if precision == "plan" else None
    _, _, whole, step = _lower_pair(name, "w8a8" if plan else precision, batch=360, plan_file=plan)
    x = dict(np.load(zoo.path(name, "eval")))["x"]
    out = run_int(whole.graph, {"x": x})
    states = streaming.zero_states(step.graph, len(x))
    for t in range(x.shape[1]):
        res = run_int(step.graph, {"x": x[:, t:t + 1], **states})
        states = {k.replace("state_out_", "state_in_"): v for k, v in res.items() if k.startswith("state_out_")}
    assert np.array_equal(res["logits"], out["logits"])


TARGETS = {"w8a16": 1.0, "w8a8": 2.0, "w4a16": 3.0}  # issue 5: points of float accuracy a precision may lose


@pytest.mark.slow
@pytest.mark.parametrize("name", SEQ_MODELS)
def test_accuracy_targets(name):
    """Uniform w8a16 and w8a8 meet the targets; w4a16 does with the family plan where there is one."""
    import lowbit
    from lowbit.quant.compare import compare
    calib, ev = dict(np.load(zoo.path(name, "calib"))), dict(np.load(zoo.path(name, "eval")))
    def load():
        return lowbit.load(str(zoo.path(name)), optimize=False)
    uniform = [p for p in TARGETS if not (p == "w4a16" and name in PLANS)]
    rep = compare(load(), calib, ev, uniform)
    accs = {p: rep["end_to_end"][p]["accuracy"] for p in uniform}
    if name in PLANS:
        accs["w4a16"] = compare(load(), calib, ev, ["w4a16"], _plan_path(name))["end_to_end"]["w4a16"]["accuracy"]
    for p, loss in TARGETS.items():
        assert 100 * (rep["float_accuracy"] - accs[p]) <= loss, (name, p, accs[p], rep["float_accuracy"])
