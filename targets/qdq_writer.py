"""lowbit integer IR -> a standard QDQ ONNX model (QuantizeLinear / DequantizeLinear around float ops).

The form is the one ONNX Runtime's quantizer writes and its graph optimiser fuses into int8 kernels:

    float input -> QuantizeLinear(input spec) -> q
    each lowbit.int arithmetic node:  DequantizeLinear(each integer input) -> float op
                                      [-> Relu / Clip for a fused activation range] -> QuantizeLinear(output spec)
    weights: int8 (int4 packed, opset 21) initializers -> DequantizeLinear(per-channel scale, axis 0)
    bias:    int32 initializer -> DequantizeLinear(scale s_in * s_w)
    data movement on integer tensors (Reshape, Transpose, Concat, ...): DequantizeLinear -> op -> QuantizeLinear
             with the same spec (ORT drops the pair again; QNN wants every op as such a node unit)

Every integer tensor of the lowbit graph keeps its name in the ONNX model (it is a QuantizeLinear output), so
tests can compare ORT's tensors with lowbit's, op by op. int16 activations are symmetric int16 Q/DQ (opset 21).
``qnn=True`` writes the layout Qualcomm's QNN execution provider wants: activations as unsigned codes (uint8 with
zero point z + 128, uint16 with z + 32768: the same real values) and a 16-bit Sigmoid's output at QNN's fixed
encoding (uint16, scale 1/65536, zero point 0) requantized to lowbit's. See docs/targets.md (onnxruntime).

Lut nodes become their float function when the node says which (attribute ``function``: an ONNX op type such as
"Gelu", "Sigmoid", "Tanh", "Exp", "Erf", with that op's attributes in ``function_attrs``, a JSON object); else
the table itself is written as a float piecewise-linear function through its points,
``y = t0 + sum_k d_k * Relu(x - x_k)`` (Sub, Relu, Mul, ReduceSum, Add: no Gather), which is exact at every int8 code
and equals TFLite's int16 table interpolation up to its rounding.
"""
from __future__ import annotations

import json
from typing import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lowbit.errors import UnsupportedOpError
from lowbit.graph.ir import Graph, Node, Value
from lowbit.quant.spec import QuantSpec, bias_spec
from lowbit.runtime.registry import INT_DOMAIN

OPSET = 21  # int16 / uint16 / int4 Q/DQ are standard from opset 21
Handler = Callable[["QdqWriter", Node], None]
HANDLERS: dict[str, Handler] = {}


def handles(*ops: str):
    def deco(fn: Handler) -> Handler:
        for op in ops:
            HANDLERS[op] = fn
        return fn
    return deco


