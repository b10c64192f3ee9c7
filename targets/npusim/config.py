"""Accelerator descriptions: one TOML file per simulated NPU, loaded into an ``Accelerator``.

    accel = load_accelerator("ethos-u55-128")          # a preset (targets/npusim/presets/*.toml)
    accel = load_accelerator("my_npu.toml")            # or a file of the same shape

The file (every table and field below is required unless marked optional):

    [accelerator]
    name = "ethos-u55-128"
    description = "..."                                # optional
    clock_mhz = 500.0

    [array]                                            # the MAC array
    kind = "ethos-u"                                   # an array model: ethos-u | systolic | tiled | neuromorphic
    macs_per_cycle = { w8a8 = 128, w8a16 = 64 }        # peak MACs per cycle per precision; its keys are the
                                                       # precisions the array runs (others go to the CPU)
    overhead_cycles = 0                                # optional: fixed cycles per op
    event_driven = false                               # optional: spike-input layers cost accumulates, not MACs
    acs_per_cycle = 0                                  # optional: accumulates per cycle (event-driven arrays)
    # ...plus the array model's own keys (rows, cols, dataflow, tile_m, ...), kept in ``array.params``

    [vector]                                           # element-wise / LUT / pooling / normalisation unit
    elements_per_cycle = { a8 = 16, a16 = 8 }          # keys: activation bits the NPU handles (a4, a8, a16)
    lut_elements_per_cycle = { a8 = 16, a16 = 4 }      # optional: activations through look-up tables
                                                       # (16-bit LUTs interpolate); default elements_per_cycle
    overhead_cycles = 0                                # optional

    [memory]
    sram_kib = 384                                     # on-chip SRAM for the tensor arena
    arena = "sram"                                     # where feature maps live: sram (spill to dram when full)
    weights = "dram"                                   # where constants live: sram | dram
    double_buffer = true                               # weight DMA of the next op overlaps the current op
    [memory.sram]
    bandwidth_gbps = 4.0                               # GB/s at the core clock
    latency_cycles = 32
    [memory.dram]                                      # off-chip: DRAM or flash
    label = "flash"                                    # optional: the name reports use
    bandwidth_gbps = 0.5
    latency_cycles = 64

    [ops]
    npu = ["Conv", "FullyConnected", ...]              # integer-IR op types the NPU runs; the rest fall back

    [energy]                                           # picojoules
    mac_pj = { w8a8 = 0.25, w8a16 = 0.5 }              # per MAC, per precision (same keys as macs_per_cycle)
    ac_pj = 0.05                                       # per accumulate of a spike input (or a table per
                                                       # precision, like mac_pj)
    vector_pj = 0.1                                    # per element through the vector unit
    sram_pj_per_byte = 1.0
    dram_pj_per_byte = 20.0
    static_mw = 0.0                                    # optional: leakage power, charged over the latency

    [cpu]                                              # where unsupported ops run
    gmacs = 2.0                                        # sustained G MAC/s
    gelements = 1.0                                    # element-wise G elements/s
    op_overhead_us = 5.0                               # per op dispatched on the CPU
    transfer_gbps = 4.0                                # NPU <-> CPU hand-off bandwidth
    transfer_overhead_us = 20.0                        # per hand-off (synchronisation)
    mac_pj = 10.0                                      # energy per CPU MAC (and per element)

A missing field, an unknown field (a typo must not pass silently), a wrong type, a non-positive clock or
bandwidth, an unknown array kind or an op type lowbit's integer IR does not have is a ``ConfigError`` naming
the file and the field.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

from lowbit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PRESET_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "presets")
PRECISIONS = ("w4a8", "w8a8", "w4a16", "w8a16", "w16a16", "w4a4")
ACT_KEYS = ("a4", "a8", "a16")


@dataclass(frozen=True)
class Memory:
    label: str
    bandwidth_gbps: float
    latency_cycles: float
    bytes_per_cycle: float


@dataclass(frozen=True)
class MemorySystem:
    sram_bytes: int
    arena: str
    weights: str
    double_buffer: bool
    sram: Memory
    dram: Memory

    def get(self, name: str) -> Memory:
        return self.sram if name == "sram" else self.dram


@dataclass(frozen=True)
class ArrayConfig:
    kind: str
    macs_per_cycle: dict[str, float]
    overhead_cycles: float = 0.0
    event_driven: bool = False
    acs_per_cycle: float = 0.0
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class VectorConfig:
    elements_per_cycle: dict[str, float]
    overhead_cycles: float = 0.0
    lut_elements_per_cycle: dict[str, float] | None = None

    def rate(self, bits: int, lut: bool = False) -> float | None:
        table = self.lut_elements_per_cycle if lut and self.lut_elements_per_cycle else self.elements_per_cycle
        return table.get(f"a{bits}")


@dataclass(frozen=True)
class EnergyConfig:
    mac_pj: dict[str, float]
    ac_pj: float | dict[str, float]     # one value, or per precision (the weight width sets the adder's)
    vector_pj: float
    sram_pj_per_byte: float
    dram_pj_per_byte: float
    static_mw: float = 0.0


@dataclass(frozen=True)
class CpuConfig:
    gmacs: float
    gelements: float
    op_overhead_us: float
    transfer_gbps: float
    transfer_overhead_us: float
    mac_pj: float


@dataclass(frozen=True)
class Accelerator:
    name: str
    description: str
    clock_hz: float
    array: ArrayConfig
    vector: VectorConfig
    memory: MemorySystem
    npu_ops: frozenset[str]
    energy: EnergyConfig
    cpu: CpuConfig
    source: str = ""

    @property
    def clock_mhz(self) -> float:
        return self.clock_hz / 1e6

    def precision_key(self, precision: str) -> str | None:
        """The ``macs_per_cycle`` key a layer of ``precision`` runs at: itself, or else the fastest listed
        precision at least as wide in weights and activations (a w16a8 LMU memory runs as w16a16)."""
        rates = self.array.macs_per_cycle
        if precision in rates:
            return precision
        w, a = _bits_of(precision)
        wider = [k for k in rates if _bits_of(k)[0] >= w and _bits_of(k)[1] >= a]
        return max(wider, key=lambda k: (rates[k], k)) if wider else None

    def macs_per_cycle(self, precision: str) -> float | None:
        key = self.precision_key(precision)
        return None if key is None else self.array.macs_per_cycle[key]

    def mac_pj(self, precision: str) -> float:
        key = self.precision_key(precision)
        return self.energy.mac_pj[key] if key is not None else max(self.energy.mac_pj.values())

    def ac_pj(self, precision: str) -> float:
        ac = self.energy.ac_pj
        if not isinstance(ac, dict):
            return ac
        key = self.precision_key(precision)
        return ac.get(key, max(ac.values())) if key is not None else max(ac.values())


def _bits_of(precision: str) -> tuple[int, int]:
    """"w8a16" -> (8, 16); a weightless label "a16" (an activation x activation product) -> (16, 16)."""
    w, _, a = precision.lstrip("w").partition("a")
    return int(w or a), int(a)


# -- reading -------------------------------------------------------------------------------------------------
class _Table:
    """One TOML table being read: every access names the field in its error; ``done`` rejects leftovers."""

    def __init__(self, data, path: str, where: str):
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [{where}] must be a table")
        self.data, self.path, self.where, self.used = data, path, where, set()

    def _field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def get(self, key: str, kind, default=..., positive: bool = False, nonneg: bool = False):
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.path}: missing field '{self._field(key)}'")
            return default
        value = self.data[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{self.path}: field '{self._field(key)}' must be {_kind_name(kind)}, "
                              f"got {value!r}")
        if positive and not value > 0:
            raise ConfigError(f"{self.path}: field '{self._field(key)}' must be positive, got {value!r}")
        if nonneg and value < 0:
            raise ConfigError(f"{self.path}: field '{self._field(key)}' must not be negative, got {value!r}")
        return value

    def table(self, key: str) -> "_Table":
        self.used.add(key)
        if key not in self.data:
            raise ConfigError(f"{self.path}: missing table [{self._field(key)}]")
        return _Table(self.data[key], self.path, self._field(key))

    def rates(self, key: str, allowed: tuple[str, ...], positive: bool = True) -> dict[str, float]:
        raw = self.get(key, dict)
        if not raw:
            raise ConfigError(f"{self.path}: field '{self._field(key)}' is empty")
        out = {}
        for k, v in raw.items():
            if k not in allowed:
                raise ConfigError(f"{self.path}: field '{self._field(key)}' has unknown key {k!r} "
                                  f"(one of {', '.join(allowed)})")
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (v <= 0 if positive else v < 0):
                raise ConfigError(f"{self.path}: field '{self._field(key)}.{k}' must be a positive number, "
                                  f"got {v!r}")
            out[k] = float(v)
        return out

    def number_or_rates(self, key: str, allowed: tuple[str, ...]) -> float | dict[str, float]:
        if isinstance(self.data.get(key), dict):
            return self.rates(key, allowed, positive=False)
        return self.get(key, float, nonneg=True)

    def rest(self) -> dict:
        self.used.update(self.data)
        return {k: v for k, v in self.data.items()}

    def done(self) -> None:
        extra = sorted(set(self.data) - self.used)
        if extra:
            raise ConfigError(f"{self.path}: unknown field '{self._field(extra[0])}' "
                              f"(known: {', '.join(sorted(self.used))})")


def _kind_name(kind) -> str:
    return {float: "a number", int: "an integer", str: "a string", bool: "true or false", list: "a list",
            dict: "a table"}.get(kind, kind.__name__)


def _memory(t: _Table, clock_hz: float, default_label: str) -> Memory:
    bw = t.get("bandwidth_gbps", float, positive=True)
    m = Memory(label=t.get("label", str, default_label), bandwidth_gbps=bw,
               latency_cycles=t.get("latency_cycles", float, nonneg=True), bytes_per_cycle=bw * 1e9 / clock_hz)
    t.done()
    return m


def known_ops() -> set[str]:
    """Op types of lowbit's integer IR: the integer kernels and the standard ops the integer executor runs."""
    import lowbit.runtime.int_executor  # noqa: F401  (registers the kernels)
    from lowbit.runtime.registry import FLOAT_KERNELS, INT_KERNELS
    from lowbit.targets.npusim.workload import LAYER_KINDS
    ops = {o.rsplit(".", 1)[-1] for o in INT_KERNELS.ops()}
    return ops | set(LAYER_KINDS) | {o for o in FLOAT_KERNELS.ops() if "." not in o}


