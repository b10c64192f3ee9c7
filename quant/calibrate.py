"""Calibration: run the float executor over calibration samples and record each tensor's value range.

Observers (per tensor):
- ``minmax``: the exact minimum and maximum seen.
- ``percentile``: the range covering the central ``percentile`` % of values (default 99.99).
- ``entropy``: the clip threshold minimising the KL divergence between the value histogram and its quantized
  form (TensorRT's method), over a 2048-bin histogram of |x|.
- ``mse``: the clip threshold minimising the mean squared quantization error (clipping + rounding).
Histogram-based observers work on a seeded random sample of each tensor's values (at most ``RESERVOIR``
values per tensor, with the exact min/max kept alongside), so memory stays bounded on big models.

Sentinels: real exports build attention masks as ``Where(mask, 0, -3.4e38)``. Values with |x| >= 1e30 stand
for "minus infinity" and are left out of every range (and counted): a min/max observer would otherwise give
the mask — and every tensor it is added to — a scale so coarse that all other values round to zero.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

import numpy as np

from lowbit.errors import InputError
from lowbit.graph.ir import Graph

SENTINEL = 1e30
RESERVOIR = 1 << 16
OBSERVERS = ("minmax", "percentile", "entropy", "mse")


@dataclass
class TensorStats:
    """Everything calibration learned about one tensor."""
    min: float = math.inf
    max: float = -math.inf
    count: int = 0
    sentinels: int = 0
    sample: list = field(default_factory=list)  # arrays, concatenated lazily
    channel_sums: dict = field(default_factory=dict)  # axis (1 or -1) -> [float64 sum per channel, values each]

    def update(self, x: np.ndarray, rng: np.random.Generator, keep_sample: bool = True,
               channels=()) -> None:
        """Record ``x``; ``channels``: the axes (1, -1) along which to accumulate per-channel sums."""
        x = np.asarray(x)
        if x.dtype.kind != "f" or x.size == 0:
            return
        flat = x.reshape(-1)
        lo, hi = float(flat.min()), float(flat.max())
        clean = -SENTINEL < lo and hi < SENTINEL  # (NaN compares false)
        if channels and clean and x.ndim >= 2:
            self._add_channel_sums(x, channels)
        if not clean:
            mask = ~(np.abs(flat) < SENTINEL)  # NaN counts as a sentinel too
            self.sentinels += int(mask.sum())
            flat = flat[~mask]
            if flat.size == 0:
                return
            lo, hi = float(flat.min()), float(flat.max())
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)
        self.count += flat.size
        if not keep_sample:
            return
        step = max(1, flat.size // RESERVOIR)  # a strided view from a random offset: cheap and unbiased enough
        self.sample.append(np.array(flat[int(rng.integers(step))::step][:RESERVOIR]))
        if sum(s.size for s in self.sample) > 4 * RESERVOIR:
            merged = np.concatenate(self.sample)
            self.sample = [merged[rng.permutation(merged.size)[:RESERVOIR]]]

    def _add_channel_sums(self, x: np.ndarray, axes) -> None:
        for a in {axis % x.ndim for axis in axes}:
            if a == x.ndim - 1:  # float32 sums within a sample (contiguous rows), float64 across samples
                total = x.reshape(-1, x.shape[-1]).sum(axis=0).astype(np.float64)
            elif a == 1:
                total = x.reshape(x.shape[0], x.shape[1], -1).sum(axis=2).sum(axis=0).astype(np.float64)
            else:
                continue
            n = x.size // x.shape[a]
            for key in ((1, -1) if x.ndim == 2 else (1,) if a == 1 else (-1,)):
                got = self.channel_sums.get(key)
                if got is None:
                    self.channel_sums[key] = [total, n]
                elif got[0].shape == total.shape:  # (a sample of another shape keeps the first one's channels)
                    self.channel_sums[key] = [got[0] + total, got[1] + n]

    def channel_mean(self, axis: int) -> np.ndarray | None:
        """The mean of each channel along ``axis`` (1, or -1 for the last axis) over every calibration value,
        or None when it was not recorded (only the axis a layer with weights reads is, see ``calibrate``)."""
        got = self.channel_sums.get(axis)
        return None if got is None or got[1] == 0 else got[0] / got[1]

    def values(self) -> np.ndarray:
        return np.concatenate(self.sample).astype(np.float64) if self.sample else np.zeros(0)

    def range(self, observer: str = "minmax", bits: int = 8, percentile: float = 99.99) -> tuple[float, float]:
        """(lo, hi) for this tensor under ``observer``; always contains 0 and never exceeds [min, max]."""
        if self.count == 0:
            return 0.0, 0.0
        lo, hi = min(self.min, 0.0), max(self.max, 0.0)
        if observer == "minmax":
            return lo, hi
        if not self.sample:
            raise ValueError(f"observer '{observer}' needs value samples; calibrate with keep_samples=True")
        v = self.values()
        if observer == "percentile":
            tail = (100.0 - percentile) / 2
            plo, phi = np.percentile(v, [tail, 100.0 - tail])
            return min(float(plo), 0.0), max(float(phi), 0.0)
        fn = {"entropy": _entropy_threshold, "mse": _mse_threshold}.get(observer)
        if fn is None:
            raise InputError(f"unknown observer '{observer}'; choose one of {', '.join(OBSERVERS)}")
        if lo < 0 < hi:  # signed tensor: one symmetric threshold
            t = fn(np.abs(v), max(-lo, hi), bits)
            return max(lo, -t), min(hi, t)
        t = fn(np.abs(v), max(-lo, hi), bits)
        return (0.0, min(hi, t)) if lo == 0.0 else (max(lo, -t), 0.0)


def _entropy_threshold(absv: np.ndarray, amax: float, bits: int, nbins: int = 2048) -> float:
    """TensorRT-style KL calibration of a clip threshold for |x| (unsigned half of the code range)."""
    if amax <= 0 or absv.size == 0:
        return amax
    hist, edges = np.histogram(absv, bins=nbins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    nq = (1 << (bits - 1))  # levels on one side
    if nbins <= nq:
        return amax
    best, best_i = math.inf, nbins
    total = hist.sum()
    for i in range(nq, nbins + 1, max(1, (nbins - nq) // 256)):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()
        # quantize the first i bins into nq levels, expand back over the non-empty bins
        idx = (np.arange(i) * nq) // i
        q_levels = np.bincount(idx, weights=hist[:i], minlength=nq)
        nonzero = (hist[:i] > 0).astype(np.float64)
        counts = np.bincount(idx, weights=nonzero, minlength=nq)
        q = np.where(nonzero > 0, q_levels[idx] / np.maximum(counts[idx], 1), 0.0)
        p /= total
        qs = q.sum()
        if qs == 0:
            continue
        q /= qs
        m = (p > 0)
        kl = float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i]) if best_i < len(edges) else amax


def _mse_threshold(absv: np.ndarray, amax: float, bits: int, steps: int = 100) -> float:
    """Clip threshold minimising E[(x - Q(x))^2] over |x|, searched on a grid of fractions of max |x|."""
    if amax <= 0 or absv.size == 0:
        return amax
    levels = (1 << (bits - 1)) - 1
    best, best_t = math.inf, amax
    for frac in np.linspace(0.05, 1.0, steps):
        t = amax * frac
        s = t / levels
        q = np.minimum(np.round(absv / s), levels) * s
        err = float(np.mean((absv - q) ** 2))
        if err < best:
            best, best_t = err, t
    return best_t


def iter_samples(calib: Mapping[str, np.ndarray], graph: Graph, source: str = "calibration data") -> Iterable[dict]:
    """Check a calibration set ([N, *input_shape] per graph input) and yield one feed dict per sample.

    A set stacked along the model's own batch axis ([N, C, H, W] for an input [batch, C, H, W]) is read as N
    batches of one."""
    names = [v.name for v in graph.inputs]
    missing = [n for n in names if n not in calib]
    if missing:
        raise InputError(f"{source} lacks graph input(s) {', '.join(repr(m) for m in missing)}; it holds "
                         f"{', '.join(repr(k) for k in calib) or 'nothing'}")
    counts = {n: len(calib[n]) if np.ndim(calib[n]) else 0 for n in names}
    if not names:
        return
    n = counts[names[0]]
    if n == 0 or any(c != n for c in counts.values()):
        raise InputError(f"{source} must hold N >= 1 samples stacked on a leading axis for every input; "
                         f"found {counts}")
    for name in names:
        arr = np.asarray(calib[name])
        if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise InputError(f"{source}: input '{name}' holds {bad} NaN/Inf value(s); calibration needs finite data")
    ranks = {v.name: (len(v.shape) if v.shape is not None else None) for v in graph.inputs}
    for i in range(n):
        sample = {}
        for name in names:
            x = np.asarray(calib[name][i])
            if ranks[name] is not None and x.ndim == ranks[name] - 1:
                x = x[None]  # samples stacked along the model's own batch axis: one sample is a batch of 1
            sample[name] = x
        yield sample


def weighted_inputs(graph: Graph) -> dict[str, tuple[int, ...]]:
    """{value name: channel axes} for the data inputs of Conv (axis 1), Gemm (axis 1, its last) and MatMul (the
    last axis) nodes with constant weights: the per-channel means bias correction reads."""
    axes: dict[str, set[int]] = {}
    for n in graph.nodes:
        if n.domain == "" and n.op_type in ("Conv", "Gemm", "MatMul") and len(n.inputs) > 1 \
                and n.inputs[1] is not None and n.inputs[1].const is not None and n.inputs[0] is not None:
            axes.setdefault(n.inputs[0].name, set()).add(-1 if n.op_type == "MatMul" else 1)
    return {k: tuple(sorted(v)) for k, v in axes.items()}


def calibrate(graph: Graph, calib: Mapping[str, np.ndarray], source: str = "calibration data",
              progress: Callable[[int, int], None] | None = None, seed: int = 0,
              keep_samples: bool = True, engine: str = "auto") -> dict[str, TensorStats]:
    """Run the float graph on every calibration sample; return {value name: TensorStats} for graph inputs and
    every node output. ``progress(done, total)`` is called after each sample. ``keep_samples=False`` records
    exact ranges only (enough for the minmax observer, and faster). The inputs of layers with constant weights
    also get per-channel means (along axis 1 and the last axis), which bias correction needs.

    ``engine``: "lowbit" runs lowbit's float executor; "ort" runs ONNX Runtime on the exported graph with every
    node output made a graph output (what quantize_static's calibrator does; several times faster where the
    float executor is BLAS-bound); "auto" (default) takes ORT when the graph is standard ONNX that ORT accepts,
    else lowbit. The two agree to float32 rounding (tests/test_calibrate.py)."""
    from lowbit.runtime.float_executor import check_feeds, run as run_float
    if engine not in ("auto", "ort", "lowbit"):
        raise ValueError(f"calibrate: engine must be 'auto', 'ort' or 'lowbit', got {engine!r}")
    rng = np.random.default_rng(seed)
    stats: dict[str, TensorStats] = {}
    means = weighted_inputs(graph)

    def observe(node, outs):
        for v, o in zip(node.outputs, outs):
            stats.setdefault(v.name, TensorStats()).update(o, rng, keep_samples, means.get(v.name, ()))

    samples = list(iter_samples(calib, graph, source))
    ort_run = _ort_forward(graph) if engine != "lowbit" and samples else None
    if engine == "ort" and ort_run is None:
        raise InputError(f"calibrate: ONNX Runtime cannot run this graph ({graph.name}); use engine='lowbit'")
    for i, feeds in enumerate(samples):
        feeds = check_feeds(graph, feeds, what=f"{source} sample {i}")
        for name, x in feeds.items():
            stats.setdefault(name, TensorStats()).update(x, rng, keep_samples, means.get(name, ()))
        if ort_run is not None:
            outs = ort_run(feeds)
            for node in graph.nodes:
                observe(node, [outs[v.name] for v in node.outputs])
        else:
            run_float(graph, feeds, observe=observe, check=(i == 0))
        if progress is not None:
            progress(i + 1, len(samples))
    return stats


def _ort_forward(graph: Graph) -> Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]] | None:
    """``feeds -> {every node output: array}`` through an ONNX Runtime session, or None when the graph has
    ops outside the standard ONNX domain, outputs ORT would not name, or ORT refuses it."""
    if any(n.domain not in ("", "ai.onnx") for n in graph.nodes):
        return None
    outputs = [v for n in graph.nodes for v in n.outputs]
    if any(v is None or not v.name or v.dtype is None for v in outputs):
        return None
    import onnx
    import onnxruntime as ort
    from lowbit.graph.onnx_export import to_onnx_model
    try:
        model = to_onnx_model(graph)
        named = {o.name for o in model.graph.output}
        for v in outputs:
            if v.name not in named:
                named.add(v.name)
                model.graph.output.append(onnx.helper.make_tensor_value_info(
                    v.name, onnx.helper.np_dtype_to_tensor_dtype(np.dtype(v.dtype)), None))
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception:  # ORT lacks an op, an opset or a dtype: lowbit's executor runs it instead
        return None
    names = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]

    def run(feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {k: feeds[k] for k in inputs})))
    return run


def stderr_progress(label: str = "calibrating") -> Callable[[int, int], None]:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, total: int) -> None:
        if not tty:
            return
        width = 30
        filled = width * done // max(total, 1)
        sys.stderr.write(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()
    return show
