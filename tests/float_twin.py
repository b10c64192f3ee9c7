"""The float twin of an imported TFLite model, and what lowering it with the model's own scales needs.

``float_twin(graph, path)`` takes the integer graph ``load_tflite(path)`` made (NHWC, ``lowbit.int`` nodes) and
builds a float ONNX-op lowbit Graph that computes the same function in float:

- Conv / FullyConnected -> Conv (NCHW, between Transposes) / Gemm (a 3-D input between Reshapes) with
  dequantized constants: weights ``q_w * s_w[c]``, bias ``q_b * s_in * s_w[c]`` (float32; exact while
  |q_b| < 2^24, checked);
- a fused activation -> Relu or Clip(0, 6) / Clip(-1, 1) after the op: the operator's fused_activation_function,
  checked against act_min / act_max on the output spec (which alone cannot tell RELU from NONE when the
  output range starts at 0);
- MaxPool / AvgPool -> MaxPool / AveragePool (NCHW), Mean -> ReduceMean, Add / Sub / Mul -> themselves,
  BatchMatMul -> MatMul (adj_x / adj_y as Transposes), Softmax -> Softmax;
- Lut, Tanh, Logistic, Relu, Relu6, LeakyRelu, HardSwish -> the float function of the TFLite builtin they came
  from (Tanh, Sigmoid, Gelu, Exp, Elu, LeakyRelu(alpha), Clip, ...). The importer keeps neither the builtin nor
  its float options (GELU's ``approximate``, LEAKY_RELU's ``alpha``) on the integer node, so they are read
  from the flatbuffer itself: each integer node's first output is the TFLite tensor of that name;
- Requantize (TFLite QUANTIZE between two integer tensors) -> nothing (the identity in float), Quantize of a
  float graph input / Dequantize to a float graph output -> nothing (the twin's I/O is float);
- data movement (Reshape, Transpose, Concat, Slice, Gather) -> itself; Pad -> Pad with its value dequantized.

A twin value standing for a TFLite tensor is named after it where it can be (``Twin.tensor_of`` maps each
such twin value to the integer tensor's name; values in NCHW carry a ``/nchw`` suffix). The ``Twin`` also
holds the lowering options that pin lowbit's choices to the TFLite model's: ``activation_specs``
{twin value name: the TFLite tensor's QuantSpec}, ``weight_specs`` {twin node name: the TFLite weight
QuantSpec}, and ``stats`` with one entry per Softmax input (the real range of its TFLite spec): the one place
where lowbit picks a spec itself although every spec is given, the int16 input of a model-output Softmax.
Every other value has no range at all, so a spec that failed to reach the lowering would show at once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lowbit.graph.ir import Graph, Node, Value
from lowbit.graph.passes import infer_shapes
from lowbit.quant.calibrate import TensorStats
from lowbit.quant.prepare_linear import activation_range
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.registry import INT_DOMAIN

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]
F32 = np.float32


@dataclass
class Twin:
    graph: Graph
    activation_specs: dict[str, QuantSpec] = field(default_factory=dict)
    weight_specs: dict[str, QuantSpec] = field(default_factory=dict)
    stats: dict[str, TensorStats] = field(default_factory=dict)
    tensor_of: dict[str, str] = field(default_factory=dict)  # twin value name -> integer TFLite tensor it is

    def options(self, **extra) -> dict:
        """Lowering options with the model's specs; ``extra`` adds others (fc_requant, output_softmax)."""
        return {"activation_specs": self.activation_specs, "weight_specs": self.weight_specs, **extra}


def tflite_builtins(path) -> dict[str, tuple[str, dict]]:
    """{first output tensor name: (builtin name, builtin options)} of every operator in the .tflite file."""
    from lowbit.graph.tflite.reader import _Model  # the decoded flatbuffer, as the importer reads it

    with open(path, "rb") as f:
        model = _Model(str(path), f.read())
    return {model.tensors[op.outputs[0]].name: (op.name, op.options) for op in model.operators if op.outputs}


