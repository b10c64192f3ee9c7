"""Arm Vela's reports as small value objects: the summary CSV, the per-layer CSV and the placement lines of its
stdout (``CPU operators = n (p%)``, ``NPU operators = ...``, and each ``Warning (supported operators)`` with
its ``Reason``).

    report = read_vela_output("out", "model_int8", stdout_text)
    report.summary.cycles_total, report.npu_ops, report.cpu_fallback, report.nothing_on_npu

Vela exits 0 even when no operator lands on the NPU; ``nothing_on_npu`` says so, and ``warnings()`` lists the
lines lowbit prints about it. Field names follow Vela's CSV columns (peers.md §3).
"""
from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import asdict, dataclass, field

MEMORIES = ("sram", "dram", "on_chip_flash", "off_chip_flash")


@dataclass(frozen=True)
class MemoryTraffic:
    """Bytes one inference moves through one memory (Vela's ``<mem>_*_bytes`` columns) and its size used."""
    memory: str
    used_kib: float
    feature_map_read: int
    feature_map_write: int
    weight_read: int
    weight_write: int
    total: int
    access_cycles: int


@dataclass(frozen=True)
class VelaSummary:
    """One row of ``<net>_summary_<system config>.csv``."""
    network: str
    accelerator: str
    system_config: str
    memory_mode: str
    core_clock_hz: float
    inference_time_s: float
    inferences_per_second: float
    nn_macs: int
    nn_tops: float
    cycles_npu: int
    cycles_total: int
    total_original_weights: int
    total_npu_encoded_weights: int
    memories: dict[str, MemoryTraffic]
    raw: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def inference_time_ms(self) -> float:
        return self.inference_time_s * 1e3


@dataclass(frozen=True)
class LayerEstimate:
    """One row of ``<net>_per-layer.csv`` (an operator after Vela's graph rewrites)."""
    original_op: str
    nng_op: str
    target: str  # "NPU" or "CPU"
    staging_usage: int
    op_cycles: int
    network_percent_cycles: float
    npu_cycles: int
    sram_access_cycles: int
    dram_access_cycles: int
    on_chip_flash_access_cycles: int
    off_chip_flash_access_cycles: int
    macs: int
    util_percent_macs: float
    name: str


@dataclass(frozen=True)
class CpuFallback:
    """An operator Vela left on the CPU, with the reason its supported-operator checks gave."""
    op: str
    name: str
    reason: str


