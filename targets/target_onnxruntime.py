"""The ONNX Runtime target: the integer program as a standard QDQ ONNX model (targets/qdq_writer.py), run by
ONNX Runtime's CPU execution provider.

    t = get_target("onnxruntime")
    t.export(artifact, "model_qdq.onnx")              # qnn=True: QNN EP's layout (uint8 / uint16 activations)
    t.run("model_qdq.onnx", {"image": x})             # float in, float out
    t.run("model_qdq.onnx", feeds, optimization="disabled")   # ORT's unfused Q/DQ semantics, op by op

ORT fuses DQ -> op -> Q into its int8 kernels (QLinearConv, QGemm, QLinearAdd, ...) when graph optimisations
are on (the default). Those kernels requantize in float and round half to even, unlike TFLite's integer
multiplier; docs/targets.md (onnxruntime) gives the measured LSB differences from lowbit's integer executor.
"""
from __future__ import annotations

import functools
import os
from typing import Mapping

import numpy as np

from lowbit.errors import InputError, LowbitError, ModelError
from lowbit.graph.ir import Node
from lowbit.runtime.registry import INT_DOMAIN
from lowbit.targets.base import Constraint, Target, register_target
from lowbit.targets.qdq_writer import HANDLERS, to_qdq_model

OPTIMIZATION = {"default": "ORT_ENABLE_ALL", "all": "ORT_ENABLE_ALL", "extended": "ORT_ENABLE_EXTENDED",
                "basic": "ORT_ENABLE_BASIC", "disabled": "ORT_DISABLE_ALL"}


def _has_rule(node: Node) -> bool:
    """lowbit.int ops need a QDQ rule; standard ONNX ops (data movement, float islands) are copied."""
    return node.domain != INT_DOMAIN or node.op_type in HANDLERS


def _bias_fits_int32(node: Node) -> bool:
    b = node.input(2)
    if b is None or b.const is None or b.const.dtype != np.int64:
        return True
    return bool(np.abs(b.const).max(initial=0) < 2 ** 31)


CONSTRAINTS = (
    Constraint("qdq_rule", "no QDQ form for this lowbit.int op (the export fails)", _has_rule),
    Constraint("bias_int32", "bias needs more than 32 bits: exported as a float bias (DequantizeLinear takes at "
               "most int32), so ORT runs this op in float", _bias_fits_int32, ("Conv", "FullyConnected")),
)


