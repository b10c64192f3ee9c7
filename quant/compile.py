"""compile: float model + calibration data + precision plan -> Artifact (the integer program)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from lowbit.errors import InputError
from lowbit.graph.ir import Graph
from lowbit.quant.calibrate import calibrate, iter_samples
from lowbit.quant.lower import lower
from lowbit.quant.plan import Plan, make_plan
from lowbit.runtime.artifact import Artifact


def bind_to_samples(graph: Graph, calib: Mapping[str, np.ndarray], source: str) -> None:
    """Bind still-dynamic input dimensions to the shape of one calibration sample, then run the passes."""
    from lowbit.graph.onnx_import import bind_input_shapes
    from lowbit.graph.passes import optimize
    first = next(iter(iter_samples(calib, graph, source)), None)
    if first is None:
        raise InputError(f"{source} holds no samples")
    dynamic = {v.name: first[v.name].shape for v in graph.inputs if not v.is_static}
    if dynamic:
        bind_input_shapes(graph, dynamic)
    optimize(graph)


def compile_graph(graph: Graph, calib: Mapping[str, np.ndarray], plan: Plan | str = "w8a8",
                  source: str = "", calib_source: str = "calibration data",
                  progress: Callable[[int, int], None] | None = None, stats=None,
                  options: dict | None = None) -> tuple[Artifact, object]:
    """Calibrate ``graph`` (a float graph; dynamic dims are bound from the samples) and lower it.

    Returns (artifact, lowered) where ``lowered`` also tells which float value each integer value stands for
    and which nodes stayed float. Pass ``stats`` from an earlier calibration to reuse it.
    """
    if isinstance(plan, str):
        plan = make_plan(plan)
    bind_to_samples(graph, calib, calib_source)
    if (options or {}).get("layer_norm") == "ops":  # the tflite target's: no LayerNorm builtin there
        from lowbit.graph.passes.decompose import decompose_layer_norm
        if decompose_layer_norm(graph):
            stats = None  # its intermediate tensors need ranges of their own
    precisions = plan.resolve(graph)
    if stats is None:
        needs_samples = any(p.observer != "minmax" for p in precisions.values())
        stats = calibrate(graph, calib, calib_source, progress, keep_samples=needs_samples)
    lowered = lower(graph, stats, precisions, options)
    meta = {"precision": plan.default.name, "plan": plan.describe(), "observer": plan.default.observer,
            "float_islands": lowered.float_islands, "options": dict(options or {})}
    return Artifact(lowered.graph, meta, source), lowered


def compile(model: str, calib: Mapping[str, np.ndarray] | str, precision: str = "w8a8", plan: str | None = None,
            observer: str | None = None, progress=None, target: str | None = None) -> Artifact:
    """Compile a model file to an integer Artifact. ``calib`` is an .npz path or a dict of [N, ...] arrays;
    ``target`` (e.g. "tflite") selects the arithmetic variants that target's runtime uses."""
    from lowbit.tools.api import load
    from lowbit.tools.files import load_npz
    calib_source = calib if isinstance(calib, str) else "calibration data"
    if isinstance(calib, str):
        calib = load_npz(calib)
    options = None
    if target is not None:
        from lowbit.targets import get_target
        options = getattr(get_target(target), "lowering_options", None)
    graph = load(model, optimize=False)
    artifact, _ = compile_graph(graph, calib, make_plan(precision, plan, observer), model, calib_source, progress,
                                options=options)
    return artifact
