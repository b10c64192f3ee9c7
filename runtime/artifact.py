"""The compiled artifact: one file holding an integer graph, its packed weights, every tensor's quantization
spec, the precision plan and lowbit's version.

Format: an ONNX model (protobuf, so Netron opens it; no pickle, no code execution on load) whose arithmetic
nodes are in the ``lowbit.int`` domain. INT4 weights are ONNX INT4 tensors (two per byte, element 0 in the
low nibble). Each integer tensor's QuantSpec is JSON in its value_info's ``metadata_props`` ("lowbit.quant").
Model metadata: ``lowbit.format`` (FORMAT), ``lowbit.version``, ``lowbit.plan`` (JSON), ``lowbit.source``,
and ``lowbit.sha256``, a hash over the graph and the other metadata, verified on load: a tampered or
truncated file is refused.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from lowbit.errors import InputError, ModelError
from lowbit.graph.ir import Graph, set_const
from lowbit.quant.spec import QuantSpec, bias_spec

FORMAT = "lowbit-artifact/1"
_HASH_KEY = "lowbit.sha256"


def _digest(model: onnx.ModelProto) -> str:
    h = hashlib.sha256()
    h.update(model.graph.SerializeToString(deterministic=True))
    for p in sorted(model.metadata_props, key=lambda p: p.key):
        if p.key != _HASH_KEY:
            h.update(f"{p.key}={p.value}\n".encode())
    return h.hexdigest()


class Artifact:
    """An integer graph plus what produced it. ``run`` takes float inputs (quantized with each input's spec)
    or raw integers, and returns float outputs (or raw integers with ``raw=True``)."""

    def __init__(self, graph: Graph, plan: dict | None = None, source: str = ""):
        self.graph = graph
        self.plan = plan or {}
        self.source = source

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, inputs: Mapping[str, np.ndarray], raw: bool = False, stats: dict | None = None) -> dict:
        from lowbit.runtime.int_executor import run as run_int
        feeds = {}
        graph = self.graph
        for v in graph.inputs:
            if v.name not in inputs:
                raise InputError(f"inputs lack graph input '{v.name}'; they hold "
                                 f"{', '.join(repr(k) for k in inputs) or 'nothing'}")
            x = np.asarray(inputs[v.name])
            q = _input_quantizer(graph, v)
            if q is not None and x.dtype.kind in "iu":
                x = self._raw_input(v, q, x)
            feeds[v.name] = x
        outs = run_int(graph, feeds, stats=stats)
        if raw:
            return {k: self._raw_output(k, o) for k, o in outs.items()}
        return outs

    def _raw_input(self, v, quant_node, x):
        """An integer array given for a float input: taken as already-quantized codes (skip the Quantize)."""
        spec = quant_node.outputs[0].quant
        if x.dtype != spec.dtype:
            raise InputError(f"input '{v.name}' given as raw {x.dtype} codes; this artifact quantizes it to "
                             f"{spec.dtype} ({spec.describe()})")
        return spec.dequantize(x).astype(v.dtype or np.float32)

    def _raw_output(self, name: str, out: np.ndarray) -> np.ndarray:
        v = self.graph.value(name)
        p = v.producer
        if p is not None and p.op_type == "Dequantize" and p.inputs[0].quant is not None:
            return p.inputs[0].quant.quantize(out)
        return out

    # -- saving and loading ------------------------------------------------------------------------------------
    def to_onnx(self) -> onnx.ModelProto:
        from lowbit import __version__
        from lowbit.graph.onnx_export import to_onnx_model
        model = to_onnx_model(self.graph, producer="lowbit")
        four_bit = {v.name for v in self.graph.values.values()
                    if v.const is not None and v.quant is not None and v.quant.bits == 4}
        for init in model.graph.initializer:
            if init.name in four_bit:
                init.CopyFrom(_pack_int4(init))
        infos = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.input)
                 + list(model.graph.output)}
        derived = _derived_bias_specs(self.graph)
        for v in self.graph.values.values():
            if v.quant is None or id(v) in derived:
                continue
            vi = infos.get(v.name)
            if vi is None:
                vi = model.graph.value_info.add()
                vi.CopyFrom(onnx.helper.make_tensor_value_info(
                    v.name, onnx.helper.np_dtype_to_tensor_dtype(v.quant.dtype), list(v.shape or [])))
                infos[v.name] = vi
            vi.metadata_props.add(key="lowbit.quant", value=json.dumps(v.quant.to_dict(), separators=(",", ":")))
        for k, val in (("lowbit.format", FORMAT), ("lowbit.version", __version__),
                       ("lowbit.plan", json.dumps(self.plan, sort_keys=True)), ("lowbit.source", self.source)):
            model.metadata_props.add(key=k, value=val)
        model.metadata_props.add(key=_HASH_KEY, value=_digest(model))
        return model

    def save(self, path: str) -> None:
        from lowbit.tools.files import atomic_write_bytes
        atomic_write_bytes(path, self.to_onnx().SerializeToString())

    @classmethod
    def load(cls, path: str) -> "Artifact":
        if not os.path.isfile(path):
            raise ModelError(f"{path}: no such file")
        with open(path, "rb") as f:
            data = f.read()
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as e:
            raise ModelError(f"{path}: not a lowbit artifact (unreadable: {type(e).__name__}); is it truncated?") from None
        meta = {p.key: p.value for p in model.metadata_props}
        if meta.get("lowbit.format") != FORMAT:
            raise ModelError(f"{path}: not a lowbit artifact (format {meta.get('lowbit.format')!r}, expected "
                             f"{FORMAT!r}); compile a model with 'lowbit compile' first")
        if meta.get(_HASH_KEY) != _digest(model):
            raise ModelError(f"{path}: integrity check failed (content hash mismatch): the file was modified or "
                             f"truncated; recompile it")
        return cls(_graph_from_onnx(model, path), json.loads(meta.get("lowbit.plan") or "{}"),
                   meta.get("lowbit.source", ""))


def _input_quantizer(graph: Graph, v):
    """The Quantize node that reads float graph input ``v`` (if that is its only consumer)."""
    if len(v.consumers) == 1 and v.consumers[0].op_type == "Quantize":
        return v.consumers[0]
    return None


def _pack_int4(init: onnx.TensorProto) -> onnx.TensorProto:
    import ml_dtypes
    arr = numpy_helper.to_array(init)
    if arr.min(initial=0) < -8 or arr.max(initial=0) > 7:
        raise ModelError(f"tensor '{init.name}' is marked 4-bit but holds values outside [-8, 7]")
    return numpy_helper.from_array(arr.astype(ml_dtypes.int4), init.name)


def _graph_from_onnx(model: onnx.ModelProto, path: str) -> Graph:
    from lowbit.graph.onnx_import import from_onnx_model
    try:
        graph = from_onnx_model(model, native=lambda d, n: True, source=path)
    except Exception as e:
        if isinstance(e, ModelError):
            raise
        raise ModelError(f"{path}: damaged artifact ({e})") from None
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        for p in vi.metadata_props:
            if p.key == "lowbit.quant" and vi.name in graph.values:
                graph.values[vi.name].quant = QuantSpec.from_dict(json.loads(p.value))
    for v in graph.values.values():
        if v.const is not None and v.const.dtype.name == "int4":
            set_const(v, v.const.astype(np.int8))
    for node in graph.nodes:  # bias specs are derived, not stored: s_bias = s_input * s_weight
        b = node.input(2)
        if node.domain == "lowbit.int" and node.op_type in _LINEAR and b is not None and b.quant is None:
            x, w = node.inputs[0], node.inputs[1]
            if x.quant is not None and w.quant is not None:
                b.quant = bias_spec(float(x.quant.scale), w.quant, 64 if b.const.dtype == np.int64 else 32)
    return graph


_LINEAR = ("Conv", "FullyConnected")


def _derived_bias_specs(graph: Graph) -> set[int]:
    """ids of bias constants whose spec follows from their node's input and weight specs (not stored)."""
    out = set()
    for node in graph.nodes:
        b = node.input(2)
        if node.domain == "lowbit.int" and node.op_type in _LINEAR and b is not None and b.const is not None:
            out.add(id(b))
    return out