class QdqWriter:
    """Builds the QDQ model of ``nodes`` of ``graph`` (all of them by default). Integer values used but not
    produced by those nodes become integer graph inputs (used to test one op in isolation)."""

    def __init__(self, graph: Graph, qnn: bool = False):
        self.graph = graph
        self.qnn = qnn
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.notes: list[str] = []
        self._names: set[str] = set(graph.values)
        self._qparams: dict[str, tuple[str, str]] = {}

    # -- names and constants --------------------------------------------------------------------------------
    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self._names:
            i += 1
            name = f"{hint}_{i}"
        self._names.add(name)
        return name

    def const(self, hint: str, array: np.ndarray) -> str:
        name = self.fresh(hint)
        self.inits[name] = numpy_helper.from_array(np.asarray(array), name)
        return name

    def add(self, op: str, inputs: list[str], hint: str, n_out: int = 1, outputs: list[str] | None = None,
            domain: str = "", **attrs) -> list[str]:
        outs = outputs or [self.fresh(f"{hint}_{op}" if n_out == 1 else f"{hint}_{op}_{i}") for i in range(n_out)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=self.fresh(f"{hint}/{op}"), domain=domain,
                                           **attrs))
        return outs

    # -- quantization parameters ----------------------------------------------------------------------------
    def onnx_spec(self, spec: QuantSpec) -> tuple[np.ndarray, np.ndarray]:
        """(scale float32, zero point of the ONNX storage type) for an activation spec (QNN: unsigned)."""
        zp = np.asarray(spec.zero_point, np.int64)
        dtype = spec.dtype if spec.signed or spec.bits != 16 else np.dtype(np.uint16)
        if self.qnn and spec.signed and spec.bits in (8, 16) and not spec.narrow:
            zp = zp + (1 << (spec.bits - 1))
            dtype = np.dtype(np.uint8 if spec.bits == 8 else np.uint16)
        return np.asarray(spec.scale, np.float32), zp.astype(dtype)

    def qparams(self, key: str, spec: QuantSpec) -> tuple[str, str]:
        if key not in self._qparams:
            scale, zp = self.onnx_spec(spec)
            self._qparams[key] = (self.const(f"{key}_scale", scale), self.const(f"{key}_zero_point", zp))
        return self._qparams[key]

    def dq(self, v: Value, spec: QuantSpec | None = None, name: str | None = None) -> str:
        """A float tensor = DequantizeLinear(the integer value ``v``); one DQ per use (ORT's node units)."""
        name = name or v.name
        spec = spec or v.quant
        if v.const is not None:
            return self._dq_const(v, spec)
        s, z = self.qparams(name, spec)
        return self.add("DequantizeLinear", [name, s, z], name)[0]

    def _dq_const(self, v: Value, spec: QuantSpec) -> str:
        codes = np.asarray(v.const)
        axis = {} if not spec.per_channel else {"axis": int(spec.axis)}
        if spec.bits >= 32:
            if codes.dtype == np.int64 and np.abs(codes).max(initial=0) >= 2 ** 31:
                self.notes.append(f"bias '{v.name}' needs more than 32 bits: written as float (DequantizeLinear "
                                  f"takes at most int32)")
                return self.const(f"{v.name}_float", spec.dequantize(codes))
            q = self.const(v.name, codes.astype(np.int32))
            return self.add("DequantizeLinear", [q, self.const(f"{v.name}_scale", np.asarray(spec.scale, np.float32))],
                            v.name, **axis)[0]
        if spec.bits == 4:
            import ml_dtypes
            stored, zp = codes.astype(ml_dtypes.int4), np.zeros(np.shape(spec.zero_point), ml_dtypes.int4)
        else:
            stored, zp = codes.astype(spec.dtype), np.asarray(spec.zero_point).astype(spec.dtype)
            if not spec.narrow and not spec.per_channel:  # an activation-like constant: QNN's layout too
                scale, zp = self.onnx_spec(spec)
                stored = (codes.astype(np.int64) - np.asarray(spec.zero_point) + zp.astype(np.int64)).astype(zp.dtype)
        q = self.const(v.name, stored)
        return self.add("DequantizeLinear", [q, self.const(f"{v.name}_scale", np.asarray(spec.scale, np.float32)),
                                             self.const(f"{v.name}_zero_point", zp)], v.name, **axis)[0]

    def plain(self, v: Value) -> str:
        """A value used as it is (a mask, indices, a shape); a constant becomes an initializer of its name."""
        if v.const is not None and v.name not in self.inits:
            self.inits[v.name] = numpy_helper.from_array(np.asarray(v.const), v.name)
        return v.name

    def q(self, x: str, v: Value, spec: QuantSpec | None = None, name: str | None = None) -> str:
        """QuantizeLinear(float ``x``) -> the integer tensor named after ``v`` (or ``name``)."""
        name = name or v.name
        s, z = self.qparams(name, spec or v.quant)
        return self.add("QuantizeLinear", [x, s, z], name, outputs=[name])[0]

    def clamp(self, x: str, spec: QuantSpec, act_min: int, act_max: int, hint: str) -> str:
        """A fused activation range [act_min, act_max] (integer codes) as Relu / Clip on the float result;
        nothing when the range is the whole type (QuantizeLinear saturates there anyway)."""
        lo_needed, hi_needed = act_min > spec.qmin, act_max < spec.qmax
        if not (lo_needed or hi_needed):
            return x
        zp, scale = int(spec.zero_point), np.float32(spec.scale)
        lo = np.float32((act_min - zp) * scale)
        hi = np.float32((act_max - zp) * scale)
        if lo_needed and not hi_needed and lo == 0:
            return self.add("Relu", [x], hint)[0]
        return self.add("Clip", [x, self.const(f"{hint}_min", lo) if lo_needed else "",
                                 self.const(f"{hint}_max", hi) if hi_needed else ""], hint)[0]

    def requant_movement(self, op: str, v: Value, extra: list[str], hint: str, **attrs) -> tuple[str, Value]:
        """``op`` on integer value ``v`` in QDQ form (DQ -> op -> Q with v's spec); returns the new integer
        tensor's name and a stand-in Value carrying the spec."""
        y = self.add(op, [self.dq(v)] + extra, hint, **attrs)[0]
        out = Value(self.fresh(f"{v.name}_{op.lower()}"), None, v.dtype)
        out.quant = v.quant
        self.q(y, out)
        return out.name, out

    # -- whole graph ------------------------------------------------------------------------------------------
    def write_node(self, node: Node) -> None:
        if node.domain == INT_DOMAIN:
            handler = HANDLERS.get(node.op_type)
            if handler is None:
                raise UnsupportedOpError(
                    f"{node.describe()}: the QDQ ONNX export has no rule for lowbit.int.{node.op_type}; it covers "
                    f"{', '.join(sorted(HANDLERS))}")
            handler(self, node)
        else:
            _default_domain(self, node)

    def model(self, inputs: list[Value], outputs: list[Value], name: str) -> onnx.ModelProto:
        def info(v: Value, elem=None) -> onnx.ValueInfoProto:
            if elem is None:
                dtype = self.onnx_spec(v.quant)[1].dtype if _is_int(v) else np.dtype(v.dtype or np.float32)
                elem = helper.np_dtype_to_tensor_dtype(dtype)
            shape = None if v.shape is None else [d if isinstance(d, int) else str(d) for d in v.shape]
            return helper.make_tensor_value_info(v.name, elem, shape)

        g = helper.make_graph(self.nodes, name, [info(v) for v in inputs], [info(v) for v in outputs],
                              initializer=list(self.inits.values()))
        opsets = {"": max(OPSET, int(self.graph.opsets.get("", OPSET)))}
        for d, ver in self.graph.opsets.items():
            if d not in ("", "ai.onnx", INT_DOMAIN):
                opsets[d] = ver
        for f in self.graph.functions:
            opsets.setdefault(f.domain, 1)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()],
                                  producer_name="lowbit", functions=list(self.graph.functions))
        model.ir_version = 10
        if self.notes:
            model.metadata_props.add(key="lowbit.export_notes", value="\n".join(self.notes))
        return model