class _Builder:
    def __init__(self, src: Graph, builtins: dict[str, tuple[str, dict]]):
        self.builtins = builtins
        self.g = Graph(f"{src.name}_float", {"": 21})
        self.fv: dict[int, Value] = {}
        self.twin = Twin(self.g)

    # -- values ----------------------------------------------------------------------------------------------
    def f(self, v: Value | None) -> Value | None:
        """The twin (float) value of integer value ``v``; constants are dequantized."""
        if v is None:
            return None
        got = self.fv.get(id(v))
        if got is not None:
            return got
        if v.const is None:
            raise KeyError(f"{v.name} has no float twin yet")
        c = v.const if v.quant is None else v.quant.dequantize(v.const)
        got = self.g.add_const(v.name, c)
        self.fv[id(v)] = got
        self.spec(got, v)  # a quantized constant operand (ADD / MUL by a constant) keeps the model's spec
        return got

    def bind(self, v: Value, fval: Value) -> Value:
        """``fval`` (original layout) stands for TFLite tensor ``v``: register it and its spec."""
        self.fv[id(v)] = fval
        self.spec(fval, v)
        if v.quant is not None:
            self.twin.tensor_of[fval.name] = v.name
        return fval

    def spec(self, fval: Value, v: Value) -> None:
        if v.quant is not None:
            self.twin.activation_specs[fval.name] = v.quant

    def new(self, hint: str) -> Value:
        return self.g.new_value(hint)

    def node(self, op: str, inputs, outputs, attrs=None, name: str = "") -> Node:
        return self.g.add_node(op, inputs, outputs, attrs or {}, name=self.g.unique_node_name(name or op))

    def const(self, hint: str, array) -> Value:
        return self.g.add_const(hint, np.asarray(array))

    def transpose(self, x: Value, perm, hint: str) -> Value:
        y = self.new(hint)
        self.node("Transpose", [x], [y], {"perm": list(perm)}, name=hint)
        return y

    def builtin(self, node: Node) -> tuple[str, dict]:
        try:
            return self.builtins[node.outputs[0].name]
        except KeyError:
            raise KeyError(f"{node.describe()}: no TFLite operator writes tensor '{node.outputs[0].name}'") from None

    # -- shared patterns -----------------------------------------------------------------------------------
    def fused(self, node: Node) -> str:
        """The fused activation of the node's TFLite operator (its ``fused_activation_function``), checked
        against the node's act_min/act_max. Where the flatbuffer names none, the first of NONE, RELU, RELU6,
        RELU_N1_TO_1 whose clamp equals act_min/act_max (several can: RELU on an output whose range starts
        at 0 clamps nothing, and the twin would then lack a Relu the float model has)."""
        if "act_min" not in node.attrs:
            return "NONE"
        got = (int(node.attrs["act_min"]), int(node.attrs["act_max"]))
        spec = node.outputs[0].quant
        named = self.builtins.get(node.outputs[0].name, (None, {}))[1].get("fused_activation_function")
        for act in [named] if named is not None else list(_FUSED):
            if act in _FUSED and activation_range(spec, act) == got:
                return act
        raise ValueError(f"{node.describe()}: clamp {got} is not the TFLite fused activation "
                         f"{named or 'NONE, RELU, RELU6 or RELU_N1_TO_1'} on {spec.describe()}")

    def op_output(self, node: Node, nchw: bool = False, fused: bool = True) -> Value:
        """A fresh value for the float op standing for ``node``, named after its TFLite tensor when nothing
        (fused activation, transpose back to NHWC) follows it."""
        name = node.outputs[0].name + ("/nchw" if nchw else "")
        return self.new(name + "/op" if fused and self.fused(node) != "NONE" else name)

    def activation(self, y: Value, act: str, name: str) -> Value:
        """Relu (RELU) or Clip (RELU6, RELU_N1_TO_1) after ``y``; its output is named ``name``."""
        z = self.new(name)
        bounds = _FUSED[act]
        if bounds is None:
            self.node("Relu", [y], [z], name=f"{name}/relu")
        else:
            lo, hi = (self.const(f"{name}/{k}", F32(b)) for k, b in zip(("min", "max"), bounds))
            self.node("Clip", [y, lo, hi], [z], name=f"{name}/{act.lower()}")
        return z

    def finish(self, node: Node, y: Value, nchw: bool = False, fused: bool = True) -> None:
        """``y`` (from ``op_output``) computes ``node``'s output: add the fused activation as Relu / Clip, register
        the spec on the value the lowering quantizes (the activation's output), and transpose back to NHWC."""
        out = node.outputs[0]
        act = self.fused(node) if fused else "NONE"
        if act != "NONE":
            y = self.activation(y, act, out.name + ("/nchw" if nchw else ""))
        self.spec(y, out)
        if nchw:
            y = self.transpose(y, TO_NHWC, out.name)
        self.bind(out, y)


