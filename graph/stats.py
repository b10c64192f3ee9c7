"""Static op statistics: multiply-accumulates and parameter counts per node.

``MACS`` maps an op type ("Conv", or "domain.Op" outside the ONNX domain) to a function ``(node) -> int`` over
a shape-inferred node; ops not listed do no
multiply-accumulates (element-wise work is not counted as MACs, as in Vela's and TFLite's reports).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from lowbit.graph.ir import Graph, Node


def _size(shape) -> int:
    return int(np.prod(shape)) if shape is not None and all(isinstance(d, int) for d in shape) else 0


def _conv(node: Node) -> int:
    w = node.inputs[1]
    if w.shape is None or node.outputs[0].shape is None:
        return 0
    return _size(node.outputs[0].shape) * _size(w.shape[1:])


def _conv_transpose(node: Node) -> int:
    x, w = node.inputs[0], node.inputs[1]
    if w.shape is None or x.shape is None:
        return 0
    return _size(x.shape) * _size(w.shape[1:])


def _gemm(node: Node) -> int:
    a = node.inputs[0]
    if a.shape is None or node.outputs[0].shape is None:
        return 0
    k = a.shape[0] if node.attrs.get("transA", 0) else a.shape[-1]
    return _size(node.outputs[0].shape) * (k if isinstance(k, int) else 0)


def _matmul(node: Node) -> int:
    a = node.inputs[0]
    if a.shape is None or node.outputs[0].shape is None:
        return 0
    k = a.shape[-1]
    return _size(node.outputs[0].shape) * (k if isinstance(k, int) else 0)


def _int_fully_connected(node: Node) -> int:
    w = node.inputs[1]
    if w.shape is None or node.outputs[0].shape is None:
        return 0
    return _size(node.outputs[0].shape) * int(w.shape[1])


def _int_batch_matmul(node: Node) -> int:
    a = node.inputs[0]
    if a.shape is None or node.outputs[0].shape is None:
        return 0
    k = a.shape[-2] if node.attrs.get("adj_x", 0) else a.shape[-1]
    return _size(node.outputs[0].shape) * (k if isinstance(k, int) else 0)


def _lmu_memory(node: Node) -> int:
    """m_t = Ā m_{t-1} + B̄ u_t: d*d + d*du MACs per step and batch row."""
    u, a = node.inputs[0], node.inputs[1]
    if u.shape is None or a.shape is None or len(u.shape) != 3:
        return 0
    b, t, du = u.shape
    d = a.shape[0]
    return _size((b, t)) * (d * d + d * du) if all(isinstance(x, int) for x in (b, t, du, d)) else 0


def _selective_scan(node: Node) -> int:
    """h_t = exp(ΔA) h_{t-1} + Δ x B, y_t = C h_t: 2*D*N MACs per step and batch row (the zoo's count)."""
    x, a = node.inputs[0], node.inputs[2]
    if x.shape is None or a.shape is None or len(x.shape) != 3 or len(a.shape) != 2:
        return 0
    return _size(x.shape) * 2 * int(a.shape[1])


MACS: dict[str, Callable[[Node], int]] = {
    "lowbit.LMUMemory": _lmu_memory,
    "lowbit.SelectiveScan": _selective_scan,
    "lowbit.int.LMUMemory": _lmu_memory,
    "lowbit.int.SelectiveScan": _selective_scan,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Gemm": _gemm,
    "MatMul": _matmul,
    # the integer IR (docs/integer_ir.md): weights keep ONNX's layout, so the same counts apply
    "lowbit.int.Conv": _conv,
    "lowbit.int.FullyConnected": _int_fully_connected,
    "lowbit.int.BatchMatMul": _int_batch_matmul,
    # spike-input layers: the dense MAC count (their accumulates are measured at run time, int_executor stats)
    "lowbit.int.SpikeConv": _conv,
    "lowbit.int.SpikeFullyConnected": _int_fully_connected,
}


def node_macs(node: Node) -> int:
    fn = MACS.get(f"{node.domain}.{node.op_type}" if node.domain else node.op_type)
    return fn(node) if fn is not None else 0


def node_params(node: Node, seen: set[int] | None = None) -> int:
    """Elements of the node's weights: floating-point constant inputs, or the integer weights and bias of an
    integer Conv / FullyConnected; each constant counted once in ``seen``."""
    total = 0
    integer_weights = node.domain == "lowbit.int" and node.op_type in ("Conv", "FullyConnected")
    for i, v in enumerate(node.inputs):
        if v is None or v.const is None:
            continue
        if v.const.dtype.kind != "f" and not (integer_weights and i in (1, 2)):
            continue
        if seen is not None:
            if id(v) in seen:
                continue
            seen.add(id(v))
        total += int(v.const.size)
    return total


def graph_totals(graph: Graph) -> dict:
    seen: set[int] = set()
    return {"nodes": len(graph.nodes),
            "params": sum(node_params(n, seen) for n in graph.nodes),
            "macs": sum(node_macs(n) for n in graph.nodes)}
