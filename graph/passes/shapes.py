"""Shape and dtype inference.

With static graph inputs and a kernel for every op, shapes come from running the float kernels once on zero-filled inputs
(constants keep their values, so shape arithmetic such as Shape -> Gather -> Concat -> Reshape is exact);
this gives every value a concrete shape and dtype with the very kernels that will run it. With symbolic input
dimensions (or ops lowbit cannot run yet), ONNX's own shape inference (data propagation on) fills in what it can, keeping symbols.
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Graph

# Ops whose output shape depends on the *values* of these inputs (index -> which inputs). When such an input
# derives from graph-input values (not just their shapes), a zero-filled run would give a wrong shape.
_SHAPE_ARGS = {"Reshape": (1,), "Expand": (1,), "Tile": (1,), "ConstantOfShape": (0,), "Range": (0, 1, 2),
               "OneHot": (1,), "Slice": (1, 2, 3, 4), "Pad": (1, 3), "Resize": (1, 2, 3), "TopK": (1,),
               "Split": (1,), "Squeeze": (1,), "Unsqueeze": (1,), "NonZero": (0,), "Compress": (1,),
               "Unique": (0,), "Upsample": (1,), **{op: (1,) for op in (
                   "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
                   "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")}}


def value_dependent_shapes(graph: Graph) -> list[str]:
    """Names of nodes whose output shape depends on graph-input values (not only on input shapes)."""
    tainted = {id(v) for v in graph.inputs}
    found = []
    for node in graph.nodes:
        if node.domain == "" and any(id(v) in tainted for i in _SHAPE_ARGS.get(node.op_type, ())
                                     if (v := node.input(i)) is not None):
            found.append(node.name)
        if node.domain == "" and node.op_type in ("Shape", "Size"):
            continue  # depends on the shape only
        if any(v is not None and id(v) in tainted for v in node.inputs):
            tainted.update(id(v) for v in node.outputs)
    return found


def infer_shapes(graph: Graph) -> bool:
    """Set ``shape`` and ``dtype`` on every value; returns whether any shape or dtype changed."""
    from lowbit.runtime.registry import FLOAT_KERNELS
    if all(v.is_static and v.dtype is not None for v in graph.inputs) and \
            all(FLOAT_KERNELS.supports(n.op_type, n.domain) for n in graph.nodes) and \
            not value_dependent_shapes(graph):
        return _infer_by_execution(graph)
    return _infer_by_onnx(graph)


def _set(v, shape, dtype) -> bool:
    shape, dtype = tuple(shape), np.dtype(dtype)
    if v.shape == shape and v.dtype == dtype:
        return False
    v.shape, v.dtype = shape, dtype
    return True


def _infer_by_execution(graph: Graph) -> bool:
    from lowbit.runtime.float_executor import last_uses, run_node
    env = {id(v): np.zeros(v.shape, v.dtype) for v in graph.inputs}
    changed = False
    frees = last_uses(graph)
    for i, node in enumerate(graph.nodes):
        args = [None if v is None else (v.const if v.const is not None else env[id(v)]) for v in node.inputs]
        outs = run_node(node, args)
        for v, o in zip(node.outputs, outs):
            env[id(v)] = o
            changed |= _set(v, o.shape, o.dtype)
        for v in frees.get(i, ()):
            env.pop(id(v), None)
    return changed


def _infer_by_onnx(graph: Graph) -> bool:
    import onnx

    from lowbit.graph.onnx_export import to_onnx_model
    model = to_onnx_model(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    except Exception:
        return False
    changed = False
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        v = graph.values.get(vi.name)
        tt = vi.type.tensor_type
        if v is None or v.const is not None or not tt.elem_type:
            continue
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        shape = None
        if tt.HasField("shape"):
            shape = tuple(int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or "?")
                          for d in tt.shape.dim)
        if shape is not None and (v.shape != shape or v.dtype != dtype):
            v.shape, v.dtype = shape, np.dtype(dtype)
            changed = True
        elif v.dtype is None:
            v.dtype = np.dtype(dtype)
            changed = True
    return changed
