"""Quantization quality, lowbit vs ONNX Runtime's quantize_static, side by side.

    python -m lowbit.tools.bench.quant_quality [--models squeezenet,resnet50,mobilenet_digits,...]
                                               [--calib N] [--eval 16] [--calib-draws K]

For each model the same calibration samples feed lowbit (``compare`` at w8a8, w4a8, w8a16, w4a16) and ORT's
``quantize_static`` (QDQ format, per-channel weights, MinMax calibration, its default U8 activations / S8
weights); both quantized models run on the same evaluation samples, and the table gives each one's output
SQNR against the float model (dB, higher is better) and, for zoo models with labels, task accuracy.
Light models (ResNet50, SqueezeNet, ...) use seeded random inputs (``--calib`` of them, 32 by default); zoo
models their committed calib/eval sets, by default the whole shipped calibration set (64 samples, what
``lowbit compare`` and ``lowbit compile`` use for a zoo model), or its first ``--calib``.

``--calib-draws K`` repeats each zoo classifier's w8a8 comparison with K more calibration sets of the same size,
drawn at random (seeds 100 .. 100 + K - 1) from the training split the model was trained on, and prints each
tool's accuracy range and mean: on 360 test samples a few borderline predictions decide a point, and which
ones flip depends on the calibration samples as much as on the quantizer.
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


def training_draw(name: str, n: int, k: int) -> dict[str, np.ndarray]:
    """The ``k``-th random ``n``-sample calibration set from a zoo classifier's training split (seed 100 + k),
    built the way its recipe builds the shipped calibration set."""
    from lowbit.tools import zoo
    from lowbit.tools.zoo import data
    x_tr = data.digits_split()[0]
    ev = zoo.load_eval(name)
    inputs = [key for key in ev if key != "labels"]
    shape = ev[inputs[0]].shape
    if inputs == ["x"]:
        feed = {"x": data.sequences(x_tr)}
    elif inputs == ["image"]:
        feed = {"image": data.images(x_tr, shape[-1])}
    else:
        raise SystemExit(f"--calib-draws: {name} has inputs {inputs}; draws are made for the digit classifiers only")
    pick = np.sort(np.random.default_rng(100 + k).choice(len(x_tr), n, replace=False))
    return {key: v[pick] for key, v in feed.items()}


def _model_and_data(name: str, n_calib: int, n_eval: int):
    import onnx
    from lowbit.tools import zoo
    from lowbit.tools.light_models import LIGHT_MODELS, realize
    if name in LIGHT_MODELS:
        model = realize(name)
        inp = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
        shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
        rng = np.random.default_rng(3)
        n_calib = 32 if n_calib is None else n_calib
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


def ort_quantized_run(model, calib: dict, batch_axis: bool):
    """ONNX Runtime's quantize_static of ``model`` (QDQ, per-channel weights, MinMax over ``calib``) as a
    ``run_fn(feeds) -> {output name: array}`` (tools.zoo.evaluation), one thread."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static
    from lowbit.tools.zoo.evaluation import ort_runner
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "qdq.onnx")
        onnx.save(model, src)
        quantize_static(src, dst, _Reader(calib, batch_axis), quant_format=QuantFormat.QDQ, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
        return ort_runner(dst)  # the session holds the model; the folder may go


def ort_quantized_outputs(model, calib: dict, ev: dict, batch_axis: bool) -> list[np.ndarray]:
    run = ort_quantized_run(model, calib, batch_axis)
    n = len(next(iter(ev.values())))
    feeds = [{k: (v[i:i + 1] if batch_axis else v[i]) for k, v in ev.items() if k != "labels"} for i in range(n)]
    return [list(run(f).values())[0] for f in feeds]


def bench_model(name: str, n_calib: int, n_eval: int, precisions: list[str], calib: dict | None = None) -> dict:
    """One model's row: lowbit's SQNR / accuracy / predictions unlike float per precision, and ORT's at w8a8;
    ``calib`` replaces the model's own calibration samples."""
    from lowbit.graph.onnx_export import to_onnx_model
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.quant.compare import compare
    model, own_calib, ev = _model_and_data(name, n_calib, n_eval)
    calib = own_calib if calib is None else calib
    graph = from_onnx_model(model)
    if any(o.domain == "" and o.version < 13 for o in model.opset_import):
        # ORT's quantizer runs ONNX's version converter, which fails on old files (initializers listed as
        # inputs, opset 9); give it the same float model re-spelled in opset 21 by lowbit (no passes run)
        model = to_onnx_model(graph)
    first = graph.inputs[0]
    batch_axis = first.shape is not None and isinstance(first.shape[0], str)
    from lowbit.tools.zoo import task_accuracy_fn
    accuracy_fn = task_accuracy_fn(name, ev)
    report = compare(graph, calib, ev, precisions, accuracy_fn=accuracy_fn)
    out_name = graph.outputs[0].name
    row = {"model": name, "samples": report["samples"], "float_accuracy": report["float_accuracy"]}
    for p in precisions:
        e2e = report["end_to_end"][p]
        s = e2e["outputs"][out_name]["sqnr_db"]
        row[p] = math.inf if s == "inf" else s
        row[f"{p}_acc"] = e2e["accuracy"]
        row[f"{p}_unlike"] = e2e.get("unlike_float")
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
    ort_run = ort_quantized_run(model, calib, batch_axis)
    qd = [list(ort_run(f).values())[0] for f in feeds]
    row["ort_w8a8"] = _sqnr(np.concatenate([r.reshape(-1) for r in ref]), np.concatenate([q.reshape(-1) for q in qd]))
    if accuracy_fn is not None:
        row["ort_w8a8_acc"] = accuracy_fn(ort_run)
    elif "labels" in ev:
        labels = np.asarray(ev["labels"]).reshape(len(qd), -1)[:, 0] if np.ndim(ev["labels"]) > 1 else ev["labels"]
        ort_pred = np.array([int(np.argmax(q.reshape(-1, q.shape[-1])[0])) for q in qd])
        ref_pred = np.array([int(np.argmax(r.reshape(-1, r.shape[-1])[0])) for r in ref])
        row["ort_w8a8_acc"] = float(np.mean(ort_pred == labels[:len(qd)]))
        row["ort_w8a8_unlike"] = int(np.count_nonzero(ort_pred != ref_pred))
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="squeezenet,resnet50,mobilenet_digits,vit_digits")
    ap.add_argument("--calib", type=int, default=None,
                    help="calibration samples (default: a zoo model's whole calibration set, 32 for light models)")
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--precisions", default="w8a8,w4a8,w8a16,w4a16")
    ap.add_argument("--calib-draws", type=int, default=0,
                    help="zoo classifiers: also compare w8a8 over K random calibration draws from the training split")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits
    precisions = args.precisions.split(",")
    if args.calib_draws:
        with threadpool_limits(1):
            draws_table(args.models.split(","), args.calib, args.eval, args.calib_draws)
        return
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
        print("Task accuracy, and in brackets the predictions unlike the float model's:")
        print("| model | float accuracy | ORT w8a8 | " + " | ".join(f"lowbit {p}" for p in precisions) + " |")
        print("|---|---:|---:|" + "---:|" * len(precisions))
        for r in rows:
            if r.get("float_accuracy") is None:
                continue
            print(f"| {r['model']} | {100 * r['float_accuracy']:.2f} % | {_acc(r, 'ort_w8a8')} | "
                  + " | ".join(_acc(r, p) for p in precisions) + " |")


