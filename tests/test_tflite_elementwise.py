"""Element-wise, activation, softmax and batch-matmul TFLite models: lowbit's integer executor against LiteRT's
reference kernels (BUILTIN_REF), element for element.

Fixtures: tests/data/tflite/*.tflite, written by tests/fixtures/tflite/make_elementwise_models.py, indexed in
elementwise_models.json (with the variants the converter refuses or leaves partly in float). Inputs cover
the whole integer range: single-input models with 65536 elements get every int8 value (256 times) or every
int16 value once; two-input int8 models of 65536 elements (or broadcast 256 x 256) get every pair of values.
The int8 Keras-LayerNorm models (a float NEG island between DEQUANTIZE and QUANTIZE) are included: lowbit
folds the NEG into its Dequantize.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from litert_ref import run_litert  # noqa: E402

from lowbit.errors import UnsupportedOpError  # noqa: E402
from lowbit.graph.tflite import load_tflite  # noqa: E402
from lowbit.runtime import int_executor  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
with open(os.path.join(DATA, "elementwise_models.json")) as _f:
    INDEX = json.load(_f)

# models LiteRT's reference resolver cannot run: the converter emits them, LiteRT's kernels reject them
LITERT_REJECTS = {"squared_difference_16x8": "SquaredDifference only supports FLOAT32 and INT32"}
# ELU has no kernel in the reference resolver; its int8 kernel is a table lookup in either resolver
NOT_IN_REF_RESOLVER = {"elu_patched_int8"}
# int8 Keras LayerNormalization: the converter leaves a float NEG between DEQUANTIZE and QUANTIZE, which
# lowbit folds into a Dequantize with the scale negated (graph/tflite/ops_elementwise.py)
FLOAT_ISLANDS = sorted(k for k in INDEX.get("float_islands", {}) if os.path.exists(os.path.join(DATA, k + ".tflite")))
MODELS = sorted([k for k in INDEX["models"] if k not in LITERT_REJECTS] + FLOAT_ISLANDS)

# TFLite builtin -> lowbit.int op, by activation type
LOWBIT_OP = {
    "ADD": "Add", "SUB": "Sub", "MUL": "Mul", "SQUARED_DIFFERENCE": "SquaredDifference", "SOFTMAX": "Softmax",
    "GELU": "Lut", "EXP": "Lut", "LOG": "Lut", "ELU": "Lut", "LEAKY_RELU": "LeakyRelu",
    "HARD_SWISH": "HardSwish", "RELU": "Relu", "RELU_N1_TO_1": "Relu", "RELU6": "Relu6",
    "BATCH_MATMUL": "BatchMatMul", "FULLY_CONNECTED": "FullyConnected", "MEAN": "Mean",
    "DEQUANTIZE": "Dequantize", "QUANTIZE": "Quantize", "NEG": "Dequantize",
    ("RSQRT", "int8"): "Rsqrt", ("RSQRT", "int16"): "Lut", ("TANH", "int8"): "Lut", ("TANH", "int16"): "Tanh",
    ("LOGISTIC", "int8"): "Lut", ("LOGISTIC", "int16"): "Logistic",
}


def _path(key: str) -> str:
    return os.path.join(DATA, key + ".tflite")


def feeds_for(key: str, seed: int) -> list[np.ndarray]:
    """Full-range inputs: exhaustive where the shape allows (see the module docstring), else seeded random
    values with both extremes. RSQRT inputs stay at or above the zero point (TFLite fails on negatives)."""
    rng = np.random.default_rng(seed)
    nonneg = key.startswith("rsqrt")
    feeds = []
    for k, d in enumerate(_interpreter(key).get_input_details()):
        shape, dtype = tuple(int(s) for s in d["shape"]), np.dtype(d["dtype"])
        info = np.iinfo(dtype)
        n = int(np.prod(shape))
        if dtype == np.int8 and n == 65536:  # input k takes digit k (base 256) of the flat index: all pairs
            x = (np.arange(n) // (256 ** k)) % 256 - 128
        elif dtype == np.int8 and n == 256:
            x = np.arange(256) - 128
        elif dtype == np.int16 and n == 65536:
            x = rng.permutation(np.arange(65536) - 32768)
        else:
            x = rng.integers(info.min, info.max, size=n, endpoint=True)
            x[: min(n, 2)] = [info.min, info.max][: min(n, 2)]
        if nonneg:
            lo = int(d["quantization"][1])
            x = np.where(x < lo, lo + (x - info.min) % (info.max - lo + 1), x)
        feeds.append(x.reshape(shape).astype(dtype))
    return feeds


def _interpreter(key: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES if key in NOT_IN_REF_RESOLVER
                else OpResolverType.BUILTIN_REF)
    interp = Interpreter(model_path=_path(key), experimental_op_resolver_type=resolver)
    interp.allocate_tensors()
    return interp


def litert_outputs(key: str, feeds) -> list[np.ndarray]:
    if key not in NOT_IN_REF_RESOLVER:
        return run_litert(_path(key), feeds)
    interp = _interpreter(key)
    for d, x in zip(interp.get_input_details(), feeds):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def lowbit_outputs(graph, feeds) -> list[np.ndarray]:
    got = int_executor.run(graph, {v.name: x for v, x in zip(graph.inputs, feeds)})
    return [got[v.name] for v in graph.outputs]


@pytest.mark.parametrize("key", MODELS)
def test_bit_exact_against_litert(key):
    graph = load_tflite(_path(key))
    for seed in (0, 1):
        feeds = feeds_for(key, seed)
        expected = litert_outputs(key, feeds)
        got = lowbit_outputs(graph, feeds)
        assert len(got) == len(expected)
        for i, (e, g) in enumerate(zip(expected, got)):
            assert g.dtype == e.dtype and g.shape == e.shape, f"{key} output {i}"
            diff = np.abs(e.astype(np.int64) - g.astype(np.int64))
            assert np.array_equal(e, g), (f"{key} output {i}: {np.count_nonzero(diff)} of {diff.size} elements "
                                          f"differ, by up to {diff.max()}")


@pytest.mark.parametrize("key", MODELS)
def test_imported_graph_structure(key):
    """Every TFLite operator becomes the lowbit.int op its type calls for (int16 TANH is no Lut, ...)."""
    graph = load_tflite(_path(key))
    int_ops = [n.op_type for n in graph.nodes if n.domain == "lowbit.int"]
    expected = []
    entries = INDEX["models"][key] if key in INDEX["models"] else INDEX["float_islands"][key]
    for entry in entries["ops"]:
        name, dtype = entry.split(":")
        op = LOWBIT_OP.get((name, dtype.split(",")[0]), LOWBIT_OP.get(name))
        if op is not None:
            expected.append(op)
    assert sorted(int_ops) == sorted(expected)


def test_converter_refusals_are_recorded():
    """What the TFLite converter (TF 2.21) cannot make integer; see make_elementwise_models.py."""
    refused = INDEX["refused"]
    for key in ("hard_swish_16x8", "relu_n1_to_1_16x8", "elu_16x8", "layer_norm_16x8", "transformer_block_16x8"):
        assert "not yet supported" in refused[key]
    for key, op in (("elu_int8", "ELU"), ("layer_norm_int8", "NEG"), ("transformer_block_int8", "NEG")):
        assert INDEX["float_islands"][key]["float_ops"] == [op]


def test_litert_rejects_int16_squared_difference_and_so_does_lowbit():
    key = "squared_difference_16x8"
    with pytest.raises(RuntimeError, match=LITERT_REJECTS[key]):
        run_litert(_path(key), feeds_for(key, 0))
    with pytest.raises(UnsupportedOpError, match="SQUARED_DIFFERENCE"):
        load_tflite(_path(key))


def test_keras_layer_norm_float_island_is_folded():
    """The Keras-LayerNorm transformer block imports (bit-exact above) without any float arithmetic left but
    the Dequantize/Quantize pair around the negation."""
    assert set(FLOAT_ISLANDS) == {"layer_norm_int8", "transformer_block_int8"}
    graph = load_tflite(_path("transformer_block_int8"))
    negated = [n for n in graph.nodes if n.op_type == "Dequantize" and n.attrs["scale"] < 0]
    assert len(negated) == 1
    assert [n.op_type for n in negated[0].outputs[0].consumers] == ["Quantize"]


def test_float_neg_of_other_producers_is_refused():
    from lowbit.graph.tflite import CONVERTERS

    class _Ctx:
        op_name = "NEG"

        def input(self, i):
            from lowbit.graph.ir import Value
            return Value("x", (2,), np.dtype(np.float32))

        def input_dtype(self, i):
            return np.dtype(np.float32)

        def unsupported(self, reason):
            raise RuntimeError(reason)

    with pytest.raises(RuntimeError, match="negation of a dequantized tensor"):
        CONVERTERS["NEG"](_Ctx())


@pytest.mark.parametrize("key", ["gelu_tanh_libm_16x8", "exp_libm_16x8"])
def test_tables_need_the_c_math_library(key, monkeypatch):
    """On these scales a table built with NumPy's float32 functions differs from LiteRT's (glibc's expf /
    tanhf): the libm-built table is exact (test above), the NumPy one is 1 LSB off on some inputs."""
    from lowbit.quant import prepare_elementwise as prep

    if not prep._LIBM:
        pytest.skip("no C math library on this platform")
    feeds = feeds_for(key, 0)
    expected = litert_outputs(key, feeds)[0]
    monkeypatch.setattr(prep, "_LIBM", {})
    got = lowbit_outputs(load_tflite(_path(key)), feeds)[0]
    diff = np.abs(expected.astype(np.int64) - got.astype(np.int64))
    assert 0 < np.count_nonzero(diff) and diff.max() == 1
