"""Plots for reports (matplotlib, an optional dependency: ``pip install lowbit[plot]``)."""
from __future__ import annotations

import io
import math

from lowbit.errors import LowbitError


def _pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise LowbitError("--plot needs matplotlib: pip install 'lowbit[plot]' (or pip install matplotlib)") from None
    return plt


def sqnr_plot_png(report: dict) -> bytes:
    """Per-tensor SQNR (dB) along the graph, one line per precision, as PNG bytes."""
    plt = _pyplot()
    layers = report["layers"]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.12 * len(layers)), 4.5), dpi=100)
    for p in report["precisions"]:
        ys = []
        for row in layers:
            m = row.get(p)
            s = None if m is None else m["sqnr_db"]
            ys.append(float("nan") if s is None or isinstance(s, str) else s)
        finite = [y for y in ys if not math.isnan(y)]
        acc = report["end_to_end"][p].get("accuracy")
        label = p + (f" (acc {100 * acc:.1f} %)" if acc is not None else "")
        ax.plot(range(len(ys)), ys, marker=".", linewidth=1, label=label)
        if finite:
            worst = min(range(len(ys)), key=lambda i: ys[i] if not math.isnan(ys[i]) else math.inf)
            ax.annotate(layers[worst]["tensor"][-28:], (worst, ys[worst]), fontsize=7, rotation=20)
    ax.set_xlabel("tensor (graph order)")
    ax.set_ylabel("SQNR vs float (dB)")
    ax.set_title("Quantization error per tensor")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
