"""lowbit's graph IR: a Graph of Nodes connected by Values.

- ``Value``: one tensor edge. It has a name, a shape (a tuple; an entry may be a str for a dimension that is not
  bound yet), a NumPy dtype, at most one producer (a Node, or None for graph inputs and constants), its
  consumers, an optional constant payload (``const``, an initializer) and room for a quantization spec
  (``quant``), filled in by ``lowbit.quant``.
- ``Node``: one op. ``op_type`` and ``domain`` ("" for the ONNX default domain) select the kernel; ``inputs``
  holds Values or None for an omitted optional input; ``attrs`` maps ONNX attribute names to Python values
  (int, float, str, lists of those, np.ndarray for tensor attributes).
- ``Graph``: nodes kept in topological order, graph inputs and outputs, and the opsets the nodes follow.

The graph is edited through a few methods (``add_node``, ``remove_node``, ``replace_all_uses``) that keep
producer/consumer links right; ``verify`` checks every invariant and names the offending node or value.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from lowbit.errors import GraphError

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(eq=False)
class Value:
    name: str
    shape: Shape | None = None
    dtype: np.dtype | None = None
    const: np.ndarray | None = None
    producer: "Node | None" = field(default=None, repr=False)
    consumers: list["Node"] = field(default_factory=list, repr=False)
    quant: Any = None

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def is_static(self) -> bool:
        """True when every dimension of the shape is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)


def set_const(v: Value, array) -> None:
    """Make ``v`` a constant holding ``array``, read-only, so no kernel or pass can change a weight in place."""
    array = np.asarray(array)
    if array.flags.writeable:
        array = array.view()
        array.flags.writeable = False
    v.const, v.shape, v.dtype = array, tuple(array.shape), array.dtype


@dataclass(eq=False)
class Node:
    op_type: str
    name: str
    inputs: list[Value | None]
    outputs: list[Value]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    def input(self, i: int) -> Value | None:
        """The i-th input, or None when it is omitted or past the end."""
        return self.inputs[i] if i < len(self.inputs) else None

    def const_input(self, i: int) -> np.ndarray | None:
        v = self.input(i)
        return None if v is None else v.const

    def describe(self) -> str:
        op = f"{self.domain}.{self.op_type}" if self.domain else self.op_type
        return f"{op} node '{self.name}'"


