"""Folding passes: constant subgraphs, BatchNormalization into the preceding linear op, and per-channel
Mul/Add (BatchNorm exported as ops) into a preceding Conv."""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Graph, Node, Value, set_const

# never fold these even when their inputs are constant (their outputs are meant to be fresh each run)
_NO_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}


def fold_constants(graph: Graph) -> bool:
    """Evaluate nodes whose inputs are all constants, and Shape/Size of statically shaped values, at compile
    time; their outputs become constants."""
    from lowbit.runtime.float_executor import run_node
    from lowbit.runtime.registry import FLOAT_KERNELS
    changed = False
    for node in list(graph.nodes):
        if node.op_type in _NO_FOLD or not FLOAT_KERNELS.supports(node.op_type, node.domain) or any(o in graph.outputs for o in node.outputs):
            continue
        if node.domain == "" and node.op_type in ("Shape", "Size") and node.inputs[0].is_static \
                and node.inputs[0].const is None:
            x = np.zeros(node.inputs[0].shape, node.inputs[0].dtype or np.float32)
            outs = run_node(node, [x])
        elif node.inputs and all(v is None or v.const is not None for v in node.inputs):
            outs = run_node(node, [None if v is None else v.const for v in node.inputs])
        else:
            continue
        graph.remove_node(node)
        for v, o in zip(node.outputs, outs):
            set_const(v, o)
        changed = True
    return changed


def _sole_consumer(graph: Graph, v: Value) -> Node | None:
    if len(v.consumers) != 1 or v in graph.outputs:
        return None
    return v.consumers[0]