@dataclass
class VelaReport:
    accelerator: str
    summary: VelaSummary | None
    layers: list[LayerEstimate]
    cpu_ops: int
    npu_ops: int
    cpu_fallback: list[CpuFallback]
    output_dir: str = ""
    optimised_model: str = ""

    @property
    def npu_fraction(self) -> float:
        total = self.cpu_ops + self.npu_ops
        return self.npu_ops / total if total else 0.0

    @property
    def nothing_on_npu(self) -> bool:
        return self.npu_ops == 0

    @property
    def cycles_total(self) -> int:
        return self.summary.cycles_total if self.summary else sum(layer.op_cycles for layer in self.layers)

    def warnings(self) -> list[str]:
        out = []
        if self.nothing_on_npu:
            out.append(f"WARNING: Vela placed no operator on the {self.accelerator} NPU (0 of {self.cpu_ops}): "
                       f"the whole model runs on the CPU")
        for fb in self.cpu_fallback:
            out.append(f"CPU fallback: {fb.op} '{fb.name}': {fb.reason}")
        return out

    def text(self) -> str:
        total = self.cpu_ops + self.npu_ops
        lines = [f"{self.accelerator}: {self.npu_ops}/{total} operators on the NPU ({100 * self.npu_fraction:.1f} %), "
                 f"{self.cpu_ops} on the CPU"]
        if self.summary:
            s = self.summary
            lines.append(f"  {s.cycles_total} cycles (NPU {s.cycles_npu}), {s.inference_time_ms:.4g} ms at "
                         f"{s.core_clock_hz / 1e6:.0f} MHz, {s.nn_macs} MACs ({s.system_config}, {s.memory_mode})")
            for m in s.memories.values():
                if m.total or m.used_kib:
                    lines.append(f"  {m.memory}: {m.used_kib:.2f} KiB used, {m.total} bytes moved "
                                 f"({m.access_cycles} access cycles)")
        lines += ["  " + w for w in self.warnings()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(npu_fraction=self.npu_fraction, nothing_on_npu=self.nothing_on_npu)
        if self.summary is not None:
            d["summary"].pop("raw", None)
        return d


# -- parsers ---------------------------------------------------------------------------------------------------
def _num(row: dict, key: str, kind=float, default=0):
    v = row.get(key, "")
    if v in ("", None):
        return default
    return kind(float(v)) if kind is int else kind(v)


def parse_summary_csv(text: str) -> VelaSummary:
    """The (single-row) summary CSV."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if not rows:
        raise ValueError("Vela summary CSV has no data row")
    r = rows[0]
    memories = {}
    for m in MEMORIES:
        memories[m] = MemoryTraffic(
            m, _num(r, f"{m}_memory_used"), _num(r, f"{m}_feature_map_read_bytes", int),
            _num(r, f"{m}_feature_map_write_bytes", int), _num(r, f"{m}_weight_read_bytes", int),
            _num(r, f"{m}_weight_write_bytes", int), _num(r, f"{m}_total_bytes", int),
            _num(r, f"cycles_{m}_access", int))
    return VelaSummary(
        network=r.get("network", ""), accelerator=r.get("accelerator_configuration", ""),
        system_config=r.get("system_config", ""), memory_mode=r.get("memory_mode", ""),
        core_clock_hz=_num(r, "core_clock"), inference_time_s=_num(r, "inference_time"),
        inferences_per_second=_num(r, "inferences_per_second"), nn_macs=_num(r, "nn_macs", int),
        nn_tops=_num(r, "nn_tops"), cycles_npu=_num(r, "cycles_npu", int), cycles_total=_num(r, "cycles_total", int),
        total_original_weights=_num(r, "total_original_weights", int),
        total_npu_encoded_weights=_num(r, "total_npu_encoded_weights", int), memories=memories, raw=dict(r))


def parse_per_layer_csv(text: str) -> list[LayerEstimate]:
    out = []
    for r in csv.DictReader(io.StringIO(text)):
        out.append(LayerEstimate(
            original_op=r["Original Operator"], nng_op=r["NNG Operator"], target=r["Target"],
            staging_usage=_num(r, "Staging Usage", int), op_cycles=_num(r, "Op Cycles", int),
            network_percent_cycles=_num(r, "Network% (cycles)"), npu_cycles=_num(r, "NPU", int),
            sram_access_cycles=_num(r, "SRAM AC", int), dram_access_cycles=_num(r, "DRAM AC", int),
            on_chip_flash_access_cycles=_num(r, "OnFlash AC", int),
            off_chip_flash_access_cycles=_num(r, "OffFlash AC", int), macs=_num(r, "MAC Count", int),
            util_percent_macs=_num(r, "Util% (MAC)"), name=r["Name"]))
    return out


_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+) \(([\d.]+)%\)", re.M)
_WARN = re.compile(r"^Warning \(supported operators\) operator: (\S+), ofm: '(.*)'\n((?:.+\n?)*)", re.M)


def parse_stdout(text: str) -> tuple[int, int, list[CpuFallback]]:
    """(CPU operator count, NPU operator count, fallbacks with reasons) from Vela's stdout."""
    counts = {kind: int(n) for kind, n, _ in _COUNT.findall(text)}
    fallbacks = []
    for op, name, body in _WARN.findall(text):
        reason = " ".join(line.strip() for line in body.strip().splitlines())
        fallbacks.append(CpuFallback(op, name, reason.removeprefix("Reason: ")))
    return counts.get("CPU", 0), counts.get("NPU", 0), fallbacks


def report_files(output_dir: str, network: str) -> tuple[str | None, str | None, str]:
    """(summary CSV, per-layer CSV, optimised .tflite) paths Vela writes for ``network`` in ``output_dir``."""
    summary = per_layer = None
    if os.path.isdir(output_dir):
        for f in sorted(os.listdir(output_dir)):
            if f.startswith(f"{network}_summary_") and f.endswith(".csv"):
                summary = os.path.join(output_dir, f)
            elif f == f"{network}_per-layer.csv":
                per_layer = os.path.join(output_dir, f)
    return summary, per_layer, os.path.join(output_dir, f"{network}_vela.tflite")


def read_vela_output(output_dir: str, network: str, stdout: str, accelerator: str = "") -> VelaReport:
    """Everything Vela reported about ``network`` (its .tflite stem) in ``output_dir``."""
    summary_path, layers_path, optimised = report_files(output_dir, network)
    summary = parse_summary_csv(_read(summary_path)) if summary_path else None
    layers = parse_per_layer_csv(_read(layers_path)) if layers_path else []
    cpu, npu, fallbacks = parse_stdout(stdout)
    if not _COUNT.search(stdout) and layers:  # no stdout kept: count the per-layer targets instead
        cpu = sum(layer.target == "CPU" for layer in layers)
        npu = sum(layer.target == "NPU" for layer in layers)
    accelerator = accelerator or (summary.accelerator if summary else "")
    return VelaReport(accelerator, summary, layers, cpu, npu, fallbacks, output_dir,
                      optimised if os.path.isfile(optimised) else "")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()
