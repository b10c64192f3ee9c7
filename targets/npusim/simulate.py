"""Simulate one integer graph on one accelerator description: per-layer cycles, memory traffic, SRAM, energy
and CPU fallback.

    from lowbit.targets.npusim import load_accelerator, simulate
    report = simulate(artifact, load_accelerator("ethos-u55-128"), samples=calib_samples)
    print(report.table()); report.totals["latency_ms"]

The model, per layer (in graph order; one op runs at a time, as on Ethos-U and TFLite Micro):

1. Placement. A layer runs on the NPU when its op type is in ``ops.npu``, its precision is a key of
   ``array.macs_per_cycle`` (MAC layers) or its bit width a key of ``vector.elements_per_cycle`` (the rest),
   and a cost model prices it; otherwise it falls back to the CPU, and the report says why.
2. Memory. The arena planner (planner.py) places feature maps in the SRAM (``memory.arena = "sram"``) by
   liveness; tensors that do not fit spill to DRAM. Constants live in ``memory.weights``.
3. NPU time = max(compute cycles, each memory's access cycles) + overheads (arrays.py). With
   ``memory.double_buffer`` a layer's weight transfer overlaps the previous NPU layer: up to that layer's
   slack on the weight memory (its cycles minus its own accesses there) is hidden.
4. CPU time = MACs / cpu.gmacs + elements / cpu.gelements + cpu.op_overhead_us; each tensor that crosses
   between NPU and CPU costs bytes / cpu.transfer_gbps + cpu.transfer_overhead_us once.
5. Energy = MACs x mac_pj[precision] (accumulates x ac_pj for spike inputs on event-driven arrays)
   + vector elements x vector_pj + SRAM bytes x sram_pj_per_byte + DRAM bytes x dram_pj_per_byte
   + CPU (MACs + elements) x cpu.mac_pj + static_mw x latency.

Spiking layers are priced by the activity of a calibration run: pass ``samples`` (input dicts) and the
integer executor measures spikes and accumulates per layer (averaged per inference).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping, Sequence

from lowbit.graph.ir import Graph
from lowbit.targets.npusim.arrays import ARRAY_MODELS, Compute, Traffic
from lowbit.targets.npusim.config import Accelerator
from lowbit.targets.npusim.generic import VECTOR_WORK, access_cycles, default_traffic, input_bytes, vector_compute
from lowbit.targets.npusim.planner import ArenaPlan, lifetimes, plan_arena
from lowbit.targets.npusim.workload import Layer, SPIKE_OPS, extract_layers


@dataclass
class LayerResult:
    name: str
    op: str
    kind: str
    precision: str
    unit: str                        # "npu", "cpu" or "-" (views cost nothing)
    macs: int
    acs: int
    cycles: float                    # the layer's time, transfers and overheads included
    compute_cycles: float
    memory_cycles: dict[str, float]
    bound: str                       # "compute", "vector", "sram", "dram", "cpu", "transfer" or "-"
    sram_bytes: int
    dram_bytes: int
    energy_pj: float
    start: float = 0.0
    utilisation: float | None = None
    transfer_cycles: float = 0.0
    hidden_dma_cycles: float = 0.0
    firing_rate: float | None = None
    reason: str = ""                 # why it fell back to the CPU


@dataclass
class SimReport:
    accelerator: Accelerator
    model: str
    layers: list[LayerResult]
    plan: ArenaPlan
    activity_measured: bool
    notes: list[str] = field(default_factory=list)

    @property
    def totals(self) -> dict:
        a = self.accelerator
        cycles = sum(l.cycles for l in self.layers)
        seconds = cycles / a.clock_hz
        counted = [l for l in self.layers if l.unit != "-"]
        npu = [l for l in counted if l.unit == "npu"]
        macs = sum(l.macs for l in counted)
        energy = sum(l.energy_pj for l in self.layers) + a.energy.static_mw * 1e9 * seconds
        return {
            "cycles": cycles, "latency_ms": seconds * 1e3,
            "inferences_per_second": 1.0 / seconds if seconds else None,
            "macs": macs, "acs": sum(l.acs for l in counted),
            "energy_uj": energy * 1e-6,
            "peak_sram_bytes": self.plan.peak, "sram_bytes": a.memory.sram_bytes,
            "arena_lower_bound_bytes": self.plan.lower_bound, "spilled_bytes": self.plan.spilled_bytes,
            "sram_traffic_bytes": sum(l.sram_bytes for l in self.layers),
            "dram_traffic_bytes": sum(l.dram_bytes for l in self.layers),
            "npu_ops": len(npu), "cpu_ops": len(counted) - len(npu),
            "npu_op_fraction": len(npu) / len(counted) if counted else 1.0,
            "npu_mac_fraction": sum(l.macs for l in npu) / macs if macs else 1.0,
            "cpu_cycles": sum(l.cycles for l in counted if l.unit == "cpu"),
            "transfer_cycles": sum(l.transfer_cycles for l in self.layers),
        }

    def table(self) -> str:
        from lowbit.targets.npusim.report import table
        return table(self)

    def to_dict(self) -> dict:
        a = self.accelerator
        return {"accelerator": a.name, "clock_mhz": a.clock_mhz, "model": self.model,
                "activity_measured": self.activity_measured, "notes": self.notes, "totals": self.totals,
                "layers": [asdict(l) for l in self.layers]}


# -- the model -----------------------------------------------------------------------------------------------
def _fallback_reason(layer: Layer, accel: Accelerator) -> str:
    if layer.op not in accel.npu_ops:
        return f"{layer.op} is not in ops.npu"
    if layer.mac_kind or layer.kind == "recurrent" and layer.gemm is not None:
        if accel.precision_key(layer.precision) is None:
            return f"precision {layer.precision} is not in array.macs_per_cycle"
    elif layer.kind != "convert" and accel.vector.rate(max(layer.act_bits, layer.out_bits)) is None:
        return f"{max(layer.act_bits, layer.out_bits)}-bit tensors are not in vector.elements_per_cycle"
    return ""


def npu_compute(layer: Layer, accel: Accelerator) -> Compute | None:
    model = ARRAY_MODELS[accel.array.kind]
    c = model.compute(layer, accel)
    return c if c is not None else vector_compute(layer, accel)


def npu_traffic(layer: Layer, accel: Accelerator, residency: Mapping[str, str]) -> Traffic:
    model = ARRAY_MODELS[accel.array.kind]
    t = model.traffic(layer, accel, residency) if model.traffic is not None else None
    return t if t is not None else default_traffic(layer, accel, residency)


def _cpu_cycles(layer: Layer, accel: Accelerator) -> float:
    cpu = accel.cpu
    seconds = layer.macs / (cpu.gmacs * 1e9) + layer.elements / (cpu.gelements * 1e9) + cpu.op_overhead_us * 1e-6
    return seconds * accel.clock_hz


def _vector_elements(layer: Layer) -> int:
    work = VECTOR_WORK.get(layer.kind)
    return int(work(layer)) if work is not None and not layer.mac_kind else 0


def _energy(layer: Layer, accel: Accelerator, unit: str, traffic: Traffic | None) -> float:
    e = accel.energy
    if unit == "cpu":
        return (layer.macs + layer.elements) * accel.cpu.mac_pj
    if layer.spike_input and accel.array.event_driven:
        pj = (layer.acs if layer.acs or layer.firing_rate is not None else layer.macs) * accel.ac_pj(layer.precision)
    else:
        pj = layer.macs * accel.mac_pj(layer.precision)
    pj += _vector_elements(layer) * e.vector_pj
    if traffic is not None:
        pj += traffic.bytes.get("sram", 0) * e.sram_pj_per_byte + traffic.bytes.get("dram", 0) * e.dram_pj_per_byte
    return pj


def simulate_layers(layers: Sequence[Layer], accel: Accelerator, graph_inputs: Iterable[str] = (),
                    graph_outputs: Iterable[str] = (), model: str = "", activity_measured: bool = False
                    ) -> SimReport:
    prepare = ARRAY_MODELS[accel.array.kind].prepare
    if prepare is not None:
        layers = prepare(list(layers), accel)
    buffers = lifetimes(layers, graph_inputs, graph_outputs)
    capacity = accel.memory.sram_bytes if accel.memory.arena == "sram" else None
    plan = plan_arena(buffers, capacity, steps=max(len(layers) - 1, 0))
    residency = dict(plan.residency) if accel.memory.arena == "sram" else \
        {name: "dram" for name in plan.residency}
    residency["weights"] = accel.memory.weights

    # graph inputs are written by the application before the inference starts: no hand-off to charge
    producer_unit: dict[str, str] = {}
    moved: set[tuple[str, str]] = set()
    results: list[LayerResult] = []
    clock = 0.0
    prev_slack: dict[str, float] = {}
    notes: list[str] = []
    for layer in layers:
        if layer.kind == "view":
            unit = producer_unit.get(layer.inputs[0], "npu") if layer.inputs else "npu"
            for out in layer.outputs:
                producer_unit[out] = unit
            fused = layer.extra.get("fused_into")
            results.append(LayerResult(layer.name, layer.op, layer.kind, layer.precision, "-", 0, 0, 0.0, 0.0, {},
                                       "-", 0, 0, 0.0, clock, reason=f"fused into {fused}" if fused else ""))
            continue
        reason = _fallback_reason(layer, accel)
        compute = npu_compute(layer, accel) if not reason else None
        if not reason and compute is None:
            reason = f"no cost model of {accel.array.kind!r} arrays prices {layer.kind} layers"
        unit = "cpu" if reason else "npu"
        # hand-offs between NPU and CPU, charged once per tensor to its first consumer on the other side
        transfer = 0.0
        for name, nbytes in zip(layer.inputs, input_bytes(layer)):
            src = producer_unit.get(name, unit)
            if src != unit and (name, unit) not in moved:
                moved.add((name, unit))
                transfer += (nbytes / (accel.cpu.transfer_gbps * 1e9) + accel.cpu.transfer_overhead_us * 1e-6) \
                    * accel.clock_hz
        for out in layer.outputs:
            producer_unit[out] = unit
        if unit == "cpu":
            cyc = _cpu_cycles(layer, accel)
            results.append(LayerResult(
                layer.name, layer.op, layer.kind, layer.precision, "cpu", layer.macs, layer.acs, cyc + transfer,
                cyc, {}, "transfer" if transfer > cyc else "cpu", 0, 0, _energy(layer, accel, "cpu", None), clock,
                transfer_cycles=transfer, firing_rate=layer.firing_rate, reason=reason))
            clock += cyc + transfer
            prev_slack = {}
            continue
        traffic = npu_traffic(layer, accel, residency)
        mem = dict(traffic.cycles)
        hidden = 0.0
        wmem = residency["weights"]
        if accel.memory.double_buffer and traffic.weight_bytes and wmem in mem:
            wcyc = access_cycles(accel, wmem, traffic.weight_bytes)
            hidden = min(wcyc, prev_slack.get(wmem, 0.0), mem[wmem])
            mem[wmem] -= hidden
        busiest = max(mem.items(), key=lambda kv: kv[1], default=("-", 0.0))
        overhead = accel.array.overhead_cycles if compute.unit == "array" else 0.0
        op_cycles = max(compute.cycles, busiest[1]) + overhead
        bound = ("compute" if compute.unit == "array" else compute.unit) if compute.cycles >= busiest[1] \
            else busiest[0]
        if op_cycles == 0:
            bound = "-"
        prev_slack = {m: op_cycles - c for m, c in mem.items()}
        prev_slack.setdefault(wmem, op_cycles)
        results.append(LayerResult(
            layer.name, layer.op, layer.kind, layer.precision, "npu", layer.macs, layer.acs, op_cycles + transfer,
            compute.cycles, mem, "transfer" if transfer > op_cycles else bound, traffic.bytes.get("sram", 0),
            traffic.bytes.get("dram", 0), _energy(layer, accel, "npu", traffic), clock, compute.utilisation,
            transfer, hidden, layer.firing_rate))
        clock += op_cycles + transfer
    if any(l.spike_input for l in layers) and not activity_measured:
        notes.append("spiking layers priced at 100 % firing (no calibration samples): pass samples / --inputs "
                     "to measure accumulates")
    if plan.spilled:
        notes.append(f"{len(plan.spilled)} tensors ({plan.spilled_bytes} bytes) do not fit in "
                     f"{accel.memory.sram_bytes // 1024} KiB of SRAM and spill to {accel.memory.dram.label}")
    return SimReport(accel, model, results, plan, activity_measured, notes)


# -- entry points --------------------------------------------------------------------------------------------
def measure_activity(artifact, samples: Iterable[Mapping]) -> tuple[dict, int]:
    """Run the integer executor on each sample and sum the spiking layers' statistics (per node)."""
    total: dict[str, dict] = {}
    runs = 0
    for feeds in samples:
        stats: dict = {}
        artifact.run(feeds, stats=stats)
        runs += 1
        for node, s in stats.items():
            acc = total.setdefault(node, {})
            for k, v in s.items():
                if k != "firing_rate" and isinstance(v, (int, float)):
                    acc[k] = acc.get(k, 0) + v
    for acc in total.values():
        if acc.get("elements"):
            acc["firing_rate"] = acc.get("nonzero", 0) / acc["elements"]
    return total, runs


def simulate(model, accel: Accelerator, samples: Iterable[Mapping] | None = None) -> SimReport:
    """``model``: an Artifact (or an integer Graph). ``samples``: input dicts for measuring spiking activity."""
    graph: Graph = model.graph if hasattr(model, "graph") else model
    stats, runs = None, 1
    has_spikes = any(n.op_type in SPIKE_OPS for n in graph.nodes)
    if samples is not None and has_spikes and hasattr(model, "run"):
        stats, runs = measure_activity(model, samples)
    layers = extract_layers(graph, stats, runs=max(runs, 1))
    return simulate_layers(layers, accel, [v.name for v in graph.inputs], [v.name for v in graph.outputs],
                           model=getattr(graph, "name", ""), activity_measured=stats is not None)