def to_qdq_model(graph: Graph, qnn: bool = False) -> onnx.ModelProto:
    """The QDQ ONNX model of an integer graph (see the module docstring)."""
    w = QdqWriter(graph, qnn)
    for node in graph.nodes:
        w.write_node(node)
    model = w.model(graph.inputs, graph.outputs, graph.name)
    model.metadata_props.add(key="lowbit.qdq", value=json.dumps({"qnn": qnn}))
    return model


def node_model(graph: Graph, node: Node, qnn: bool = False) -> onnx.ModelProto:
    """A QDQ model of ``node`` alone, to run exactly this op on lowbit's own inputs. Its inputs and outputs are
    float: an integer input ``v`` is fed as the float ``v.name + ":float"`` = its codes dequantized, and
    quantized again inside (exact: Q(DQ(q)) = q), an integer output is returned dequantized. ORT fuses
    DQ -> op -> Q into its integer kernels only when a Q feeds the DQ and a DQ reads the Q, hence this form."""
    w = QdqWriter(graph, qnn)
    ins, outs = [], []
    for v in dict.fromkeys(node.inputs):
        if v is None or v.const is not None:
            continue
        if _is_int(v):
            f = Value(f"{v.name}:float", v.shape, np.dtype(np.float32))
            w.q(f.name, v)
            ins.append(f)
        else:
            ins.append(v)
    w.write_node(node)
    for v in node.outputs:
        if _is_int(v):
            f = Value(f"{v.name}:float", v.shape, np.dtype(np.float32))
            s, z = w.qparams(v.name, v.quant)
            w.add("DequantizeLinear", [v.name, s, z], v.name, outputs=[f.name])
            outs.append(f)
        else:
            outs.append(v)
    return w.model(ins, outs, f"{graph.name}:{node.name}")


