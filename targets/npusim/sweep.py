"""Presets x precision plans in one call: compile the float model once per precision (one calibration run
shared by all of them), simulate each artifact on each accelerator, return one row per pair."""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np

from lowbit.targets.npusim.config import load_accelerator
from lowbit.targets.npusim.report import sweep_row
from lowbit.targets.npusim.simulate import SimReport, simulate


def activity_samples(calib: Mapping[str, np.ndarray], graph, count: int, source: str = "the samples") -> list[dict]:
    """The first ``count`` samples ([N, ...] per input) as single-sample input dicts (for measuring spiking
    activity)."""
    from lowbit.errors import InputError
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in calib]
    if missing:
        raise InputError(f"{source} has no array for graph input '{missing[0]}' (it holds "
                         f"{', '.join(sorted(calib)) or 'nothing'})")
    n = min(min(len(calib[k]) for k in names), count) if names else 0
    return [{k: calib[k][i:i + 1] for k in names} for i in range(n)]


def sweep(model: str, presets: Sequence[str], precisions: Sequence[str], calib: Mapping[str, np.ndarray],
          plan: str | None = None, samples: int = 8, calib_source: str = "calibration data",
          progress: Callable[[int, int], None] | None = None) -> list[tuple[str, str, SimReport, dict]]:
    from lowbit.quant.calibrate import calibrate
    from lowbit.quant.compile import bind_to_samples, compile_graph
    from lowbit.quant.plan import make_plan
    from lowbit.tools.api import load
    accels = [load_accelerator(p) for p in presets]   # a bad preset fails before any compiling
    plans = [make_plan(p, plan) for p in precisions]
    graph = load(model, optimize=False)
    bind_to_samples(graph, calib, calib_source)
    keep = any(pr.observer != "minmax" for pl in plans for pr in pl.resolve(graph).values())
    stats = calibrate(graph, calib, calib_source, None, keep_samples=keep)
    rows = []
    total, done = len(plans) * len(accels), 0
    for precision, pl in zip(precisions, plans):
        artifact, _ = compile_graph(load(model, optimize=False), calib, pl, model, calib_source, stats=stats)
        acts = activity_samples(calib, artifact.graph, samples)
        for name, accel in zip(presets, accels):
            report = simulate(artifact, accel, samples=acts)
            rows.append((name, precision, report, sweep_row(accel.name, precision, report)))
            done += 1
            if progress is not None:
                progress(done, total)
    return rows
