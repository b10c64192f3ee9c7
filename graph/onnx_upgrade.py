"""Rewrite old-opset ONNX nodes into the canonical form lowbit's kernels implement (the opset-21 spelling).

Between opsets 9 and 21 many attributes became inputs (Reshape's shape, Slice's starts/ends/axes, Pad's pads,
Clip's min/max, Split's split, Squeeze/Unsqueeze's axes, the reductions' axes, TopK's k), Softmax changed
meaning (opset < 13 flattens to 2-D at ``axis``), Upsample became Resize and Resize gained inputs. Each rule
here is a function ``(graph, node) -> None`` that edits one node in place; ``UPGRADES`` maps an op type to
``(first opset of the new form, rule)``: the rule runs when the model's opset is older than that.
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Graph, Node


def _attr_to_input(name: str, slot: int, dtype=np.int64):
    """Move attribute ``name`` into input ``slot`` as a constant (omitted input when the attribute is absent)."""
    def rule(graph: Graph, node: Node) -> None:
        if name not in node.attrs:
            return
        value = graph.add_const(f"{node.name}_{name}", np.asarray(node.attrs.pop(name), dtype=dtype))
        _set_slot(graph, node, slot, value)
    return rule


def _set_slot(graph: Graph, node: Node, slot: int, value) -> None:
    while len(node.inputs) <= slot:
        node.inputs.append(None)
    graph.set_input(node, slot, value)


def _chain(*rules):
    def rule(graph: Graph, node: Node) -> None:
        for r in rules:
            r(graph, node)
    return rule


def _slice_v1(graph: Graph, node: Node) -> None:
    """Slice-1 (attributes starts/ends/axes) -> Slice-10 (inputs)."""
    for slot, name in ((1, "starts"), (2, "ends"), (3, "axes")):
        _attr_to_input(name, slot)(graph, node)


def _pad_v2(graph: Graph, node: Node) -> None:
    """Pad-2 (attributes pads, value) -> Pad-11 (inputs pads, constant_value)."""
    pads = node.attrs.pop("pads", node.attrs.pop("paddings", None))
    value = float(node.attrs.pop("value", 0.0))
    x = node.inputs[0]
    _set_slot(graph, node, 1, graph.add_const(f"{node.name}_pads", np.asarray(pads, np.int64)))
    dtype = x.dtype if x is not None and x.dtype is not None else np.float32
    _set_slot(graph, node, 2, graph.add_const(f"{node.name}_value", np.asarray(value, dtype)))


def _clip_v6(graph: Graph, node: Node) -> None:
    """Clip-6 (attributes min/max) -> Clip-11 (optional inputs)."""
    x = node.inputs[0]
    dtype = x.dtype if x is not None and x.dtype is not None else np.float32
    for slot, name in ((1, "min"), (2, "max")):
        if name in node.attrs:
            _set_slot(graph, node, slot, graph.add_const(f"{node.name}_{name}",
                                                          np.asarray(node.attrs.pop(name), dtype)))


def _softmax_v1(graph: Graph, node: Node) -> None:
    """Softmax-1..11 normalises over the 2-D flattening at ``axis``: the same as Softmax-13 only when ``axis``
    is the last axis; otherwise spell it Flatten(axis) -> Softmax(-1) -> Reshape(Shape(x))."""
    axis = int(node.attrs.pop("axis", 1))
    x = node.inputs[0]
    rank = len(x.shape) if x is not None and x.shape is not None else None
    if rank is not None and (axis % rank if rank else 0) == rank - 1:
        node.attrs["axis"] = -1
        return
    y = node.outputs[0]
    flat = graph.new_value(f"{node.name}_flat", dtype=x.dtype)
    graph.add_node("Flatten", [x], [flat], {"axis": axis}, before=node)
    shape = graph.new_value(f"{node.name}_shape", dtype=np.int64)
    graph.add_node("Shape", [x], [shape], before=node)
    soft = graph.new_value(f"{node.name}_2d", dtype=y.dtype)
    graph.set_input(node, 0, flat)
    node.outputs[0] = soft
    soft.producer, y.producer = node, None
    node.attrs["axis"] = -1
    idx = graph.nodes.index(node)
    graph.add_node("Reshape", [soft, shape], [y], name=graph.unique_node_name(f"{node.name}_reshape"))
    graph.nodes.insert(idx + 1, graph.nodes.pop())


def _split_v2(graph: Graph, node: Node) -> None:
    _attr_to_input("split", 1)(graph, node)


def _upsample(graph: Graph, node: Node) -> None:
    """Upsample-7/9 -> Resize-13 with the asymmetric coordinates Upsample used."""
    node.op_type = "Resize"
    scales = node.attrs.pop("scales", None)
    if scales is not None:
        s = graph.add_const(f"{node.name}_scales", np.asarray(scales, np.float32))
    else:
        s = node.inputs[1]
    x = node.inputs[0]
    for v in node.inputs[1:]:
        if v is not None:
            v.consumers.remove(node)
    node.inputs = [x]
    _set_slot(graph, node, 2, s)
    mode = node.attrs.get("mode", "nearest")
    node.attrs = {"mode": "linear" if mode in ("linear", "bilinear") else "nearest",
                  "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}


def _resize_v10(graph: Graph, node: Node) -> None:
    """Resize-10 (X, scales), asymmetric coordinates -> Resize-13 (X, roi, scales, sizes)."""
    x, scales = node.inputs[0], node.input(1)
    if scales is not None:
        scales.consumers.remove(node)
    node.inputs = [x]
    _set_slot(graph, node, 2, scales)
    node.attrs.setdefault("coordinate_transformation_mode", "asymmetric")
    node.attrs.setdefault("nearest_mode", "floor")


def _drop_attrs(*names):
    def rule(graph: Graph, node: Node) -> None:
        for n in names:
            node.attrs.pop(n, None)
    return rule


def _dropout_v10(graph: Graph, node: Node) -> None:
    node.attrs.pop("is_test", None)
    _attr_to_input("ratio", 1, np.float32)(graph, node)


def _rename(new_op: str):
    def rule(graph: Graph, node: Node) -> None:
        node.op_type = new_op
    return rule


def _default_attr(name: str, value):
    def rule(graph: Graph, node: Node) -> None:
        node.attrs.setdefault(name, value)
    return rule


_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
              "ReduceLogSumExp", "ReduceSumSquare")

UPGRADES: dict[str, tuple[int, object]] = {
    "Reshape": (5, _attr_to_input("shape", 1)),
    "Slice": (10, _slice_v1),
    "Pad": (11, _pad_v2),
    "Clip": (11, _clip_v6),
    "Split": (13, _split_v2),
    "Squeeze": (13, _attr_to_input("axes", 1)),
    "Unsqueeze": (13, _attr_to_input("axes", 1)),
    "ReduceSum": (13, _attr_to_input("axes", 1)),
    "TopK": (10, _attr_to_input("k", 1)),
    "Softmax": (13, _softmax_v1),
    "LogSoftmax": (13, _softmax_v1),
    "Hardmax": (13, _softmax_v1),
    "Upsample": (99, _upsample),
    "Resize": (11, _resize_v10),
    "BatchNormalization": (9, _drop_attrs("spatial", "is_test", "consumed_inputs")),
    "Dropout": (12, _dropout_v10),
    "Concat": (4, _default_attr("axis", 1)),
    "Scatter": (99, _rename("ScatterElements")),
    **{op: (18, _attr_to_input("axes", 1)) for op in _REDUCE_18},
}


def upgrade_node(graph: Graph, node: Node, opset: int) -> None:
    """Apply the upgrade rule for ``node`` when the model's opset predates the canonical form."""
    if node.domain not in ("", "ai.onnx"):
        return
    node.attrs.pop("consumed_inputs", None)  # opset < 6 bookkeeping with no meaning for inference
    entry = UPGRADES.get(node.op_type)
    if entry is not None and opset < entry[0]:
        entry[1](graph, node)
