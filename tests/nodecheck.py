"""Check one lowbit float kernel against ONNX Runtime on a one-node ONNX model.

    check_op("Conv", {"x": x, "w": w}, {"strides": [2, 2]}, consts=("w",))

builds a model with that node (inputs named after the dict keys, in order; ``None`` values are omitted
optional inputs; names in ``consts`` become initializers), runs it in ONNX Runtime (CPU, graph
optimisations off) and through lowbit's importer and float executor, and asserts the outputs agree.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from lowbit.graph.onnx_import import from_onnx_model
from lowbit.runtime.float_executor import run as run_float


def make_node_model(op_type, inputs: dict, attrs=None, *, consts=(), n_outputs=1, opset=21, domain=""):
    names = list(inputs)
    while names and inputs[names[-1]] is None:  # trailing omitted optional inputs are simply left out
        names.pop()
    node = helper.make_node(op_type, [n if inputs[n] is not None else "" for n in names],
                            [f"y{i}" for i in range(n_outputs)], domain=domain, **(attrs or {}))
    graph_inputs, inits = [], []
    for n, a in inputs.items():
        if a is None:
            continue
        a = np.asarray(a)
        if n in consts:
            inits.append(numpy_helper.from_array(a, n))
        else:
            graph_inputs.append(helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)))
    outputs = [helper.make_empty_tensor_value_info(f"y{i}") for i in range(n_outputs)]
    g = helper.make_graph([node], "node_test", graph_inputs, outputs, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(g, opset_imports=opsets)
    model.ir_version = helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    del model.graph.output[:]
    for i in range(n_outputs):
        vi = known.get(f"y{i}")
        model.graph.output.append(vi if vi is not None and vi.type.tensor_type.elem_type
                                  else helper.make_tensor_value_info(f"y{i}", onnx.TensorProto.FLOAT, None))
    return model


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def run_lowbit(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    graph = from_onnx_model(model)
    outs = run_float(graph, feeds)
    return [outs[v.name] for v in graph.outputs]


def check_op(op_type, inputs: dict, attrs=None, *, consts=(), n_outputs=1, opset=21, domain="",
             rtol=1e-5, atol=1e-6):
    model = make_node_model(op_type, inputs, attrs, consts=consts, n_outputs=n_outputs, opset=opset,
                            domain=domain)
    feeds = {k: np.asarray(v) for k, v in inputs.items() if v is not None and k not in consts}
    expected = run_ort(model, feeds)
    got = run_lowbit(model, feeds)
    assert len(got) == len(expected)
    for i, (e, g) in enumerate(zip(expected, got)):
        assert g.shape == e.shape, f"output {i}: shape {g.shape} != ORT {e.shape}"
        assert g.dtype == e.dtype, f"output {i}: dtype {g.dtype} != ORT {e.dtype}"
        if e.dtype.kind in "fc":
            np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, err_msg=f"output {i} of {op_type}")
        else:
            np.testing.assert_array_equal(g, e, err_msg=f"output {i} of {op_type}")
    return got
