"""The Python API behind the CLI: load a model, run it."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from lowbit.errors import ModelError
from lowbit.graph.ir import Graph


def load(path: str, shapes: dict[str, tuple] | None = None, optimize: bool = True,
         bind_unknown: bool = False) -> Graph:
    """Load a model file into a Graph.

    ``.onnx`` files are imported, their dynamic dimensions bound from ``shapes`` (input name -> tuple of ints)
    where given, and (with ``optimize``) canonicalised by the standard passes: shape inference, constant
    folding, dead-code removal, BatchNorm folding and pattern lifting. With ``bind_unknown``, dynamic input
    dimensions still unbound are taken as 1 (noted in ``graph.notes``), so every shape is known.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        from lowbit.graph.onnx_import import load_onnx
        graph = load_onnx(path, shapes)
    elif ext == ".tflite":  # an already-quantized model: its integer graph, as imported (no float passes)
        from lowbit.graph.tflite import load_tflite
        return load_tflite(path)
    else:
        raise ModelError(f"{path}: unknown model format '{ext or '(no extension)'}'; lowbit reads .onnx and "
                         f".tflite files")
    if bind_unknown:
        bind_remaining_dims(graph)
    if optimize:
        from lowbit.graph.passes import optimize as run_passes
        run_passes(graph)
    return graph


def bind_remaining_dims(graph: Graph, size: int = 1) -> None:
    """Bind every still-symbolic input dimension to ``size``, noting each in ``graph.notes``."""
    from lowbit.graph.onnx_import import bind_input_shapes
    shapes = {}
    for v in graph.inputs:
        if v.shape is not None and not v.is_static:
            shapes[v.name] = tuple(d if isinstance(d, int) else size for d in v.shape)
            for d in v.shape:
                if isinstance(d, str):
                    graph.notes.append(f"dimension '{d}' of input '{v.name}' taken as {size} "
                                       f"(bind it with --shape {v.name}=...)")
    if shapes:
        bind_input_shapes(graph, shapes)


def run(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a float graph on one set of inputs (name -> array); returns {output name: array}."""
    from lowbit.runtime.float_executor import run as run_float
    return run_float(graph, inputs)


def is_artifact(path: str) -> bool:
    """True when ``path`` is an ONNX file written by ``lowbit compile`` (reads only the metadata)."""
    import onnx
    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return False
    return any(p.key == "lowbit.format" for p in model.metadata_props)


def load_program(path: str, shapes: dict[str, tuple] | None = None):
    """A runnable program from a file: an Artifact (compiled .onnx, or a quantized .tflite imported as-is)
    or, for a plain .onnx model, its float Graph."""
    from lowbit.runtime.artifact import Artifact
    ext = os.path.splitext(path)[1].lower()
    if ext == ".tflite":
        from lowbit.graph.tflite import load_tflite
        return Artifact(load_tflite(path), {"precision": "from .tflite"}, path)
    if ext == ".onnx" and os.path.isfile(path) and is_artifact(path):
        return Artifact.load(path)
    return load(path, shapes, optimize=False)


def compare(model: str, calib, evalset, precisions=("w8a8", "w4a8", "w8a16", "w4a16"), plan: str | None = None,
            target: str | None = None) -> dict:
    """Per-layer and end-to-end quantization error of ``model`` at each precision (see quant/compare.py).

    ``calib`` and ``evalset`` are .npz paths or dicts of [N, ...] arrays (``evalset`` may hold ``labels``);
    ``target`` (e.g. "tflite") measures the integers that target's lowering gives."""
    from lowbit.quant.compare import compare as run_compare
    from lowbit.tools.files import load_npz
    calib_source = calib if isinstance(calib, str) else "calibration data"
    eval_source = evalset if isinstance(evalset, str) else "evaluation data"
    calib = load_npz(calib) if isinstance(calib, str) else calib
    evalset = load_npz(evalset) if isinstance(evalset, str) else evalset
    options = None
    if target is not None:
        from lowbit.targets import get_target
        options = dict(getattr(get_target(target), "lowering_options", None) or {})
    return run_compare(load(model, optimize=False), calib, evalset, list(precisions), plan,
                       calib_source=calib_source, eval_source=eval_source, options=options)


def simulate(model, npu="ethos-u55-128", samples=None):
    """Simulate a compiled model on an NPU preset or description file (or an ``Accelerator``); returns a
    SimReport (``.table()``, ``.totals``, ``.to_dict()``). ``model``: an Artifact or a path to an artifact /
    int8 .tflite. ``samples``: input dicts on which spiking layers' activity is measured."""
    from lowbit.errors import LowbitError
    from lowbit.runtime.artifact import Artifact
    from lowbit.targets.npusim import load_accelerator, simulate as run_simulation
    program = load_program(model) if isinstance(model, str) else model
    if not isinstance(program, Artifact):
        raise LowbitError(f"{model}: simulate needs a compiled model (lowbit.compile or an int8 .tflite), "
                          f"not a float graph")
    accel = load_accelerator(npu) if isinstance(npu, str) else npu
    report = run_simulation(program, accel, samples=samples)
    if isinstance(model, str):
        report.model = os.path.basename(model)
    return report
