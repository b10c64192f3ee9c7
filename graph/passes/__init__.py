"""Graph passes: small ``Graph -> changed?`` functions run in explicit, ordered lists.

``optimize`` runs ``DEFAULT_PASSES`` in order, repeating the list until nothing changes (bounded), then
re-infers shapes unless the last round (shape inference included) changed nothing. Every pass edits the graph in place and returns whether it changed anything.
"""
from __future__ import annotations

from typing import Callable

from lowbit.graph.ir import Graph
from lowbit.graph.passes.cleanup import lift_constant_nodes, remove_dead_nodes, remove_identities
from lowbit.graph.passes.fold import fold_batchnorm, fold_channel_affine, fold_constants
from lowbit.graph.passes.lift import lift_gelu, lift_layernorm
from lowbit.graph.passes.shapes import infer_shapes

Pass = Callable[[Graph], bool]

DEFAULT_PASSES: list[Pass] = [
    lift_constant_nodes,
    remove_identities,
    infer_shapes,
    fold_constants,
    remove_dead_nodes,
    fold_batchnorm,
    fold_channel_affine,
    lift_layernorm,
    lift_gelu,
    remove_dead_nodes,
]


def optimize(graph: Graph, passes: list[Pass] | None = None, max_rounds: int = 4) -> list[str]:
    """Run ``passes`` (default: DEFAULT_PASSES) until a round changes nothing; return the names of the passes
    that changed the graph, in order."""
    changed_by: list[str] = []
    settled = False
    for _ in range(max_rounds):
        changed = False
        for p in passes or DEFAULT_PASSES:
            if p(graph):
                changed = True
                changed_by.append(p.__name__)
        if not changed:
            settled = True
            break
    graph.prune_values()
    if not settled or infer_shapes not in (passes or DEFAULT_PASSES):
        infer_shapes(graph)  # a round that changed nothing already left every shape inferred
    return changed_by


__all__ = ["optimize", "DEFAULT_PASSES", "infer_shapes", "fold_constants", "remove_dead_nodes",
           "remove_identities", "lift_constant_nodes", "fold_batchnorm", "fold_channel_affine",
           "lift_layernorm", "lift_gelu"]
