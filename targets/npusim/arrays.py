"""Array models: how one kind of accelerator maps a Layer onto its compute units and memories.

An array model is registered under the ``[array] kind`` of an accelerator description (TOML) and supplies

    compute(layer, accel) -> Compute | None     cycles of the MAC array / vector unit for one layer
    traffic(layer, accel, residency) -> Traffic | None
                                                bytes each memory moves for the layer and its access cycles
    prepare(layers, accel) -> layers            optional: fusions the hardware does (an activation folded
                                                into the op before it becomes a "view" with extra["fused_into"])

Either may return None for a layer it does not price; the generic model (targets/npusim/generic.py) then
prices it. ``residency`` maps each activation tensor name to the memory holding it ("sram" or "dram", from the
arena planner) and ``"weights"`` to the memory holding constants. The simulator combines them per layer as

    op cycles = max(compute.cycles, max over memories of traffic.cycles[memory]) + accel.array.overhead_cycles

(Vela's per-op estimate: max of NPU cycles and each memory's access cycles), then overlaps weight DMA between
consecutive ops when the description asks for double buffering.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping


@dataclass(frozen=True)
class Compute:
    cycles: float
    unit: str = "array"                 # "array" (MAC array) or "vector" (element-wise / LUT unit)
    utilisation: float | None = None    # MACs / (cycles x peak MACs per cycle), for MAC layers


@dataclass(frozen=True)
class Traffic:
    bytes: dict[str, int] = field(default_factory=dict)      # memory name -> bytes read + written
    cycles: dict[str, float] = field(default_factory=dict)   # memory name -> access cycles
    weight_bytes: int = 0                                    # of which constants (DMA-able ahead of the op)
    detail: dict[str, int] = field(default_factory=dict)     # e.g. {"ifm_read": .., "ofm_write": .., "weights": ..}


ComputeFn = Callable[..., "Compute | None"]
TrafficFn = Callable[..., "Traffic | None"]


@dataclass(frozen=True)
class ArrayModel:
    kind: str
    compute: ComputeFn
    traffic: TrafficFn | None = None
    doc: str = ""
    validate: Callable | None = None   # validate(accel): raise ConfigError for a missing/bad array parameter
    prepare: Callable | None = None    # prepare(layers, accel) -> layers: the array's own fusions


ARRAY_MODELS: dict[str, ArrayModel] = {}


def register_array(kind: str, compute: ComputeFn, traffic: TrafficFn | None = None,
                   validate: Callable | None = None, prepare: Callable | None = None) -> ArrayModel:
    if kind in ARRAY_MODELS:
        raise RuntimeError(f"array model {kind!r} registered twice")
    model = ArrayModel(kind, compute, traffic, (compute.__doc__ or "").strip(), validate, prepare)
    ARRAY_MODELS[kind] = model
    return model


def residency_of(name: str, residency: Mapping[str, str], default: str = "sram") -> str:
    return residency.get(name, default)
