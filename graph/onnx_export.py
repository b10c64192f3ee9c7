"""lowbit Graph -> ONNX ModelProto / file.

Writes the canonical (opset >= 21) form the importer produces, with constants as initializers, every known
shape as value_info, and the model-local functions of natively-run ops, so ONNX Runtime can run the file. A
function whose body was written for an older default opset (the zoo's bodies are opset 17) is converted to the
model's opset with ONNX's version converter: ONNX Runtime inlines bodies under the model's opset and refuses
e.g. an opset-17 ``ReduceMean`` with an ``axes`` attribute there.
Files are written atomically: a failed export never leaves a half-written file.
"""
from __future__ import annotations

import warnings

import numpy as np
import onnx
from onnx import helper, numpy_helper, version_converter

from lowbit.graph.ir import Graph, Value
from lowbit.tools.files import atomic_write_bytes


def _value_info(v: Value) -> onnx.ValueInfoProto:
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype)) if v.dtype is not None else onnx.TensorProto.UNDEFINED
    shape = None if v.shape is None else [d if isinstance(d, int) else str(d) for d in v.shape]
    return helper.make_tensor_value_info(v.name, elem, shape)


def _attr(name: str, value):
    if isinstance(value, np.ndarray):
        return helper.make_attribute(name, numpy_helper.from_array(value))
    return helper.make_attribute(name, value)


def to_onnx_model(graph: Graph, producer: str = "lowbit") -> onnx.ModelProto:
    used_consts = {}
    for n in graph.nodes:
        for v in n.inputs:
            if v is not None and v.const is not None:
                used_consts[v.name] = v
    for v in graph.outputs:
        if v.const is not None:
            used_consts[v.name] = v
    nodes = []
    for n in graph.nodes:
        nodes.append(helper.make_node(
            n.op_type, [v.name if v is not None else "" for v in n.inputs], [v.name for v in n.outputs],
            name=n.name, domain=n.domain))
        # attributes starting with "_" are run-time caches of a kernel, never part of the model
        nodes[-1].attribute.extend(_attr(k, a) for k, a in n.attrs.items() if not k.startswith("_"))
    inits = [numpy_helper.from_array(np.asarray(v.const), v.name) for v in used_consts.values()]
    internal = [v for n in graph.nodes for v in n.outputs
                if v.dtype is not None and v not in graph.outputs]
    g = helper.make_graph(nodes, graph.name, [_value_info(v) for v in graph.inputs],
                          [_value_info(v) for v in graph.outputs], initializer=inits,
                          value_info=[_value_info(v) for v in internal])
    opsets = [helper.make_opsetid(d, ver) for d, ver in graph.opsets.items()]
    used_domains = {n.domain for n in graph.nodes} | {f.domain for f in graph.functions}
    for d in used_domains - set(graph.opsets):
        opsets.append(helper.make_opsetid(d, 1))
    functions = [_at_opset(f, graph.opsets.get("", 21)) for f in graph.functions]
    model = helper.make_model(g, opset_imports=opsets, producer_name=producer, functions=functions)
    # the lowest IR version that carries these opsets, so that older runtimes still open the file
    model.ir_version = max(helper.find_min_ir_version_for(opsets, ignore_unknown=True), 8 if graph.functions else 3)
    for k, val in graph.metadata.items():
        model.metadata_props.add(key=k, value=val)
    return model


def _at_opset(f: onnx.FunctionProto, version: int) -> onnx.FunctionProto:
    """``f`` with its body in default-opset ``version`` (converted by ONNX's version converter when it imports
    another one); unchanged, with a warning naming it, when the converter cannot convert the body."""
    own = {o.domain: o.version for o in f.opset_import}
    if own.get("", version) == version:
        return f
    untyped = onnx.TensorProto.UNDEFINED
    body = helper.make_graph(list(f.node), f.name, [helper.make_tensor_value_info(i, untyped, None) for i in f.input],
                             [helper.make_tensor_value_info(o, untyped, None) for o in f.output])
    try:
        converted = version_converter.convert_version(helper.make_model(body, opset_imports=list(f.opset_import)),
                                                      version)
    except Exception as e:  # the converter raises RuntimeError/ConvertError subclasses with its own message
        warnings.warn(f"function {f.domain}.{f.name}: its opset-{own['']} body could not be converted to opset "
                      f"{version} ({e}); ONNX Runtime may refuse the exported file")
        return f
    # the converter drops attribute references (@epsilon becomes 0): put them back on the node that makes the
    # same outputs; a body where that is not possible is left as it was
    refs = {tuple(n.output): [a for a in n.attribute if a.ref_attr_name] for n in f.node}
    nodes = list(converted.graph.node)
    for n in nodes:
        for ref in refs.pop(tuple(n.output), []):
            kept = [a for a in n.attribute if a.name != ref.name]
            del n.attribute[:]
            n.attribute.extend(kept + [ref])
    if any(refs.values()):
        warnings.warn(f"function {f.domain}.{f.name}: attribute references lost converting its opset-{own['']} "
                      f"body to opset {version}; exported unconverted, ONNX Runtime may refuse the file")
        return f
    out = onnx.FunctionProto()
    out.CopyFrom(f)
    del out.node[:]
    out.node.extend(nodes)
    del out.opset_import[:]
    out.opset_import.extend(converted.opset_import)
    return out


def save_onnx(graph: Graph, path: str) -> None:
    """Write the graph as an ONNX file (atomically; large models beyond 2 GB are not supported)."""
    model = to_onnx_model(graph)
    atomic_write_bytes(path, model.SerializeToString())
