"""The onnxruntime target: lowbit's integer IR exported as a standard QDQ ONNX model and run by ONNX Runtime.

Goldens come from outside: ONNX Runtime runs the exported model, onnx.checker validates it, and the float
model (run by ORT) bounds its float outputs. The LSB bounds are measured, per op type and output bits, with
each op exported alone and fed lowbit's own inputs (``compare_per_op``: no propagation), with ORT's graph
optimisations disabled (its unfused Q/DQ semantics) and at its default (fused int8 kernels), and end to end.
``python tests/test_target_onnxruntime.py`` prints the table that docs/targets.md quotes.
"""
from __future__ import annotations

import functools
import json
from collections import defaultdict

import numpy as np
import onnx
import pytest

from lowbit.errors import UnsupportedOpError
from lowbit.graph.onnx_import import from_onnx_model
from lowbit.quant.compile import compile_graph
from lowbit.targets import get_target
from lowbit.targets.qdq_writer import to_qdq_model
from lowbit.targets.target_onnxruntime import codes_of, compare_per_op
from lowbit.tools import zoo

ort = pytest.importorskip("onnxruntime")

# Measured maximum |ORT code - lowbit code| of one op fed lowbit's inputs, by (op, output bits), over the
# models and samples of ``_table`` (mobilenet_digits, vit_digits: 8 samples; squeezenet: 2), ORT 1.32,
# with graph optimisations disabled and at ORT's default (the maxima agree but for int8 Add: 0 unfused, 1 in
# ORT's fused QLinearAdd).
PER_OP_LSB = {
    ("Quantize", 8): 1, ("Quantize", 16): 1,      # ORT rounds half to even, TFLite half away from zero
    ("Requantize", 8): 0, ("Requantize", 16): 1,
    ("Conv", 8): 1, ("Conv", 16): 1,
    ("FullyConnected", 8): 1, ("FullyConnected", 16): 1,
    ("BatchMatMul", 8): 1, ("BatchMatMul", 16): 1,
    ("Add", 8): 1, ("Add", 16): 1, ("Mul", 8): 0, ("Mul", 16): 0,
    ("Mean", 8): 1, ("Mean", 16): 1,
    ("LayerNorm", 8): 1, ("LayerNorm", 16): 1,   # exported as LayerNormalization with gamma, beta, eps recovered
    ("Lut", 8): 0, ("Lut", 16): 1,                # the table as a piecewise-linear float function
    ("Softmax", 8): 0,
    ("Softmax", 16): 66,                          # TFLite's int16 softmax (exp and 1/(1+x) tables) vs exact
}
DATA_MOVEMENT_LSB = 0  # Reshape, Transpose, Squeeze, Split, Flatten, Concat, MaxPool: codes move unchanged
# End to end: the graph output's codes, ORT chained through the whole model vs lowbit, over the 32 (zoo) or 2
# (squeezenet) samples of ``_model``. squeezenet's output is its 16-bit Softmax (scale 2^-15): one int8 LSB of
# the logits (0.042) before it moves the top probability by 4 %, i.e. 339 output LSB (0.0103) with ORT's
# unfused Q/DQ and 47 with its fused kernels on these samples.
END_TO_END_LSB = {("mobilenet_digits", "w8a8"): 4, ("mobilenet_digits", "w8a16"): 4,
                  ("vit_digits", "w8a8"): 4, ("vit_digits", "w8a16"): 4,
                  ("squeezenet", "w8a8"): 342, ("squeezenet", "w8a16"): 67}


