"""Each pass, one test per case its docstring lists: the graph verifies before and after, the structure is
as expected, and the numbers still match ONNX Runtime on the original model."""
import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lowbit.graph.onnx_import import from_onnx_model
from lowbit.graph.passes import (fold_batchnorm, fold_channel_affine, fold_constants, infer_shapes,
                                 lift_constant_nodes, lift_gelu, lift_layernorm, remove_dead_nodes,
                                 remove_identities)
from lowbit.runtime.float_executor import run as run_float
from nodecheck import run_ort

RNG = np.random.default_rng(0)


def _c(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _apply(model, feeds, *passes, expect_change=True, rtol=1e-5, atol=1e-5):
    expected = run_ort(model, feeds)
    graph = from_onnx_model(model)
    graph.verify()
    infer_shapes(graph)
    changed = False
    for p in passes:
        changed |= p(graph)
        graph.verify()
    assert changed == expect_change
    got = run_float(graph, feeds)
    for v, e in zip(graph.outputs, expected):
        np.testing.assert_allclose(got[v.name], e, rtol=rtol, atol=atol)
    return graph


def _ops(graph):
    return [n.op_type for n in graph.nodes]


X4 = RNG.standard_normal((2, 4, 5, 6)).astype(np.float32)


# -- clean-up ----------------------------------------------------------------------------------------------
def test_lift_constant_nodes():
    m = _model([helper.make_node("Constant", [], ["c"], value=_c("v", np.full((1, 4, 1, 1), 2.0, np.float32))),
                helper.make_node("Mul", ["x", "c"], ["y"])], [("x", [2, 4, 5, 6])], ["y"])
    g = _apply(m, {"x": X4}, lift_constant_nodes)
    assert _ops(g) == ["Mul"] and g.nodes[0].inputs[1].const is not None


def test_remove_identities_cases():
    m = _model([helper.make_node("Relu", ["x"], ["a"]), helper.make_node("Identity", ["a"], ["b"]),
                helper.make_node("Dropout", ["b"], ["c"]), helper.make_node("Sigmoid", ["c"], ["d"]),
                helper.make_node("Identity", ["d"], ["y"]),      # graph output: keeps its name
                helper.make_node("Identity", ["x"], ["y2"])],    # input -> output: must stay
               [("x", [2, 4, 5, 6])], ["y", "y2"])
    g = _apply(m, {"x": X4}, remove_identities)
    assert _ops(g) == ["Relu", "Sigmoid", "Identity"]
    assert [v.name for v in g.outputs] == ["y", "y2"]


def test_dropout_in_training_mode_is_kept():
    m = _model([helper.make_node("Dropout", ["x", "r", "t"], ["y"])], [("x", [2, 4, 5, 6])], ["y"],
               [_c("r", np.array(0.0, np.float32)), _c("t", np.array(True))])
    g = _apply(m, {"x": X4}, remove_identities, expect_change=False)
    assert _ops(g) == ["Dropout"]


def test_remove_dead_nodes():
    m = _model([helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Sigmoid", ["x"], ["dead"]),
                helper.make_node("Tanh", ["dead"], ["dead2"])], [("x", [2, 4, 5, 6])], ["y"])
    g = _apply(m, {"x": X4}, remove_dead_nodes)
    assert _ops(g) == ["Relu"] and "dead2" not in g.values


def test_fold_constants_and_static_shape():
    m = _model([helper.make_node("Shape", ["x"], ["s"]),
                helper.make_node("Gather", ["s", "i"], ["n"], axis=0),
                helper.make_node("Concat", ["n", "m1"], ["shape"], axis=0),
                helper.make_node("Reshape", ["x", "shape"], ["y"]),
                helper.make_node("Add", ["c1", "c2"], ["c3"]),
                helper.make_node("Mul", ["y", "c3"], ["z"])],
               [("x", [2, 4, 5, 6])], ["z"],
               [_c("i", np.array([0], np.int64)), _c("m1", np.array([-1], np.int64)),
                _c("c1", np.array(1.0, np.float32)), _c("c2", np.array(2.0, np.float32))])
    g = _apply(m, {"x": X4}, fold_constants, remove_dead_nodes)
    assert _ops(g) == ["Reshape", "Mul"]
    assert g.nodes[0].inputs[1].const.tolist() == [2, -1]


# -- BatchNorm folding -------------------------------------------------------------------------------------
def _bn_inits(c, prefix="bn"):
    return [_c(f"{prefix}_s", RNG.uniform(0.5, 1.5, c).astype(np.float32)),
            _c(f"{prefix}_b", RNG.normal(0, 0.1, c).astype(np.float32)),
            _c(f"{prefix}_m", RNG.normal(0, 0.1, c).astype(np.float32)),
            _c(f"{prefix}_v", RNG.uniform(0.5, 1.5, c).astype(np.float32))]


def _bn(x, y):
    return helper.make_node("BatchNormalization", [x, "bn_s", "bn_b", "bn_m", "bn_v"], [y], epsilon=1e-3)


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_batchnorm_into_conv(with_bias):
    w = RNG.standard_normal((8, 2, 3, 3)).astype(np.float32)
    ins = ["x", "w", "b"] if with_bias else ["x", "w"]
    m = _model([helper.make_node("Conv", ins, ["c"], group=2, pads=[1, 1, 1, 1]), _bn("c", "y")],
               [("x", [2, 4, 5, 6])], ["y"], [_c("w", w), _c("b", RNG.standard_normal(8).astype(np.float32))]
               + _bn_inits(8))
    g = _apply(m, {"x": X4}, fold_batchnorm)
    assert _ops(g) == ["Conv"] and g.outputs[0].name == "y"


def test_fold_batchnorm_into_conv_transpose_with_groups():
    w = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)  # [Cin, Cout/g, k, k], g = 2 -> Cout 6
    m = _model([helper.make_node("ConvTranspose", ["x", "w"], ["c"], group=2, strides=[2, 2]), _bn("c", "y")],
               [("x", [2, 4, 5, 6])], ["y"], [_c("w", w)] + _bn_inits(6))
    g = _apply(m, {"x": X4}, fold_batchnorm)
    assert _ops(g) == ["ConvTranspose"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_batchnorm_into_gemm(trans_b):
    w = RNG.standard_normal((7, 5) if trans_b else (5, 7)).astype(np.float32)
    m = _model([helper.make_node("Gemm", ["x", "w", "b"], ["c"], transB=trans_b), _bn("c", "y")],
               [("x", [3, 5])], ["y"], [_c("w", w), _c("b", RNG.standard_normal(7).astype(np.float32))]
               + _bn_inits(7))
    g = _apply(m, {"x": RNG.standard_normal((3, 5)).astype(np.float32)}, fold_batchnorm)
    assert _ops(g) == ["Gemm"]


def test_fold_batchnorm_into_matmul_adds_bias():
    m = _model([helper.make_node("MatMul", ["x", "w"], ["c"]), _bn("c", "y")], [("x", [3, 5])], ["y"],
               [_c("w", RNG.standard_normal((5, 7)).astype(np.float32))] + _bn_inits(7))
    g = _apply(m, {"x": RNG.standard_normal((3, 5)).astype(np.float32)}, fold_batchnorm)
    assert _ops(g) == ["MatMul", "Add"]


def test_batchnorm_not_folded_when_conv_output_is_shared():
    m = _model([helper.make_node("Conv", ["x", "w"], ["c"]), _bn("c", "y"), helper.make_node("Relu", ["c"], ["r"])],
               [("x", [2, 4, 5, 6])], ["y", "r"],
               [_c("w", RNG.standard_normal((4, 4, 1, 1)).astype(np.float32))] + _bn_inits(4))
    g = _apply(m, {"x": X4}, fold_batchnorm, expect_change=False)
    assert "BatchNormalization" in _ops(g)


def test_fold_channel_affine_mul_add_into_conv():
    m = _model([helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Mul", ["c", "s"], ["d"]),
                helper.make_node("Add", ["t", "d"], ["y"])], [("x", [2, 4, 5, 6])], ["y"],
               [_c("w", RNG.standard_normal((3, 4, 1, 1)).astype(np.float32)),
                _c("b", RNG.standard_normal(3).astype(np.float32)),
                _c("s", RNG.uniform(0.5, 2, (3, 1, 1)).astype(np.float32)),
                _c("t", RNG.standard_normal((1, 3, 1, 1)).astype(np.float32))])
    g = _apply(m, {"x": X4}, fold_channel_affine)
    assert _ops(g) == ["Conv"]


# -- LayerNorm lifting -------------------------------------------------------------------------------------
def _layernorm_nodes(recip=False, square="Pow", affine=True, axes=(-1,)):
    nodes = [helper.make_node("ReduceMean", ["x", "axes"], ["mu"]),
             helper.make_node("Sub", ["x", "mu"], ["d"]),
             helper.make_node("Pow", ["d", "two"], ["sq"]) if square == "Pow" else helper.make_node("Mul", ["d", "d"], ["sq"]),
             helper.make_node("ReduceMean", ["sq", "axes"], ["var"]),
             helper.make_node("Add", ["var", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["std"])]
    if recip:
        nodes += [helper.make_node("Reciprocal", ["std"], ["r"]), helper.make_node("Mul", ["d", "r"], ["n"])]
    else:
        nodes += [helper.make_node("Div", ["d", "std"], ["n"])]
    if affine:
        nodes += [helper.make_node("Mul", ["n", "g"], ["ng"]), helper.make_node("Add", ["ng", "beta"], ["y"])]
    else:
        nodes += [helper.make_node("Identity", ["n"], ["y"])]
    inits = [_c("axes", np.array(axes, np.int64)), _c("two", np.array(2.0, np.float32)),
             _c("eps", np.array(1e-5, np.float32)), _c("g", RNG.uniform(0.5, 1.5, 6).astype(np.float32)),
             _c("beta", RNG.normal(0, 0.1, 6).astype(np.float32))]
    return nodes, inits


@pytest.mark.parametrize("recip,square,affine", [(False, "Pow", True), (True, "Mul", True), (False, "Pow", False)])
def test_lift_layernorm(recip, square, affine):
    nodes, inits = _layernorm_nodes(recip, square, affine)
    m = _model(nodes, [("x", [2, 5, 6])], ["y"], inits)
    g = _apply(m, {"x": RNG.standard_normal((2, 5, 6)).astype(np.float32)}, lift_layernorm, remove_dead_nodes)
    assert _ops(g) == (["LayerNormalization"] if affine else ["LayerNormalization", "Identity"])


def test_layernorm_over_non_trailing_axes_is_not_lifted():
    nodes, inits = _layernorm_nodes(axes=(1,))
    m = _model(nodes, [("x", [2, 6, 6])], ["y"], inits)
    _apply(m, {"x": RNG.standard_normal((2, 6, 6)).astype(np.float32)}, lift_layernorm, expect_change=False)


# -- GELU lifting ------------------------------------------------------------------------------------------
def _gelu_erf(variant):
    k = [_c("sqrt2", np.array(math.sqrt(2), np.float32)), _c("isqrt2", np.array(1 / math.sqrt(2), np.float32)),
         _c("one", np.array(1.0, np.float32)), _c("half", np.array(0.5, np.float32))]
    scale = helper.make_node("Div", ["x", "sqrt2"], ["s"]) if variant != "mul" else \
        helper.make_node("Mul", ["x", "isqrt2"], ["s"])
    head = [scale, helper.make_node("Erf", ["s"], ["e"]), helper.make_node("Add", ["e", "one"], ["e1"])]
    if variant == "div":      # (x * e1) * 0.5   (torch)
        tail = [helper.make_node("Mul", ["x", "e1"], ["p"]), helper.make_node("Mul", ["p", "half"], ["y"])]
    elif variant == "mul":    # (e1 * 0.5) * x
        tail = [helper.make_node("Mul", ["e1", "half"], ["p"]), helper.make_node("Mul", ["p", "x"], ["y"])]
    else:                     # (0.5 * x) * e1
        tail = [helper.make_node("Mul", ["half", "x"], ["hx"]), helper.make_node("Mul", ["hx", "e1"], ["y"])]
    return head + tail, k


@pytest.mark.parametrize("variant", ["div", "mul", "half_x"])
def test_lift_gelu_erf(variant):
    nodes, inits = _gelu_erf(variant)
    m = _model(nodes, [("x", [3, 7])], ["y"], inits)
    g = _apply(m, {"x": RNG.standard_normal((3, 7)).astype(np.float32) * 3}, lift_gelu, remove_dead_nodes)
    assert _ops(g) == ["Gelu"] and g.nodes[0].attrs["approximate"] == "none"


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_lift_gelu_tanh(cube):
    c = [_c("three", np.array(3.0, np.float32)), _c("k", np.array(0.044715, np.float32)),
         _c("a", np.array(math.sqrt(2 / math.pi), np.float32)), _c("one", np.array(1.0, np.float32)),
         _c("half", np.array(0.5, np.float32))]
    cube_nodes = [helper.make_node("Pow", ["x", "three"], ["x3"])] if cube == "pow" else \
        [helper.make_node("Mul", ["x", "x"], ["xx"]), helper.make_node("Mul", ["x", "xx"], ["x3"])]
    nodes = cube_nodes + [helper.make_node("Mul", ["k", "x3"], ["kx3"]), helper.make_node("Add", ["x", "kx3"], ["in"]),
                          helper.make_node("Mul", ["in", "a"], ["t_in"]), helper.make_node("Tanh", ["t_in"], ["t"]),
                          helper.make_node("Add", ["t", "one"], ["e1"]), helper.make_node("Mul", ["x", "e1"], ["p"]),
                          helper.make_node("Mul", ["p", "half"], ["y"])]
    m = _model(nodes, [("x", [3, 7])], ["y"], c)
    g = _apply(m, {"x": RNG.standard_normal((3, 7)).astype(np.float32) * 3}, lift_gelu, remove_dead_nodes)
    assert _ops(g) == ["Gelu"] and g.nodes[0].attrs["approximate"] == "tanh"


def test_gelu_with_wrong_constant_is_not_lifted():
    nodes, inits = _gelu_erf("div")
    inits[0] = _c("sqrt2", np.array(1.3, np.float32))
    m = _model(nodes, [("x", [3, 7])], ["y"], inits)
    _apply(m, {"x": RNG.standard_normal((3, 7)).astype(np.float32)}, lift_gelu, expect_change=False)