def _is_int(v: Value) -> bool:
    return v.quant is not None and v.dtype is not None and np.dtype(v.dtype).kind in "iu"


# -- handlers for lowbit.int ops ---------------------------------------------------------------------------------
@handles("Quantize")
def _quantize(w: QdqWriter, n: Node) -> None:
    w.q(n.inputs[0].name, n.outputs[0])


@handles("Dequantize")
def _dequantize(w: QdqWriter, n: Node) -> None:
    x = n.inputs[0]
    s, z = w.qparams(x.name, x.quant)
    w.add("DequantizeLinear", [x.name, s, z], x.name, outputs=[n.outputs[0].name])


@handles("Requantize")
def _requantize(w: QdqWriter, n: Node) -> None:
    w.q(w.dq(n.inputs[0]), n.outputs[0])


def _to_nchw(w: QdqWriter, x: str, layout: str, hint: str) -> str:
    return x if layout == "NCHW" else w.add("Transpose", [x], hint, perm=[0, 3, 1, 2])[0]


def _from_nchw(w: QdqWriter, y: str, layout: str, hint: str) -> str:
    return y if layout == "NCHW" else w.add("Transpose", [y], hint, perm=[0, 2, 3, 1])[0]


def _bias(w: QdqWriter, n: Node) -> list[str]:
    b = n.input(2)
    if b is None:
        return []
    spec = b.quant or bias_spec(float(n.inputs[0].quant.scale), n.inputs[1].quant,
                                64 if b.const.dtype == np.int64 else 32)
    return [w.dq(b, spec)]


def _finish(w: QdqWriter, n: Node, y: str, out: Value | None = None) -> None:
    out = out or n.outputs[0]
    a = n.attrs
    if "act_min" in a:
        y = w.clamp(y, out.quant, int(a["act_min"]), int(a["act_max"]), n.name)
    w.q(y, out)


@handles("Conv")
def _conv(w: QdqWriter, n: Node) -> None:
    x, wt = n.inputs[0], n.inputs[1]
    layout = n.attrs.get("layout", "NCHW")
    xf = _to_nchw(w, w.dq(x), layout, n.name)
    y = w.add("Conv", [xf, w.dq(wt)] + _bias(w, n), n.name, strides=list(n.attrs.get("strides", [1, 1])),
              pads=list(n.attrs.get("pads", [0, 0, 0, 0])), dilations=list(n.attrs.get("dilations", [1, 1])),
              group=int(n.attrs.get("group", 1)), kernel_shape=list(wt.const.shape[2:]))[0]
    _finish(w, n, _from_nchw(w, y, layout, n.name))


