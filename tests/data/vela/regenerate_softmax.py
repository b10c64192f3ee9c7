"""Vela's per-operation cycles for int8 SOFTMAX over the last axis, at several shapes (tests/test_npusim.py
compares lowbit's Ethos-U softmax model with them; no Vela needed there).

    python tests/data/vela/regenerate_softmax.py      # ethos-u-vela 5.2.0 -> softmax_shapes.json

Each shape: Mul(x, 0.5) -> Softmax -> Mul(., 0.5) (so the softmax is an inner, 8-bit one, as in attention),
compiled w8a8 by lowbit with the tflite target's lowering (4 seeded normal calibration samples), exported with
integer I/O and compiled by Vela through lowbit's ethos-u targets (their default system configurations); the
JSON maps "ACCEL|shape" to [[Vela's NNG operator, Op Cycles], ...] for the rows whose original operator is
Softmax.
"""
import csv
import glob
import json
import os
import sys
import tempfile

import numpy as np
from onnx import helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/, for graphs.py
from graphs import float_graph  # noqa: E402

SHAPES = [(1, 8, 8), (1, 4, 16, 16), (1, 1, 64, 16), (1, 8, 8, 16), (1, 1, 16, 16), (1, 2, 8, 8), (1, 16, 8),
          (1, 32, 8), (1, 64, 8), (1, 4, 4, 8)]
ACCELERATORS = ["ethos-u55-128", "ethos-u65-256"]


def main() -> None:
    from lowbit.quant.compile import compile_graph
    from lowbit.targets import get_target
    rng = np.random.default_rng(0)
    out = {}
    for shape in SHAPES:
        nodes = [helper.make_node("Mul", ["x", "k"], ["m"]), helper.make_node("Softmax", ["m"], ["s"], axis=-1),
                 helper.make_node("Mul", ["s", "k"], ["y"])]
        g = float_graph(nodes, [("x", list(shape))], ["y"], [("k", np.array(0.5, np.float32))])
        art, _ = compile_graph(g, {"x": rng.standard_normal((4,) + shape).astype(np.float32)}, "w8a8",
                               options=dict(get_target("tflite").lowering_options))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "softmax.tflite")
            get_target("tflite").export(art, path, integer_io=True)
            for accel in ACCELERATORS:
                d = os.path.join(tmp, accel)
                get_target(accel).compile_tflite(path, d)
                with open(glob.glob(os.path.join(d, "*per-layer.csv"))[0], encoding="utf-8", newline="") as f:
                    rows = list(csv.DictReader(f))
                out[f"{accel}|{list(shape)}"] = [[r["NNG Operator"], int(r["Op Cycles"])] for r in rows
                                                 if r["Original Operator"] == "Softmax"]
    with open(os.path.join(HERE, "softmax_shapes.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, indent=0)


if __name__ == "__main__":
    main()
