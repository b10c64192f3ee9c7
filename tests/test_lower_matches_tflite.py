"""lowbit's own lowering, given a TFLite model's scales and zero points, produces LiteRT's integers (issue 4).

For each converter fixture (tests/fixtures/tflite/make_*_models.py): ``load_tflite`` -> the model's float twin
(tests/float_twin.py: the same function as float ONNX ops with dequantized constants) -> ``compile_graph`` with
the model's own specs (``activation_specs``, ``weight_specs``) and ``fc_requant="float64"`` (LiteRT's reference
FULLY_CONNECTED rescales in double) -> lowbit's integer executor, against LiteRT's reference kernels
(BUILTIN_REF) on the same integer input codes. LiteRT keeps every tensor (experimental_preserve_all_tensors),
so every TFLite tensor the lowered graph carries (the quantized inputs, each intermediate, the outputs) must
be equal element for element and carry the TFLite tensor's QuantSpec, and the lowered graph must use the
integer ops the importer made of the converter's operators.

Deliberate differences, asserted as such:
- lowbit runs an int8 Softmax whose result is a model output at 16 bits (quant/lower_ops.py lower_softmax:
  the int8 output scale 1/256 rounds every probability under 1/512 to zero). Its input (LiteRT's int8 codes,
  checked equal) is requantized to int16, and the int16 probabilities lie within one int8 step of LiteRT's;
  with the 16-bit choice switched off, the int8 Softmax matches LiteRT exactly.
- Clip(0, 6) lowers to lowbit.int ``Relu`` where the importer names TFLite's RELU6 ``Relu6``: the two kernels
  are one function (TFLite's QuantizedReluX), the bounds live in act_min/act_max.
- lowbit's lowering has no Pad rule: a Pad runs as a float island (Dequantize -> Pad -> Quantize), which
  gives the same codes (the pad value is exactly representable: the zero point, or 0.5 on a grid holding it).

Fixtures this cannot cover, and why (the reasons are in the import or in ONNX, not in lowbit's arithmetic):
- rsqrt_*, layer_norm_manual_*, transformer_block_manual_*: ONNX has no Rsqrt; Sqrt and Reciprocal lower to
  two tables with a requantization between them, while TFLite's RSQRT is one op (int8: a multiplier; int16:
  one table) whose intermediate has no tensor and so no spec to pass.
- squared_difference_int8, layer_norm_int8, transformer_block_int8: ONNX has no SquaredDifference; Sub then
  Mul lowers to two ops (with a requantized difference), TFLite's SQUARED_DIFFERENCE is one.
- softmax_beta_*: ONNX Softmax has no beta; a Mul before it adds a requantization.
- resnet_layer_16x8: its int64 bias codes reach 1.7e7 > 2^24, which float32 cannot carry, so the float twin
  would not hold TFLite's bias (the twin refuses it rather than test a different model).
- movement2_16x8, squared_difference_16x8: lowbit's importer refuses them (LiteRT rejects them as well).
"""
from __future__ import annotations

import functools
import os
from collections import Counter

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")

from float_twin import float_twin  # noqa: E402
from lowbit.graph.tflite import load_tflite  # noqa: E402
from lowbit.quant.compile import compile_graph  # noqa: E402
from lowbit.runtime.int_executor import run  # noqa: E402

