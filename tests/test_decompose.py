"""LayerNormalization as primitive ops for the tflite target (graph/passes/decompose.py), and the Sqrt ->
Reciprocal pair lowered to one integer Rsqrt (TFLite's RSQRT)."""
import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from graphs import float_graph, sqnr
from lowbit.graph.onnx_export import to_onnx_model
from lowbit.graph.passes.decompose import decompose_layer_norm
from lowbit.quant.compile import compile_graph
from lowbit.runtime.float_executor import run as run_float

RNG = np.random.default_rng(7)
GAMMA = RNG.uniform(0.5, 1.5, 8).astype(np.float32)
BETA = RNG.uniform(-0.5, 0.5, 8).astype(np.float32)


def _ln_graph(axis=-1, epsilon=1e-3, outputs=("y",)):
    node = helper.make_node("LayerNormalization", ["x", "g", "b"], list(outputs), axis=axis, epsilon=epsilon)
    return float_graph([node], [("x", [2, 5, 8])], list(outputs), [("g", GAMMA), ("b", BETA)])


def _x(n=None):
    shape = (2, 5, 8) if n is None else (n, 2, 5, 8)
    return (RNG.standard_normal(shape) * 3 + 1).astype(np.float32)


def test_decomposed_layer_norm_computes_the_same_floats_here_and_in_ort():
    g = _ln_graph()
    x = {"x": _x()}
    ref = run_float(g, x)["y"]
    assert decompose_layer_norm(g)
    assert [n.op_type for n in g.nodes] == ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Reciprocal",
                                            "Mul", "Mul", "Add"]
    np.testing.assert_allclose(run_float(g, x)["y"], ref, rtol=1e-5, atol=1e-5)
    sess = ort.InferenceSession(to_onnx_model(g).SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, x)[0], ref, rtol=1e-5, atol=1e-5)
    assert not decompose_layer_norm(g)  # nothing left to decompose


@pytest.mark.parametrize("kind", ["inner axis", "mean output read"])
def test_layer_norms_it_cannot_spell_as_ops_stay_whole(kind):
    g = _ln_graph(axis=1) if kind == "inner axis" else _ln_graph(outputs=("y", "mean"))
    assert not decompose_layer_norm(g)
    assert [n.op_type for n in g.nodes] == ["LayerNormalization"]


@pytest.mark.parametrize("precision, rsqrt", [("w8a8", "Rsqrt"), ("w8a16", "Lut")])
def test_layer_norm_as_ops_lowers_to_tflite_integer_builtins(precision, rsqrt):
    """With layer_norm="ops" (the tflite target's option) the ops lower to Mean, Sub, Mul, Add and one Rsqrt
    (int8: TFLite's fixed-point RSQRT; int16: its table) for the Sqrt -> Reciprocal pair."""
    calib = {"x": _x(16)}
    art, lowered = compile_graph(_ln_graph(), calib, precision, options={"layer_norm": "ops"})
    ints = [n.op_type for n in art.graph.nodes if n.domain == "lowbit.int"]
    assert not lowered.float_islands and "LayerNorm" not in ints
    assert ints.count("Mean") == 2 and ints.count(rsqrt) == 1 and "Sub" in ints
    x = {"x": calib["x"][3]}
    assert sqnr(run_float(_ln_graph(), x)["y"], art.run(x)["y"]) > (25 if precision == "w8a8" else 45)


def test_a_sqrt_with_other_readers_is_a_table():
    nodes = [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Reciprocal", ["s"], ["r"]),
             helper.make_node("Add", ["s", "r"], ["y"])]
    g = float_graph(nodes, [("x", [2, 8])], ["y"])
    calib = {"x": np.abs(RNG.standard_normal((8, 2, 8))).astype(np.float32) + 0.1}
    art, _ = compile_graph(g, calib, "w8a8")
    ints = [n.op_type for n in art.graph.nodes if n.domain == "lowbit.int"]
    assert ints.count("Lut") == 2 and "Rsqrt" not in ints


def test_compare_measures_the_targets_integers(tmp_path):
    """compare --target tflite reports the LayerNorm-as-ops integers (a different error from lowbit's
    int16-internal LayerNorm) and says which lowering options it used."""
    from click.testing import CliRunner
    from lowbit.graph.onnx_export import save_onnx
    from lowbit.tools.cli import main
    save_onnx(_ln_graph(), str(tmp_path / "ln.onnx"))
    np.savez(tmp_path / "c.npz", x=_x(16))
    np.savez(tmp_path / "e.npz", x=_x(8))
    outs = {}
    for target in ("cpu", "tflite"):
        r = CliRunner().invoke(main, ["compare", str(tmp_path / "ln.onnx"), "--calib", str(tmp_path / "c.npz"),
                                      "--eval", str(tmp_path / "e.npz"), "--precision", "w8a8", "--target", target,
                                      "--json", str(tmp_path / f"{target}.json")])
        assert r.exit_code == 0, r.output
        outs[target] = json.loads((tmp_path / f"{target}.json").read_text())
    assert "options" not in outs["cpu"] and outs["tflite"]["options"]["layer_norm"] == "ops"
    sq = {t: outs[t]["end_to_end"]["w8a8"]["outputs"]["y"]["sqnr_db"] for t in outs}
    assert sq["cpu"] != sq["tflite"] and min(sq.values()) > 20


def test_sqrt_of_a_range_reaching_below_zero_stays_a_table():
    """int8 RSQRT fails on inputs below the zero point (TFLite's too), so a Sqrt -> Reciprocal whose input range
    reaches below 0 is lowered as tables instead; in range it is one Rsqrt."""
    nodes = [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Reciprocal", ["s"], ["y"])]
    positive = np.abs(RNG.standard_normal((8, 2, 8))).astype(np.float32) + 0.1
    for calib, expect in ((positive, "Rsqrt"), (positive - 0.5, "Lut")):
        art, _ = compile_graph(float_graph(nodes, [("x", [2, 8])], ["y"]), {"x": calib}, "w8a8")
        ints = [n.op_type for n in art.graph.nodes if n.domain == "lowbit.int" and n.op_type not in
                ("Quantize", "Dequantize")]
        assert expect in ints and ("Rsqrt" not in ints if expect == "Lut" else ints == ["Rsqrt"])