def _channel_axis_of_weight(node: Node) -> int | None:
    """The axis of the weight tensor that indexes output channels, for the linear ops BN can fold into."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        return 0 if node.attrs.get("transB", 0) else 1
    if node.op_type == "MatMul":
        return -1
    return None


def _scale_linear(graph: Graph, node: Node, scale: np.ndarray, shift: np.ndarray, out: Value) -> bool:
    """Rewrite linear ``node`` so that it computes ``scale * node(x) + shift`` per output channel, writing
    ``out``. Returns False (graph unchanged) when the node's weights are not constant or shapes disagree."""
    w = node.const_input(1)
    if w is None or not np.issubdtype(w.dtype, np.floating):
        return False
    if node.op_type == "ConvTranspose":
        g = int(node.attrs.get("group", 1))
        cin, cout_g = w.shape[0], w.shape[1]
        if scale.shape[0] != cout_g * g:
            return False
        w_new = (w.reshape(g, cin // g, cout_g, *w.shape[2:])
                 * scale.reshape(g, 1, cout_g, *([1] * (w.ndim - 2)))).reshape(w.shape)
        n_out = cout_g * g
    else:
        axis = _channel_axis_of_weight(node)
        if axis is None or w.shape[axis] != scale.shape[0]:
            return False
        bshape = [1] * w.ndim
        bshape[axis] = -1
        w_new = w * scale.reshape(bshape)
        n_out = w.shape[axis]
    if node.op_type == "Gemm" and float(node.attrs.get("beta", 1.0)) != 1.0 and node.input(2) is not None:
        return False
    bias_slot = 2
    old_b = node.const_input(bias_slot) if node.op_type != "MatMul" else None
    if node.op_type != "MatMul" and node.input(bias_slot) is not None and old_b is None:
        return False
    if old_b is not None and old_b.size not in (1, n_out):
        return False
    if node.op_type == "Gemm" and float(node.attrs.get("alpha", 1.0)) != 1.0:
        return False
    base = np.zeros(n_out, w.dtype) if old_b is None else np.broadcast_to(old_b.reshape(-1), (n_out,))
    b_new = (base * scale + shift).astype(w.dtype)
    graph.set_input(node, 1, graph.add_const(f"{node.name}_w_folded", w_new.astype(w.dtype)))
    old_out = node.outputs[0]
    if node.op_type == "MatMul":
        mid = graph.new_value(f"{node.name}_unbiased", dtype=w.dtype)
        node.outputs[0] = mid
        mid.producer, old_out.producer = node, None
        graph.add_node("Add", [mid, graph.add_const(f"{node.name}_bias_folded", b_new)], [out],
                       name=graph.unique_node_name(f"{node.name}_bias"))
        graph.toposort()
    else:
        while len(node.inputs) <= bias_slot:
            node.inputs.append(None)
        graph.set_input(node, bias_slot, graph.add_const(f"{node.name}_b_folded", b_new))
        node.outputs[0] = out
        out.producer, old_out.producer = node, None
    return True


def fold_batchnorm(graph: Graph) -> bool:
    """Fold BatchNormalization into a preceding Conv, ConvTranspose, Gemm or MatMul (constant weights, sole
    consumer): W' = W * s, b' = (b - mean) * s + beta with s = gamma / sqrt(var + eps), per output channel."""
    changed = False
    for bn in [n for n in graph.nodes if n.op_type == "BatchNormalization" and n.domain == ""]:
        if len(bn.outputs) > 1 and any(o.consumers or o in graph.outputs for o in bn.outputs[1:]):
            continue
        x = bn.inputs[0]
        prod = x.producer
        if prod is None or prod.domain != "" or _sole_consumer(graph, x) is not bn:
            continue
        if prod.op_type not in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            continue
        if prod.op_type in ("Gemm", "MatMul") and (x.shape is None or len(x.shape) != 2):
            continue  # BN normalises axis 1; for a 2-D product that is the output-feature axis
        params = [bn.const_input(i) for i in range(1, 5)]
        if any(p is None for p in params):
            continue
        gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
        s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
        out = bn.outputs[0]
        graph.remove_node(bn)
        if not _scale_linear(graph, prod, s, beta - mean * s, out):
            graph.nodes.insert(graph.nodes.index(prod) + 1, bn)  # put it back untouched
            _relink(bn)
            continue
        changed = True
    if changed:
        graph.prune_values()
    return changed


def _relink(node: Node) -> None:
    for v in node.inputs:
        if v is not None:
            v.consumers.append(node)
    for v in node.outputs:
        v.producer = node


def _per_channel(c: np.ndarray | None, channels: int, rank: int) -> np.ndarray | None:
    """The 1-D per-channel vector of a constant shaped [C,1,1] / [1,C,1,1] (channel axis 1 of a rank-``rank``
    activation), or of a scalar; None for any other shape."""
    if c is None or not np.issubdtype(c.dtype, np.floating):
        return None
    if c.size == 1:
        return np.full(channels, float(c.reshape(())), np.float64)
    shape = (1,) * (rank - c.ndim) + tuple(c.shape)
    if len(shape) != rank or shape[1] != channels or any(d != 1 for i, d in enumerate(shape) if i != 1):
        return None
    return c.astype(np.float64).reshape(-1)


def fold_channel_affine(graph: Graph) -> bool:
    """Fold Mul and Add by a per-channel constant (BatchNorm exported as ops) into the preceding Conv."""
    changed = False
    for node in list(graph.nodes):
        if node.domain != "" or node.op_type not in ("Mul", "Add") or node not in graph.nodes:
            continue
        a, b = node.inputs
        x, c = (a, b.const) if b.const is not None else (b, a.const)
        conv = x.producer
        if c is None or conv is None or conv.op_type != "Conv" or _sole_consumer(graph, x) is not node:
            continue
        w = conv.const_input(1)
        if w is None or x.shape is None:
            continue
        vec = _per_channel(c, w.shape[0], len(x.shape))
        if vec is None:
            continue
        if node.op_type == "Mul":
            scale, shift = vec, np.zeros_like(vec)
        else:
            scale, shift = np.ones_like(vec), vec
        out = node.outputs[0]
        graph.remove_node(node)
        if not _scale_linear(graph, conv, scale, shift, out):
            graph.nodes.insert(graph.nodes.index(conv) + 1, node)
            _relink(node)
            continue
        changed = True
    if changed:
        graph.prune_values()
    return changed
