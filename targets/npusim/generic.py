"""The generic cost models every accelerator falls back on, and two array models built from them.

Vector unit (any layer an array model does not price): ``work(layer) / elements_per_cycle[a<bits>]`` cycles
(``lut_elements_per_cycle`` for activations when the description gives it), where the work per kind is

    elementwise, activation, convert   output elements
    pool                               output elements x window (kh·kw)
    reduce                             input elements
    softmax                            3 x input elements   (max, exp + sum through a LUT, normalise)
    norm                               3 x input elements   (mean, variance, normalise)
    neuron (LIF)                       2 x output elements  (leak + integrate, threshold + reset)
    recurrent (no GEMM view)           MACs, or 2 x output elements when there are none, step by step
    view, copy                         nothing (copies cost memory traffic only)

Array kinds registered here:

* ``tiled`` — a matrix unit that computes (tile_m x tile_n x tile_k) blocks (HMX-like): a GEMM of M, N, K
  takes ceil(M/tm)·ceil(N/tn)·ceil(K/tk) blocks of tm·tn·tk / macs_per_cycle cycles each, so utilisation
  falls with ragged shapes. Depthwise convolutions put channels on N and the window on K.
* ``neuromorphic`` — an event-driven core: spike-input layers cost measured accumulates / acs_per_cycle (dense
  MACs when no calibration run measured them); other MAC layers cost MACs / macs_per_cycle.

Default traffic (``default_traffic``): each activation input is read once from the memory holding it, each
output written once, constants read from the weight memory. When a MAC layer's weights exceed half the SRAM
they are streamed in chunks and the input is re-read once per chunk. Access cycles per memory are
bytes / bytes_per_cycle + latency.
"""
from __future__ import annotations

import math
from typing import Mapping

from lowbit.errors import ConfigError
from lowbit.targets.npusim.arrays import Compute, Traffic, register_array
from lowbit.targets.npusim.workload import Layer

VECTOR_WORK = {
    "elementwise": lambda l: l.elements,
    "activation": lambda l: l.elements,
    "convert": lambda l: l.elements,
    "pool": lambda l: l.elements * (l.conv.kh * l.conv.kw if l.conv else 1),
    "reduce": lambda l: sum(math.prod(s) for s in l.input_shapes[:1]) or l.elements,
    "softmax": lambda l: 3 * (sum(math.prod(s) for s in l.input_shapes[:1]) or l.elements),
    "norm": lambda l: 3 * (sum(math.prod(s) for s in l.input_shapes[:1]) or l.elements),
    "neuron": lambda l: 2 * l.elements,
    "recurrent": lambda l: l.macs or 2 * l.elements,
    "view": lambda l: 0,
    "copy": lambda l: 0,
}


def vector_compute(layer: Layer, accel) -> Compute | None:
    """Cycles of the vector unit; None when the kind is not vector work or the unit lacks the bit width."""
    work = VECTOR_WORK.get(layer.kind)
    if work is None:
        return None
    n = work(layer)
    if n == 0:
        return Compute(0.0, "none")
    # Quantize / Dequantize run at their integer side's width; other ops at their widest integer tensor
    pick = min if layer.kind == "convert" else max
    rate = accel.vector.rate(pick(layer.act_bits, layer.out_bits), lut=layer.kind == "activation")
    if rate is None:
        return None
    steps = layer.steps if layer.kind == "recurrent" else 1
    return Compute(steps * math.ceil(n / steps / rate) + accel.vector.overhead_cycles, "vector")


def _rate(layer: Layer, accel) -> float | None:
    return accel.macs_per_cycle(layer.precision)


