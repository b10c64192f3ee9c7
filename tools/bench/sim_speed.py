"""How long `lowbit simulate` takes as graphs grow: integer graphs of ~250 to ~4,000 nodes (residual blocks of
Conv 3x3 -> Relu -> Conv 1x1 -> Add, 4 ONNX nodes each, lowered to 3 integer nodes each plus the Quantize /
Dequantize ends), simulated on every preset; prints seconds per graph and per 1,000 nodes, so a linear cost
shows as a flat last column.

    python -m lowbit.tools.bench.sim_speed [--blocks 83,166,333,666,1333] [--runs 3]

Compile time is not counted; the simulator's time includes layer extraction, arena planning, the cost models
and the totals (best of --runs).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def residual_chain(blocks: int, channels: int = 16, size: int = 16, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "x"
    for b in range(blocks):
        w1 = rng.normal(0, 0.02, (channels, channels, 3, 3)).astype(np.float32)
        w2 = rng.normal(0, 0.02, (channels, channels, 1, 1)).astype(np.float32)
        inits += [numpy_helper.from_array(w1, f"w{b}a"), numpy_helper.from_array(w2, f"w{b}b")]
        nodes += [helper.make_node("Conv", [x, f"w{b}a"], [f"c{b}"], pads=[1, 1, 1, 1], name=f"conv{b}a"),
                  helper.make_node("Relu", [f"c{b}"], [f"r{b}"], name=f"relu{b}"),
                  helper.make_node("Conv", [f"r{b}", f"w{b}b"], [f"d{b}"], name=f"conv{b}b"),
                  helper.make_node("Add", [x, f"d{b}"], [f"y{b}"], name=f"add{b}")]
        x = f"y{b}"
    graph = helper.make_graph(nodes, "residual_chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, size, size])],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", default="83,166,333,666,1333")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--presets", default="", help="comma-separated (default: every preset)")
    args = ap.parse_args(argv)
    import lowbit
    from lowbit.targets.npusim import load_accelerator, presets, simulate
    accels = [load_accelerator(p) for p in (args.presets.split(",") if args.presets else presets())]
    print(f"{'nodes':>7} {'preset':<20}{'seconds':>9}{'s per 1k nodes':>16}")
    with tempfile.TemporaryDirectory() as tmp:
        for blocks in (int(b) for b in args.blocks.split(",")):
            path = os.path.join(tmp, f"chain{blocks}.onnx")
            onnx.save(residual_chain(blocks), path)
            calib = {"x": np.random.default_rng(1).normal(0, 1, (2, 16, 16, 16)).astype(np.float32)}
            art = lowbit.compile(path, calib)
            n = len(art.graph.nodes)
            for accel in accels:
                best = float("inf")
                for _ in range(args.runs):
                    t = time.perf_counter()
                    simulate(art, accel)
                    best = min(best, time.perf_counter() - t)
                print(f"{n:>7} {accel.name:<20}{best:>9.3f}{best / n * 1000:>16.3f}", flush=True)


if __name__ == "__main__":
    main()
