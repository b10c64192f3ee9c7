"""Integer executor latency and compile time, lowbit vs ONNX Runtime, side by side in one process.

    python -m lowbit.tools.bench.int_latency [--model resnet50] [--calib 32] [--runs 10]

- latency: lowbit's integer executor on its W8A8 artifact vs ORT on its own QDQ int8 model from
  ``quantize_static`` (per-channel, MinMax; both U8S8 — ORT's default — and S8S8), one thread each, same input,
  median of --runs runs after a warm-up;
- compile time: lowbit's whole compile (import, passes, calibration on --calib samples, lowering) vs ORT's
  ``quantize_static`` on the same samples.
The first line names NumPy's BLAS kernels (see float_latency.py on OPENBLAS_CORETYPE).
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from threadpoolctl import threadpool_info, threadpool_limits

    from lowbit.graph.onnx_export import to_onnx_model
    from lowbit.graph.onnx_import import from_onnx_model, load_onnx
    from lowbit.quant.compile import compile_graph
    from lowbit.tools.light_models import realize

    blas = [f"{i.get('internal_api')} ({i.get('architecture')} kernels)" for i in threadpool_info()
            if i.get("user_api") == "blas"]
    print(f"NumPy BLAS: {', '.join(blas) or 'unknown'}; 1 thread each; model {args.model}")
    tmp = tempfile.mkdtemp()
    src = os.path.join(tmp, "float.onnx")
    onnx.save(to_onnx_model(from_onnx_model(realize(args.model))), src)  # opset 21: ORT's quantizer needs it
    graph = load_onnx(src)
    inp = graph.inputs[0]
    rng = np.random.default_rng(5)
    calib = {inp.name: rng.standard_normal((args.calib, *inp.shape)).astype(np.float32)}
    x = {inp.name: rng.standard_normal(inp.shape).astype(np.float32)}

    class Reader:
        def __init__(self):
            self.it = iter([{inp.name: calib[inp.name][i]} for i in range(args.calib)])

        def get_next(self):
            return next(self.it, None)

    with threadpool_limits(1):
        t = time.perf_counter()
        artifact, _ = compile_graph(load_onnx(src), calib, "w8a8")
        t_lowbit = time.perf_counter() - t
        rows = []
        for tag, at in (("U8S8", QuantType.QUInt8), ("S8S8", QuantType.QInt8)):
            dst = os.path.join(tmp, f"qdq_{tag}.onnx")
            t = time.perf_counter()
            quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=at, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax)
            t_ort = time.perf_counter() - t
            so = ort.SessionOptions()
            so.intra_op_num_threads = 1
            so.inter_op_num_threads = 1
            sess = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
            rows.append((tag, t_ort, _median_ms(lambda: sess.run(None, x), args.runs)))
        low_ms = _median_ms(lambda: artifact.run(x), args.runs)
    print(f"{'':<34}{'ORT':>10}{'lowbit':>10}{'lowbit/ORT':>12}")
    for tag, t_ort, ort_ms in rows:
        print(f"{'int8 latency ms vs ORT QDQ ' + tag:<34}{ort_ms:>10.1f}{low_ms:>10.1f}{low_ms / ort_ms:>11.2f}x")
    for tag, t_ort, _ in rows[:1]:
        print(f"{'compile s (' + str(args.calib) + ' samples) vs quantize_static':<34}{t_ort:>10.2f}{t_lowbit:>10.2f}"
              f"{t_lowbit / t_ort:>11.2f}x")


if __name__ == "__main__":
    main()