# -- tiled matrix unit ---------------------------------------------------------------------------------------
def tiled_compute(layer: Layer, accel) -> Compute | None:
    """Blocks of tile_m x tile_n x tile_k; ragged edges waste the rest of the block."""
    if layer.gemm is None or not layer.mac_kind and layer.kind != "recurrent":
        return None
    rate = _rate(layer, accel)
    if rate is None:
        return None
    p = accel.array.params
    tm, tn, tk = p["tile_m"], p["tile_n"], p["tile_k"]
    g = layer.gemm
    if layer.kind == "depthwise":  # channels side by side on N, the window on K
        blocks = math.ceil(g.m / tm) * math.ceil(g.batch * g.n / tn) * math.ceil(g.k / tk)
    else:
        blocks = g.batch * math.ceil(g.m / tm) * math.ceil(g.n / tn) * math.ceil(g.k / tk)
    cycles = blocks * tm * tn * tk / rate
    return Compute(cycles, "array", layer.macs / (cycles * rate) if cycles else None)


def _validate_tiled(accel) -> None:
    for key in ("tile_m", "tile_n", "tile_k"):
        v = accel.array.params.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{accel.source}: field 'array.{key}' must be a positive integer "
                              f"(array.kind = \"tiled\"), got {v!r}")


# -- event-driven (neuromorphic) core ------------------------------------------------------------------------
def neuromorphic_compute(layer: Layer, accel) -> Compute | None:
    """Spike inputs: accumulates / acs_per_cycle; dense MAC layers: MACs / macs_per_cycle."""
    if not (layer.mac_kind or layer.kind == "recurrent" and layer.gemm is not None):
        return None
    if layer.spike_input and accel.array.event_driven:
        work = layer.acs if layer.acs or layer.firing_rate is not None else layer.macs
        cycles = math.ceil(work / accel.array.acs_per_cycle)
        return Compute(cycles, "array", None)
    rate = _rate(layer, accel)
    if rate is None:
        return None
    cycles = math.ceil(layer.macs / rate)
    return Compute(cycles, "array", 1.0 if cycles else None)


# -- traffic -------------------------------------------------------------------------------------------------
def access_cycles(accel, memory: str, nbytes: float) -> float:
    if not nbytes:
        return 0.0
    m = accel.memory.get(memory)
    return nbytes / m.bytes_per_cycle + m.latency_cycles


def default_traffic(layer: Layer, accel, residency: Mapping[str, str]) -> Traffic:
    """Inputs read once, outputs written once, weights read once (input re-read per weight chunk)."""
    if layer.kind == "view":
        return Traffic()
    per_mem: dict[str, int] = {}
    detail = {"ifm_read": 0, "ofm_write": 0, "weights": 0}
    rereads = 1
    if layer.weight_bytes and layer.mac_kind and layer.weight_bytes > accel.memory.sram_bytes // 2:
        rereads = math.ceil(layer.weight_bytes / (accel.memory.sram_bytes // 2))
    ifm_each = input_bytes(layer)
    for name, nbytes in zip(layer.inputs, ifm_each):
        mem = residency.get(name, accel.memory.arena)
        per_mem[mem] = per_mem.get(mem, 0) + nbytes * rereads
        detail["ifm_read"] += nbytes * rereads
    ofm_each = layer.ofm_bytes // max(len(layer.outputs), 1)
    for name in layer.outputs:
        mem = residency.get(name, accel.memory.arena)
        per_mem[mem] = per_mem.get(mem, 0) + ofm_each
        detail["ofm_write"] += ofm_each
    if layer.weight_bytes:
        mem = residency.get("weights", accel.memory.weights)
        per_mem[mem] = per_mem.get(mem, 0) + layer.weight_bytes
        detail["weights"] = layer.weight_bytes
    return Traffic(per_mem, {m: access_cycles(accel, m, b) for m, b in per_mem.items()},
                   layer.weight_bytes, detail)


def input_bytes(layer: Layer) -> list[int]:
    """``layer.ifm_bytes`` shared among its activation inputs in proportion to their sizes."""
    sizes = [math.prod(s) if s else 1 for s in layer.input_shapes] or [1]
    whole = sum(sizes)
    return [layer.ifm_bytes * s // whole for s in sizes]


register_array("tiled", tiled_compute, validate=_validate_tiled)
register_array("neuromorphic", neuromorphic_compute)
