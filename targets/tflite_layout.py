"""NCHW -> NHWC for TFLite export: an integer-IR graph lowered from ONNX keeps ONNX's NCHW layout, TFLite's
spatial builtins (CONV_2D, DEPTHWISE_CONV_2D, *_POOL_2D) are NHWC only.

    graph = clone_graph(artifact.graph)     # the passes edit in place; export works on a copy
    to_nhwc(graph)                          # -> changed?

``to_nhwc`` runs ``LAYOUT_PASSES`` in order:
1. ``conv1d_to_conv2d``: a 1-D Conv ([N, C, L]) becomes a 2-D one of height 1 between two Reshapes.
2. ``spatial_to_nhwc``: every NCHW Conv / MaxPool / AvgPool switches to ``layout="NHWC"`` between a Transpose
   to NHWC (perm [0, 2, 3, 1]) and one back (perm [0, 3, 1, 2]). The graph now computes exactly what it did.
3. ``sink_transposes``: local rewrites, applied until none matches, that move Transposes towards the outputs
   and remove them where they meet (each rule returns False when the node does not match):
   - ``fold_transpose_pair``: Transpose(Transpose(x, p), q) -> Transpose(x, p[q]); an identity perm vanishes.
   - ``merge_twin_transposes``: two Transposes of one value with one perm become one.
   - ``transpose_into_reshape``: a Reshape / Flatten / Squeeze / Unsqueeze of a Transpose that moves only size-1
     axes (the data order is unchanged), or of another reshape, becomes one Reshape of the original tensor.
   - ``sink_through_unary``: f(Transpose(x)) -> Transpose(f(x)) for the element-wise integer ops whose
     parameters are per tensor (Relu, Relu6, Lut, Tanh, Logistic, LeakyRelu, HardSwish, Rsqrt, Requantize).
   - ``sink_through_binary``: Add / Sub / Mul / SquaredDifference whose activation inputs are Transposes with
     the same perm; constant inputs are permuted (after broadcasting to full rank), size-1 inputs kept.
   - ``sink_through_concat`` (axis -> perm[axis]), ``sink_through_mean`` (axes -> perm[axes]; with keepdims=0
     the remaining axes' order decides whether a Transpose is still needed), ``sink_through_pad`` (pads
     permuted), ``sink_through_softmax`` (only when the perm keeps the last axis last).
4. ``remove_dead_nodes``.
Everything else (Slice, Gather, Split, BatchMatMul, FullyConnected, Reshape of really permuted data, graph
outputs) keeps an explicit Transpose in front of it: integer transposes are exact, so the graph stays correct
and only the transposes that cancel disappear.

Every pass returns whether it changed the graph; the integer executor gives bit-identical outputs before and
after (tests/test_tflite_layout.py).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from lowbit.graph.ir import Graph, Node, Value
from lowbit.graph.passes import remove_dead_nodes
from lowbit.runtime.registry import INT_DOMAIN

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)
SPATIAL = ("Conv", "MaxPool", "AvgPool")
UNARY = ("Relu", "Relu6", "Lut", "Tanh", "Logistic", "LeakyRelu", "HardSwish", "Rsqrt", "Requantize")
BINARY = ("Add", "Sub", "Mul", "SquaredDifference")
RESHAPES = ("Reshape", "Flatten", "Squeeze", "Unsqueeze")

Rule = Callable[[Graph, Node], bool]


# --- graph helpers -----------------------------------------------------------------------------------------------
def clone_graph(graph: Graph) -> Graph:
    """A structural copy of ``graph`` (new Nodes and Values; constant payloads and QuantSpecs are shared, both are
    immutable)."""
    out = Graph(graph.name, dict(graph.opsets))
    out.metadata, out.notes, out.functions = dict(graph.metadata), list(graph.notes), list(graph.functions)
    vmap: dict[int, Value] = {}

    def m(v: Value | None) -> Value | None:
        if v is None:
            return None
        nv = vmap.get(id(v))
        if nv is None:
            nv = Value(v.name, v.shape, v.dtype, v.const, quant=v.quant)
            vmap[id(v)] = nv
            out.values[nv.name] = nv
        return nv

    for v in graph.values.values():
        m(v)
    for n in graph.nodes:
        attrs = {k: (list(a) if isinstance(a, list) else a) for k, a in n.attrs.items()}
        out.add_node(n.op_type, [m(v) for v in n.inputs], [m(v) for v in n.outputs], attrs, name=n.name,
                     domain=n.domain)
    out.inputs = [m(v) for v in graph.inputs]
    out.outputs = [m(v) for v in graph.outputs]
    return out


def _is(node: Node | None, op_type, domain: str = "") -> bool:
    ops = (op_type,) if isinstance(op_type, str) else op_type
    return node is not None and node.domain == domain and node.op_type in ops


def _rank(v: Value) -> int | None:
    return len(v.shape) if v.shape is not None else None


def inverse(perm) -> tuple[int, ...]:
    return tuple(int(i) for i in np.argsort(perm))


def _perm_of(node: Node) -> tuple[int, ...] | None:
    """The perm of a Transpose node (ONNX default: reversed axes), or None when its input has no static rank."""
    rank = _rank(node.inputs[0])
    if rank is None:
        return None
    perm = node.attrs.get("perm")
    return tuple(range(rank))[::-1] if perm is None else tuple(int(p) % rank for p in perm)


def _transposed_by(v: Value | None) -> tuple[Value, tuple[int, ...]] | None:
    """(x, perm) when ``v`` is Transpose(x, perm)."""
    p = None if v is None else v.producer
    if not _is(p, "Transpose"):
        return None
    perm = _perm_of(p)
    return None if perm is None else (p.inputs[0], perm)


def _new_like(graph: Graph, like: Value, hint: str, shape) -> Value:
    v = graph.new_value(hint, tuple(int(d) for d in shape), like.dtype)
    v.quant = like.quant
    return v


def add_transpose(graph: Graph, x: Value, perm, out: Value | None = None, hint: str = "") -> Value:
    """Transpose(x, perm) into ``out`` (a new value when None); returns the result."""
    shape = tuple(x.shape[p] for p in perm)
    if out is None:
        out = _new_like(graph, x, hint or f"{x.name}_t", shape)
    graph.add_node("Transpose", [x], [out], {"perm": [int(p) for p in perm]},
                   name=graph.unique_node_name(f"{out.name}_transpose"), domain="")
    return out


def add_reshape(graph: Graph, x: Value, shape, out: Value | None = None, hint: str = "") -> Value:
    shape = tuple(int(d) for d in shape)
    if out is None:
        out = _new_like(graph, x, hint or f"{x.name}_r", shape)
    const = graph.add_const(f"{out.name}_shape", np.asarray(shape, np.int64))
    graph.add_node("Reshape", [x, const], [out], name=graph.unique_node_name(f"{out.name}_reshape"), domain="")
    return out


def _produce_into(graph: Graph, node: Node, i: int, shape, hint: str) -> tuple[Value, Value]:
    """Make output ``i`` of ``node`` a fresh value of ``shape``; returns (fresh, old). ``old`` is left without a
    producer, for the caller to produce again (so that its name, consumers and graph-output role stay)."""
    old = node.outputs[i]
    fresh = _new_like(graph, old, hint, shape)
    old.producer = None
    node.outputs[i] = fresh
    fresh.producer = node
    return fresh, old


def _sink(graph: Graph, node: Node, perm, new_inputs: dict[int, Value], attrs: dict | None = None) -> bool:
    """Rewrite ``node`` to read ``new_inputs`` (position -> value) and produce its output in the layout before
    Transpose(., perm); a Transpose after it restores the original output value."""
    for i, v in new_inputs.items():
        graph.set_input(node, i, v)
    if attrs:
        node.attrs.update(attrs)
    out = node.outputs[0]
    inv = inverse(perm)
    fresh, old = _produce_into(graph, node, 0, [out.shape[j] for j in inv], f"{out.name}_pre")
    add_transpose(graph, fresh, perm, out=old)
    return True


def _permuted_const(graph: Graph, v: Value, perm, rank: int) -> Value:
    """Constant ``v`` broadcast-aligned to ``rank`` axes and permuted by inverse(perm), so that
    op(Transpose(x, perm), v) == Transpose(op(x, v'), perm)."""
    c = v.const.reshape((1,) * (rank - v.const.ndim) + v.const.shape)
    nv = graph.add_const(f"{v.name}_{''.join(map(str, inverse(perm)))}", np.ascontiguousarray(c.transpose(inverse(perm))))
    nv.quant = v.quant
    return nv


# --- 1. and 2.: spatial ops to NHWC -----------------------------------------------------------------------------
def conv1d_to_conv2d(graph: Graph) -> bool:
    """Rewrite every 1-D NCHW Conv (x [N, C, L], w [O, I, k]) as a 2-D Conv of height 1 between Reshapes."""
    changed = False
    for node in [n for n in graph.nodes if _is(n, "Conv", INT_DOMAIN)]:
        x, w = node.inputs[0], node.inputs[1]
        if node.attrs.get("layout", "NCHW") != "NCHW" or _rank(x) != 3 or w.const is None or w.const.ndim != 3:
            continue
        n_, c, length = x.shape
        x4 = add_reshape(graph, x, (n_, c, 1, length), hint=f"{x.name}_h1")
        w4 = graph.add_const(f"{w.name}_h1", w.const[:, :, None, :])
        w4.quant = w.quant
        graph.set_input(node, 0, x4)
        graph.set_input(node, 1, w4)
        a = node.attrs
        pads = list(a.get("pads") or [0, 0])
        a.update(strides=[1] + list(a.get("strides") or [1]), dilations=[1] + list(a.get("dilations") or [1]),
                 pads=[0, int(pads[0]), 0, int(pads[1])])
        if a.get("kernel_shape") is not None:
            a["kernel_shape"] = [1] + list(a["kernel_shape"])
        out = node.outputs[0]
        fresh, old = _produce_into(graph, node, 0, (out.shape[0], out.shape[1], 1, out.shape[2]), f"{out.name}_h1")
        add_reshape(graph, fresh, old.shape, out=old)
        changed = True
    if changed:
        graph.toposort()
    return changed


def spatial_to_nhwc(graph: Graph) -> bool:
    """Switch every 4-D NCHW Conv / MaxPool / AvgPool to NHWC between a Transpose in and a Transpose out."""
    changed = False
    for node in [n for n in graph.nodes if _is(n, SPATIAL, INT_DOMAIN)]:
        x = node.inputs[0]
        if node.attrs.get("layout", "NCHW") != "NCHW" or _rank(x) != 4:
            continue
        graph.set_input(node, 0, add_transpose(graph, x, TO_NHWC, hint=f"{x.name}_nhwc"))
        node.attrs["layout"] = "NHWC"
        out = node.outputs[0]
        fresh, old = _produce_into(graph, node, 0, [out.shape[i] for i in TO_NHWC], f"{out.name}_nhwc")
        add_transpose(graph, fresh, TO_NCHW, out=old)
        changed = True
    if changed:
        graph.toposort()
    return changed


# --- 3.: sinking transposes ---------------------------------------------------------------------------------------
def fold_transpose_pair(graph: Graph, node: Node) -> bool:
    """Transpose(Transpose(x, p), q) -> Transpose(x, p[q]), or x when that is the identity."""
    if not _is(node, "Transpose"):
        return False
    inner = _transposed_by(node.inputs[0])
    q = _perm_of(node)
    if inner is None or q is None:
        return False
    x, p = inner
    composed = tuple(p[i] for i in q)
    if composed == tuple(range(len(composed))) and graph.bypass(node, x):
        return True
    graph.set_input(node, 0, x)  # (an identity that cannot be bypassed: it produces a graph output)
    node.attrs["perm"] = list(composed)
    return True


def merge_twin_transposes(graph: Graph, node: Node) -> bool:
    """Two Transposes of one value with one perm (e.g. an input read by two convolutions) become one."""
    if not _is(node, "Transpose"):
        return False
    perm = _perm_of(node)
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    for twin in node.inputs[0].consumers:
        if twin is not node and _is(twin, "Transpose") and _perm_of(twin) == perm \
                and position.get(id(twin), 1 << 30) < position[id(node)]:
            return graph.bypass(node, twin.outputs[0])
    return False


def _moves_only_unit_axes(shape, perm) -> bool:
    """True when Transpose(., perm) keeps the data order: the non-size-1 axes stay in their relative order."""
    kept = [p for p in perm if shape[p] != 1]
    return kept == sorted(kept)


def transpose_into_reshape(graph: Graph, node: Node) -> bool:
    """A reshape-like node reading a data-order-preserving Transpose or another Reshape reads their input."""
    if not _is(node, RESHAPES) or node.outputs[0].shape is None or not node.outputs[0].is_static:
        return False
    src = node.inputs[0]
    p = src.producer
    if _is(p, "Transpose"):
        perm = _perm_of(p)
        if perm is None or not p.inputs[0].is_static or not _moves_only_unit_axes(p.inputs[0].shape, perm):
            return False
    elif not (_is(p, "Reshape") and p.inputs[0].is_static):
        return False
    out = node.outputs[0]
    graph.remove_node(node)
    add_reshape(graph, p.inputs[0], out.shape, out=out)
    return True


def _merged_groups(shape, out_shape) -> list[list[int]] | None:
    """Consecutive axis groups of ``shape`` whose sizes multiply to each axis of ``out_shape`` in turn (a reshape
    that only merges neighbouring axes; trailing size-1 axes join the last group); None otherwise."""
    groups, i = [], 0
    for d in out_shape:
        if i >= len(shape):
            return None
        group, size = [i], shape[i]
        i += 1
        while size < d and i < len(shape):
            group.append(i)
            size *= shape[i]
            i += 1
        if size != d:
            return None
        groups.append(group)
    if not groups or any(shape[k] != 1 for k in range(i, len(shape))):
        return None
    groups[-1].extend(range(i, len(shape)))
    return groups


def sink_through_reshape(graph: Graph, node: Node) -> bool:
    """Reshape(Transpose(x, p)) that merges neighbouring axes which are also neighbours, in order, in x ->
    Transpose(Reshape(x), q): the transpose moves below the reshape, where it can meet and cancel another (a
    ViT's NHWC patch embedding [B, h, w, C] -> NCHW -> [B, C, h*w] -> [B, h*w, C] becomes one Reshape, and its
    LayerNorms stay in token layout, where their scale and bias are per channel)."""
    if not _is(node, "Reshape") or node.outputs[0].shape is None or not node.outputs[0].is_static:
        return False
    t = _sole_transposed_input(node)
    if t is None or not t[0].is_static:
        return False
    x, perm = t
    groups = _merged_groups(tuple(x.shape[a] for a in perm), tuple(node.outputs[0].shape))
    if groups is None or len(groups) == len(perm):
        return False
    sources = [[perm[i] for i in g] for g in groups]
    if any(src != list(range(src[0], src[0] + len(src))) for src in sources):
        return False
    order = sorted(range(len(sources)), key=lambda k: sources[k][0])
    q = [order.index(k) for k in range(len(sources))]
    inner = [int(np.prod([x.shape[a] for a in sources[k]])) for k in order]
    out = node.outputs[0]
    graph.remove_node(node)
    if q == sorted(q):
        add_reshape(graph, x, out.shape, out=out)
    else:
        add_transpose(graph, add_reshape(graph, x, inner, hint=f"{out.name}_merged"), q, out=out)
    return True


def _sole_transposed_input(node: Node, i: int = 0):
    return _transposed_by(node.inputs[i])


def sink_through_unary(graph: Graph, node: Node) -> bool:
    """f(Transpose(x, p)) -> Transpose(f(x), p) for per-tensor element-wise integer ops."""
    if not _is(node, UNARY, INT_DOMAIN) or len(node.outputs) != 1:
        return False
    t = _sole_transposed_input(node)
    if t is None or (node.inputs[0].quant is not None and node.inputs[0].quant.per_channel):
        return False
    return _sink(graph, node, t[1], {0: t[0]})


def _operands_under(graph: Graph, node: Node, positions) -> tuple[tuple, dict[int, Value]] | None:
    """(perm, replacement inputs) when every operand at ``positions`` is Transpose(., perm) (one perm),
    a constant (permuted) or a size-1 tensor (kept); None otherwise."""
    rank = _rank(node.outputs[0])
    perm, repl, consts = None, {}, []
    for i in positions:
        v = node.inputs[i]
        t = _transposed_by(v)
        if t is not None and len(t[1]) == rank and (perm is None or t[1] == perm):
            perm = t[1]
            repl[i] = t[0]
        elif v.const is not None and v.const.ndim <= (rank or 0):
            consts.append(i)
        elif v.shape is not None and all(d == 1 for d in v.shape) and len(v.shape) <= (rank or 0):
            continue
        else:
            return None
    if perm is None:
        return None
    for i in consts:
        c = node.inputs[i]
        if c.const.size != 1:
            repl[i] = _permuted_const(graph, c, perm, rank)
    return perm, repl


def sink_through_binary(graph: Graph, node: Node) -> bool:
    """op(Transpose(a, p), Transpose(b, p) | constant) -> Transpose(op(a, b'), p) for Add/Sub/Mul/SqDiff."""
    if not _is(node, BINARY, INT_DOMAIN) or _rank(node.outputs[0]) is None:
        return False
    got = _operands_under(graph, node, (0, 1))
    if got is None:
        return False
    perm, repl = got
    return _sink(graph, node, perm, repl)


def sink_through_concat(graph: Graph, node: Node) -> bool:
    """Concat(Transpose(x_i, p), axis=a) -> Transpose(Concat(x_i, axis=p[a]), p)."""
    if not _is(node, "Concat") or _rank(node.outputs[0]) is None:
        return False
    got = _operands_under(graph, node, range(len(node.inputs)))
    if got is None or len(got[1]) != len(node.inputs):
        return False
    perm, repl = got
    rank = len(perm)
    return _sink(graph, node, perm, repl, {"axis": perm[int(node.attrs.get("axis", 0)) % rank]})


def sink_through_mean(graph: Graph, node: Node) -> bool:
    """Mean(Transpose(x, p), axes A) -> Transpose(Mean(x, axes p[A]), p'); no Transpose when p' is the identity."""
    if not _is(node, "Mean", INT_DOMAIN):
        return False
    t = _sole_transposed_input(node)
    if t is None:
        return False
    x, perm = t
    rank = len(perm)
    axes = node.attrs.get("axes")
    axes = list(range(rank)) if not axes else sorted({int(a) % rank for a in axes})
    new_axes = sorted(perm[a] for a in axes)
    graph.set_input(node, 0, x)
    node.attrs["axes"] = new_axes
    if node.attrs.get("keepdims", 1):
        out_perm = perm
    else:
        kept = [perm[j] for j in range(rank) if j not in axes]  # x axes left, in the output's order
        out_perm = tuple(sorted(kept).index(a) for a in kept)  # Mean(x) keeps them in ascending order
    if out_perm == tuple(range(len(out_perm))):
        return True
    out = node.outputs[0]
    fresh, old = _produce_into(graph, node, 0, [out.shape[j] for j in inverse(out_perm)], f"{out.name}_pre")
    add_transpose(graph, fresh, out_perm, out=old)
    return True


def sink_through_pad(graph: Graph, node: Node) -> bool:
    """Pad(Transpose(x, p), pads) -> Transpose(Pad(x, pads permuted), p) (constant pads, all axes)."""
    if not _is(node, "Pad") or node.attrs.get("mode", "constant") != "constant" or node.input(3) is not None:
        return False
    t = _sole_transposed_input(node)
    pads = node.const_input(1)
    if t is None or pads is None:
        return False
    x, perm = t
    rank = len(perm)
    pads = np.asarray(pads, np.int64).reshape(2, rank)
    new = np.zeros_like(pads)
    for j in range(rank):
        new[:, perm[j]] = pads[:, j]
    pv = graph.add_const(f"{node.inputs[1].name}_p", new.reshape(-1))
    return _sink(graph, node, perm, {0: x, 1: pv})


def sink_through_softmax(graph: Graph, node: Node) -> bool:
    """Softmax(Transpose(x, p)) over the last axis -> Transpose(Softmax(x), p) when p keeps the last axis last."""
    if not _is(node, "Softmax", INT_DOMAIN):
        return False
    t = _sole_transposed_input(node)
    if t is None:
        return False
    x, perm = t
    rank = len(perm)
    if int(node.attrs.get("axis", -1)) % rank != rank - 1 or perm[-1] != rank - 1:
        return False
    return _sink(graph, node, perm, {0: x})


def split_before_transpose(graph: Graph, node: Node) -> bool:
    """Split(Transpose(x, p), axis a) -> Transpose(Split(x, axis p[a])_i, p) for each part, when the Transpose has
    more than 4 axes (an attention's q/k/v split: [B, T, 3, H, D] -> [3, B, H, T, D] then Split). Each part then
    has a size-1 axis that ``squeeze_through_transpose`` drops, so the file holds 4-D TRANSPOSEs, which LiteRT and
    Vela run as one operation each, instead of a 5-D one (Vela 5.2: 13 operations, 21 k cycles per attention
    block on the zoo ViT, U55)."""
    if not _is(node, "Split"):
        return False
    t = _sole_transposed_input(node)
    if t is None or len(t[1]) <= 4 or not t[0].is_static or any(v.shape is None for v in node.outputs):
        return False
    x, perm = t
    graph.set_input(node, 0, x)
    node.attrs["axis"] = perm[int(node.attrs.get("axis", 0)) % len(perm)]
    inv = inverse(perm)
    for i, out in enumerate(list(node.outputs)):
        fresh, old = _produce_into(graph, node, i, [out.shape[j] for j in inv], f"{out.name}_pre")
        add_transpose(graph, fresh, perm, out=old)
    return True


def split_before_reshape(graph: Graph, node: Node) -> bool:
    """Split(Reshape(x), axis a) -> Reshape(Split(x, axis j)_i) when the Reshape only expands x's axis j into
    several and ``a`` is the first of them: each part is a contiguous run of axis j (e.g. the q/k/v thirds of a
    [B, T, 3 * H * D] projection, split before [B, T, 3, H, D] is formed), which Vela splits as one operation a
    part instead of a strided 5-D split. Constant split sizes (the lowered graphs' form) only."""
    if not _is(node, "Split") or not _is(node.inputs[0].producer, "Reshape") or len(node.inputs) < 2:
        return False
    x, t_shape = node.inputs[0].producer.inputs[0], node.inputs[0].shape
    sizes = node.const_input(1)
    if sizes is None or not x.is_static or t_shape is None or not node.inputs[0].is_static:
        return False
    s_shape, t_shape = tuple(x.shape), tuple(t_shape)
    a = int(node.attrs.get("axis", 0)) % len(t_shape)
    extra = len(t_shape) - len(s_shape)
    # T = S[:j] + D + S[j+1:] with prod(D) == S[j], D of extra + 1 axes starting at a
    j = a
    if extra < 1 or j >= len(s_shape) or t_shape[:j] != s_shape[:j] or t_shape[j + extra + 1:] != s_shape[j + 1:] \
            or int(np.prod(t_shape[j:j + extra + 1])) != s_shape[j]:
        return False
    inner = int(np.prod(t_shape[j + 1:j + extra + 1]))
    graph.set_input(node, 0, x)
    graph.set_input(node, 1, graph.add_const(f"{node.name}_sizes", np.asarray(sizes, np.int64) * inner))
    node.attrs["axis"] = j
    for i, out in enumerate(list(node.outputs)):
        fresh, old = _produce_into(graph, node, i, s_shape[:j] + (int(sizes[i]) * inner,) + s_shape[j + 1:],
                                   f"{out.name}_flat")
        add_reshape(graph, fresh, out.shape, out=old)
    return True


def _kept_axes(full, reduced) -> list[int] | None:
    """Indices of ``full``'s axes that make ``reduced`` when only size-1 axes are dropped; None otherwise. Matched
    from the last axis, so that of several size-1 axes the leading ones (a batch axis) are kept."""
    keep, j = [], len(reduced) - 1
    for k in range(len(full) - 1, -1, -1):
        if j >= 0 and full[k] == reduced[j]:
            keep.append(k)
            j -= 1
        elif full[k] != 1:
            return None
    return keep[::-1] if j < 0 and len(keep) < len(full) else None


def squeeze_through_transpose(graph: Graph, node: Node) -> bool:
    """Reshape|Squeeze(Transpose(y, p)) that only drops size-1 axes, p of more than 4 axes -> Transpose(y', p')
    with y' = y without those axes: the same data through a lower-rank TRANSPOSE."""
    if not _is(node, RESHAPES) or node.outputs[0].shape is None or not node.outputs[0].is_static:
        return False
    t = _sole_transposed_input(node)
    if t is None or len(t[1]) <= 4 or not t[0].is_static:
        return False
    y, perm = t
    keep = _kept_axes(tuple(y.shape[p] for p in perm), tuple(node.outputs[0].shape))
    if keep is None:
        return False
    src = [perm[k] for k in keep]
    order = sorted(src)
    new_perm = [order.index(a) for a in src]
    if new_perm == sorted(new_perm):
        return False  # the data order is kept: transpose_into_reshape's case
    out = node.outputs[0]
    graph.remove_node(node)
    add_transpose(graph, add_reshape(graph, y, [y.shape[a] for a in order], hint=f"{out.name}_squeezed"), new_perm,
                  out=out)
    return True


SINK_RULES: list[Rule] = [fold_transpose_pair, merge_twin_transposes, transpose_into_reshape, sink_through_unary,
                          sink_through_binary, sink_through_concat, sink_through_mean, sink_through_pad,
                          sink_through_softmax, split_before_transpose, split_before_reshape,
                          squeeze_through_transpose, sink_through_reshape]


def sink_transposes(graph: Graph, rules: list[Rule] | None = None, max_steps: int = 100_000) -> bool:
    """Apply ``rules`` (default SINK_RULES) node by node until none matches; dead Transposes are removed."""
    rules = SINK_RULES if rules is None else rules
    changed = False
    for _ in range(max_steps):
        step = False
        for node in list(graph.nodes):
            if node.outputs and node.outputs[0].producer is not node:
                continue  # removed earlier in this sweep
            if any(rule(graph, node) for rule in rules):
                step = True
                graph.toposort()
                remove_dead_nodes(graph)
                break
        if not step:
            break
        changed = True
    return changed


LAYOUT_PASSES: list[Callable[[Graph], bool]] = [conv1d_to_conv2d, spatial_to_nhwc, sink_transposes,
                                                remove_dead_nodes]


def to_nhwc(graph: Graph) -> bool:
    """Run LAYOUT_PASSES in order (in place); True when the graph changed."""
    changed = False
    for p in LAYOUT_PASSES:
        changed |= bool(p(graph))
    graph.toposort()
    graph.verify()
    return changed


__all__ = ["LAYOUT_PASSES", "SINK_RULES", "add_reshape", "add_transpose", "clone_graph", "conv1d_to_conv2d",
           "inverse", "sink_transposes", "spatial_to_nhwc", "to_nhwc"]
