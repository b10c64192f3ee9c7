"""lowbit -> .tflite -> LiteRT round trip: does the exported file compute exactly what lowbit computes?

    python -m lowbit.tools.bench.tflite_roundtrip [--models mobilenet_digits squeezenet ...] [--precisions w8a8 w8a16]
                                                  [--calib 4] [--inputs 8]

For each model and precision: compile with the tflite target's lowering options (``--calib`` calibration
samples: the zoo's own, or seeded standard-normal images for the ONNX light models), export twice (float I/O and
integer I/O), run LiteRT's reference kernels (BUILTIN_REF) and lowbit's integer executor on ``--inputs`` inputs
(zoo eval samples / seeded normal images), and print one markdown row: samples whose float outputs are
identical, the largest difference in output steps (raw integer outputs of the integer-I/O file against
``Artifact.run(raw=True)``), file size, export time, and the median per-inference time of both runtimes.
Models the target cannot export print the refusal instead.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import numpy as np

DEFAULT_MODELS = ["mobilenet_digits", "squeezenet", "resnet50", "inception_v1", "inception_v2", "densenet121",
                  "alexnet", "zfnet512", "vgg19", "shufflenet", "vit_digits"]


def _model(name: str, calib_n: int, inputs_n: int):
    """(float graph, calibration dict, list of input dicts)."""
    from lowbit.tools import zoo
    if name in zoo.names():
        from lowbit.tools.api import load
        graph = load(str(zoo.path(name)), optimize=False)
        calib = {k: v[:calib_n] for k, v in zoo.load_calib(name).items()}
        ev = zoo.load_eval(name)
        step = max(1, len(ev["labels"]) // inputs_n)
        inputs = [{k: v[i:i + 1] for k, v in ev.items() if k != "labels"} for i in range(0, step * inputs_n, step)]
        return graph, calib, inputs
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.tools.light_models import realize
    graph = from_onnx_model(realize(name))
    rng = np.random.default_rng(0)
    shape = tuple(d if isinstance(d, int) else 1 for d in graph.inputs[0].shape)
    name0 = graph.inputs[0].name
    calib = {name0: rng.standard_normal((calib_n,) + shape).astype(np.float32)}
    return graph, calib, [{name0: rng.standard_normal(shape).astype(np.float32)} for _ in range(inputs_n)]


def row(name: str, precision: str, calib_n: int, inputs_n: int) -> str:
    from lowbit.errors import LowbitError
    from lowbit.quant.compile import compile_graph
    from lowbit.targets import get_target
    target = get_target("tflite")
    graph, calib, inputs = _model(name, calib_n, inputs_n)
    art, _ = compile_graph(graph, calib, precision, options=dict(target.lowering_options))
    with tempfile.TemporaryDirectory() as tmp:
        path, raw_path = os.path.join(tmp, "m.tflite"), os.path.join(tmp, "raw.tflite")
        t0 = time.perf_counter()
        try:
            target.export(art, path)
        except LowbitError as e:
            return f"| {name} | {precision} | not exported: {str(e)[:160]} |"
        export_s = time.perf_counter() - t0
        target.export(art, raw_path, integer_io=True)
        size = os.path.getsize(path)
        exact, worst, t_litert, t_lowbit = 0, 0, [], []
        for feeds in inputs:
            t0 = time.perf_counter()
            ref = target.run(path, feeds)
            t_litert.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            got = art.run(feeds)
            t_lowbit.append(time.perf_counter() - t0)
            exact += all(np.array_equal(ref[k], got[k]) for k in got)
            codes = {v.name: v.consumers[0].outputs[0].quant.quantize(feeds[v.name]) for v in art.graph.inputs}
            ref_raw, raw = target.run(raw_path, codes), art.run(codes, raw=True)
            worst = max([worst] + [int(np.abs(ref_raw[k].astype(np.int64) - raw[k].astype(np.int64)).max())
                                   for k in raw])
    return (f"| {name} | {precision} | {exact}/{len(inputs)} | {worst} | {size / 1e6:.2f} MB | {export_s:.2f} s | "
            f"{statistics.median(t_litert) * 1e3:.0f} ms | {statistics.median(t_lowbit) * 1e3:.0f} ms |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=DEFAULT_MODELS)
    ap.add_argument("--precisions", nargs="+", default=["w8a8", "w8a16"])
    ap.add_argument("--calib", type=int, default=4)
    ap.add_argument("--inputs", type=int, default=8)
    args = ap.parse_args(argv)
    print("| model | precision | identical outputs | max raw diff (steps) | .tflite | export | LiteRT ref | lowbit |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in args.models:
        for precision in args.precisions:
            print(row(name, precision, args.calib, args.inputs), flush=True)


if __name__ == "__main__":
    main()