@handles("FullyConnected")
def _fully_connected(w: QdqWriter, n: Node) -> None:
    """x[..., K] @ w[N, K]^T + b as Gemm(transB=1); a rank > 2 input is flattened to [-1, K] and the result
    reshaped back, both in QDQ form so that ORT still sees DQ -> Gemm -> Q."""
    x, wt = n.inputs[0], n.inputs[1]
    out = n.outputs[0]
    rank = len(x.shape) if x.shape is not None else 2
    if rank == 2:
        y = w.add("Gemm", [w.dq(x), w.dq(wt)] + _bias(w, n), n.name, transB=1)[0]
        _finish(w, n, y)
        return
    k = int(wt.const.shape[1])
    _, x2 = w.requant_movement("Reshape", x, [w.const(f"{n.name}_shape2d", np.array([-1, k], np.int64))], n.name)
    y = w.add("Gemm", [w.dq(x2), w.dq(wt)] + _bias(w, n), n.name, transB=1)[0]
    flat = Value(w.fresh(f"{out.name}_2d"), None, out.dtype)
    flat.quant = out.quant
    _finish(w, n, y, flat)
    shape = w.add("Shape", [x.name], n.name, end=-1)[0]
    full = w.add("Concat", [shape, w.const(f"{n.name}_n", np.array([wt.const.shape[0]], np.int64))], n.name,
                 axis=0)[0]
    w.q(w.add("Reshape", [w.dq(flat), full], n.name)[0], out)


@handles("BatchMatMul")
def _batch_matmul(w: QdqWriter, n: Node) -> None:
    a, b = n.inputs
    ins = []
    for v, adj in ((a, n.attrs.get("adj_x", 0)), (b, n.attrs.get("adj_y", 0))):
        if adj:
            r = len(v.shape)
            perm = list(range(r - 2)) + [r - 1, r - 2]
            _, v = w.requant_movement("Transpose", v, [], n.name, perm=perm)
        ins.append(w.dq(v))
    _finish(w, n, w.add("MatMul", ins, n.name)[0])


@handles("Add", "Sub", "Mul")
def _binary(w: QdqWriter, n: Node) -> None:
    _finish(w, n, w.add(n.op_type, [w.dq(n.inputs[0]), w.dq(n.inputs[1])], n.name)[0])


@handles("SquaredDifference")
def _squared_difference(w: QdqWriter, n: Node) -> None:
    d = w.add("Sub", [w.dq(n.inputs[0]), w.dq(n.inputs[1])], n.name)[0]
    _finish(w, n, w.add("Mul", [d, d], n.name)[0])


@handles("MaxPool", "AvgPool")
def _pool(w: QdqWriter, n: Node) -> None:
    layout = n.attrs.get("layout", "NCHW")
    xf = _to_nchw(w, w.dq(n.inputs[0]), layout, n.name)
    kw = dict(kernel_shape=list(n.attrs["kernel_shape"]), strides=list(n.attrs.get("strides", [1, 1])),
              pads=list(n.attrs.get("pads", [0, 0, 0, 0])))
    if n.op_type == "AvgPool":
        kw["count_include_pad"] = 0  # TFLite divides by the taps inside the image
    y = w.add("MaxPool" if n.op_type == "MaxPool" else "AveragePool", [xf], n.name, **kw)[0]
    _finish(w, n, _from_nchw(w, y, layout, n.name))


@handles("Mean")
def _mean(w: QdqWriter, n: Node) -> None:
    x = n.inputs[0]
    axes = [int(a) for a in n.attrs["axes"]]
    keep = int(n.attrs.get("keepdims", 1))
    if x.shape is not None and len(x.shape) == 4 and axes == [2, 3] and keep:
        y = w.add("GlobalAveragePool", [w.dq(x)], n.name)[0]  # ORT fuses this one (QLinearGlobalAveragePool)
    else:
        y = w.add("ReduceMean", [w.dq(x), w.const(f"{n.name}_axes", np.array(axes, np.int64))], n.name,
                  keepdims=keep)[0]
    w.q(y, n.outputs[0])


@handles("Relu", "Relu6")
def _relu(w: QdqWriter, n: Node) -> None:
    _finish(w, n, w.dq(n.inputs[0]))


@handles("LeakyRelu")
def _leaky_relu(w: QdqWriter, n: Node) -> None:
    a = n.attrs
    alpha = (a["alpha_multiplier"] * 2.0 ** a["alpha_shift"]) / (a["identity_multiplier"] * 2.0 ** a["identity_shift"])
    w.q(w.add("LeakyRelu", [w.dq(n.inputs[0])], n.name, alpha=float(alpha))[0], n.outputs[0])