DATA = os.path.join(os.path.dirname(__file__), "data", "tflite")
BOTH = ("int8", "16x8")
MODELS = {  # fixture -> modes
    # tests/fixtures/tflite/make_linear_models.py
    "conv3x3": BOTH, "conv_stride_relu6": BOTH, "depthwise_m1": BOTH, "depthwise_m2": BOTH,
    "depthwise_m2_pertensor": ("int8",), "dilated": BOTH, "inverted_residual": BOTH, "dense_softmax": BOTH,
    "dense_3d": BOTH, "dense_3d_pertensor": BOTH, "pool_concat": BOTH, "small_cnn": BOTH,
    "small_cnn_pertensor": BOTH, "small_cnn_floatio": BOTH, "movement": BOTH, "movement2": ("int8",),
    "resnet_layer": ("int8",),
    # tests/fixtures/tflite/make_elementwise_models.py
    "add": BOTH, "add_bcast": BOTH, "add_bcast2": BOTH, "add_bcast4d": BOTH, "add_relu": BOTH, "add_const": BOTH,
    "sub": BOTH, "sub_bcast": BOTH, "mul": BOTH, "mul_bcast": BOTH, "mul_bcast3": BOTH, "mul_const": BOTH,
    "tanh": BOTH, "logistic": BOTH, "gelu": BOTH, "gelu_tanh": BOTH, "gelu_tanh_libm": ("16x8",),
    "exp": BOTH, "exp_libm": ("16x8",), "log": BOTH, "elu_patched": ("int8",), "hard_swish": ("int8",),
    "leaky_relu": BOTH, "leaky_relu_neg": BOTH, "relu": BOTH, "relu6": BOTH, "relu_n1_to_1": ("int8",),
    "softmax": BOTH, "softmax_wide": BOTH, "classifier_softmax": BOTH, "attention_core": BOTH,
    "activation_zoo16": BOTH, "batch_matmul": BOTH, "batch_matmul_adj_x": BOTH, "batch_matmul_adj_y": BOTH,
    "batch_matmul_bcast": BOTH, "batch_matmul_k96": BOTH, "batch_matmul_int8_rhs": ("16x8",),
}
CASES = [f"{name}_{mode}" for name, modes in MODELS.items() for mode in modes]
# an int8 Softmax producing a model output: lowbit runs it at 16 bits (see the module docstring)
SOFTMAX_AT_16_BITS = {"dense_softmax_int8", "classifier_softmax_int8", "softmax_int8", "softmax_wide_int8"}
# ELU has no kernel in LiteRT's reference resolver; its int8 kernel is a table lookup in either resolver
RESOLVER = {"elu_patched_int8": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}
SAME_KERNEL = {"Relu6": "Relu"}  # lowbit.int ops that are one kernel under two names


def _same_spec(a, b) -> bool:
    return a is not None and b is not None and a.bits == b.bits and a.axis == b.axis and \
        np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point)


def _path(case: str) -> str:
    return os.path.join(DATA, f"{case}.tflite")


@functools.cache
def _interpreter(case: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=_path(case), experimental_preserve_all_tensors=True,
                         experimental_op_resolver_type=getattr(OpResolverType, RESOLVER.get(case, "BUILTIN_REF")))
    interp.allocate_tensors()
    return interp


def litert_tensors(case: str, feeds) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """(outputs, every tensor LiteRT computed by name) of the model on ``feeds``."""
    interp = _interpreter(case)
    for d, x in zip(interp.get_input_details(), feeds):
        interp.set_tensor(d["index"], x)
    interp.invoke()
    tensors = {}
    for d in interp.get_tensor_details():
        try:
            tensors[d["name"]] = interp.get_tensor(d["index"]).copy()
        except ValueError:  # constants folded away / tensors without data
            continue
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()], tensors


