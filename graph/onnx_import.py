"""ONNX file -> lowbit Graph.

Takes files as exporters write them: opsets 9 to 21 and newer, weights in initializers, in ``Constant`` nodes
or computed by ``ConstantOfShape``, external-data files, initializers listed again as graph inputs (old
exporters), model-local functions (inlined unless lowbit runs the op natively, in which case the node stays
one op and the function is kept for export), and dynamic dimensions bound by ``shapes`` or left symbolic.
Old-opset nodes are rewritten into the canonical form (``onnx_upgrade``).
"""
from __future__ import annotations

import os
from typing import Callable

import numpy as np
import onnx
import onnx.inliner
from onnx import numpy_helper

from lowbit.errors import ModelError
from lowbit.graph.ir import Graph, Value
from lowbit.graph.onnx_upgrade import upgrade_node

NativeOp = Callable[[str, str], bool]


def _default_native(domain: str, name: str) -> bool:
    from lowbit.runtime.float_executor import FLOAT_KERNELS
    return FLOAT_KERNELS.supports(name, domain)


def read_onnx_model(path: str) -> onnx.ModelProto:
    """Parse an .onnx file (and its external data) or raise ModelError naming the file."""
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and friends
        raise ModelError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e}). "
                         f"Is the file truncated or of another format?") from None
    if not model.graph.node and not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph found); is the file truncated or of another format?")
    try:
        onnx.load_external_data_for_model(model, os.path.dirname(os.path.abspath(path)))
    except Exception as e:
        raise ModelError(f"{path}: cannot load its external weight data ({e}); keep the .data file "
                         f"next to the model") from None
    return model


def load_onnx(path: str, shapes: dict[str, tuple] | None = None, native: NativeOp | None = None) -> Graph:
    """Read an ONNX file into a Graph (no passes run; see ``lowbit.graph.passes``)."""
    return from_onnx_model(read_onnx_model(path), shapes, native, source=path)


def from_onnx_model(model: onnx.ModelProto, shapes: dict[str, tuple] | None = None,
                    native: NativeOp | None = None, source: str = "<model>") -> Graph:
    native = native or _default_native
    if model.functions:
        inline = [(f.domain, f.name) for f in model.functions if not native(f.domain, f.name)]
        kept = [f for f in model.functions if native(f.domain, f.name)]
        if inline:
            model = onnx.inliner.inline_selected_functions(model, inline, exclude=False)
    else:
        kept = []
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): o.version for o in model.opset_import}
    if "" not in opsets:
        raise ModelError(f"{source}: the model imports no default ONNX opset")
    graph = Graph(model.graph.name or os.path.splitext(os.path.basename(source))[0], opsets)
    graph.functions = kept
    graph.metadata = {p.key: p.value for p in model.metadata_props}
    _read_graph(graph, model.graph, source)
    default_opset = opsets[""]
    for node in list(graph.nodes):
        upgrade_node(graph, node, default_opset)
    graph.opsets[""] = max(default_opset, 21)
    if shapes:
        bind_input_shapes(graph, shapes)
    try:
        graph.toposort()
        graph.verify()
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{source}: {e}") from None
    return graph


def _read_graph(graph: Graph, g: onnx.GraphProto, source: str) -> None:
    for init in g.initializer:
        try:
            arr = numpy_helper.to_array(init)
        except Exception as e:
            raise ModelError(f"{source}: initializer '{init.name}' cannot be read ({e})") from None
        graph.add_const(init.name, arr)
    for sparse in g.sparse_initializer:
        raise ModelError(f"{source}: sparse initializer '{sparse.values.name}' is not supported; "
                         f"densify the model first")
    for vi in g.input:
        if vi.name in graph.values:  # an initializer listed as an input too (old exporters): a constant
            continue
        v = _value_from_info(graph, vi, source)
        graph.inputs.append(v)
    for vi in g.value_info:
        if vi.name not in graph.values:
            _value_from_info(graph, vi, source)
    for vi in g.output:
        if vi.name not in graph.values:
            _value_from_info(graph, vi, source)
    produced: dict[str, str] = {}
    for i, n in enumerate(g.node):  # outputs first, so that nodes may come in any order (toposort fixes it)
        for name in n.output:
            if not name:
                continue
            if name in produced or (name in graph.values and (graph.values[name].const is not None
                                                              or graph.values[name] in graph.inputs)):
                raise ModelError(f"{source}: value '{name}' is defined more than once (again by "
                                 f"{n.op_type} node '{n.name or i}')")
            produced[name] = n.name
            if name not in graph.values:
                graph.new_value(name)
    for i, n in enumerate(g.node):
        ins = []
        for name in n.input:
            if not name:
                ins.append(None)
                continue
            if name not in graph.values:
                raise ModelError(f"{source}: {n.op_type} node '{n.name or i}' reads '{name}', which no "
                                 f"initializer, graph input or node defines")
            ins.append(graph.values[name])
        outs = []
        for name in n.output:
            if not name:  # an omitted optional output: give it a private name so the IR stays simple
                name = f"{n.name or n.op_type}_unused_{len(outs)}"
            outs.append(graph.values.get(name) or graph.new_value(name))
        attrs = {a.name: _attr_value(a, source, n) for a in n.attribute}
        graph.add_node(n.op_type, ins, outs, attrs, name=graph.unique_node_name(n.name or f"{n.op_type}_{i}"),
                       domain=n.domain if n.domain != "ai.onnx" else "")
    for vi in g.output:
        graph.outputs.append(graph.values[vi.name])