@handles("HardSwish")
def _hard_swish(w: QdqWriter, n: Node) -> None:
    w.q(w.add("HardSwish", [w.dq(n.inputs[0])], n.name)[0], n.outputs[0])


@handles("Rsqrt")
def _rsqrt(w: QdqWriter, n: Node) -> None:
    s = w.add("Sqrt", [w.dq(n.inputs[0])], n.name)[0]
    w.q(w.add("Reciprocal", [s], n.name)[0], n.outputs[0])


@handles("Tanh")
def _tanh(w: QdqWriter, n: Node) -> None:
    w.q(w.add("Tanh", [w.dq(n.inputs[0])], n.name)[0], n.outputs[0])


@handles("Logistic")
def _logistic(w: QdqWriter, n: Node) -> None:
    y = w.add("Sigmoid", [w.dq(n.inputs[0])], n.name)[0]
    _quantize_sigmoid(w, y, n.outputs[0], n.name)


def _quantize_sigmoid(w: QdqWriter, y: str, out: Value, hint: str) -> None:
    """QNN requires a 16-bit Sigmoid's output at uint16 scale 1/65536, zero point 0; lowbit's (TFLite's) is
    scale 1/32768 over [-1, 1): quantize at QNN's encoding, then requantize (costs up to 1 LSB)."""
    if not (w.qnn and out.quant.bits == 16):
        w.q(y, out)
        return
    fixed = Value(w.fresh(f"{out.name}_qnn"), None, out.dtype)
    fixed.quant = QuantSpec(16, 1.0 / 65536, 0, signed=False)
    w.q(y, fixed)
    w.q(w.dq(fixed), out)
    w.notes.append(f"'{out.name}': 16-bit Sigmoid output written at QNN's fixed uint16 encoding (1/65536) "
                   f"and requantized to lowbit's (1/32768)")


@handles("Softmax")
def _softmax(w: QdqWriter, n: Node) -> None:
    x = w.dq(n.inputs[0])
    beta = _softmax_beta(n)
    if abs(beta - 1.0) > 1e-6:
        x = w.add("Mul", [x, w.const(f"{n.name}_beta", np.float32(beta))], n.name)[0]
    w.q(w.add("Softmax", [x], n.name, axis=-1)[0], n.outputs[0])


@handles("MaskedSoftmax")
def _masked_softmax(w: QdqWriter, n: Node) -> None:
    """Softmax over the unmasked entries (mask True = out): masked scores become float32's lowest (exp gives
    exactly 0), masked outputs 0, so a fully masked row is all zero-probability codes, as lowbit defines it."""
    x, mask = w.dq(n.inputs[0]), w.plain(n.inputs[1])
    beta = _softmax_beta(n)
    if abs(beta - 1.0) > 1e-6:
        x = w.add("Mul", [x, w.const(f"{n.name}_beta", np.float32(beta))], n.name)[0]
    lowest = w.const(f"{n.name}_lowest", np.float32(np.finfo(np.float32).min))
    y = w.add("Softmax", [w.add("Where", [mask, lowest, x], n.name)[0]], n.name, axis=-1)[0]
    y = w.add("Where", [mask, w.const(f"{n.name}_zero", np.float32(0)), y], n.name)[0]
    w.q(y, n.outputs[0])


def _softmax_beta(n: Node) -> float:
    """beta recovered from the input multiplier (prepare_softmax), rounded to 6 digits."""
    a, s_in = n.attrs, float(n.inputs[0].quant.scale)
    real = a["input_multiplier"] * 2.0 ** (int(a["input_left_shift"]) - 31)
    beta = real / (s_in * 2.0 ** 26) if n.inputs[0].quant.bits == 8 else real * (10.0 / 65535) / s_in
    if n.inputs[0].quant.bits == 8 and real >= 2 ** 31 - 2:
        return 1.0  # capped: beta is not recoverable, and only large-scale inputs reach the cap
    return float(f"{beta:.6g}")


