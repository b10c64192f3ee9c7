"""The Python API behind the CLI: load a model, run it."""
from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from lowbit.errors import ModelError
from lowbit.graph.ir import Graph


def load(path: str, shapes: dict[str, tuple] | None = None, optimize: bool = True) -> Graph:
    """Load a model file into a Graph.

    ``.onnx`` files are imported, their dynamic dimensions bound from ``shapes`` (input name -> tuple of ints)
    where given, and (with ``optimize``) canonicalised by the standard passes: shape inference, constant
    folding, dead-code removal, BatchNorm folding and pattern lifting.
    """
    ext = os.path.splitext(path)[1].lower()
    if ext == ".onnx":
        from lowbit.graph.onnx_import import load_onnx
        graph = load_onnx(path, shapes)
    else:
        raise ModelError(f"{path}: unknown model format '{ext or '(no extension)'}'; lowbit reads .onnx files")
    if optimize:
        from lowbit.graph.passes import optimize as run_passes
        run_passes(graph)
    return graph


def run(graph: Graph, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run a float graph on one set of inputs (name -> array); returns {output name: array}."""
    from lowbit.runtime.float_executor import run as run_float
    return run_float(graph, inputs)
