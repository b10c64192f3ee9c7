"""Quantization quality, lowbit vs ONNX Runtime's quantize_static, side by side.

    python -m lowbit.tools.bench.quant_quality [--models squeezenet,resnet50,mobilenet_digits,...]
                                               [--calib 32] [--eval 16]

For each model the same calibration samples feed lowbit (``compare`` at w8a8, w4a8, w8a16, w4a16) and ORT's
``quantize_static`` (QDQ format, per-channel weights, MinMax calibration, its default U8 activations / S8
weights); both quantized models run on the same evaluation samples, and the table gives each one's output
SQNR against the float model (dB, higher is better) and, for zoo models with labels, task accuracy.
Light models (ResNet50, SqueezeNet, ...) use seeded random inputs; zoo models their committed calib/eval sets.
"""
from __future__ import annotations

import argparse
import math
import os
import tempfile

import numpy as np


def _sqnr(ref: np.ndarray, x: np.ndarray) -> float:
    ref = np.asarray(ref, np.float64)
    noise = float(np.sum((ref - np.asarray(x, np.float64)) ** 2))
    return math.inf if noise == 0 else 10 * math.log10(float(np.sum(ref ** 2)) / noise)


def _model_and_data(name: str, n_calib: int, n_eval: int):
    import onnx
    from lowbit.tools import zoo
    from lowbit.tools.light_models import LIGHT_MODELS, realize
    if name in LIGHT_MODELS:
        model = realize(name)
        inp = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        rng = np.random.default_rng(3)
        calib = {inp.name: rng.standard_normal((n_calib, *shape)).astype(np.float32)}
        ev = {inp.name: rng.standard_normal((n_eval, *shape)).astype(np.float32)}
        return model, calib, ev
    model = onnx.load(str(zoo.path(name)))
    calib = {k: v[:n_calib] for k, v in zoo.load_calib(name).items()}
    ev = {k: v[:n_eval] for k, v in zoo.load_eval(name).items()}
    return model, calib, ev


class _Reader:
    """ORT CalibrationDataReader over stacked samples, one sample (batch of one) per call."""

    def __init__(self, calib: dict, batch_axis: bool):
        n = len(next(iter(calib.values())))
        self._items = iter([{k: (v[i:i + 1] if batch_axis else v[i]) for k, v in calib.items()} for i in range(n)])

    def get_next(self):
        return next(self._items, None)


def ort_quantized_outputs(model, calib: dict, ev: dict, batch_axis: bool) -> list[np.ndarray]:
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "qdq.onnx")
        import onnx
        onnx.save(model, src)
        quantize_static(src, dst, _Reader(calib, batch_axis), quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
        n = len(next(iter(ev.values())))
        feeds = [{k: (v[i:i + 1] if batch_axis else v[i]) for k, v in ev.items() if k != "labels"} for i in range(n)]
        return [sess.run(None, f)[0] for f in feeds]


def bench_model(name: str, n_calib: int, n_eval: int, precisions: list[str]) -> dict:
    from lowbit.graph.onnx_export import to_onnx_model
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.quant.compare import compare
    model, calib, ev = _model_and_data(name, n_calib, n_eval)
    graph = from_onnx_model(model)
    if any(o.domain == "" and o.version < 13 for o in model.opset_import):
        # ORT's quantizer runs ONNX's version converter, which fails on old files (initializers listed as
        # inputs, opset 9); give it the same float model re-spelled in opset 21 by lowbit (no passes run)
        model = to_onnx_model(graph)
    first = graph.inputs[0]
    batch_axis = first.shape is not None and isinstance(first.shape[0], str)
    report = compare(graph, calib, ev, precisions)
    out_name = graph.outputs[0].name
    row = {"model": name, "samples": report["samples"], "float_accuracy": report["float_accuracy"]}
    for p in precisions:
        e2e = report["end_to_end"][p]
        s = e2e["outputs"][out_name]["sqnr_db"]
        row[p] = math.inf if s == "inf" else s
        row[f"{p}_acc"] = e2e["accuracy"]
    # ORT on the same samples, against the float model run by ORT
    from lowbit.tools.zoo.evaluation import ort_runner  # a plain ORT session wrapper
    with tempfile.TemporaryDirectory() as tmp:
        import onnx
        path = os.path.join(tmp, "f.onnx")
        onnx.save(model, path)
        fl = ort_runner(path)
        n = len(next(iter(ev.values())))
        feeds = [{k: (v[i:i + 1] if batch_axis else v[i]) for k, v in ev.items() if k != "labels"} for i in range(n)]
        ref = [np.asarray(list(fl(f).values())[0]) for f in feeds]
    qd = ort_quantized_outputs(model, calib, ev, batch_axis)
    row["ort_w8a8"] = _sqnr(np.concatenate([r.reshape(-1) for r in ref]), np.concatenate([q.reshape(-1) for q in qd]))
    if "labels" in ev:
        labels = np.asarray(ev["labels"]).reshape(len(qd), -1)[:, 0] if np.ndim(ev["labels"]) > 1 else ev["labels"]
        row["ort_w8a8_acc"] = float(np.mean([int(np.argmax(q.reshape(-1, q.shape[-1])[0]) == l)
                                             for q, l in zip(qd, labels)]))
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="squeezenet,resnet50,mobilenet_digits,vit_digits")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--precisions", default="w8a8,w4a8,w8a16,w4a16")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    precisions = args.precisions.split(",")
    rows = []
    with threadpool_limits(1):
        for m in args.models.split(","):
            rows.append(bench_model(m, args.calib, args.eval, precisions))
            r = rows[-1]
            print(f"{m}: ORT w8a8 {r['ort_w8a8']:.1f} dB, lowbit " +
                  ", ".join(f"{p} {r[p]:.1f} dB" for p in precisions), flush=True)
    print()
    print("| model | ORT quantize_static w8a8 (dB) | " + " | ".join(f"lowbit {p} (dB)" for p in precisions) + " |")
    print("|---|---:|" + "---:|" * len(precisions))
    for r in rows:
        print(f"| {r['model']} | {r['ort_w8a8']:.1f} | " + " | ".join(f"{r[p]:.1f}" for p in precisions) + " |")
    if any(r.get("float_accuracy") is not None for r in rows):
        print()
        print("| model | float accuracy | ORT w8a8 | " + " | ".join(f"lowbit {p}" for p in precisions) + " |")
        print("|---|---:|---:|" + "---:|" * len(precisions))
        for r in rows:
            if r.get("float_accuracy") is None:
                continue
            print(f"| {r['model']} | {100 * r['float_accuracy']:.2f} % | {100 * r.get('ort_w8a8_acc', float('nan')):.2f} % | "
                  + " | ".join(f"{100 * r[p + '_acc']:.2f} %" for p in precisions) + " |")


if __name__ == "__main__":
    main()