def draws_table(models: list[str], n_calib: int | None, n_eval: int, k: int) -> None:
    """w8a8 accuracy of lowbit and ORT over the shipped calibration set and ``k`` training-split draws."""
    from lowbit.tools import zoo
    print("| model | float | lowbit w8a8: range, mean (unlike float) | ORT w8a8: range, mean (unlike float) | "
          "runs lowbit >= ORT |")
    print("|---|---:|---:|---:|---:|")
    for name in models:
        n = n_calib or len(next(iter(zoo.load_calib(name).values())))
        rows = [bench_model(name, n_calib, n_eval, ["w8a8"])]
        rows += [bench_model(name, n_calib, n_eval, ["w8a8"], training_draw(name, n, i)) for i in range(k)]
        for i, r in enumerate(rows):
            print(f"  {name} {'shipped' if i == 0 else f'draw {i - 1}'}: lowbit {_acc(r, 'w8a8')}, "
                  f"ORT {_acc(r, 'ort_w8a8')}", flush=True)

        def summary(key):
            a = np.array([100 * r[f"{key}_acc"] for r in rows])
            u = [r[f"{key}_unlike"] for r in rows]
            return f"{a.min():.2f} - {a.max():.2f} %, {a.mean():.2f} ({min(u)} - {max(u)})"
        wins = sum(r["w8a8_acc"] >= r["ort_w8a8_acc"] for r in rows)
        print(f"| {name} | {100 * rows[0]['float_accuracy']:.2f} % | {summary('w8a8')} | {summary('ort_w8a8')} | "
              f"{wins} / {len(rows)} |", flush=True)


def _acc(row: dict, key: str) -> str:
    acc, unlike = row.get(f"{key}_acc"), row.get(f"{key}_unlike")
    return ("n/a" if acc is None else f"{100 * acc:.2f} %") + ("" if unlike is None else f" ({unlike})")


if __name__ == "__main__":
    main()
