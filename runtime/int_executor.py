"""The integer executor, lowbit's golden model: runs an integer-IR Graph (docs/integer_ir.md).

Nodes in the ``lowbit.int`` domain run the integer kernels of ``INT_KERNELS``; every other node runs its float
kernel: standard data-movement ops (Reshape, Transpose, Slice, ...) on integer tensors, and the float islands
the lowering left (ops with no integer lowering yet, between Dequantize and Quantize). Kernels that
declare a ``_stats`` keyword receive a dict in which they count saturations; ``run`` returns these per-node
statistics when asked.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

import lowbit.runtime.kernels.float  # noqa: F401
import lowbit.runtime.kernels.int  # noqa: F401
from lowbit.errors import UnsupportedOpError
from lowbit.graph.ir import Graph, Node
from lowbit.runtime.float_executor import call_kernel, check_feeds, last_uses
from lowbit.runtime.registry import FLOAT_KERNELS, INT_DOMAIN, INT_KERNELS

def kernel_for(node: Node):
    if node.domain == INT_DOMAIN:
        return INT_KERNELS.get(node.op_type, node.domain)
    return FLOAT_KERNELS.get(node.op_type, node.domain)


def check_integer_graph(graph: Graph) -> None:
    missing = [n for n in graph.nodes if kernel_for(n) is None]
    if missing:
        kinds = sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in missing})
        raise UnsupportedOpError(
            f"lowbit's integer executor has no kernel for {', '.join(kinds)}: "
            + ", ".join(n.describe() for n in missing[:20]) + (" ..." if len(missing) > 20 else ""))


def run(graph: Graph, feeds: Mapping[str, np.ndarray], stats: dict | None = None,
        observe=None, check: bool = True) -> dict[str, np.ndarray]:
    """Run the integer graph; ``stats`` (if given) receives {node name: {"saturated": n, ...}}."""
    if check:
        check_integer_graph(graph)
        feeds = check_feeds(graph, feeds)
    env = {id(v): np.asarray(feeds[v.name]) for v in graph.inputs}
    frees = last_uses(graph)
    for i, node in enumerate(graph.nodes):
        args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in node.inputs]
        node_stats: dict | None = {} if stats is not None else None  # counting saturations costs time
        outs = call_kernel(node, kernel_for(node), args, node_stats)
        for v, o in zip(node.outputs, outs):
            env[id(v)] = o
        if stats is not None and node_stats:
            stats[node.name] = node_stats
        if observe is not None:
            observe(node, outs[:len(node.outputs)])
        for v in frees.get(i, ()):
            env.pop(id(v), None)
    return {v.name: (v.const if v.const is not None else env[id(v)]) for v in graph.outputs}