_FUSED = {"NONE": None, "RELU": None, "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}


# -- one translator per integer-IR op ----------------------------------------------------------------------------
Translator = Callable[[_Builder, Node], None]
TRANSLATORS: dict[str, Translator] = {}


def translates(*ops: str):
    def deco(fn: Translator) -> Translator:
        for op in ops:
            TRANSLATORS[op] = fn
        return fn
    return deco


def _bias(b: Value | None, x: Value, w: Value, n: int) -> np.ndarray | None:
    """q_b * s_in * s_w[c] as float32; refuses codes float32 cannot carry back to the same integer."""
    if b is None:
        return None
    s = float(x.quant.scale) * np.broadcast_to(w.quant.scale, (n,))
    q = b.const.astype(np.int64).reshape(n)
    real = (q * s).astype(F32)
    back = np.trunc(real.astype(np.float64) / s + np.copysign(0.5, real))
    if not np.array_equal(back, q):
        raise ValueError(f"bias '{b.name}': codes up to {np.abs(q).max()} do not survive float32 (|q_b| >= 2^24)")
    return real


@translates("Conv")
def _conv(t: _Builder, node: Node) -> None:
    x, w, b = (node.input(i) for i in range(3))
    if node.attrs.get("layout") != "NHWC":
        raise ValueError(f"{node.describe()}: expected an NHWC Conv from the TFLite importer")
    xn = t.transpose(t.f(x), TO_NCHW, f"{x.name}/nchw")
    ins = [xn, t.const(w.name, w.quant.dequantize(w.const))]
    bias = _bias(b, x, w, w.const.shape[0])
    if bias is not None:
        ins.append(t.const(b.name, bias))
    y = t.op_output(node, nchw=True)
    kh, kw = w.const.shape[2:]
    conv = t.node("Conv", ins, [y], {"strides": list(node.attrs["strides"]), "pads": list(node.attrs["pads"]),
                                     "dilations": list(node.attrs["dilations"]), "group": int(node.attrs["group"]),
                                     "kernel_shape": [int(kh), int(kw)]}, name=node.name)
    t.twin.weight_specs[conv.name] = w.quant
    t.finish(node, y, nchw=True)


@translates("FullyConnected")
def _fully_connected(t: _Builder, node: Node) -> None:
    x, w, b = (node.input(i) for i in range(3))
    out = node.outputs[0]
    n, k = w.const.shape
    xf = t.f(x)
    if len(x.shape) != 2:  # keep_num_dims: Gemm is 2-D, so rows go through Reshapes (codes move unchanged)
        flat = t.new(f"{x.name}/2d")
        t.node("Reshape", [xf, t.const(f"{x.name}/2d_shape", np.array([-1, k], np.int64))], [flat])
        xf = flat
    ins = [xf, t.const(w.name, w.quant.dequantize(w.const))]
    bias = _bias(b, x, w, n)
    if bias is not None:
        ins.append(t.const(b.name, bias))
    y = t.op_output(node) if len(x.shape) == 2 else t.new(f"{out.name}/2d")
    gemm = t.node("Gemm", ins, [y], {"transB": 1}, name=node.name)
    t.twin.weight_specs[gemm.name] = w.quant
    if len(x.shape) == 2:
        t.finish(node, y)
        return
    if t.fused(node) != "NONE":
        y = t.activation(y, t.fused(node), f"{out.name}/2d")
    t.spec(y, out)
    shaped = t.new(out.name)
    t.node("Reshape", [y, t.const(f"{out.name}/shape", np.array(out.shape, np.int64))], [shaped])
    t.bind(out, shaped)


@translates("MaxPool", "AvgPool")
def _pool(t: _Builder, node: Node) -> None:
    x, out = node.inputs[0], node.outputs[0]
    if activation_range(out.quant, "NONE") != (node.attrs["act_min"], node.attrs["act_max"]):
        raise ValueError(f"{node.describe()}: a fused activation on a pool is not translated")
    xn = t.transpose(t.f(x), TO_NCHW, f"{x.name}/nchw")
    y = t.op_output(node, nchw=True, fused=False)
    attrs = {"kernel_shape": list(node.attrs["kernel_shape"]), "strides": list(node.attrs["strides"]),
             "pads": list(node.attrs["pads"])}
    if node.op_type == "AvgPool":
        attrs["count_include_pad"] = 0  # TFLite divides by the taps inside the input
    t.node("MaxPool" if node.op_type == "MaxPool" else "AveragePool", [xn], [y], attrs, name=node.name)
    t.finish(node, y, nchw=True, fused=False)


@translates("Mean")
def _mean(t: _Builder, node: Node) -> None:
    out = node.outputs[0]
    y = t.op_output(node, fused=False)
    axes = t.const(f"{out.name}/axes", np.array(node.attrs["axes"], np.int64))
    t.node("ReduceMean", [t.f(node.inputs[0]), axes], [y], {"keepdims": int(node.attrs["keepdims"])},
           name=node.name)
    t.finish(node, y, fused=False)


@translates("Add", "Sub", "Mul")
def _binary(t: _Builder, node: Node) -> None:
    y = t.op_output(node)
    t.node(node.op_type, [t.f(v) for v in node.inputs], [y], name=node.name)
    t.finish(node, y)


@translates("BatchMatMul")
def _batch_matmul(t: _Builder, node: Node) -> None:
    ins = []
    for v, adjoint in zip(node.inputs, (node.attrs.get("adj_x"), node.attrs.get("adj_y"))):
        fv = t.f(v)
        if adjoint:
            rank = len(v.shape)
            fv = t.transpose(fv, [*range(rank - 2), rank - 1, rank - 2], f"{v.name}/adjoint")
        ins.append(fv)
    y = t.op_output(node, fused=False)
    t.node("MatMul", ins, [y], name=node.name)
    t.finish(node, y, fused=False)  # the converter never fuses an activation into BATCH_MATMUL


@translates("Softmax")
def _softmax(t: _Builder, node: Node) -> None:
    _, options = t.builtin(node)
    if float(options.get("beta", 1.0)) != 1.0:
        raise ValueError(f"{node.describe()}: SOFTMAX beta {options['beta']} has no ONNX Softmax equivalent")
    # the one range lowbit reads although every spec is given: the int16 spec it requantizes the input of a
    # model-output Softmax to (quant/lower_ops.py lower_softmax); the TFLite input spec's real range
    x = node.inputs[0]
    lo, hi = (float((q - x.quant.zero_point) * x.quant.scale) for q in (x.quant.qmin, x.quant.qmax))
    t.twin.stats[t.f(x).name] = TensorStats(min=lo, max=hi, count=1)
    _unary_float(t, node, "Softmax", {"axis": -1})


# float function of a TFLite element-wise builtin: (ONNX op, attributes from the builtin options)
_ELEMENTWISE = {
    "TANH": lambda o: ("Tanh", {}),
    "LOGISTIC": lambda o: ("Sigmoid", {}),
    "GELU": lambda o: ("Gelu", {"approximate": "tanh" if o.get("approximate") else "none"}),
    "EXP": lambda o: ("Exp", {}),
    "LOG": lambda o: ("Log", {}),
    "ELU": lambda o: ("Elu", {"alpha": 1.0}),
    "HARD_SWISH": lambda o: ("HardSwish", {}),
    "LEAKY_RELU": lambda o: ("LeakyRelu", {"alpha": float(o.get("alpha", 0.2))}),
    "RELU": lambda o: ("Relu", {}),
}
_CLIPS = {"RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU_0_TO_1": (0.0, 1.0)}


def _unary_float(t: _Builder, node: Node, op: str, attrs: dict, extra=()) -> None:
    y = t.op_output(node, fused=False)
    t.node(op, [t.f(node.inputs[0]), *extra], [y], attrs, name=node.name)
    t.finish(node, y, fused=False)


@translates("Lut", "Tanh", "Logistic", "Relu", "Relu6", "LeakyRelu", "HardSwish")
def _elementwise(t: _Builder, node: Node) -> None:
    builtin, options = t.builtin(node)
    if builtin in _CLIPS:
        lo, hi = _CLIPS[builtin]
        name = node.outputs[0].name
        _unary_float(t, node, "Clip", {}, (t.const(f"{name}/min", F32(lo)), t.const(f"{name}/max", F32(hi))))
        return
    if builtin not in _ELEMENTWISE:
        raise ValueError(f"{node.describe()}: TFLite {builtin} has no one-op float twin here")
    op, attrs = _ELEMENTWISE[builtin](options)
    _unary_float(t, node, op, attrs)


@translates("Requantize", "Quantize", "Dequantize")
def _change_of_spec(t: _Builder, node: Node) -> None:
    """The identity in float. A Quantize's output spec becomes the spec of the float value it reads."""
    x, out = node.inputs[0], node.outputs[0]
    fx = t.f(x)
    if node.op_type == "Quantize":
        t.spec(fx, out)
        t.twin.tensor_of[fx.name] = out.name
    t.fv[id(out)] = fx


@translates("Reshape", "Transpose", "Concat", "Slice", "Gather", "Squeeze", "Unsqueeze")
def _data_movement(t: _Builder, node: Node) -> None:
    out = node.outputs[0]
    y = t.new(out.name)
    t.node(node.op_type, [t.f(v) for v in node.inputs], [y], dict(node.attrs), name=node.name)
    t.bind(out, y)


@translates("Pad")
def _pad(t: _Builder, node: Node) -> None:
    """The importer's pad value is a code of the input's spec (the zero point for PAD): dequantize it."""
    x, pads, value = (node.input(i) for i in range(3))
    out = node.outputs[0]
    real = x.quant.dequantize(value.const.reshape(1)).reshape(())
    y = t.new(out.name)
    t.node("Pad", [t.f(x), t.f(pads), t.const(f"{value.name}/real", real)], [y], {"mode": "constant"},
           name=node.name)
    t.bind(out, y)


def float_twin(graph: Graph, path) -> Twin:
    """The float twin of ``graph`` = ``load_tflite(path)`` (see the module docstring)."""
    t = _Builder(graph, tflite_builtins(path))
    for v in graph.inputs:
        fv = t.g.new_value(v.name, v.shape, np.float32)
        t.g.inputs.append(fv)
        t.bind(v, fv)
    for node in graph.nodes:
        fn = TRANSLATORS.get(node.op_type) if node.domain in ("", INT_DOMAIN) else None
        if fn is None:
            raise ValueError(f"{node.describe()}: no float twin (translated: {', '.join(sorted(TRANSLATORS))})")
        fn(t, node)
    # an output reached through Dequantize (a float-output model) keeps the name of the integer tensor it
    # dequantizes: an Identity to rename it would be removed again by lowbit's passes, renaming that value
    t.g.outputs = [t.f(v) for v in graph.outputs]
    infer_shapes(t.g)
    t.g.verify()
    return t.twin