@functools.lru_cache(maxsize=None)
def _model(name: str):
    """(float model bytes, graph factory, calibration dict, list of single-sample feeds)."""
    if name == "squeezenet":
        from lowbit.tools.light_models import realize
        m = realize("squeezenet").SerializeToString()
        inp = from_onnx_model(onnx.load_from_string(m)).inputs[0].name
        rng = np.random.default_rng(0)
        calib = {inp: rng.normal(0, 1, (4, 1, 3, 224, 224)).astype(np.float32)}
        feeds = [{inp: rng.normal(0, 1, (1, 3, 224, 224)).astype(np.float32)} for _ in range(2)]
        return m, calib, feeds
    m = zoo.path(name).read_bytes()
    calib = {k: v[:16] for k, v in zoo.load_calib(name).items()}
    ev = zoo.load_eval(name)
    feeds = [{k: v[i:i + 1] for k, v in ev.items() if k != "labels"} for i in range(32)]
    return m, calib, feeds


@functools.lru_cache(maxsize=None)
def _artifact(name: str, precision: str):
    m, calib, _ = _model(name)
    art, _ = compile_graph(from_onnx_model(onnx.load_from_string(m)), calib, precision)
    return art


@pytest.fixture(scope="module")
def target():
    return get_target("onnxruntime")


def _export(target, tmp_path, name, precision, **kw):
    path = str(tmp_path / f"{name}_{precision}.onnx")
    target.export(_artifact(name, precision), path, **kw)
    return path


