"""The one interface every deployment target implements.

A target says, as data, which integer-IR nodes it runs (``constraints``: each a small predicate whose
``message`` is what the user reads when a node fails it), partitions a graph into what runs on the accelerator
and what falls back to the CPU (``place``), writes its deployable file (``export``) and runs it (``run``).
Simulated NPUs add cost estimation elsewhere (targets/npusim).

    from lowbit.targets import get_target
    t = get_target("tflite")
    placement = t.place(artifact.graph)      # Placement: per node, target or CPU with the failed constraint
    t.export(artifact, "model.tflite")
    outputs = t.run("model.tflite", inputs)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

from lowbit.errors import LowbitError
from lowbit.graph.ir import Graph, Node
from lowbit.graph.stats import node_macs


@dataclass(frozen=True)
class Constraint:
    """One limit of a target. ``check(node) -> True`` when the node satisfies it; ``message`` is shown with
    the node's name when it does not (write it as the user should read it, e.g. "weights must be 8-bit")."""
    name: str
    message: str
    check: Callable[[Node], bool]
    ops: tuple[str, ...] = ()  # op types it applies to; empty = every op


@dataclass
class NodePlacement:
    node: str
    op: str
    on_target: bool
    reasons: list[str] = field(default_factory=list)
    macs: int = 0


@dataclass
class Placement:
    target: str
    nodes: list[NodePlacement]

    @property
    def on_target(self) -> list[NodePlacement]:
        return [n for n in self.nodes if n.on_target]

    @property
    def fallback(self) -> list[NodePlacement]:
        return [n for n in self.nodes if not n.on_target]

    @property
    def op_fraction(self) -> float:
        return len(self.on_target) / len(self.nodes) if self.nodes else 1.0

    @property
    def mac_fraction(self) -> float:
        total = sum(n.macs for n in self.nodes)
        return sum(n.macs for n in self.on_target) / total if total else self.op_fraction

    def summary(self) -> str:
        lines = [f"{self.target}: {len(self.on_target)}/{len(self.nodes)} ops ({100 * self.op_fraction:.1f} %) and "
                 f"{100 * self.mac_fraction:.1f} % of MACs on the target"]
        for n in self.fallback:
            lines.append(f"  CPU fallback: {n.op} node '{n.node}': {'; '.join(n.reasons)}")
        if not self.on_target and self.nodes:
            lines.append(f"  WARNING: nothing runs on {self.target}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"target": self.target, "op_fraction": self.op_fraction, "mac_fraction": self.mac_fraction,
                "nodes": [vars(n) for n in self.nodes]}


class Target:
    """Base class: subclasses set ``name``, ``description``, ``constraints`` and override export/run."""
    name = "target"
    description = ""
    constraints: tuple[Constraint, ...] = ()
    file_suffix = ""
    lowering_options: Mapping[str, object] = {}  # passed to quant.compile.compile_graph(options=...) for this target

    def check(self, node: Node) -> list[str]:
        """The messages of every constraint ``node`` fails (empty: the target runs it)."""
        failed = []
        for c in self.constraints:
            if c.ops and node.op_type not in c.ops:
                continue
            if not c.check(node):
                failed.append(c.message)
        return failed

    def place(self, graph: Graph) -> Placement:
        nodes = []
        for n in graph.nodes:
            reasons = self.check(n)
            nodes.append(NodePlacement(n.name, f"{n.domain}.{n.op_type}" if n.domain else n.op_type,
                                       not reasons, reasons, node_macs(n)))
        return Placement(self.name, nodes)

    def export(self, artifact, path: str) -> None:
        raise LowbitError(f"target '{self.name}' writes no deployable file")

    def run(self, path: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise LowbitError(f"target '{self.name}' cannot run files")


TARGETS: dict[str, Callable[[], Target]] = {}


def register_target(*names: str):
    def deco(factory):
        for n in names:
            TARGETS[n] = factory if len(names) == 1 else (lambda n=n: factory(n))
        return factory
    return deco


def get_target(name: str) -> Target:
    import lowbit.targets  # noqa: F401  (registers the built-in targets)
    if name not in TARGETS:
        raise LowbitError(f"unknown target '{name}'; choose one of {', '.join(sorted(TARGETS))}")
    return TARGETS[name]()
