"""Pattern lifting: recognise ops that exporters decompose and put the single op back.

- LayerNormalization, spelled ReduceMean -> Sub -> Pow(2)|Mul(d, d) -> ReduceMean -> Add(eps) -> Sqrt ->
  Div|Mul(Reciprocal), optionally followed by Mul(gamma) and Add(beta).
- Gelu (approximate="none"), spelled x * 0.5 * (1 + Erf(x / sqrt(2))) in any association of the products,
  with Div(x, sqrt 2) or Mul(x, 1/sqrt 2).
- Gelu (approximate="tanh"), spelled x * 0.5 * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), with x^3 as
  Pow(x, 3) or Mul(x, Mul(x, x)).
A match replaces the last node of the pattern; the now-dead nodes are left for dead-code removal, so a
partially shared subpattern stays correct.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.graph.ir import Graph, Node, Value


def _prod(v: Value | None, *ops: str) -> Node | None:
    p = None if v is None else v.producer
    return p if p is not None and p.domain == "" and p.op_type in ops else None


def _scalar(v: Value | None) -> float | None:
    c = None if v is None else v.const
    return float(c.reshape(())) if c is not None and c.size == 1 else None


def _near(v: Value | None, target: float, rel: float = 1e-3) -> bool:
    s = _scalar(v)
    return s is not None and abs(s - target) <= rel * abs(target)


def _other(node: Node, v: Value) -> Value | None:
    """The other input of a binary node, given one of them."""
    a, b = node.inputs[0], node.inputs[1]
    return b if a is v else a if b is v else None


def _only_consumer(v: Value, *ops: str) -> Node | None:
    if len(v.consumers) != 1:
        return None
    c = v.consumers[0]
    return c if c.domain == "" and c.op_type in ops else None


def _replace_with(graph: Graph, last: Node, op: str, inputs: list, attrs: dict) -> None:
    out = last.outputs[0]
    graph.remove_node(last)
    graph.add_node(op, inputs, [out], attrs, name=graph.unique_node_name(f"{last.name}_{op}"))
    graph.toposort()


# -- LayerNormalization --------------------------------------------------------------------------------------
def _mean_axes(node: Node, rank: int | None) -> list[int] | None:
    if rank is None or int(node.attrs.get("keepdims", 1)) != 1:
        return None
    axes = node.const_input(1)
    if axes is None:
        return None
    return sorted(int(a) % rank for a in np.asarray(axes).reshape(-1))


def _match_layernorm(graph: Graph, sqrt: Node):
    add_eps = _prod(sqrt.inputs[0], "Add")
    if add_eps is None:
        return None
    var_v = next((v for v in add_eps.inputs if v.const is None), None)
    eps = _scalar(_other(add_eps, var_v)) if var_v is not None else None
    var = _prod(var_v, "ReduceMean")
    if var is None or eps is None:
        return None
    sq = _prod(var.inputs[0], "Pow", "Mul")
    if sq is None:
        return None
    d = sq.inputs[0]
    if sq.op_type == "Pow" and not _near(sq.inputs[1], 2.0, 1e-6):
        return None
    if sq.op_type == "Mul" and sq.inputs[1] is not d:
        return None
    sub = _prod(d, "Sub")
    if sub is None:
        return None
    x, mean_v = sub.inputs
    mean = _prod(mean_v, "ReduceMean")
    if mean is None or mean.inputs[0] is not x or x.shape is None:
        return None
    rank = len(x.shape)
    axes = _mean_axes(mean, rank)
    if axes is None or axes != _mean_axes(var, rank) or axes != list(range(axes[0], rank)):
        return None
    # the normalisation: Div(d, std) or Mul(d, Reciprocal(std))
    std = sqrt.outputs[0]
    norm = next((c for c in std.consumers if c.op_type == "Div" and c.inputs == [d, std]), None)
    if norm is None:
        rec = next((c for c in std.consumers if c.op_type == "Reciprocal"), None)
        if rec is not None:
            norm = next((c for c in rec.outputs[0].consumers
                         if c.op_type == "Mul" and d in c.inputs), None)
    if norm is None:
        return None
    return x, axes[0], eps, norm


def _affine_const(graph: Graph, node: Node | None, v: Value, op: str, norm_shape: tuple) -> np.ndarray | None:
    if node is None or node.op_type != op:
        return None
    c = _other(node, v)
    if c is None or c.const is None:
        return None
    arr = c.const
    if arr.ndim > len(norm_shape):
        return None
    try:
        return np.ascontiguousarray(np.broadcast_to(arr, norm_shape))
    except ValueError:
        return None


def lift_layernorm(graph: Graph) -> bool:
    """Replace decomposed layer normalisation (see module docstring) by one LayerNormalization node."""
    changed = False
    for sqrt in [n for n in graph.nodes if n.op_type == "Sqrt" and n.domain == ""]:
        if sqrt not in graph.nodes:
            continue
        m = _match_layernorm(graph, sqrt)
        if m is None:
            continue
        x, axis, eps, last = m
        norm_shape = tuple(x.shape[axis:])
        if not all(isinstance(d, int) for d in norm_shape):
            continue
        dtype = x.dtype or np.float32
        gamma = beta = None
        mul = _only_consumer(last.outputs[0], "Mul")
        gamma = _affine_const(graph, mul, last.outputs[0], "Mul", norm_shape)
        if gamma is not None:
            last = mul
            add = _only_consumer(last.outputs[0], "Add")
            beta = _affine_const(graph, add, last.outputs[0], "Add", norm_shape)
            if beta is not None:
                last = add
        gamma = np.ones(norm_shape, dtype) if gamma is None else gamma.astype(dtype)
        inputs = [x, graph.add_const(f"{last.name}_ln_scale", gamma)]
        if beta is not None:
            inputs.append(graph.add_const(f"{last.name}_ln_bias", beta.astype(dtype)))
        _replace_with(graph, last, "LayerNormalization", inputs, {"axis": axis, "epsilon": eps})
        changed = True
    return changed


# -- GELU ------------------------------------------------------------------------------------------------------
def _half_x_times(graph: Graph, e1: Value, x: Value) -> Node | None:
    """The node computing x * 0.5 * e1 in any association of two Muls (e1 = 1 + erf/tanh(...)), or None."""
    m1 = _only_consumer(e1, "Mul")
    if m1 is None:
        return None
    other = _other(m1, e1)
    if other is x:
        m2 = _only_consumer(m1.outputs[0], "Mul")
        return m2 if m2 is not None and _near(_other(m2, m1.outputs[0]), 0.5) else None
    if _near(other, 0.5):
        m2 = _only_consumer(m1.outputs[0], "Mul")
        return m2 if m2 is not None and _other(m2, m1.outputs[0]) is x else None
    half = _prod(other, "Mul")
    if half is not None and x in half.inputs and _near(_other(half, x), 0.5):
        return m1
    return None


def _one_plus(v: Value) -> Value | None:
    add = _only_consumer(v, "Add")
    return add.outputs[0] if add is not None and _near(_other(add, v), 1.0) else None


def _erf_input_x(erf: Node) -> Value | None:
    scale = _prod(erf.inputs[0], "Div", "Mul")
    if scale is None:
        return None
    x, c = scale.inputs
    if scale.op_type == "Div":
        return x if _near(c, math.sqrt(2.0)) else None
    if _near(c, 1 / math.sqrt(2.0)):
        return x
    return c if _near(x, 1 / math.sqrt(2.0)) else None


def _cube_of(v: Value) -> Value | None:
    p = _prod(v, "Pow")
    if p is not None and _near(p.inputs[1], 3.0, 1e-6):
        return p.inputs[0]
    m = _prod(v, "Mul")
    if m is None:
        return None
    for a, b in (m.inputs, m.inputs[::-1]):
        sq = _prod(b, "Mul")
        if sq is not None and sq.inputs[0] is a and sq.inputs[1] is a:
            return a
    return None


def _tanh_input_x(tanh: Node) -> Value | None:
    outer = _prod(tanh.inputs[0], "Mul")
    if outer is None:
        return None
    inner_v = next((v for v in outer.inputs if _near(_other(outer, v), math.sqrt(2 / math.pi))), None)
    inner = _prod(inner_v, "Add")
    if inner is None:
        return None
    for x, cubic in (inner.inputs, inner.inputs[::-1]):
        m = _prod(cubic, "Mul")
        if m is None:
            continue
        for k, c in (m.inputs, m.inputs[::-1]):
            if _near(k, 0.044715) and _cube_of(c) is x:
                return x
    return None


def lift_gelu(graph: Graph) -> bool:
    """Replace decomposed GELU (Erf or tanh form; see module docstring) by one Gelu node."""
    changed = False
    for node in [n for n in graph.nodes if n.domain == "" and n.op_type in ("Erf", "Tanh")]:
        if node not in graph.nodes:
            continue
        x = _erf_input_x(node) if node.op_type == "Erf" else _tanh_input_x(node)
        e1 = None if x is None else _one_plus(node.outputs[0])
        last = None if e1 is None else _half_x_times(graph, e1, x)
        if last is None:
            continue
        _replace_with(graph, last, "Gelu", [x], {"approximate": "none" if node.op_type == "Erf" else "tanh"})
        changed = True
    return changed