def parse_accelerator(data: dict, path: str) -> Accelerator:
    from lowbit.targets.npusim.arrays import ARRAY_MODELS
    from lowbit.targets.npusim import models  # noqa: F401  (registers the array models)
    top = _Table(data, path, "")
    acc = top.table("accelerator")
    name = acc.get("name", str)
    description = acc.get("description", str, "")
    clock_hz = acc.get("clock_mhz", float, positive=True) * 1e6
    acc.done()

    arr = top.table("array")
    kind = arr.get("kind", str)
    if kind not in ARRAY_MODELS:
        raise ConfigError(f"{path}: field 'array.kind' is {kind!r}; known array models: "
                          f"{', '.join(sorted(ARRAY_MODELS))}")
    array = ArrayConfig(kind=kind, macs_per_cycle=arr.rates("macs_per_cycle", PRECISIONS),
                        overhead_cycles=arr.get("overhead_cycles", float, 0.0, nonneg=True),
                        event_driven=arr.get("event_driven", bool, False),
                        acs_per_cycle=arr.get("acs_per_cycle", float, 0.0, nonneg=True), params={})
    params = {k: v for k, v in arr.rest().items() if k not in ("kind", "macs_per_cycle", "overhead_cycles",
                                                               "event_driven", "acs_per_cycle")}
    array = ArrayConfig(**{**array.__dict__, "params": params})
    if array.event_driven and not array.acs_per_cycle > 0:
        raise ConfigError(f"{path}: field 'array.acs_per_cycle' must be positive when array.event_driven is true")

    vec = top.table("vector")
    vector = VectorConfig(vec.rates("elements_per_cycle", ACT_KEYS),
                          vec.get("overhead_cycles", float, 0.0, nonneg=True),
                          vec.rates("lut_elements_per_cycle", ACT_KEYS) if "lut_elements_per_cycle" in vec.data
                          else None)
    vec.done()

    mem = top.table("memory")
    sram_bytes = int(mem.get("sram_kib", float, positive=True) * 1024)
    arena = mem.get("arena", str)
    weights = mem.get("weights", str)
    for key, value in (("arena", arena), ("weights", weights)):
        if value not in ("sram", "dram"):
            raise ConfigError(f"{path}: field 'memory.{key}' must be \"sram\" or \"dram\", got {value!r}")
    memory = MemorySystem(sram_bytes, arena, weights, mem.get("double_buffer", bool),
                          _memory(mem.table("sram"), clock_hz, "sram"), _memory(mem.table("dram"), clock_hz, "dram"))
    mem.done()

    ops = top.table("ops")
    npu = ops.get("npu", list)
    ops.done()
    known = known_ops()
    for op in npu:
        if not isinstance(op, str) or op not in known:
            raise ConfigError(f"{path}: field 'ops.npu' names unknown op {op!r}; lowbit's integer IR has "
                              f"{', '.join(sorted(known)[:12])}, ... (see docs/simulator.md)")

    en = top.table("energy")
    energy = EnergyConfig(en.rates("mac_pj", PRECISIONS), en.number_or_rates("ac_pj", PRECISIONS),
                          en.get("vector_pj", float, nonneg=True), en.get("sram_pj_per_byte", float, nonneg=True),
                          en.get("dram_pj_per_byte", float, nonneg=True), en.get("static_mw", float, 0.0, nonneg=True))
    en.done()
    missing = sorted(set(array.macs_per_cycle) - set(energy.mac_pj))
    if missing:
        raise ConfigError(f"{path}: field 'energy.mac_pj' has no value for precision {missing[0]!r} "
                          f"(array.macs_per_cycle lists it)")

    cp = top.table("cpu")
    cpu = CpuConfig(cp.get("gmacs", float, positive=True), cp.get("gelements", float, positive=True),
                    cp.get("op_overhead_us", float, nonneg=True), cp.get("transfer_gbps", float, positive=True),
                    cp.get("transfer_overhead_us", float, nonneg=True), cp.get("mac_pj", float, nonneg=True))
    cp.done()
    top.done()
    accel = Accelerator(name, description, clock_hz, array, vector, memory, frozenset(npu), energy, cpu, path)
    validate = getattr(ARRAY_MODELS[kind], "validate", None)
    if validate is not None:
        validate(accel)
    return accel


def presets() -> list[str]:
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".toml"))


def load_accelerator(name_or_path: str) -> Accelerator:
    """A preset by name (``lowbit simulate --list-presets``) or a TOML file path."""
    path = name_or_path
    if not os.path.exists(path):
        preset = os.path.join(PRESET_DIR, f"{name_or_path}.toml")
        if name_or_path.endswith(".toml") or not os.path.exists(preset):
            raise ConfigError(f"no accelerator preset or file {name_or_path!r}; presets: {', '.join(presets())}")
        path = preset
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    return parse_accelerator(data, path)
