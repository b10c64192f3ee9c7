"""Decompositions a target asks for, the inverse of ``lift``: run only when compiling for that target.

- ``decompose_layer_norm``: LayerNormalization over the last axis -> ReduceMean -> Sub -> Mul(d, d) ->
  ReduceMean -> Add(eps) -> Sqrt -> Reciprocal -> Mul -> Mul(gamma) -> Add(beta), the form TensorFlow's converter
  writes (TFLite has no LayerNormalization builtin, and no integer one). Each op then lowers to a TFLite integer
  builtin (MEAN, SUB, MUL, ADD, RSQRT for the Sqrt -> Reciprocal pair) with its own calibrated int8 / int16
  scale, so the .tflite file holds exactly the integer program lowbit runs.
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Graph, Node, Value


def _decomposable(graph: Graph, node: Node) -> bool:
    x = node.inputs[0]
    if node.op_type != "LayerNormalization" or node.domain != "" or x is None or not x.shape:
        return False
    rank = len(x.shape)
    if int(node.attrs.get("axis", -1)) % rank != rank - 1:
        return False
    if any(v.consumers or v in graph.outputs for v in node.outputs[1:] if v is not None):  # Mean / InvStdDev read
        return False
    gamma, beta = node.input(1), node.input(2)
    return gamma is not None and gamma.const is not None and (beta is None or beta.const is not None)


def decompose_layer_norm(graph: Graph) -> bool:
    """Every LayerNormalization over the last axis (only its first output read, constant scale and bias) as
    the primitive ops of the module docstring, in place; returns whether any was decomposed."""
    changed = False
    for node in [n for n in graph.nodes if _decomposable(graph, n)]:
        x, out = node.inputs[0], node.outputs[0]
        gamma, beta = node.input(1), node.input(2)
        rank, name = len(x.shape), node.name
        row = tuple(x.shape[:-1]) + (1,)
        axes = graph.add_const(f"{name}/axes", np.array([rank - 1], np.int64))
        eps = graph.add_const(f"{name}/epsilon", np.array(float(node.attrs.get("epsilon", 1e-5)), np.float32))

        def op(op_type: str, inputs: list[Value], hint: str, shape, attrs=None, into: Value | None = None) -> Value:
            v = into if into is not None else graph.new_value(f"{name}/{hint}", shape, np.float32)
            graph.add_node(op_type, inputs, [v], attrs, name=graph.unique_node_name(f"{name}/{hint}"))
            return v
        graph.remove_node(node)  # its output loses its producer: the last new op produces it
        mean = op("ReduceMean", [x, axes], "mean", row, {"keepdims": 1})
        d = op("Sub", [x, mean], "centered", x.shape)
        var = op("ReduceMean", [op("Mul", [d, d], "squared", x.shape), axes], "variance", row, {"keepdims": 1})
        r = op("Reciprocal", [op("Sqrt", [op("Add", [var, eps], "variance_eps", row)], "std", row)], "inv_std", row)
        normed = op("Mul", [d, r], "normalized", x.shape)
        scaled = op("Mul", [normed, gamma], "scaled", x.shape, into=None if beta is not None else out)
        if beta is not None:
            op("Add", [scaled, beta], "shifted", x.shape, into=out)
        changed = True
    if changed:
        graph.toposort()
    return changed
