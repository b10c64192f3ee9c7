"""Tensor-arena planning by liveness, as TFLite Micro's greedy memory planner does it.

Every activation tensor is a buffer alive from the op that writes it (graph inputs: from the start) to the
last op that reads it (graph outputs: to the end). Ops that only reinterpret a tensor (Reshape, Flatten,
Squeeze, Unsqueeze, Identity: Layer kind "view") alias their input: the two names share one buffer, whose
lifetime covers both. Buffers are placed largest first, each at the lowest offset where it overlaps no placed
buffer whose lifetime intersects its own (greedy by size). With a capacity (the SRAM), a buffer that finds no
room below it spills to DRAM instead.

Bounds, stated and tested:
* ``lower_bound`` = max over ops of the bytes alive during that op: no placement can use less, and it is never
  below the largest single op's working set (its inputs plus outputs).
* greedy-by-size is not always optimal; ``peak`` >= ``lower_bound``, and on the graphs in the tests it equals
  the hand-computed optimum.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from lowbit.targets.npusim.workload import Layer


@dataclass
class Buffer:
    name: str
    size: int
    first: int
    last: int
    offset: int | None = None       # None when spilled
    aliases: list[str] = field(default_factory=list)


@dataclass
class ArenaPlan:
    buffers: list[Buffer]
    peak: int                        # bytes of the arena (resident buffers)
    lower_bound: int                 # max bytes alive at once, over all buffers (resident or not)
    capacity: int | None
    residency: dict[str, str]        # tensor name -> "sram" | "dram"

    @property
    def spilled(self) -> list[Buffer]:
        return [b for b in self.buffers if b.offset is None]

    @property
    def spilled_bytes(self) -> int:
        return sum(b.size for b in self.spilled)


def lifetimes(layers: Sequence[Layer], graph_inputs: Iterable[str] = (), graph_outputs: Iterable[str] = (),
              sizes: dict[str, int] | None = None) -> list[Buffer]:
    """One Buffer per non-aliased tensor, with the op interval during which it must exist."""
    root: dict[str, str] = {}
    size: dict[str, int] = dict(sizes or {})
    first: dict[str, int] = {}
    last: dict[str, int] = {}

    def find(name: str) -> str:
        while name in root:
            name = root[name]
        return name

    for name in graph_inputs:
        first[name] = 0
        last[name] = 0
    for i, layer in enumerate(layers):
        shapes = layer.input_shapes
        for name, shape in zip(layer.inputs, shapes):
            r = find(name)
            first.setdefault(r, i)
            last[r] = max(last.get(r, i), i)
            if r not in size and shape:
                size[r] = _nbytes(shape, layer.act_bits)
        if layer.kind == "view" and layer.inputs:
            for out in layer.outputs:
                root[out] = find(layer.inputs[0])
            continue
        each = layer.ofm_bytes // max(len(layer.outputs), 1)
        for out in layer.outputs:
            first[out] = i
            last[out] = max(last.get(out, i), i)
            size.setdefault(out, each)
    end = max(len(layers) - 1, 0)
    for name in graph_outputs:
        last[find(name)] = end
    members: dict[str, list[str]] = {}
    for name, r in ((n, find(n)) for n in list(root)):
        members.setdefault(r, []).append(name)
    return [Buffer(n, size.get(n, 0), first[n], last[n], aliases=members.get(n, [])) for n in first
            if size.get(n, 0) > 0]


def _nbytes(shape, bits: int) -> int:
    return (int(np.prod(shape)) * bits + 7) // 8


def live_bytes(buffers: Sequence[Buffer], steps: int) -> np.ndarray:
    """Bytes alive during each op."""
    delta = np.zeros(steps + 2, dtype=np.int64)
    for b in buffers:
        delta[b.first] += b.size
        delta[b.last + 1] -= b.size
    return np.cumsum(delta)[:steps + 1]


def plan_arena(buffers: list[Buffer], capacity: int | None = None, steps: int | None = None) -> ArenaPlan:
    """Greedy by size: place each buffer (largest first, earliest first on ties) at the lowest free offset
    among the buffers it overlaps in time; spill it when that offset would cross ``capacity``."""
    steps = max((b.last for b in buffers), default=0) if steps is None else steps
    order = sorted(range(len(buffers)), key=lambda i: (-buffers[i].size, buffers[i].first, buffers[i].name))
    n = len(buffers)
    p_first = np.empty(n, dtype=np.int64)
    p_last = np.empty(n, dtype=np.int64)
    p_off = np.empty(n, dtype=np.int64)
    p_size = np.empty(n, dtype=np.int64)
    placed = 0
    peak = 0
    for i in order:
        b = buffers[i]
        overlap = (p_first[:placed] <= b.last) & (p_last[:placed] >= b.first)
        offsets, sizes = p_off[:placed][overlap], p_size[:placed][overlap]
        at = 0
        for j in np.argsort(offsets, kind="stable"):
            if offsets[j] - at >= b.size:
                break
            at = max(at, int(offsets[j] + sizes[j]))
        if capacity is not None and at + b.size > capacity:
            b.offset = None
            continue
        b.offset = at
        p_first[placed], p_last[placed], p_off[placed], p_size[placed] = b.first, b.last, at, b.size
        placed += 1
        peak = max(peak, at + b.size)
    bound = int(live_bytes(buffers, steps).max(initial=0)) if buffers else 0
    residency = {}
    for b in buffers:
        where = "sram" if b.offset is not None else "dram"
        residency[b.name] = where
        for a in b.aliases:
            residency[a] = where
    return ArenaPlan(buffers, peak, bound, capacity, residency)