def feeds_for(graph, seed: int) -> list[np.ndarray]:
    """Inputs in the model's own dtypes: integer inputs span the whole type (both extremes included); float
    inputs span the input quantizer's real range and 10% beyond it on each side (so that Quantize saturates)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for v in graph.inputs:
        if v.dtype.kind == "i":
            info = np.iinfo(v.dtype)
            x = rng.integers(info.min, info.max, size=v.shape, endpoint=True)
            x.reshape(-1)[:2] = [info.min, info.max]
            feeds.append(x.astype(v.dtype))
            continue
        q = v.consumers[0].outputs[0].quant  # the Quantize reading this float input
        lo, hi = ((b - int(q.zero_point)) * float(q.scale) for b in (q.qmin, q.qmax))
        span = hi - lo
        feeds.append(rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=v.shape).astype(np.float32))
    return feeds


# LiteRT's arithmetic where lowbit offers a choice: the reference FULLY_CONNECTED rescales in double, and a
# model-output Softmax lowbit runs at 16 bits uses TFLite's int16 kernel as is (no exp cut-off)
LITERT_OPTIONS = {"fc_requant": "float64", "output_softmax": "tflite"}


def lower_twin(case: str, **options):
    """(imported graph, float twin, lowbit's lowering of the twin with the model's own specs)."""
    graph = load_tflite(_path(case))
    twin = float_twin(graph, _path(case))
    first = {v.name: f[None] for v, f in zip(twin.graph.inputs, _as_float(graph, feeds_for(graph, 0)))}
    _, low = compile_graph(twin.graph, first, "w8a16" if case.endswith("16x8") else "w8a8", stats=twin.stats,
                           options=twin.options(**{**LITERT_OPTIONS, **options}))
    return graph, twin, low


lowered = functools.cache(lower_twin)


def _as_float(graph, feeds) -> list[np.ndarray]:
    """The lowered graph's float inputs: integer codes dequantized (its Quantize recovers them exactly)."""
    return [f if v.quant is None else v.quant.dequantize(f) for v, f in zip(graph.inputs, feeds)]


