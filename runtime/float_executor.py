"""The float reference executor: runs a Graph node by node with the NumPy kernels of ``FLOAT_KERNELS``.

Intermediate values are freed after their last use unless the caller asks to see them (``observe``), which
is how calibration and layer-by-layer comparison watch every tensor.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Mapping

import numpy as np

import lowbit.runtime.kernels.float  # noqa: F401  (registers the kernels)
from lowbit.errors import InputError, LowbitError, ModelError
from lowbit.graph.ir import Graph, Node, Value
from lowbit.runtime.registry import FLOAT_KERNELS

Observer = Callable[[Node, list[np.ndarray]], None]


def check_feeds(graph: Graph, feeds: Mapping[str, np.ndarray], what: str = "inputs") -> dict[str, np.ndarray]:
    """Match ``feeds`` to the graph inputs: every input present, no stray names, dtype and fixed dims equal.

    Symbolic dimensions take the size given; one symbol must take one size across inputs.
    """
    missing = [v.name for v in graph.inputs if v.name not in feeds]
    if missing:
        raise InputError(f"{what} lack graph input(s) {', '.join(repr(m) for m in missing)}; "
                         f"they hold {', '.join(repr(k) for k in feeds) or 'nothing'}")
    out: dict[str, np.ndarray] = {}
    symbols: dict[str, int] = {}
    for v in graph.inputs:
        x = np.asarray(feeds[v.name])
        if v.dtype is not None and x.dtype != v.dtype:
            raise InputError(f"{what}: '{v.name}' has dtype {x.dtype}, the graph expects {v.dtype} "
                             f"(convert it, e.g. x.astype(np.{np.dtype(v.dtype).name}))")
        if v.shape is not None:
            if x.ndim != len(v.shape):
                raise InputError(f"{what}: '{v.name}' has shape {x.shape}, the graph expects "
                                 f"{_fmt_shape(v.shape)} (rank {len(v.shape)})")
            for d, s in zip(v.shape, x.shape):
                if isinstance(d, int) and d != s:
                    raise InputError(f"{what}: '{v.name}' has shape {x.shape}, the graph expects "
                                     f"{_fmt_shape(v.shape)}")
                if isinstance(d, str) and symbols.setdefault(d, s) != s:
                    raise InputError(f"{what}: dimension '{d}' is {symbols[d]} in one input and {s} in "
                                     f"'{v.name}'")
        out[v.name] = x
    return out


def _fmt_shape(shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def last_uses(graph: Graph) -> dict[int, list[Value]]:
    """For each node index, the values whose last reader is that node (so the executor can free them)."""
    last: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in n.inputs:
            if v is not None and v.const is None:
                last[id(v)] = i
    keep = {id(v) for v in graph.outputs}
    by_node: dict[int, list[Value]] = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None and id(v) in last and id(v) not in keep:
                by_node.setdefault(last.pop(id(v)), []).append(v)
    return by_node


def run_node(node: Node, args: list[np.ndarray | None], registry=FLOAT_KERNELS) -> list[np.ndarray]:
    kernel = registry.get(node.op_type, node.domain)
    if kernel is None:
        registry.check_graph(_OneNode(node))
    return call_kernel(node, kernel, args)


def call_kernel(node: Node, kernel, args: list, stats: dict | None = None) -> list[np.ndarray]:
    """Call ``kernel`` for ``node``: attributes as keywords, plus the private ``_n_outputs`` / ``_stats``
    keywords for kernels that declare them; a failure becomes a ModelError naming the node and its inputs."""
    params = _private_params(kernel)
    kwargs = dict(node.attrs)
    if "_n_outputs" in params:
        kwargs["_n_outputs"] = len(node.outputs)
    if stats is not None and "_stats" in params:
        kwargs["_stats"] = stats
    try:
        with np.errstate(all="ignore"):
            result = kernel(*args, **kwargs)
    except LowbitError:
        raise
    except Exception as e:
        shapes = ", ".join("None" if a is None else f"{a.dtype}{list(a.shape)}" for a in args)
        raise ModelError(f"{node.describe()} failed on inputs ({shapes}): {type(e).__name__}: {e}") from e
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    if len(outs) < len(node.outputs):
        raise ModelError(f"{node.describe()} declares {len(node.outputs)} outputs but its kernel gives "
                         f"{len(outs)}")
    return [np.asarray(o) for o in outs[:len(node.outputs)]]


@functools.lru_cache(maxsize=None)
def _private_params(kernel) -> frozenset:
    """The private keywords a kernel takes: ``_n_outputs`` (Split: its result count depends on the node) and
    ``_stats`` (integer kernels counting saturations)."""
    return frozenset(p for p in inspect.signature(kernel).parameters if p in ("_n_outputs", "_stats"))


class _OneNode:
    def __init__(self, node):
        self.nodes = [node]


def run(graph: Graph, feeds: Mapping[str, np.ndarray], observe: Observer | None = None,
        check: bool = True, registry=FLOAT_KERNELS) -> dict[str, np.ndarray]:
    """Run ``graph`` on ``feeds`` (graph-input name -> array) and return {output name: array}.

    ``observe(node, outputs)`` is called after every node with its output arrays.
    """
    if check:
        registry.check_graph(graph)
        feeds = check_feeds(graph, feeds)
    env: dict[int, np.ndarray] = {}
    for v in graph.inputs:
        env[id(v)] = np.asarray(feeds[v.name])
    frees = last_uses(graph)
    for i, node in enumerate(graph.nodes):
        args = []
        for v in node.inputs:
            if v is None:
                args.append(None)
            elif v.const is not None:
                args.append(v.const)
            else:
                args.append(env[id(v)])
        outs = run_node(node, args, registry)
        for v, o in zip(node.outputs, outs):
            env[id(v)] = o
        if observe is not None:
            observe(node, outs)
        for v in frees.get(i, ()):
            env.pop(id(v), None)
    return {v.name: (v.const if v.const is not None else env[id(v)]) for v in graph.outputs}