def _value_from_info(graph: Graph, vi: onnx.ValueInfoProto, source: str) -> Value:
    shape, dtype = None, None
    t = vi.type
    if t.HasField("tensor_type"):
        tt = t.tensor_type
        if tt.elem_type:
            try:
                dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type))
            except Exception:
                raise ModelError(f"{source}: tensor '{vi.name}' has element type "
                                 f"{onnx.TensorProto.DataType.Name(tt.elem_type)}, which lowbit does not support") from None
        if tt.HasField("shape"):
            dims = []
            for k, d in enumerate(tt.shape.dim):
                if d.HasField("dim_value"):
                    dims.append(int(d.dim_value))
                else:
                    dims.append(d.dim_param or f"{vi.name}_dim{k}")
            shape = tuple(dims)
    v = graph.new_value(vi.name, shape, dtype)
    return v


def _attr_value(a: onnx.AttributeProto, source: str, n: onnx.NodeProto):
    A = onnx.AttributeProto
    if a.type == A.INT:
        return int(a.i)
    if a.type == A.FLOAT:
        return float(a.f)
    if a.type == A.STRING:
        return a.s.decode("utf-8", "replace")
    if a.type == A.INTS:
        return [int(x) for x in a.ints]
    if a.type == A.FLOATS:
        return [float(x) for x in a.floats]
    if a.type == A.STRINGS:
        return [x.decode("utf-8", "replace") for x in a.strings]
    if a.type == A.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type in (A.GRAPH, A.GRAPHS):
        return a.g if a.type == A.GRAPH else list(a.graphs)  # kept opaque; no float kernel takes subgraphs yet
    raise ModelError(f"{source}: attribute '{a.name}' of {n.op_type} node '{n.name}' has type "
                     f"{A.AttributeType.Name(a.type)}, which lowbit does not read")


def bind_input_shapes(graph: Graph, shapes: dict[str, tuple]) -> None:
    """Fix the graph inputs' shapes: ``shapes`` maps an input name to a tuple of ints.

    A symbolic dimension takes the given size; a fixed dimension must agree. Symbolic names bound here are
    substituted in every other value of the graph that uses the same name.
    """
    from lowbit.errors import InputError
    names = {v.name: v for v in graph.inputs}
    bound: dict[str, int] = {}
    for name, shape in shapes.items():
        if name not in names:
            raise InputError(f"--shape names '{name}', but the graph's inputs are "
                             f"{', '.join(names) or '(none)'}")
        v = names[name]
        shape = tuple(int(d) for d in shape)
        if v.shape is not None:
            if len(v.shape) != len(shape):
                raise InputError(f"input '{name}' has rank {len(v.shape)} {v.shape}; cannot bind it to {shape}")
            for d, s in zip(v.shape, shape):
                if isinstance(d, int) and d != s:
                    raise InputError(f"input '{name}' has fixed shape {v.shape}; cannot bind it to {shape}")
                if isinstance(d, str):
                    if bound.get(d, s) != s:
                        raise InputError(f"dimension '{d}' is bound to both {bound[d]} and {s}")
                    bound[d] = s
        v.shape = shape
    if bound:
        for v in graph.values.values():
            if v.shape is not None:
                v.shape = tuple(bound.get(d, d) if isinstance(d, str) else d for d in v.shape)