# -- structure and validity (no numerics) --------------------------------------------------------------------
def test_export_is_valid_standard_qdq(target, tmp_path):
    path = _export(target, tmp_path, "mobilenet_digits", "w8a8")
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    assert {o.domain for o in m.opset_import} == {""} and m.opset_import[0].version == 21
    nodes = list(m.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    inits = {i.name: i for i in m.graph.initializer}
    assert m.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert producer[m.graph.output[0].name].op_type == "DequantizeLinear"
    first = next(n for n in nodes if m.graph.input[0].name in n.input)
    assert first.op_type == "QuantizeLinear"
    convs = [n for n in nodes if n.op_type == "Conv"]
    assert len(convs) == 19
    for conv in convs:
        x, w, b = (producer[i] for i in conv.input)
        assert x.op_type == w.op_type == b.op_type == "DequantizeLinear"
        weight, w_scale = inits[w.input[0]], inits[w.input[1]]
        assert weight.data_type == onnx.TensorProto.INT8
        assert dict((a.name, a.i) for a in w.attribute).get("axis") == 0
        assert len(w_scale.dims) == 1 and w_scale.dims[0] == weight.dims[0]  # per-channel
        assert inits[b.input[0]].data_type == onnx.TensorProto.INT32
        consumers = [n for n in nodes if conv.output[0] in n.input]
        assert [c.op_type for c in consumers] in (["QuantizeLinear"], ["Clip"], ["Relu"])


def test_bias_scale_is_input_times_weight_scale(target, tmp_path):
    m = onnx.load(_export(target, tmp_path, "mobilenet_digits", "w8a8"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    producer = {o: n for n in m.graph.node for o in n.output}
    conv = next(n for n in m.graph.node if n.op_type == "Conv")
    x, w, b = (producer[i] for i in conv.input)
    expected = np.float32(inits[x.input[1]]) * inits[w.input[1]]
    np.testing.assert_allclose(inits[b.input[1]], expected, rtol=1e-7)


def test_int16_activations_are_symmetric_int16_qdq(target, tmp_path):
    m = onnx.load(_export(target, tmp_path, "mobilenet_digits", "w8a16"))
    inits = {i.name: i for i in m.graph.initializer}
    zps = [inits[n.input[2]] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert zps and all(z.data_type == onnx.TensorProto.INT16 for z in zps)
    assert all(onnx.numpy_helper.to_array(z) == 0 for z in zps)


def test_int4_weights_are_packed_int4_and_run(target, tmp_path):
    """ORT (>= 1.20) runs INT4 DequantizeLinear per axis: 4-bit weights stay 4-bit in the file."""
    path = _export(target, tmp_path, "mobilenet_digits", "w4a8")
    m = onnx.load(path)
    inits = {i.name: i for i in m.graph.initializer}
    dq_data = [inits[n.input[0]] for n in m.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert sum(i.data_type == onnx.TensorProto.INT4 for i in dq_data) == 20  # 19 convs and the classifier
    art = _artifact("mobilenet_digits", "w4a8")
    x = _model("mobilenet_digits")[2][0]
    out = art.graph.outputs[0]
    spec = out.producer.inputs[0].quant
    got = target.run(path, x)[out.name]
    assert np.abs(codes_of(got, spec) - codes_of(art.run(x)[out.name], spec)).max() <= 4


@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
def test_qnn_layout_is_unsigned_and_numerically_the_same(target, tmp_path, precision):
    plain = _export(target, tmp_path, "vit_digits", precision)
    qnn_dir = tmp_path / "qnn"
    qnn_dir.mkdir()
    qnn = _export(target, qnn_dir, "vit_digits", precision, qnn=True)
    m = onnx.load(qnn)
    onnx.checker.check_model(m, full_check=True)
    inits = {i.name: i for i in m.graph.initializer}
    act = onnx.TensorProto.UINT8 if precision == "w8a8" else onnx.TensorProto.UINT16
    assert {inits[n.input[2]].data_type for n in m.graph.node if n.op_type == "QuantizeLinear"} == {act}
    weights = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and any(
        a.name == "axis" for a in n.attribute) and inits.get(n.input[0]) is not None
        and inits[n.input[0]].data_type == onnx.TensorProto.INT8]
    assert weights  # weights stay signed int8, symmetric per channel (QNN's requirement)
    x = _model("vit_digits")[2][0]
    a = target.run(plain, x, optimization="disabled")
    b = target.run(qnn, x, optimization="disabled")
    for k in a:  # same real values, unsigned codes: identical unfused results
        np.testing.assert_array_equal(a[k], b[k])


def test_lut_with_recorded_function_exports_the_float_op(tmp_path):
    art = _artifact("vit_digits", "w8a8")
    x = _model("vit_digits")[2][0]
    ref = art.run(x)
    luts = [n for n in art.graph.nodes if n.op_type == "Lut"]
    assert luts
    m_table = to_qdq_model(art.graph)
    assert not any(n.op_type == "Gelu" for n in m_table.graph.node)
    try:
        for n in luts:
            n.attrs["function"] = "Gelu"
        m = to_qdq_model(art.graph)
    finally:
        for n in luts:
            del n.attrs["function"]
    assert sum(n.op_type == "Gelu" for n in m.graph.node) == len(luts)
    onnx.checker.check_model(m, full_check=True)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    out = art.graph.outputs[0]
    spec = out.producer.inputs[0].quant
    got = sess.run([out.name], x)[0]
    assert np.abs(codes_of(got, spec) - codes_of(ref[out.name], spec)).max() <= 4


def _one_op_graph(op: str, in_spec, out_spec, attrs: dict, shape=(3, 6), extra=()):
    """float x -> Quantize -> lowbit.int ``op`` (x_q, *extra) -> Dequantize -> y."""
    from lowbit.graph.ir import Graph
    from lowbit.quant.prepare_linear import prepare_dequantize, prepare_quantize
    g = Graph(op, {"": 21})
    x = g.new_value("x", shape, np.float32)
    g.inputs.append(x)
    q = g.new_value("x_q", shape, in_spec.dtype)
    q.quant = in_spec
    g.add_node("Quantize", [x], [q], prepare_quantize(in_spec), domain="lowbit.int", name="quantize")
    y = g.new_value("y_q", shape, out_spec.dtype)
    y.quant = out_spec
    g.add_node(op, [q, *[g.add_const(f"c{i}", c) for i, c in enumerate(extra)]], [y], attrs, domain="lowbit.int",
               name=op.lower())
    yf = g.new_value("y", shape, np.float32)
    g.outputs.append(yf)
    g.add_node("Dequantize", [y], [yf], prepare_dequantize(out_spec), domain="lowbit.int", name="dequantize")
    return g


def _ort_vs_lowbit(g, x, qnn=False) -> int:
    from lowbit.runtime.int_executor import run
    model = to_qdq_model(g, qnn=qnn)
    onnx.checker.check_model(model, full_check=True)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    spec = g.outputs[0].producer.inputs[0].quant
    return int(np.abs(codes_of(got, spec) - codes_of(run(g, {"x": x})["y"], spec)).max())


@pytest.mark.parametrize("bits", [8, 16])
def test_masked_softmax_zeroes_masked_entries_and_fully_masked_rows(bits):
    from lowbit.quant.prepare_elementwise import prepare_softmax
    from lowbit.quant.spec import QuantSpec
    in_spec = QuantSpec(bits, 0.05 if bits == 8 else 4 / 32767, 3 if bits == 8 else 0)
    out_spec = QuantSpec(bits, 1 / 256 if bits == 8 else 1 / 32768, -128 if bits == 8 else 0)
    mask = np.array([[0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    g = _one_op_graph("MaskedSoftmax", in_spec, out_spec, prepare_softmax(in_spec, out_spec), extra=[mask])
    x = np.random.default_rng(0).normal(0, 2, (3, 6)).astype(np.float32)
    assert _ort_vs_lowbit(g, x) <= (0 if bits == 8 else 1)  # measured: 0 and 1


@pytest.mark.parametrize("bits", [8, 16])
def test_rms_norm_exports_as_its_float_formula(bits):
    from lowbit.quant.prepare_norm import prepare_norm
    from lowbit.quant.spec import QuantSpec
    rng = np.random.default_rng(1)
    in_spec = QuantSpec(bits, 0.03 if bits == 8 else 4 / 32767, -5 if bits == 8 else 0)
    out_spec = QuantSpec(bits, 0.02 if bits == 8 else 3 / 32767, 2 if bits == 8 else 0)
    gamma = rng.uniform(0.5, 1.5, 8)
    attrs = prepare_norm(in_spec, out_spec, gamma, None, 1e-5, op="RMSNorm")
    g = _one_op_graph("RMSNorm", in_spec, out_spec, attrs, shape=(64, 8))
    x = rng.normal(0, 1, (64, 8)).astype(np.float32)
    assert _ort_vs_lowbit(g, x) == 0  # measured on these seeded inputs (LayerNorm, same way: 1 int8, 0 int16)


def test_qnn_16bit_sigmoid_goes_through_qnns_fixed_encoding():
    from lowbit.quant.prepare_elementwise import prepare_logistic
    from lowbit.quant.spec import QuantSpec
    in_spec, out_spec = QuantSpec(16, 8 / 32767, 0), QuantSpec(16, 1 / 32768, 0)
    op, attrs = prepare_logistic(in_spec, out_spec)
    g = _one_op_graph(op, in_spec, out_spec, attrs)
    x = np.linspace(-9, 9, 18, dtype=np.float32).reshape(3, 6)
    m = to_qdq_model(g, qnn=True)
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    fixed = [(inits[n.input[1]], inits[n.input[2]]) for n in m.graph.node if n.op_type == "QuantizeLinear"]
    assert any(s == np.float32(1 / 65536) and z.dtype == np.uint16 and z == 0 for s, z in fixed)
    assert _ort_vs_lowbit(g, x, qnn=False) <= 1 and _ort_vs_lowbit(g, x, qnn=True) <= 1


def test_unknown_integer_op_names_the_node(target):
    art = _artifact("mobilenet_digits", "w8a8")
    node = next(n for n in art.graph.nodes if n.op_type == "Add")
    node.op_type = "NotAnOp"
    try:
        with pytest.raises(UnsupportedOpError, match=r"lowbit\.int\.NotAnOp.*Add"):
            to_qdq_model(art.graph)
        placement = target.place(art.graph)
        assert [n.node for n in placement.fallback] == [node.name]
    finally:
        node.op_type = "Add"


def test_every_node_of_the_zoo_models_is_placed(target):
    for name in ("mobilenet_digits", "vit_digits"):
        placement = target.place(_artifact(name, "w8a16").graph)
        assert placement.op_fraction == 1.0, placement.summary()


# -- numerics against ONNX Runtime -----------------------------------------------------------------------------
MODELS = ["mobilenet_digits", "vit_digits", "squeezenet"]


def _measure(name: str, precision: str, optimization: str, samples: int) -> dict:
    """{(op, output bits): max LSB} of every op exported alone and fed lowbit's inputs."""
    art = _artifact(name, precision)
    worst: dict = defaultdict(int)
    for feeds in _model(name)[2][:samples]:
        for node_name, r in compare_per_op(art, feeds, optimization).items():
            bits = art.graph.nodes[[n.name for n in art.graph.nodes].index(node_name)].outputs[0].quant.bits
            worst[(r["op"], bits)] = max(worst[(r["op"], bits)], r["max_lsb"])
    return dict(worst)


@pytest.mark.parametrize("optimization", ["disabled", "default"])
@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
@pytest.mark.parametrize("name", MODELS)
def test_per_op_lsb_within_measured_bounds(name, precision, optimization):
    worst = _measure(name, precision, optimization, 2)
    for key, lsb in worst.items():
        bound = PER_OP_LSB.get(key, DATA_MOVEMENT_LSB)
        assert lsb <= bound, f"{name} {precision} {optimization}: {key} differs by {lsb} LSB (bound {bound})"


@pytest.mark.parametrize("precision", ["w8a8", "w8a16"])
@pytest.mark.parametrize("name", MODELS)
def test_end_to_end_lsb_and_float_model_agreement(target, tmp_path, name, precision):
    art = _artifact(name, precision)
    path = _export(target, tmp_path, name, precision)
    onnx.checker.check_model(path, full_check=True)
    float_sess = ort.InferenceSession(_model(name)[0], providers=["CPUExecutionProvider"])
    out = art.graph.outputs[0]
    spec = out.producer.inputs[0].quant
    feeds = _model(name)[2]
    for optimization in ("disabled", "default"):
        for x in feeds:
            got = target.run(path, x, optimization=optimization)[out.name]
            lsb = np.abs(codes_of(got, spec) - codes_of(art.run(x)[out.name], spec)).max()
            assert lsb <= END_TO_END_LSB[(name, precision)], (optimization, lsb)
            ref = float_sess.run([out.name], x)[0]
            cosine = np.dot(got.ravel(), ref.ravel()) / np.linalg.norm(got) / np.linalg.norm(ref)
            assert cosine > 0.995 and np.argmax(got) == np.argmax(ref), (optimization, cosine)


def test_fused_int8_kernels_are_used_by_default():
    """At ORT's default optimisation level the QDQ node units become ORT's integer kernels."""
    art = _artifact("vit_digits", "w8a8")
    ops = set()
    for r in compare_per_op(art, _model("vit_digits")[2][0], "default", kernels=True).values():
        ops |= set(r["ort_ops"])
    assert {"QLinearConv", "QGemm", "QLinearMatMul", "QLinearAdd", "QLinearSoftmax"} <= ops, ops


def _table(samples: int = 8) -> None:
    """Print the per-op and end-to-end maxima (the numbers in PER_OP_LSB and docs/targets.md)."""
    total: dict = defaultdict(int)
    for name in MODELS:
        for precision in ("w8a8", "w8a16"):
            for optimization in ("disabled", "default"):
                worst = _measure(name, precision, optimization, 2 if name == "squeezenet" else samples)
                table = {f"{k[0]}/{k[1]}": v for k, v in sorted(worst.items())}
                print(name, precision, optimization, json.dumps(table))
                for k, v in worst.items():
                    total[k] = max(total[k], v)
    print("max over models:", json.dumps({f"{k[0]}/{k[1]}": v for k, v in sorted(total.items())}))


if __name__ == "__main__":
    _table()
