"""A simulation as a reader sees it: the per-layer table with totals, a timeline Perfetto / chrome://tracing
opens (Chrome trace-event JSON), a roofline plot (PNG) and the sweep table.
"""
from __future__ import annotations

import json

from lowbit.targets.npusim.simulate import SimReport
from lowbit.tools.report import _si


def _short(name: str, width: int) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _bound_label(bound: str, accel) -> str:
    """Memory bounds by the memory's name in the description ("flash" on Ethos-U55), the rest as they are."""
    return accel.memory.dram.label if bound == "dram" else bound


def table(report: SimReport, width: int = 36) -> str:
    a = report.accelerator
    lines = [f"{report.model or 'model'} on {a.name} ({a.description or a.array.kind}, {a.clock_mhz:g} MHz, "
             f"SRAM {a.memory.sram_bytes // 1024} KiB)",
             f"{'#':>3}  {'layer':<{width}} {'op':<16}{'prec':<7}{'unit':<5}{'MACs/ACs':>10}{'cycles':>11}"
             f"{'bound':>9}{'SRAM B':>10}{(a.memory.dram.label + ' B')[:9]:>10}{'energy nJ':>11}{'util':>6}"]
    for i, l in enumerate(report.layers):
        if l.unit == "-":
            continue
        work = f"{_si(l.acs)}AC" if l.acs else _si(l.macs) if l.macs else "-"
        util = f"{100 * l.utilisation:.0f}%" if l.utilisation is not None else ""
        lines.append(f"{i:>3}  {_short(l.name, width):<{width}} {l.op[:15]:<16}{l.precision:<7}{l.unit:<5}"
                     f"{work:>10}{l.cycles:>11.0f}{_bound_label(l.bound, a)[:8]:>9}{l.sram_bytes:>10}{l.dram_bytes:>10}"
                     f"{l.energy_pj / 1e3:>11.2f}{util:>6}")
    t = report.totals
    lines += ["",
              f"latency {t['latency_ms']:.4f} ms ({t['cycles']:.0f} cycles), {t['inferences_per_second'] or 0:.1f} "
              f"inferences/s, energy {t['energy_uj']:.3f} uJ/inference",
              f"NPU placement {t['npu_ops']}/{t['npu_ops'] + t['cpu_ops']} ops ({100 * t['npu_op_fraction']:.1f} %), "
              f"{100 * t['npu_mac_fraction']:.1f} % of MACs; CPU {t['cpu_cycles']:.0f} cycles, "
              f"NPU<->CPU transfers {t['transfer_cycles']:.0f} cycles",
              f"peak SRAM arena {t['peak_sram_bytes'] / 1024:.1f} KiB of {t['sram_bytes'] / 1024:.0f} KiB (lower bound "
              f"{t['arena_lower_bound_bytes'] / 1024:.1f} KiB), spilled {t['spilled_bytes']} B; traffic SRAM "
              f"{_si(t['sram_traffic_bytes'])}B, {a.memory.dram.label} {_si(t['dram_traffic_bytes'])}B"]
    fallback = [l for l in report.layers if l.unit == "cpu"]
    for l in fallback[:20]:
        lines.append(f"  CPU fallback: {l.op} '{l.name}': {l.reason}")
    if len(fallback) > 20:
        lines.append(f"  ... and {len(fallback) - 20} more CPU ops")
    lines += [f"note: {n}" for n in report.notes]
    return "\n".join(lines)


_TRACKS = {"compute": "NPU array", "vector": "NPU vector", "sram": "NPU (memory-bound)",
           "dram": "NPU (memory-bound)", "cpu": "CPU", "transfer": "CPU", "-": "NPU array", "none": "NPU array"}


def trace(report: SimReport) -> dict:
    """Chrome trace events (``ph: X``, microseconds): one track per unit, NPU<->CPU transfers and the hidden
    weight DMA on their own tracks."""
    us = 1e6 / report.accelerator.clock_hz
    tids = {"NPU array": 1, "NPU vector": 2, "NPU (memory-bound)": 3, "CPU": 4, "transfers": 5, "weight DMA": 6}
    events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": report.accelerator.name}}]
    events += [{"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": n}} for n, t in tids.items()]
    for l in report.layers:
        if l.unit == "-" or l.cycles <= 0:
            continue
        start = l.start
        if l.transfer_cycles:
            events.append({"ph": "X", "name": f"to {l.unit}: {l.name}", "cat": "transfer", "pid": 1,
                           "tid": tids["transfers"], "ts": start * us, "dur": l.transfer_cycles * us})
            start += l.transfer_cycles
        track = "CPU" if l.unit == "cpu" else ("NPU vector" if l.bound == "vector" else _TRACKS.get(l.bound, "NPU array"))
        events.append({"ph": "X", "name": l.name, "cat": l.kind, "pid": 1, "tid": tids[track], "ts": start * us,
                       "dur": (l.cycles - l.transfer_cycles) * us,
                       "args": {"op": l.op, "precision": l.precision, "macs": l.macs, "acs": l.acs,
                                "bound": l.bound, "sram_bytes": l.sram_bytes, "dram_bytes": l.dram_bytes,
                                "energy_nj": round(l.energy_pj / 1e3, 4), "reason": l.reason}})
        if l.hidden_dma_cycles:
            events.append({"ph": "X", "name": f"weights of {l.name}", "cat": "dma", "pid": 1,
                           "tid": tids["weight DMA"], "ts": (l.start - l.hidden_dma_cycles) * us,
                           "dur": l.hidden_dma_cycles * us})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"accelerator": report.accelerator.name, "model": report.model}}