class Graph:
    """A dataflow graph. ``nodes`` is kept in topological order by the editing methods and by ``toposort``."""

    def __init__(self, name: str = "graph", opsets: dict[str, int] | None = None):
        self.name = name
        self.nodes: list[Node] = []
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.values: dict[str, Value] = {}
        self.opsets: dict[str, int] = dict(opsets or {"": 21})
        self.functions: list[Any] = []  # ONNX FunctionProtos kept for export (ops lowbit runs natively)
        self.metadata: dict[str, str] = {}
        self.notes: list[str] = []  # things a user should be told about how the graph was read
        self._uid = itertools.count()

    # -- values ---------------------------------------------------------------------------------------------
    def value(self, name: str) -> Value:
        try:
            return self.values[name]
        except KeyError:
            raise GraphError(f"graph '{self.name}' has no value named '{name}'") from None

    def new_value(self, hint: str, shape: Shape | None = None, dtype=None) -> Value:
        """A fresh value whose name starts with ``hint`` and does not clash with any existing name."""
        name = hint
        while name in self.values:
            name = f"{hint}__{next(self._uid)}"
        v = Value(name, shape, None if dtype is None else np.dtype(dtype))
        self.values[name] = v
        return v

    def add_const(self, hint: str, array: np.ndarray) -> Value:
        v = self.new_value(hint)
        set_const(v, array)
        return v

    @property
    def constants(self) -> list[Value]:
        return [v for v in self.values.values() if v.const is not None]

    # -- nodes ----------------------------------------------------------------------------------------------
    def unique_node_name(self, hint: str) -> str:
        taken = {n.name for n in self.nodes}
        name = hint
        while name in taken or not name:
            name = f"{hint or 'node'}__{next(self._uid)}"
        return name

    def add_node(self, op_type: str, inputs: Iterable[Value | None], outputs: Iterable[Value], attrs=None,
                 name: str = "", domain: str = "", before: Node | None = None) -> Node:
        """Append a node (or insert it before ``before``) and link its producer/consumer edges."""
        node = Node(op_type, name or self.unique_node_name(op_type), list(inputs), list(outputs),
                    dict(attrs or {}), domain)
        for v in node.inputs:
            if v is not None:
                v.consumers.append(node)
        for v in node.outputs:
            if v.producer is not None:
                raise GraphError(f"value '{v.name}' is produced by both {v.producer.describe()} "
                                 f"and {node.describe()}")
            v.producer = node
            self.values.setdefault(v.name, v)
        if before is None:
            self.nodes.append(node)
        else:
            self.nodes.insert(self.nodes.index(before), node)
        return node

    def remove_node(self, node: Node) -> None:
        """Unlink and drop a node; its outputs lose their producer (callers re-route their uses first)."""
        for v in node.inputs:
            if v is not None and node in v.consumers:
                v.consumers.remove(node)
        for v in node.outputs:
            if v.producer is node:
                v.producer = None
        self.nodes.remove(node)

    def set_input(self, node: Node, i: int, value: Value | None) -> None:
        old = node.inputs[i]
        if old is not None and node in old.consumers:
            old.consumers.remove(node)
        node.inputs[i] = value
        if value is not None:
            value.consumers.append(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every consumer of ``old`` (and the graph outputs) read ``new`` instead."""
        for node in list(old.consumers):
            for i, v in enumerate(node.inputs):
                if v is old:
                    self.set_input(node, i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def bypass(self, node: Node, src: Value) -> bool:
        """Remove single-output ``node`` by making the readers of its output read ``src`` instead.

        A graph output keeps its name: ``src`` is renamed to it when nothing else depends on ``src``'s name
        (it is no graph input, output or constant and ``node`` is its only reader); otherwise the node stays
        and False is returned.
        """
        out = node.outputs[0]
        if out in self.outputs:
            if src.producer is None or src in self.outputs or src.consumers != [node]:
                return False
            self.remove_node(node)
            self.outputs = [src if v is out else v for v in self.outputs]
            del self.values[src.name]
            self.values.pop(out.name, None)
            src.name = out.name
            src.shape = src.shape if src.shape is not None else out.shape
            self.values[src.name] = src
            return True
        self.replace_all_uses(out, src)
        self.remove_node(node)
        return True

    def prune_values(self) -> None:
        """Forget values that nothing produces, consumes or exposes (left over after edits)."""
        keep = {v.name for v in self.inputs} | {v.name for v in self.outputs}
        for n in self.nodes:
            keep.update(v.name for v in n.inputs if v is not None)
            keep.update(v.name for v in n.outputs)
        self.values = {k: v for k, v in self.values.items() if k in keep}

    def toposort(self) -> None:
        """Order nodes so that every node follows the producers of its inputs (stable otherwise)."""
        order: list[Node] = []
        state: dict[int, int] = {}  # 1 = on the stack, 2 = done
        for root in self.nodes:
            if state.get(id(root)) == 2:
                continue
            stack = [(root, iter(root.inputs))]
            state[id(root)] = 1
            while stack:
                node, it = stack[-1]
                for v in it:
                    p = None if v is None else v.producer
                    if p is None or state.get(id(p)) == 2:
                        continue
                    if state.get(id(p)) == 1:
                        raise GraphError(f"the graph has a cycle through {p.describe()} "
                                         f"(value '{v.name}')")
                    state[id(p)] = 1
                    stack.append((p, iter(p.inputs)))
                    break
                else:
                    stack.pop()
                    state[id(node)] = 2
                    order.append(node)
        self.nodes = order

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}.{n.op_type}" if n.domain else n.op_type
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))

    # -- invariants -----------------------------------------------------------------------------------------
    def verify(self) -> None:
        """Check the invariants; raise GraphError naming the first violation.

        Every value is defined once (a graph input, a constant or one node output), every use is defined
        earlier in node order (which also rules out cycles), producer/consumer links agree with the nodes,
        graph outputs are defined, and constants' shapes and dtypes agree with their payloads.
        """
        defined: set[int] = set()
        for v in self.inputs:
            if v.producer is not None or v.const is not None:
                raise GraphError(f"graph input '{v.name}' must not also be produced by a node or a constant")
            defined.add(id(v))
        for v in self.values.values():
            if v.const is not None:
                if v.producer is not None:
                    raise GraphError(f"constant '{v.name}' is also produced by {v.producer.describe()}")
                if v.shape is not None and tuple(v.shape) != tuple(v.const.shape):
                    raise GraphError(f"constant '{v.name}' is declared {v.shape} but holds {v.const.shape}")
                if v.dtype is not None and np.dtype(v.dtype) != v.const.dtype:
                    raise GraphError(f"constant '{v.name}' is declared {v.dtype} but holds {v.const.dtype}")
                defined.add(id(v))
        names: set[str] = set()
        for node in self.nodes:
            if node.name in names:
                raise GraphError(f"two nodes are named '{node.name}'")
            names.add(node.name)
            for v in node.inputs:
                if v is None:
                    continue
                if id(v) not in defined:
                    what = "is produced later (the graph has a cycle or is out of order)" if v.producer \
                        else "is never defined"
                    raise GraphError(f"{node.describe()} reads value '{v.name}', which {what}")
                if node not in v.consumers:
                    raise GraphError(f"value '{v.name}' does not list its consumer {node.describe()}")
            for v in node.outputs:
                if id(v) in defined:
                    raise GraphError(f"value '{v.name}' is defined more than once "
                                     f"(again by {node.describe()})")
                if v.producer is not node:
                    raise GraphError(f"value '{v.name}' does not name {node.describe()} as its producer")
                defined.add(id(v))
        for v in self.outputs:
            if id(v) not in defined:
                raise GraphError(f"graph output '{v.name}' is never defined")
        node_ids = {id(n) for n in self.nodes}
        for v in self.values.values():
            for c in v.consumers:
                if id(c) not in node_ids:
                    raise GraphError(f"value '{v.name}' lists a consumer '{c.name}' that is not in the graph")
