"""compare: quantization error per layer and end to end, one column per precision.

For every tensor the integer graph computes, its dequantized value is compared with the float model's value
of the same tensor on the same evaluation samples:
- SQNR (dB) = 10 log10(sum x^2 / sum (x - x_hat)^2), accumulated over all samples;
- cosine similarity of x and x_hat (flattened over all samples);
- max |x - x_hat|;
- saturations: float values beyond the range the integer tensor can represent (clipped by quantization).
End to end: each graph output's SQNR and, when the evaluation set has ``labels``, task accuracy of the float
and the integer model (argmax over the last axis of the first output) and how many samples the integer model
classifies unlike the float model (``unlike_float``: the fidelity measure behind the accuracy; on a small
evaluation set two programs equally close to float can differ in accuracy by which borderline samples flip).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from lowbit.graph.ir import Graph
from lowbit.quant.calibrate import calibrate, iter_samples


@dataclass
class ErrorStats:
    signal: float = 0.0
    noise: float = 0.0
    dot: float = 0.0
    norm_hat: float = 0.0
    max_abs: float = 0.0
    saturated: int = 0
    count: int = 0

    def add(self, x: np.ndarray, xh: np.ndarray) -> None:
        x = np.asarray(x, np.float64).reshape(-1)
        xh = np.asarray(xh, np.float64).reshape(-1)
        finite = np.isfinite(x) & (np.abs(x) < 1e30)
        x, xh = x[finite], xh[finite]
        d = x - xh
        self.signal += float(x @ x)
        self.noise += float(d @ d)
        self.dot += float(x @ xh)
        self.norm_hat += float(xh @ xh)
        self.max_abs = max(self.max_abs, float(np.max(np.abs(d))) if d.size else 0.0)
        self.count += x.size

    @property
    def sqnr_db(self) -> float:
        if self.noise == 0:
            return math.inf
        if self.signal == 0:
            return -math.inf
        return 10 * math.log10(self.signal / self.noise)

    @property
    def cosine(self) -> float:
        den = math.sqrt(self.signal * self.norm_hat)
        return self.dot / den if den > 0 else (1.0 if self.noise == 0 else 0.0)

    def to_dict(self) -> dict:
        return {"sqnr_db": _finite(self.sqnr_db), "cosine": self.cosine, "max_abs_error": self.max_abs,
                "saturations": self.saturated, "elements": self.count}


def _finite(x: float):
    return x if math.isfinite(x) else (None if math.isnan(x) else ("inf" if x > 0 else "-inf"))


@dataclass
class PrecisionResult:
    precision: str
    layers: dict[str, ErrorStats] = field(default_factory=dict)
    outputs: dict[str, ErrorStats] = field(default_factory=dict)
    accuracy: float | None = None
    float_islands: list[str] = field(default_factory=list)
    unlike_float: int | None = None  # samples whose predicted class differs from the float model's


def compare(graph: Graph, calib: Mapping[str, np.ndarray], evalset: Mapping[str, np.ndarray],
            precisions: list[str], plan_file: str | None = None, progress=None,
            calib_source: str = "calibration data", eval_source: str = "evaluation data",
            accuracy_fn=None, options: dict | None = None) -> dict:
    """Compile ``graph`` at every precision and measure the error on ``evalset``; returns a JSON-able report.

    ``accuracy_fn(run_fn) -> float``, when given, measures task accuracy instead of argmax-vs-labels (e.g. greedy
    decoding of a VLM, whose labels are answer tokens): it is called with the float model's ``run_fn`` and with
    each precision's integer one; both accept any input shapes (quant.pinned.PinnedRunner: the integer program
    is re-lowered per shape with the calibrated QuantSpecs).

    ``options``: a target's lowering options (``Target.lowering_options``), so that the error measured is that of
    the integers the target runs (e.g. the tflite target's LayerNorm as TFLite ops); ``report["options"]``."""
    from lowbit.quant.compile import bind_to_samples, compile_graph
    from lowbit.quant.plan import make_plan
    from lowbit.runtime.float_executor import run as run_float
    plans = [make_plan(p, plan_file) for p in precisions]  # validate every string before any work
    labels = np.asarray(evalset["labels"]).reshape(-1) if "labels" in evalset and accuracy_fn is None else None
    n_eval = len(list(iter_samples(evalset, graph, eval_source)))
    if labels is not None and len(labels) != n_eval:
        from lowbit.errors import InputError
        raise InputError(f"{eval_source}: 'labels' holds {len(labels)} entries for {n_eval} samples")
    calib, evalset, batch = _batched(graph, calib, evalset)
    unbound = copy.deepcopy(graph) if accuracy_fn is not None else None  # accuracy_fn hook (issue 5)
    bind_to_samples(graph, calib, calib_source)
    samples = list(iter_samples(evalset, graph, eval_source))
    stats = calibrate(graph, calib, calib_source, progress)
    # float reference, every tensor, every sample
    order = [v.name for n in graph.nodes for v in n.outputs]
    ref: list[dict[str, np.ndarray]] = []
    float_pred: list[np.ndarray] = []
    float_correct = 0
    for i, feeds in enumerate(samples):
        values: dict[str, np.ndarray] = {}

        def keep(node, outs):
            for v, o in zip(node.outputs, outs):
                if o.dtype.kind == "f":
                    values[v.name] = o
        outs = run_float(graph, feeds, observe=keep)
        values.update({k: v for k, v in outs.items()})
        ref.append(values)
        if labels is not None:
            float_correct += _correct(outs[graph.outputs[0].name], labels[i * batch:(i + 1) * batch])
            float_pred.append(_predicted(outs[graph.outputs[0].name], batch))
    if accuracy_fn is not None:  # accuracy_fn hook (issue 5)
        from lowbit.quant.pinned import PinnedRunner, pinned_specs
        float_acc = accuracy_fn(PinnedRunner(unbound))
    results = []
    for plan in plans:
        artifact, lowered = compile_graph(graph, calib, plan, calib_source=calib_source, stats=stats,
                                          options=options)
        res = PrecisionResult(plan.default.name, float_islands=lowered.float_islands)
        results.append(res)
        correct = unlike = 0
        for i, feeds in enumerate(samples):
            int_stats: dict = {}
            seen: dict[str, np.ndarray] = {}

            def watch(node, outs):
                for v, o in zip(node.outputs, outs):
                    name = lowered.float_of.get(v.name)
                    if name is not None and v.quant is not None and name in ref[i]:
                        seen[name] = (v.quant.dequantize(o), v.quant)
            outs = _run_int(artifact, feeds, int_stats, watch)
            for name, (xh, spec) in seen.items():
                st = res.layers.setdefault(name, ErrorStats())
                st.add(ref[i][name], xh)
                st.saturated += _clipped(ref[i][name], spec)
            for v in graph.outputs:
                res.outputs.setdefault(v.name, ErrorStats()).add(ref[i][v.name], outs[v.name])
            if labels is not None:
                correct += _correct(outs[graph.outputs[0].name], labels[i * batch:(i + 1) * batch])
                unlike += int(np.count_nonzero(_predicted(outs[graph.outputs[0].name], batch) != float_pred[i]))
        if labels is not None:
            res.accuracy = correct / n_eval
            res.unlike_float = unlike
        if accuracy_fn is not None:  # accuracy_fn hook (issue 5)
            res.accuracy = accuracy_fn(PinnedRunner(unbound, pinned_specs(lowered), plan.resolve(graph), plan.default))
    if accuracy_fn is None:
        float_acc = float_correct / n_eval if labels is not None else None
    report = _report(graph, order, results, float_acc, n_eval)
    if options:
        report["options"] = {k: v for k, v in options.items() if isinstance(v, (str, int, float, bool))}
    return report


def _batched(graph: Graph, calib, evalset):
    """When every input has a dynamic leading (batch) axis along which the samples are stacked, regroup both
    sets into batches of B samples (B divides both counts, at most 64) so each run covers B samples."""
    import math as _m
    arrays = [np.asarray(d[v.name]) for d in (calib, evalset) for v in graph.inputs if v.name in d]
    if not graph.inputs or len(arrays) != 2 * len(graph.inputs):
        return calib, evalset, 1
    if not all(v.shape is not None and isinstance(v.shape[0], str) and np.ndim(d[v.name]) == len(v.shape)
               for v in graph.inputs for d in (calib, evalset)):
        return calib, evalset, 1
    g = _m.gcd(len(calib[graph.inputs[0].name]), len(evalset[graph.inputs[0].name]))
    batch = max(d for d in range(1, min(g, 64) + 1) if g % d == 0)
    if batch == 1:
        return calib, evalset, 1

    def regroup(d):
        out = dict(d)
        for v in graph.inputs:
            a = np.asarray(d[v.name])
            out[v.name] = a.reshape(len(a) // batch, batch, *a.shape[1:])
        return out
    return regroup(calib), regroup(evalset), batch


def _clipped(x: np.ndarray, spec) -> int:
    """Float values beyond what ``spec`` can represent (more than half a step past its end codes)."""
    if spec.per_channel:
        return 0
    s, z = float(spec.scale), int(spec.zero_point)
    lo, hi = (spec.qmin - z - 0.5) * s, (spec.qmax - z + 0.5) * s
    x = np.asarray(x)
    return int(np.count_nonzero((x < lo) | (x > hi)))


def _run_int(artifact, feeds, stats, watch):
    from lowbit.runtime.int_executor import run as run_int
    return run_int(artifact.graph, feeds, stats=stats, observe=watch)


def _predicted(logits: np.ndarray, batch: int) -> np.ndarray:
    return np.argmax(np.asarray(logits).reshape(batch, -1), axis=-1)


def _correct(logits: np.ndarray, labels: np.ndarray) -> int:
    """How many rows of ``logits`` (argmax over the last axis) equal ``labels``."""
    logits = np.asarray(logits)
    pred = np.argmax(logits.reshape(len(labels), -1), axis=-1)
    return int(np.count_nonzero(pred == labels))


def _report(graph: Graph, order: list[str], results: list[PrecisionResult], float_acc, n: int) -> dict:
    ops = {v.name: n.op_type for n in graph.nodes for v in n.outputs}
    layers = []
    for name in order:
        if not any(name in r.layers for r in results):
            continue
        layers.append({"tensor": name, "op": ops.get(name, ""),
                       **{r.precision: r.layers[name].to_dict() if name in r.layers else None for r in results}})
    return {"samples": n, "float_accuracy": float_acc, "precisions": [r.precision for r in results],
            "layers": layers,
            "end_to_end": {r.precision: {"outputs": {k: s.to_dict() for k, s in r.outputs.items()},
                                         "accuracy": r.accuracy, "unlike_float": r.unlike_float,
                                         "float_islands": r.float_islands} for r in results}}


def report_text(report: dict) -> str:
    precs = report["precisions"]
    lines = ["SQNR (dB) per tensor [saturations] — higher is better; float islands are marked 'float'"]
    if report.get("options"):
        lines.insert(0, "lowered with " + ", ".join(f"{k}={v}" for k, v in report["options"].items()))
    head = f"{'tensor':<44}{'op':<20}" + "".join(f"{p:>16}" for p in precs)
    lines.append(head)
    for row in report["layers"]:
        cells = []
        for p in precs:
            m = row[p]
            if m is None:
                cells.append(f"{'float':>16}")
                continue
            s = m["sqnr_db"]
            txt = "exact" if s == "inf" else f"{s:.1f}"
            if m["saturations"]:
                txt += f" [{m['saturations']}]"
            cells.append(f"{txt:>16}")
        lines.append(f"{row['tensor'][-43:]:<44}{row['op'][:19]:<20}" + "".join(cells))
    lines.append("")
    lines.append(f"{'end to end':<64}" + "".join(f"{p:>16}" for p in precs))
    first_out = next(iter(report["end_to_end"][precs[0]]["outputs"])) if precs else None
    if first_out is not None:
        vals = []
        for p in precs:
            s = report["end_to_end"][p]["outputs"][first_out]["sqnr_db"]
            vals.append(f"{'exact' if s == 'inf' else f'{s:.1f} dB':>16}")
        lines.append(f"{'output ' + first_out + ' SQNR':<64}" + "".join(vals))
        cos = [f"{report['end_to_end'][p]['outputs'][first_out]['cosine']:>16.5f}" for p in precs]
        lines.append(f"{'output cosine similarity':<64}" + "".join(cos))
    if report["float_accuracy"] is not None:
        acc = [f"{100 * report['end_to_end'][p]['accuracy']:>15.2f}%" for p in precs]
        lines.append(f"{'accuracy (float ' + format(100 * report['float_accuracy'], '.2f') + '%)':<64}" + "".join(acc))
        if all(report["end_to_end"][p].get("unlike_float") is not None for p in precs):
            unlike = [f"{report['end_to_end'][p]['unlike_float']:>16}" for p in precs]
            lines.append(f"{'predictions unlike the float model' + chr(39) + 's':<64}" + "".join(unlike))
    islands = {p: report["end_to_end"][p]["float_islands"] for p in precs}
    for p, isl in islands.items():
        if isl:
            lines.append(f"{p}: {len(isl)} node(s) run in float (no integer lowering yet): {', '.join(isl[:8])}"
                         + (" ..." if len(isl) > 8 else ""))
    return "\n".join(lines)