def _norm_params(n: Node) -> tuple[np.ndarray, np.ndarray, float]:
    """(gamma, beta, epsilon) in float, recovered from the integer attributes (quant/prepare_norm.py)."""
    a = n.attrs
    s_in, s_out = float(n.inputs[0].quant.scale), float(n.outputs[0].quant.scale)
    c = int(a["channels"])
    frac = int(a["bias_frac_bits"])
    mult = np.asarray(a["gamma_multiplier"], np.float64).reshape(-1)
    shift = np.asarray(a["gamma_shift"], np.float64).reshape(-1)
    gamma = np.broadcast_to(mult * 2.0 ** (shift - 31) * s_out * 2.0 ** (int(a["z_frac_bits"]) - frac), (c,))
    beta = np.broadcast_to(np.asarray(a["beta"], np.float64).reshape(-1) * s_out / 2.0 ** frac, (c,))
    eps = float(a["epsilon_term"]) / 4.0 ** int(a["variance_shift"]) * s_in * s_in / (c * c)
    return gamma.astype(np.float32), beta.astype(np.float32), eps


@handles("LayerNorm")
def _layer_norm(w: QdqWriter, n: Node) -> None:
    gamma, beta, eps = _norm_params(n)
    y = w.add("LayerNormalization", [w.dq(n.inputs[0]), w.const(f"{n.name}_gamma", gamma),
                                     w.const(f"{n.name}_beta", beta)], n.name, axis=-1, epsilon=eps)[0]
    _finish(w, n, y)


@handles("RMSNorm")
def _rms_norm(w: QdqWriter, n: Node) -> None:
    """x / sqrt(mean(x^2) + eps) * gamma (+ beta), decomposed (ONNX RMSNormalization needs opset 23)."""
    gamma, beta, eps = _norm_params(n)
    x = w.dq(n.inputs[0])
    ms = w.add("ReduceMean", [w.add("Mul", [x, x], n.name)[0], w.const(f"{n.name}_axes", np.array([-1], np.int64))],
               n.name, keepdims=1)[0]
    rms = w.add("Sqrt", [w.add("Add", [ms, w.const(f"{n.name}_eps", np.float32(eps))], n.name)[0]], n.name)[0]
    y = w.add("Mul", [w.add("Div", [x, rms], n.name)[0], w.const(f"{n.name}_gamma", gamma)], n.name)[0]
    if np.any(beta):
        y = w.add("Add", [y, w.const(f"{n.name}_beta", beta)], n.name)[0]
    _finish(w, n, y)


# Lut function names another pass may record (attribute "function"), mapped to ONNX ops
LUT_FUNCTIONS = {"Gelu", "Sigmoid", "Tanh", "Exp", "Log", "Elu", "Erf", "Softplus", "Softsign", "Sqrt", "Reciprocal",
                 "Neg", "Abs", "Selu", "Mish", "HardSigmoid", "HardSwish", "Sin", "Cos", "Relu", "LeakyRelu"}
_LUT_ALIASES = {"Logistic": ("Sigmoid", {}), "GeluTanh": ("Gelu", {"approximate": "tanh"}),
                "gelu_tanh": ("Gelu", {"approximate": "tanh"})}


@handles("Lut")
def _lut(w: QdqWriter, n: Node) -> None:
    fn = n.attrs.get("function")
    if isinstance(fn, bytes):
        fn = fn.decode()
    x, out = n.inputs[0], n.outputs[0]
    if fn:
        op, attrs = _LUT_ALIASES.get(fn, (fn[:1].upper() + fn[1:], {}))
        extra = n.attrs.get("function_attrs")
        if extra:
            attrs = {**attrs, **json.loads(extra.decode() if isinstance(extra, bytes) else extra)}
        if op in LUT_FUNCTIONS:
            y = w.add(op, [w.dq(x)], n.name, **attrs)[0]
            if op == "Sigmoid":
                _quantize_sigmoid(w, y, out, n.name)
            else:
                w.q(y, out)
            return
        w.notes.append(f"{n.describe()}: function '{fn}' has no ONNX op here; written as its table")
    w.q(_lut_piecewise_linear(w, n), out)