@register_target("onnxruntime")
class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    description = "standard QDQ ONNX model (opset 21) run by ONNX Runtime (fused int8 kernels where ORT has them)"
    constraints = CONSTRAINTS
    file_suffix = ".onnx"

    def export(self, artifact, path: str, qnn: bool = False) -> list[str]:
        """Write the QDQ model; returns the export notes (also in the model's ``lowbit.export_notes``)."""
        import onnx

        from lowbit.tools.files import atomic_write_bytes
        model = to_qdq_model(artifact.graph, qnn=qnn)
        for k, v in (("lowbit.source", artifact.source), ("lowbit.precision", str(artifact.plan.get("precision", "")))):
            model.metadata_props.add(key=k, value=v)
        onnx.checker.check_model(model)
        atomic_write_bytes(path, model.SerializeToString())
        notes = [p.value for p in model.metadata_props if p.key == "lowbit.export_notes"]
        return notes[0].splitlines() if notes else []

    def run(self, path: str, inputs: Mapping[str, np.ndarray], optimization: str = "default",
            outputs: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the model at ``path`` (one thread, CPU EP). ``optimization``: default | disabled | basic |
        extended. ``outputs``: names to fetch (the graph outputs by default)."""
        sess = session(str(path), optimization)
        feeds = {}
        for i in sess.get_inputs():
            if i.name not in inputs:
                raise InputError(f"inputs lack graph input '{i.name}' of {path}; they hold "
                                 f"{', '.join(repr(k) for k in inputs) or 'nothing'}")
            feeds[i.name] = np.asarray(inputs[i.name], _ORT_DTYPES.get(i.type, np.float32))
        names = outputs or [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, feeds)))


_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(int8)": np.int8, "tensor(uint8)": np.uint8,
               "tensor(int16)": np.int16, "tensor(uint16)": np.uint16, "tensor(int32)": np.int32,
               "tensor(int64)": np.int64, "tensor(bool)": np.bool_}


@functools.lru_cache(maxsize=16)
def _cached_session(path: str, mtime: float, optimization: str):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
    try:
        return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types
        raise ModelError(f"{path}: ONNX Runtime cannot load it: {str(e).splitlines()[0]}") from None


def session(path: str, optimization: str = "default"):
    """A one-thread CPU InferenceSession of ``path`` (cached while the file is unchanged)."""
    if optimization not in OPTIMIZATION:
        raise LowbitError(f"optimization must be one of {', '.join(OPTIMIZATION)}, got '{optimization}'")
    if not os.path.isfile(path):
        raise ModelError(f"{path}: no such file")
    return _cached_session(path, os.path.getmtime(path), optimization)


def ort_session_from_model(model, optimization: str = "default", optimized_path: str | None = None):
    """An uncached one-thread CPU session of an in-memory ModelProto (``optimized_path``: where ORT writes
    the graph it actually runs)."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if optimized_path:
        opts.optimized_model_filepath = optimized_path
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION[optimization])
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def compare_per_op(artifact, inputs: Mapping[str, np.ndarray], optimization: str = "default",
                   qnn: bool = False, kernels: bool = False) -> dict[str, dict]:
    """Each node of the integer graph exported alone (``qdq_writer.node_model``), run by ORT on the inputs
    lowbit's integer executor gave that node, and compared: {node name: {"op", "max_lsb", "mismatched",
    "size", and with ``kernels`` "ort_ops" (the op types ORT ran after its graph optimisations)}} for every
    node with an integer output. Differences do not propagate: this is each op's own error."""
    import tempfile

    from lowbit.runtime.int_executor import run as run_int
    from lowbit.targets.qdq_writer import node_model

    graph = artifact.graph
    values: dict[str, np.ndarray] = {v.name: np.asarray(inputs[v.name], np.float32) for v in graph.inputs}

    def observe(node, outs):
        for v, o in zip(node.outputs, outs):
            values[v.name] = np.asarray(o)
    run_int(graph, dict(values), observe=observe)
    report = {}
    for node in graph.nodes:
        outs = [v for v in node.outputs if _is_int(v)]
        if not outs:
            continue
        model = node_model(graph, node, qnn)
        entry = {"op": node.op_type}
        with tempfile.TemporaryDirectory() as tmp:
            sess = ort_session_from_model(model, optimization, f"{tmp}/opt.onnx" if kernels else None)
            if kernels:
                import onnx
                entry["ort_ops"] = sorted({n.op_type for n in onnx.load(f"{tmp}/opt.onnx").graph.node})
        feeds = {}
        for i in sess.get_inputs():
            name = i.name[:-len(":float")] if i.name.endswith(":float") else i.name
            v = graph.value(name)
            x = values[name]
            feeds[i.name] = v.quant.dequantize(x) if _is_int(v) else np.asarray(x, _ORT_DTYPES.get(i.type, x.dtype))
        got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
        worst, mism, size = 0, 0, 0
        for v in outs:
            d = np.abs(codes_of(got[f"{v.name}:float"], v.quant) - values[v.name].astype(np.int64))
            worst, mism, size = max(worst, int(d.max(initial=0))), mism + int(np.count_nonzero(d)), size + d.size
        report[node.name] = {**entry, "max_lsb": worst, "mismatched": mism, "size": size}
    return report


def codes_of(x: np.ndarray, spec) -> np.ndarray:
    """Integer codes of dequantized values (exact inverse of DequantizeLinear's float32 result)."""
    return np.rint(np.asarray(x, np.float64) / spec._bcast(spec.scale, np.ndim(x))).astype(np.int64) \
        + spec._bcast(spec.zero_point, np.ndim(x))


def _is_int(v) -> bool:
    return v.quant is not None and v.dtype is not None and np.dtype(v.dtype).kind in "iu"
