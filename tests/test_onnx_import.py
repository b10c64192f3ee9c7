"""The ONNX importer: old-opset spellings, weights in Constant/ConstantOfShape nodes, external data,
model-local functions, dynamic shapes, and bad files. Each model also runs in ONNX Runtime, the oracle."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import lowbit
from lowbit.errors import InputError, ModelError
from lowbit.graph.onnx_export import to_onnx_model
from lowbit.graph.onnx_import import from_onnx_model, load_onnx
from lowbit.graph.passes import optimize
from lowbit.runtime.float_executor import run as run_float
from nodecheck import run_ort

F = TensorProto.FLOAT


def _model(nodes, inputs, outputs, inits=(), opset=9, functions=()):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(f.domain, 1) for f in functions]
    m = helper.make_model(g, opset_imports=opsets, functions=list(functions))
    m.ir_version = 7 if not functions else 8
    return m


def _vi(name, shape, t=F):
    return helper.make_tensor_value_info(name, t, shape)


def _check_against_ort(model, feeds, passes=True, rtol=1e-5, atol=1e-6):
    expected = run_ort(model, feeds)
    graph = from_onnx_model(model)
    graph.verify()
    if passes:
        optimize(graph)
        graph.verify()
    got = run_float(graph, feeds)
    for v, e in zip(graph.outputs, expected):
        np.testing.assert_allclose(got[v.name], e, rtol=rtol, atol=atol)
    # and the exported canonical form runs in ORT with the same result
    again = run_ort(to_onnx_model(graph), feeds)
    for a, e in zip(again, expected):
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)
    return graph


X = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)


@pytest.mark.parametrize("node,out_shape", [
    (helper.make_node("Slice", ["x"], ["y"], starts=[1, 0], ends=[3, -1], axes=[2, 3]), [2, 3, 2, 4]),
    (helper.make_node("Pad", ["x"], ["y"], pads=[0, 0, 1, 2, 0, 0, 1, 0], value=1.5), [2, 3, 6, 7]),
    (helper.make_node("Clip", ["x"], ["y"], min=-0.5, max=0.25), [2, 3, 4, 5]),
    (helper.make_node("Squeeze", ["x1"], ["y"], axes=[0]), [3, 4, 5]),
    (helper.make_node("Unsqueeze", ["x"], ["y"], axes=[0, 5]), [1, 2, 3, 4, 5, 1]),
    (helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1, 1], keepdims=0), [2, 4]),
    (helper.make_node("ReduceSum", ["x"], ["y"], axes=[2]), [2, 3, 1, 5]),
    (helper.make_node("Softmax", ["x"], ["y"], axis=1), [2, 3, 4, 5]),  # flattens to 2-D at axis 1
    (helper.make_node("Softmax", ["x"], ["y"], axis=3), [2, 3, 4, 5]),
    (helper.make_node("LogSoftmax", ["x"], ["y"], axis=2), [2, 3, 4, 5]),
    (helper.make_node("Upsample", ["x", "s"], ["y"], mode="nearest"), [2, 3, 8, 15]),
], ids=lambda p: getattr(p, "op_type", None) or "")
def test_old_opset_spellings_match_ort(node, out_shape):
    ins = {"x": X, "x1": X[:1], "s": np.array([1, 1, 2, 3], np.float32)}
    feeds = {k: ins[k] for k in node.input if k in ins and k != "s"}
    inits = [numpy_helper.from_array(ins["s"], "s")] if "s" in node.input else []
    model = _model([node], [_vi(k, list(v.shape)) for k, v in feeds.items()], [_vi("y", out_shape)], inits)
    _check_against_ort(model, feeds)


def test_split_attribute_and_resize_v10():
    nodes = [helper.make_node("Split", ["x"], ["a", "b"], axis=3, split=[2, 3]),
             helper.make_node("Resize", ["a", "s"], ["y"], mode="linear")]
    s = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "s")
    model = _model(nodes, [_vi("x", [2, 3, 4, 5])], [_vi("y", [2, 3, 8, 4]), _vi("b", [2, 3, 4, 3])], [s],
                   opset=10)
    _check_against_ort(model, {"x": X})


def test_weights_in_constant_and_constantofshape_nodes():
    w = np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w)),
             helper.make_node("Constant", [], ["bshape"], value=numpy_helper.from_array(np.array([4], np.int64))),
             helper.make_node("ConstantOfShape", ["bshape"], ["b"],
                              value=numpy_helper.from_array(np.array([0.5], np.float32))),
             helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    model = _model(nodes, [_vi("x", [2, 3, 4, 5])], [_vi("y", [2, 4, 4, 5])], opset=11)
    graph = _check_against_ort(model, {"x": X})
    assert [n.op_type for n in graph.nodes] == ["Conv"]
    assert graph.nodes[0].inputs[1].const is not None and graph.nodes[0].inputs[2].const is not None


def test_external_data(tmp_path):
    w = np.random.default_rng(2).standard_normal((5, 7)).astype(np.float32)
    model = _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [3, 5])], [_vi("y", [3, 7])],
                   [numpy_helper.from_array(w, "w")], opset=13)
    path = str(tmp_path / "ext.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    assert os.path.exists(tmp_path / "ext.data")
    x = np.ones((3, 5), np.float32)
    graph = load_onnx(path)
    np.testing.assert_allclose(run_float(graph, {"x": x})["y"], x @ w, rtol=1e-6)
    os.remove(tmp_path / "ext.data")
    with pytest.raises(ModelError, match="external weight data"):
        load_onnx(path)


def test_model_local_function_is_inlined_when_lowbit_lacks_the_op():
    f = helper.make_function("custom.ops", "Swishy", ["a"], ["b"],
                             [helper.make_node("Sigmoid", ["a"], ["s"]), helper.make_node("Mul", ["a", "s"], ["b"])],
                             [helper.make_opsetid("", 18)])
    model = _model([helper.make_node("Swishy", ["x"], ["y"], domain="custom.ops")], [_vi("x", [2, 3, 4, 5])],
                   [_vi("y", [2, 3, 4, 5])], opset=18, functions=[f])
    graph = _check_against_ort(model, {"x": X})
    assert sorted(n.op_type for n in graph.nodes) == ["Mul", "Sigmoid"]


def test_dynamic_dims_bind_from_shapes():
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", ["N", 3])], [_vi("y", ["N", 3])], opset=13)
    graph = from_onnx_model(model, shapes={"x": (4, 3)})
    assert graph.inputs[0].shape == (4, 3) and graph.outputs[0].shape == (4, 3)
    with pytest.raises(InputError, match="fixed shape"):
        from_onnx_model(model, shapes={"x": (4, 2)})
    with pytest.raises(InputError, match="graph's inputs are x"):
        from_onnx_model(model, shapes={"nope": (1,)})


def test_truncated_and_foreign_files(tmp_path):
    model = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    data = model.SerializeToString()
    (tmp_path / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.onnx").write_bytes(b"this is not a model at all\n" * 10)
    for name in ("trunc.onnx", "text.onnx", "missing.onnx"):
        with pytest.raises(ModelError):
            lowbit.load(str(tmp_path / name))


def test_cycle_and_undefined_value_are_model_errors():
    cyc = _model([helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])],
                 [_vi("x", [2])], [_vi("b", [2])])
    with pytest.raises(ModelError, match="cycle"):
        from_onnx_model(cyc)
    undef = _model([helper.make_node("Add", ["x", "ghost"], ["y"])], [_vi("x", [2])], [_vi("y", [2])])
    with pytest.raises(ModelError, match="'ghost'"):
        from_onnx_model(undef)