def _lut_piecewise_linear(w: QdqWriter, n: Node) -> str:
    """The table as the float piecewise-linear function through its points (module docstring)."""
    x, out = n.inputs[0], n.outputs[0]
    table = np.asarray(n.attrs["table"], np.float64)
    s_in, z_in = float(x.quant.scale), int(x.quant.zero_point)
    s_out, z_out = float(out.quant.scale), int(out.quant.zero_point)
    if table.size == 256:
        codes = np.arange(-128, 128, dtype=np.float64)
    else:  # int16 table of 513 points, one every 128 codes from -32768
        codes = -32768.0 + 128.0 * np.arange(513)
    xs = (codes - z_in) * s_in
    ys = (table - z_out) * s_out
    slopes = np.diff(ys) / np.diff(xs)
    d = np.diff(np.concatenate([[0.0], slopes]))  # change of slope at each knot x_0 .. x_{K-2}
    # knots along a new leading axis: x broadcasts against them with no Unsqueeze / Gather next to the DQ
    # (ORT's QDQ propagation moves DQ across an Unsqueeze and then fails on int8 -> uint8 conversion)
    k_shape = [xs.size - 1] + [1] * len(x.shape)
    r = w.add("Relu", [w.add("Sub", [w.dq(x), w.const(f"{n.name}_knots", xs[:-1].reshape(k_shape).astype(np.float32))],
                             n.name)[0]], n.name)[0]
    y = w.add("Mul", [r, w.const(f"{n.name}_slopes", d.reshape(k_shape).astype(np.float32))], n.name)[0]
    y = w.add("ReduceSum", [y, w.const(f"{n.name}_axis", np.array([0], np.int64))], n.name, keepdims=0)[0]
    return w.add("Add", [y, w.const(f"{n.name}_t0", np.float32(ys[0]))], n.name)[0]


# -- default-domain nodes: data movement on integer tensors, and float islands -----------------------------------
def _default_domain(w: QdqWriter, n: Node) -> None:
    """Integer inputs are dequantized (one DQ each), the op runs on floats, and each integer output is
    quantized with its spec; a node with float inputs only (a float island) is copied unchanged."""
    data = next((v for v in n.inputs if v is not None and _is_int(v)), None)
    ins = []
    for i, v in enumerate(n.inputs):
        if v is None:
            ins.append("")
        elif _is_int(v) and (v.const is None or v.quant is not None):
            ins.append(w.dq(v))
        elif n.op_type == "Pad" and i == 2 and data is not None and v.const is not None:
            ins.append(w.const(f"{n.name}_pad_value", data.quant.dequantize(np.asarray(v.const).reshape(()))))
        else:
            ins.append(w.plain(v))
    if data is None:
        w.nodes.append(helper.make_node(n.op_type, ins, [o.name for o in n.outputs], name=w.fresh(n.name),
                                        domain=n.domain))
        w.nodes[-1].attribute.extend(_attributes(n))
        return
    outs = w.add(n.op_type, ins, n.name, n_out=len(n.outputs), domain=n.domain)
    w.nodes[-1].attribute.extend(_attributes(n))
    for o, y in zip(n.outputs, outs):
        if _is_int(o):
            w.q(y, o)
        else:
            w.add("Identity", [y], n.name, outputs=[o.name])


def _attributes(n: Node) -> list[onnx.AttributeProto]:
    from lowbit.graph.onnx_export import _attr
    return [_attr(k, a) for k, a in n.attrs.items() if not k.startswith("_")]


__all__ = ["HANDLERS", "LUT_FUNCTIONS", "OPSET", "QdqWriter", "node_model", "to_qdq_model"]
