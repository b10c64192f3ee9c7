"""The ``lowbit`` ONNX domain: high-level ops of the zoo models, each with a model-local function body.

Every special layer of a zoo model is one node in the domain ``lowbit`` (version 1). The model carries a
FunctionProto for each such op, written with standard ONNX ops (opset 17), so ONNX Runtime executes the model
as it is, while lowbit's importer keeps the node whole because it has a kernel for it
(``runtime/kernels/float/lowbit_*.py``, whose docstrings are the specification of each op).

    LMUMemory(u[B,T,du], Abar[d,d], Bbar[d,du], m0[B|1,d]) -> m[B,T,d], m_last[B,d]
    LIF(x[B,T,*F], v0[B|1,*F], *, tau, v_threshold, v_reset) -> spikes[B,T,*F], v_last[B,*F]
    SelectiveScan(x[B,T,D], delta[B,T,D], A[D,N], B[B,T,N], C[B,T,N], D[D], h0[B|1,D,N])
        -> y[B,T,D], h_last[B,D,N]
    ShortConv(bcx[B,T,3C], weight[C,K], state0[B|1,K-1,C]) -> y[B,T,C], state_last[B,K-1,C]
    RMSNorm(x[...,C], scale[C], *, epsilon) -> y[...,C]

Functions cannot express "optional input absent, use zeros", so the zoo always passes the initial state
(a broadcastable zero initializer ``[1, ...]`` in whole-sequence graphs, a ``state_in_*`` input in step graphs);
the NumPy kernels also accept ``None`` for it.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper as oh

DOMAIN = "lowbit"
DOMAIN_VERSION = 1
OPSET = 17

_F = TensorProto.FLOAT


def _ref(name: str, ref: str, typ: int) -> onnx.AttributeProto:
    a = onnx.AttributeProto()
    a.name, a.ref_attr_name, a.type = name, ref, typ
    return a


def _const_from_attr(out: str, attr: str) -> onnx.NodeProto:
    node = oh.make_node("Constant", [], [out])
    node.attribute.append(_ref("value_float", attr, onnx.AttributeProto.FLOAT))
    return node


def _ints(out: str, values) -> onnx.NodeProto:
    return oh.make_node("Constant", [], [out], value=oh.make_tensor(out, TensorProto.INT64, [len(values)], values))


def _vi(name: str) -> onnx.ValueInfoProto:
    return oh.make_tensor_value_info(name, _F, None)


def _function(name, inputs, outputs, nodes, attributes=()) -> onnx.FunctionProto:
    return oh.make_function(DOMAIN, name, inputs, outputs, nodes, [oh.make_opsetid("", OPSET)],
                            attributes=list(attributes))


def _state_shape_without_time(x: str, prefix: str) -> list[onnx.NodeProto]:
    """Nodes computing ``{prefix}shape`` = shape(x) with axis 1 (time) removed."""
    return [
        oh.make_node("Shape", [x], [f"{prefix}b"], end=1),
        oh.make_node("Shape", [x], [f"{prefix}f"], start=2),
        oh.make_node("Concat", [f"{prefix}b", f"{prefix}f"], [f"{prefix}shape"], axis=0),
    ]


def lmu_memory_function() -> onnx.FunctionProto:
    body = oh.make_graph(
        [oh.make_node("MatMul", ["m_prev", "AbarT"], ["am"]),
         oh.make_node("MatMul", ["u_t", "BbarT"], ["bu"]),
         oh.make_node("Add", ["am", "bu"], ["m_next"]),
         oh.make_node("Identity", ["m_next"], ["m_t"])],
        "lmu_step", [_vi("m_prev"), _vi("u_t")], [_vi("m_next"), _vi("m_t")])
    nodes = [
        oh.make_node("Transpose", ["Abar"], ["AbarT"], perm=[1, 0]),
        oh.make_node("Transpose", ["Bbar"], ["BbarT"], perm=[1, 0]),
        oh.make_node("Shape", ["u"], ["batch"], end=1),
        oh.make_node("Shape", ["Abar"], ["order"], end=1),
        oh.make_node("Concat", ["batch", "order"], ["shape"], axis=0),
        oh.make_node("Expand", ["m0", "shape"], ["init"]),
        oh.make_node("Scan", ["init", "u"], ["m_last", "m"], num_scan_inputs=1, scan_input_axes=[1],
                     scan_output_axes=[1], body=body),
    ]
    return _function("LMUMemory", ["u", "Abar", "Bbar", "m0"], ["m", "m_last"], nodes)


def lif_function() -> onnx.FunctionProto:
    body = oh.make_graph(
        [oh.make_node("Sub", ["v_prev", "v_reset"], ["vd"]),
         oh.make_node("Sub", ["x_t", "vd"], ["drive"]),
         oh.make_node("Div", ["drive", "tau"], ["dv"]),
         oh.make_node("Add", ["v_prev", "dv"], ["h"]),
         oh.make_node("GreaterOrEqual", ["h", "v_threshold"], ["fired"]),
         oh.make_node("Cast", ["fired"], ["s_t"], to=_F),
         oh.make_node("Where", ["fired", "v_reset", "h"], ["v_next"])],
        "lif_step", [_vi("v_prev"), _vi("x_t")], [_vi("v_next"), _vi("s_t")])
    nodes = [
        _const_from_attr("tau", "tau"),
        _const_from_attr("v_threshold", "v_threshold"),
        _const_from_attr("v_reset", "v_reset"),
        *_state_shape_without_time("x", "lif_"),
        oh.make_node("Expand", ["v0", "lif_shape"], ["init"]),
        oh.make_node("Scan", ["init", "x"], ["v_last", "spikes"], num_scan_inputs=1, scan_input_axes=[1],
                     scan_output_axes=[1], body=body),
    ]
    return _function("LIF", ["x", "v0"], ["spikes", "v_last"], nodes, ["tau", "v_threshold", "v_reset"])


def selective_scan_function() -> onnx.FunctionProto:
    body = oh.make_graph(
        [oh.make_node("Unsqueeze", ["dt_t", "axis_last"], ["dt_e"]),           # [B, D, 1]
         oh.make_node("Mul", ["dt_e", "A"], ["dt_a"]),                         # [B, D, N]
         oh.make_node("Exp", ["dt_a"], ["decay"]),
         oh.make_node("Mul", ["dt_t", "x_t"], ["dt_x"]),                       # [B, D]
         oh.make_node("Unsqueeze", ["dt_x", "axis_last"], ["dt_x_e"]),         # [B, D, 1]
         oh.make_node("Unsqueeze", ["b_t", "axis_1"], ["b_e"]),                # [B, 1, N]
         oh.make_node("Mul", ["dt_x_e", "b_e"], ["inject"]),
         oh.make_node("Mul", ["decay", "h_prev"], ["kept"]),
         oh.make_node("Add", ["kept", "inject"], ["h_next"]),
         oh.make_node("Unsqueeze", ["c_t", "axis_1"], ["c_e"]),
         oh.make_node("Mul", ["h_next", "c_e"], ["hc"]),
         oh.make_node("ReduceSum", ["hc", "axis_last"], ["read"], keepdims=0),  # [B, D]
         oh.make_node("Mul", ["D", "x_t"], ["skip"]),
         oh.make_node("Add", ["read", "skip"], ["y_t"])],
        "ssm_step", [_vi("h_prev"), _vi("x_t"), _vi("dt_t"), _vi("b_t"), _vi("c_t")], [_vi("h_next"), _vi("y_t")])
    nodes = [
        _ints("axis_last", [-1]),
        _ints("axis_1", [1]),
        oh.make_node("Shape", ["x"], ["batch"], end=1),
        oh.make_node("Shape", ["A"], ["dn"]),
        oh.make_node("Concat", ["batch", "dn"], ["shape"], axis=0),
        oh.make_node("Expand", ["h0", "shape"], ["init"]),
        oh.make_node("Scan", ["init", "x", "delta", "B", "C"], ["h_last", "y"], num_scan_inputs=4,
                     scan_input_axes=[1, 1, 1, 1], scan_output_axes=[1], body=body),
    ]
    return _function("SelectiveScan", ["x", "delta", "A", "B", "C", "D", "h0"], ["y", "h_last"], nodes)


def short_conv_function() -> onnx.FunctionProto:
    # The depthwise causal conv is a Scan over time whose state is the last K-1 gated inputs: it works for
    # any K, and Conv's ``group`` attribute could not follow the channel count inside a function.
    body = oh.make_graph(
        [oh.make_node("Unsqueeze", ["v_t", "axis_1"], ["v_e"]),                 # [B, 1, C]
         oh.make_node("Concat", ["s_prev", "v_e"], ["window"], axis=1),        # [B, K, C]
         oh.make_node("Mul", ["window", "weightT"], ["taps"]),
         oh.make_node("ReduceSum", ["taps", "axis_1"], ["y_t"], keepdims=0),   # [B, C]
         oh.make_node("Slice", ["window", "one", "big", "axis_1"], ["s_next"])],
        "short_conv_step", [_vi("s_prev"), _vi("v_t")], [_vi("s_next"), _vi("y_t")])
    nodes = [
        _ints("axis_1", [1]),
        _ints("one", [1]),
        _ints("big", [2 ** 62]),
        oh.make_node("Split", ["bcx"], ["gate_b", "gate_c", "xin"], axis=2),
        oh.make_node("Mul", ["gate_b", "xin"], ["v"]),                             # [B, T, C]
        oh.make_node("Transpose", ["weight"], ["weightT"], perm=[1, 0]),           # [K, C]
        oh.make_node("Shape", ["v"], ["batch"], end=1),
        oh.make_node("Shape", ["state0"], ["tail"], start=1),
        oh.make_node("Concat", ["batch", "tail"], ["sshape"], axis=0),
        oh.make_node("Expand", ["state0", "sshape"], ["init"]),                    # [B, K-1, C]
        oh.make_node("Scan", ["init", "v"], ["state_last", "conv"], num_scan_inputs=1, scan_input_axes=[1],
                     scan_output_axes=[1], body=body),
        oh.make_node("Mul", ["gate_c", "conv"], ["y"]),
    ]
    return _function("ShortConv", ["bcx", "weight", "state0"], ["y", "state_last"], nodes)


def rms_norm_function() -> onnx.FunctionProto:
    nodes = [
        _const_from_attr("eps", "epsilon"),
        oh.make_node("Mul", ["x", "x"], ["sq"]),
        oh.make_node("ReduceMean", ["sq"], ["ms"], axes=[-1], keepdims=1),
        oh.make_node("Add", ["ms", "eps"], ["ms_eps"]),
        oh.make_node("Sqrt", ["ms_eps"], ["rms"]),
        oh.make_node("Div", ["x", "rms"], ["xn"]),
        oh.make_node("Mul", ["xn", "scale"], ["y"]),
    ]
    return _function("RMSNorm", ["x", "scale"], ["y"], nodes, ["epsilon"])


FUNCTIONS = {
    "LMUMemory": lmu_memory_function,
    "LIF": lif_function,
    "SelectiveScan": selective_scan_function,
    "ShortConv": short_conv_function,
    "RMSNorm": rms_norm_function,
}


def _walk_nodes(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                yield from _walk_nodes(attr.g)
            for g in attr.graphs:
                yield from _walk_nodes(g)


def attach_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Add the FunctionProto of every ``lowbit`` op used in ``model`` and the domain's opset import (in place)."""
    used = sorted({n.op_type for n in _walk_nodes(model.graph) if n.domain == DOMAIN})
    unknown = [op for op in used if op not in FUNCTIONS]
    if unknown:
        raise ValueError(f"no function body for lowbit op(s) {unknown}; known: {sorted(FUNCTIONS)}")
    have = {f.name for f in model.functions if f.domain == DOMAIN}
    for op in used:
        if op not in have:
            model.functions.append(FUNCTIONS[op]())
    kept = [o for o in model.opset_import if o.domain != DOMAIN]
    del model.opset_import[:]
    model.opset_import.extend(kept + ([oh.make_opsetid(DOMAIN, DOMAIN_VERSION)] if used else []))
    return model


def single_op_model(op: str, inputs: dict, outputs: dict, **attrs) -> onnx.ModelProto:
    """A one-node model running ``lowbit.<op>``; ``inputs``/``outputs`` map names to shapes (for tests)."""
    node = oh.make_node(op, list(inputs), list(outputs), domain=DOMAIN, **attrs)
    graph = oh.make_graph(
        [node], f"{op}_test",
        [oh.make_tensor_value_info(k, _F, v) for k, v in inputs.items()],
        [oh.make_tensor_value_info(k, _F, v) for k, v in outputs.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", OPSET)], ir_version=8)
    return attach_functions(model)