def run_lowered(low, feeds) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(float outputs, every value) of the lowered graph."""
    seen: dict[str, np.ndarray] = {}

    def observe(node, outs):
        seen.update((v.name, o) for v, o in zip(node.outputs, outs))

    out = run(low.graph, {v.name: f for v, f in zip(low.graph.inputs, feeds)}, observe=observe)
    return out, seen


@pytest.mark.parametrize("case", CASES)
def test_lowering_with_tflite_specs_gives_litert_integers(case):
    graph, twin, low = lowered(case)
    for seed in (0, 1):
        feeds = feeds_for(graph, seed)
        ref_outputs, ref = litert_tensors(case, feeds)
        out, seen = run_lowered(low, _as_float(graph, feeds))
        compared = set()
        for name, value in low.graph.values.items():
            tensor = twin.tensor_of.get(low.float_of.get(name))
            if tensor is None or name not in seen or tensor not in ref:
                continue
            if case in SOFTMAX_AT_16_BITS and tensor == graph.outputs[0].name:
                continue  # test_model_output_softmax_runs_at_16_bits
            tflite = graph.values[tensor].quant
            assert _same_spec(value.quant, tflite), \
                f"{case}: '{tensor}' lowered as {value.quant.describe()}, TFLite {tflite.describe()}"
            got, want = seen[name], ref[tensor]
            assert got.dtype == want.dtype and got.shape == want.shape, f"{case}: '{tensor}'"
            diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
            assert np.array_equal(got, want), (f"{case} seed {seed}: '{tensor}': {np.count_nonzero(diff)} of "
                                               f"{diff.size} codes differ, by up to {diff.max()}")
            compared.add(tensor)
        int_outputs = {v.name for v in graph.outputs if v.dtype.kind == "i"} - \
            ({graph.outputs[0].name} if case in SOFTMAX_AT_16_BITS else set())
        assert int_outputs <= compared, f"{case}: outputs {sorted(int_outputs - compared)} were not compared"
        for v, want in zip(low.graph.outputs, ref_outputs):
            if want.dtype.kind == "f":  # a float-output model: both dequantize the same codes
                assert np.array_equal(out[v.name], want), f"{case} seed {seed}: float output '{v.name}'"


def _at_float_io(graph, node) -> bool:
    """A Quantize of a float graph input, or a Dequantize to a float graph output (maybe through Identity)."""
    if node.op_type == "Quantize":
        return node.inputs[0] in graph.inputs
    if node.op_type == "Dequantize":
        out = node.outputs[0]
        return out in graph.outputs or all(c.op_type == "Identity" and c.outputs[0] in graph.outputs
                                           for c in out.consumers)
    return False


def _int_ops(graph) -> Counter:
    """lowbit.int ops by type, without the Quantize / Dequantize at float graph inputs and outputs."""
    return Counter(SAME_KERNEL.get(n.op_type, n.op_type) for n in graph.nodes
                   if n.domain == "lowbit.int" and not _at_float_io(graph, n))


@pytest.mark.parametrize("case", CASES)
def test_lowering_picks_the_converters_ops(case):
    """The lowered graph holds the integer ops the importer made of the TFLite operators, with the model's
    weight specs, and no float island except a Pad (lowbit's lowering has no Pad rule; see the docstring)."""
    graph, twin, low = lowered(case)
    carried: dict[str, list] = {}  # float value -> the specs of the integer values standing for it
    for v in low.graph.values.values():
        name = low.float_of.get(v.name) or (v.name[:-2] if v.const is not None else None)  # const "<name>_q"
        carried.setdefault(name, []).append(v.quant)
    for name, spec in twin.activation_specs.items():
        if case in SOFTMAX_AT_16_BITS and name == low.graph.outputs[0].name:
            continue  # the Softmax output spec lowbit fixes at int16 (test_model_output_softmax_runs_at_16_bits)
        assert any(_same_spec(q, spec) for q in carried.get(name, ())), \
            f"{case}: no integer value for '{name}' carries the given {spec.describe()}"
        if twin.graph.values[name].const is not None:  # lowbit would derive its own: the given one must win
            assert any(q is spec for q in carried[name]), f"{case}: constant '{name}' ignored its given spec"
    islands = [n for n in low.graph.nodes if n.name in low.float_islands]
    assert all(n.op_type == "Pad" for n in islands), [n.describe() for n in islands]
    want = _int_ops(graph)
    if case in SOFTMAX_AT_16_BITS:
        want["Requantize"] += 1  # the Softmax input, int8 -> int16
    want.update({"Dequantize": len(islands), "Quantize": len(islands)})  # around each Pad island
    assert _int_ops(low.graph) == +want
    weights = [n.inputs[1].quant for n in low.graph.nodes if n.op_type in ("Conv", "FullyConnected")]
    assert len(weights) == len(twin.weight_specs)
    assert all(any(w is s for s in twin.weight_specs.values()) for w in weights)


@pytest.mark.parametrize("output_softmax", ["tflite", "cutoff"])
@pytest.mark.parametrize("case", sorted(SOFTMAX_AT_16_BITS))
def test_model_output_softmax_runs_at_16_bits(case, output_softmax):
    """lowbit's deliberate choice: the model-output Softmax reads LiteRT's int8 logits (compared above),
    requantized to int16, and writes int16 probabilities at scale 1/32768, with TFLite's int16 kernel or
    lowbit's exact-zero tail (``output_softmax``). LiteRT's int8 probabilities are these rounded to the 1/256
    grid, up to each kernel's own approximation (TFLite's int16 exp table stops at -10: softmax_int8 reaches
    0.59 of a step, 0.51 with the cut-off): the two stay within one int8 step."""
    graph, _, low = lower_twin(case, output_softmax=output_softmax)
    (softmax,) = [n for n in low.graph.nodes if n.op_type == "Softmax"]
    assert softmax.inputs[0].producer.op_type == "Requantize" and softmax.inputs[0].quant.bits == 16
    out_spec = softmax.outputs[0].quant
    assert out_spec.bits == 16 and float(out_spec.scale) == 1 / 32768 and int(out_spec.zero_point) == 0
    assert softmax.attrs.get("exp_cutoff", 0) == (output_softmax == "cutoff")
    for seed in (0, 1, 2):
        feeds = feeds_for(graph, seed)
        (want,), _ = litert_tensors(case, feeds)
        _, seen = run_lowered(low, _as_float(graph, feeds))
        p16 = out_spec.dequantize(seen[softmax.outputs[0].name]).astype(np.float64)
        p8 = graph.outputs[0].quant.dequantize(want).astype(np.float64)
        assert np.abs(p16 - p8).max() <= 1 / 256


@pytest.mark.parametrize("case", sorted(SOFTMAX_AT_16_BITS))
def test_model_output_softmax_at_8_bits_would_be_litert_exactly(case, monkeypatch):
    """The 16-bit choice is the only difference: with the model-output test switched off, lowbit lowers the
    Softmax at 8 bits and matches LiteRT code for code."""
    from lowbit.quant import lower_ops

    monkeypatch.setattr(lower_ops, "_feeds_graph_output", lambda ctx, v: False)
    graph, _, low = lower_twin(case)
    assert _int_ops(low.graph) == _int_ops(graph)
    for seed in (0, 1):
        feeds = feeds_for(graph, seed)
        (want,), _ = litert_tensors(case, feeds)
        _, seen = run_lowered(low, _as_float(graph, feeds))
        dq = low.graph.outputs[0].producer
        assert np.array_equal(seen[dq.inputs[0].name], want), f"{case} seed {seed}"


@pytest.mark.parametrize("case", ["conv_stride_relu6_int8", "small_cnn_int8", "small_cnn_16x8", "pool_concat_16x8",
                                  "inverted_residual_int8", "dense_3d_16x8", "gelu_tanh_16x8", "tanh_16x8",
                                  "leaky_relu_neg_int8", "attention_core_int8", "activation_zoo16_16x8"])
def test_float_twin_is_the_models_function(case):
    """The twin in float (lowbit's float executor) stays within 4 output steps of LiteRT's dequantized output,
    on inputs over a quarter of the input range (so that no TFLite tensor saturates; the twin never does)."""
    from lowbit.runtime.float_executor import run as run_float

    graph, twin, _ = lowered(case)
    rng = np.random.default_rng(5)
    feeds = []
    for v in graph.inputs:
        info, zp = np.iinfo(v.dtype), int(v.quant.zero_point)
        half = (int(info.max) - int(info.min)) / 8
        feeds.append(np.clip(np.round(zp + rng.uniform(-half, half, v.shape)), info.min, info.max).astype(v.dtype))
    want, _ = litert_tensors(case, feeds)
    got = run_float(twin.graph, {v.name: f for v, f in zip(twin.graph.inputs, _as_float(graph, feeds))})
    for v, w in zip(graph.outputs, want):
        s = v.quant
        lo, hi = ((b - int(s.zero_point)) * float(s.scale) for b in (s.qmin, s.qmax))
        err = np.abs(np.clip(got[v.name], lo, hi) - s.dequantize(w)).max() / float(s.scale)
        assert err <= 4, f"{case}: output '{v.name}' is {err:.1f} steps from LiteRT's"


def test_float_twin_structure():
    """Standard float ops only; NHWC ops between Transposes; a fused RELU6 as Clip(0, 6); constants
    dequantized; the float options read from the flatbuffer (GELU approximate, LEAKY_RELU alpha)."""
    path = _path("conv_stride_relu6_16x8")
    graph = load_tflite(path)
    twin = float_twin(graph, path)
    assert [(n.domain, n.op_type) for n in twin.graph.nodes] == [("", "Transpose"), ("", "Conv"), ("", "Clip"),
                                                                  ("", "Transpose")]
    conv, clip = twin.graph.nodes[1:3]
    (imported,) = graph.nodes
    w = imported.inputs[1]
    assert np.array_equal(conv.inputs[1].const, w.quant.dequantize(w.const))
    assert [float(clip.const_input(i)) for i in (1, 2)] == [0.0, 6.0]
    assert twin.weight_specs == {conv.name: w.quant}
    assert twin.activation_specs[clip.outputs[0].name] is imported.outputs[0].quant
    for case, op, attrs in (("gelu_tanh_int8", "Gelu", {"approximate": "tanh"}), ("gelu_int8", "Gelu", {"approximate": "none"}),
                            ("leaky_relu_neg_int8", "LeakyRelu", {"alpha": float(np.float32(-0.3))})):
        (node,) = float_twin(load_tflite(_path(case)), _path(case)).graph.nodes
        assert (node.op_type, node.attrs) == (op, attrs)