def trace_json(report: SimReport) -> bytes:
    return json.dumps(trace(report)).encode()


def roofline_png(report: SimReport) -> bytes:
    """Achieved GMAC/s against operational intensity (MACs per off-chip byte; per SRAM byte, hollow, for layers
    with no off-chip traffic), one point per NPU MAC layer, under the compute roof and the bandwidth roofs."""
    import io
    from lowbit.tools.plot import _pyplot
    plt = _pyplot()
    a = report.accelerator
    peak = max(a.array.macs_per_cycle.values()) * a.clock_hz / 1e9
    fig, ax = plt.subplots(figsize=(7.5, 5), dpi=100)
    colours = {"compute": "tab:blue", "sram": "tab:orange", "dram": "tab:red", "vector": "tab:green"}
    xs_all = []
    for bound, colour in colours.items():
        for offchip in (True, False):  # intensity against off-chip bytes; on-chip-only layers against SRAM bytes
            pts = [((l.macs / l.dram_bytes) if offchip else l.macs / max(l.sram_bytes, 1),
                    l.macs / (l.cycles / a.clock_hz) / 1e9)
                   for l in report.layers if l.unit == "npu" and l.macs and l.cycles > 0 and l.bound == bound
                   and bool(l.dram_bytes) == offchip]
            if pts:
                xs_all += [p[0] for p in pts]
                ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=16, edgecolors=colour,
                           facecolors=colour if offchip else "none",
                           label=f"{bound}-bound" + ("" if offchip else f" (no {a.memory.dram.label} traffic)"))
    lo = min(xs_all + [0.1]) / 2
    hi = max(xs_all + [100.0]) * 2
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    ax.plot(xs, [peak] * len(xs), "k-", lw=1, label=f"peak {peak:.1f} GMAC/s")
    for mem, style in ((a.memory.sram, "k--"), (a.memory.dram, "k:")):
        ax.plot(xs, [min(peak, x * mem.bandwidth_gbps) for x in xs], style, lw=1,
                label=f"{mem.label} {mem.bandwidth_gbps:g} GB/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(f"operational intensity (MACs per {a.memory.dram.label} byte; hollow: per SRAM byte)")
    ax.set_ylabel("achieved GMAC/s")
    ax.set_title(f"{report.model or 'model'} on {a.name}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


SWEEP_COLUMNS = ("preset", "precision", "latency_ms", "inferences_per_second", "energy_uj", "peak_sram_kib",
                 "spilled_kib", "npu_ops_pct", "npu_macs_pct", "bound")


def sweep_row(preset: str, precision: str, report: SimReport) -> dict:
    t = report.totals
    bounds: dict[str, float] = {}
    for l in report.layers:
        if l.unit != "-":
            bounds[l.bound] = bounds.get(l.bound, 0.0) + l.cycles
    top = max(bounds.items(), key=lambda kv: kv[1])[0] if bounds else "-"
    share = 100 * bounds.get(top, 0.0) / t["cycles"] if t["cycles"] else 0.0
    return {"preset": preset, "precision": precision, "latency_ms": t["latency_ms"],
            "inferences_per_second": t["inferences_per_second"], "energy_uj": t["energy_uj"],
            "peak_sram_kib": t["peak_sram_bytes"] / 1024, "spilled_kib": t["spilled_bytes"] / 1024,
            "npu_ops_pct": 100 * t["npu_op_fraction"], "npu_macs_pct": 100 * t["npu_mac_fraction"],
            "bound": f"{_bound_label(top, report.accelerator)} {share:.0f}%"}


def sweep_table(rows: list[dict]) -> str:
    head = (f"{'preset':<20}{'precision':<10}{'latency ms':>12}{'inf/s':>10}{'energy uJ':>11}{'SRAM KiB':>10}"
            f"{'spill KiB':>10}{'NPU ops':>9}{'NPU MACs':>9}  mostly")
    lines = [head]
    for r in rows:
        lines.append(f"{r['preset']:<20}{r['precision']:<10}{r['latency_ms']:>12.4f}"
                     f"{r['inferences_per_second'] or 0:>10.1f}{r['energy_uj']:>11.3f}{r['peak_sram_kib']:>10.1f}"
                     f"{r['spilled_kib']:>10.1f}{r['npu_ops_pct']:>8.0f}%{r['npu_macs_pct']:>8.0f}%  {r['bound']}")
    best = min(rows, key=lambda r: r["latency_ms"]) if rows else None
    if best:
        lines.append(f"fastest: {best['preset']} at {best['precision']} ({best['latency_ms']:.4f} ms); "
                     f"lowest energy: {min(rows, key=lambda r: r['energy_uj'])['preset']} at "
                     f"{min(rows, key=lambda r: r['energy_uj'])['precision']}")
    return "\n".join(lines)
