"""Float executor latency, lowbit vs ONNX Runtime, side by side in one process.

    python -m lowbit.tools.bench.float_latency [--models resnet50,squeezenet] [--runs 10]

Both run on one thread (OpenBLAS limited through threadpoolctl; ORT with intra_op_num_threads=1 and its
default full graph optimisation), on the same seeded input, after a warm-up run; the table gives the median
of --runs runs and the ratio lowbit / ORT. The first line names the OpenBLAS kernel NumPy runs: where the
environment forces an older one (OPENBLAS_CORETYPE), lowbit's BLAS-bound convs slow down while ORT's own MLAS
kernels do not; run with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` to compare on the machine's real ISA.
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def _median_ms(fn, runs: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_model(name: str, runs: int) -> dict:
    import onnxruntime as ort

    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.graph.passes import optimize
    from lowbit.runtime.float_executor import run as run_float
    from lowbit.tools.light_models import realize

    model = realize(name)
    graph = from_onnx_model(model)
    optimize(graph)
    rng = np.random.default_rng(1)
    feeds = {v.name: rng.standard_normal(v.shape).astype(v.dtype) for v in graph.inputs}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ort_out = sess.run(None, feeds)[0]
    low_out = next(iter(run_float(graph, feeds).values()))
    err = float(np.max(np.abs(ort_out - low_out)) / max(np.max(np.abs(ort_out)), 1e-30))
    t_ort = _median_ms(lambda: sess.run(None, feeds), runs)
    t_low = _median_ms(lambda: run_float(graph, feeds, check=False), runs)
    return {"model": name, "ort_ms": t_ort, "lowbit_ms": t_low, "ratio": t_low / t_ort, "rel_err": err}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet50,squeezenet")
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_info, threadpool_limits
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture')} kernels)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    print(f"NumPy BLAS: {', '.join(blas) or 'unknown'}; 1 thread each")
    with threadpool_limits(1):
        rows = [bench_model(m, args.runs) for m in args.models.split(",")]
    print(f"{'model':<14}{'ORT fp32 ms':>12}{'lowbit ms':>12}{'lowbit/ORT':>12}{'max rel diff':>14}")
    for r in rows:
        print(f"{r['model']:<14}{r['ort_ms']:>12.1f}{r['lowbit_ms']:>12.1f}{r['ratio']:>11.2f}x"
              f"{r['rel_err']:>14.1e}")


if __name__ == "__main__":
    main()
