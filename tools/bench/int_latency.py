"""Integer executor latency and compile time, lowbit vs ONNX Runtime, side by side in one process.

    python -m lowbit.tools.bench.int_latency [--model resnet50] [--calib 32] [--runs 10] [--breakdown]

- latency: lowbit's integer executor on its W8A8 artifact vs ORT on its own QDQ int8 model from
  ``quantize_static`` (per-channel, MinMax; both U8S8 — ORT's default — and S8S8), one thread each, same input,
  median of --runs runs after a warm-up, the runs of all contenders interleaved (so that load from other
  processes hits them alike); lowbit once as it runs by default (int8 GEMMs through ORT's MatMulInteger where
  provably exact) and once with its NumPy float-BLAS GEMM only;
- --breakdown: lowbit's median time per op type (the time between consecutive nodes of one run);
- compile time: lowbit's whole compile (import, passes, calibration on --calib samples, lowering) vs ORT's
  ``quantize_static`` on the same samples.
The first line names NumPy's BLAS kernels (see float_latency.py on OPENBLAS_CORETYPE).
"""
from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time

import numpy as np


def _interleaved_median_ms(fns: dict, runs: int) -> dict:
    """Median ms of each function over ``runs`` rounds; every round runs each function once, after a warm-up."""
    for fn in fns.values():
        fn()
    times = {k: [] for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def _numpy_gemm(run):
    def wrapped():
        from lowbit.runtime.kernels.int.linear import int8_gemm_backend

        with int8_gemm_backend("numpy"):
            return run()
    return wrapped


def _breakdown_ms(graph, feeds, runs: int) -> dict[str, float]:
    """Median over ``runs`` runs of the time spent per op type (between one node's end and the next's)."""
    from lowbit.runtime.int_executor import run

    per_run = []

    def observe(node, _outs):
        now = time.perf_counter()
        per_run[-1][node.op_type] += (now - state["last"]) * 1e3
        state["last"] = now

    state = {}
    for _ in range(runs):
        per_run.append(collections.Counter())
        state["last"] = time.perf_counter()
        run(graph, feeds, observe=observe)
    ops = sorted({k for t in per_run for k in t}, key=lambda k: -statistics.median(t[k] for t in per_run))
    return {k: statistics.median(t[k] for t in per_run) for k in ops}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--calib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--breakdown", action="store_true", help="print lowbit's time per op type")
    args = ap.parse_args(argv)
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from threadpoolctl import threadpool_info, threadpool_limits

    from lowbit.graph.onnx_export import to_onnx_model
    from lowbit.graph.onnx_import import from_onnx_model, load_onnx
    from lowbit.quant.compile import compile_graph
    from lowbit.runtime.kernels.int.linear import ort_int8_gemm_is_exact
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
        rows, sessions = [], {}
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
            sessions[tag] = ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
            rows.append((tag, t_ort))
        ms = _interleaved_median_ms(
            {**{tag: (lambda s=s: s.run(None, x)) for tag, s in sessions.items()},
             "lowbit": lambda: artifact.run(x), "lowbit_numpy": _numpy_gemm(lambda: artifact.run(x))}, args.runs)
        low_ms, numpy_ms = ms["lowbit"], ms["lowbit_numpy"]
        breakdown = _breakdown_ms(artifact.graph, x, args.runs) if args.breakdown else {}
    gemm = "ORT MatMulInteger" if ort_int8_gemm_is_exact() else "NumPy (ORT's u8s8 GEMM failed the exactness probe)"
    print(f"lowbit int8 GEMMs: {gemm}")
    print(f"{'':<34}{'ORT':>10}{'lowbit':>10}{'lowbit/ORT':>12}")
    for tag, _ in rows:
        print(f"{'int8 latency ms vs ORT QDQ ' + tag:<34}{ms[tag]:>10.1f}{low_ms:>10.1f}{low_ms / ms[tag]:>11.2f}x")
    for tag, _ in rows:
        print(f"{'  same, lowbit NumPy GEMM only, ' + tag:<34}{ms[tag]:>10.1f}{numpy_ms:>10.1f}"
              f"{numpy_ms / ms[tag]:>11.2f}x")
    for tag, t_ort in rows[:1]:
        print(f"{'compile s (' + str(args.calib) + ' samples) vs quantize_static':<34}{t_ort:>10.2f}{t_lowbit:>10.2f}"
              f"{t_lowbit / t_ort:>11.2f}x")
    if breakdown:
        print("lowbit ms per op type (median of --runs runs): "
              + ", ".join(f"{k} {v:.1f}" for k, v in breakdown.items() if v >= 0.05))


if __name__ == "__main__":
    main()
