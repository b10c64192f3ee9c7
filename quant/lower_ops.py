"""Lowering rules for arithmetic ops (registered into ``lower.LOWERINGS``; see lower.py for the algebra).

Each rule builds the integer node's attributes with the same Prepare functions the TFLite importer uses
(quant/prepare_linear.py, quant/prepare_elementwise.py), so lowbit's own lowering and an imported .tflite
compute identically. A rule returns False (the node stays a float island) when an input is not float, the
shape is outside what the integer kernel covers, or Prepare refuses the scales.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.graph.ir import Node, Value
from lowbit.quant import prepare_elementwise as pe
from lowbit.quant import prepare_linear as pl
from lowbit.quant.lower import LowerContext, lowering
from lowbit.quant.spec import QuantSpec, bias_spec, weight_spec

# output specs TFLite fixes for these ops, by activation bits
FIXED_OUTPUT = {
    "Sigmoid": {8: (1 / 256, -128), 16: (1 / 32768, 0)},
    "Tanh": {8: (1 / 128, 0), 16: (1 / 32768, 0)},
    "Softmax": {8: (1 / 256, -128), 16: (1 / 32768, 0)},
}


def _is_float(v: Value | None) -> bool:
    return v is not None and v.dtype is not None and v.dtype.kind == "f"


def _fixed_spec(op: str, bits: int) -> QuantSpec:
    scale, zp = FIXED_OUTPUT[op][bits]
    return QuantSpec(bits, scale, zp)


def _fused_activation(ctx: LowerContext, node: Node, out: Value | None = None):
    """If the node's (or ``out``'s) only consumer is Relu or Clip, fuse it: (float value the integer output
    stands for, (lo, hi) real clamp bounds). Otherwise (node's output, None)."""
    out = node.outputs[0] if out is None else out
    if len(out.consumers) != 1 or out in ctx.f.outputs:
        return out, None
    act = out.consumers[0]
    if act.domain != "":
        return out, None
    if act.op_type == "Relu":
        bounds = (0.0, math.inf)
    elif act.op_type == "Clip":
        lo, hi = act.const_input(1), act.const_input(2)
        if (act.input(1) is not None and lo is None) or (act.input(2) is not None and hi is None):
            return out, None
        bounds = (-math.inf if lo is None else float(lo), math.inf if hi is None else float(hi))
    else:
        return out, None
    ctx.fused.add(act.name)
    return act.outputs[0], bounds


def _act_range(spec: QuantSpec, bounds) -> tuple[int, int]:
    if bounds is None:
        return spec.qmin, spec.qmax
    lo, hi = bounds
    q = lambda f: int(spec.zero_point) + int(pe.float_to_int32(pe.tflite_round(np.float32(f) / np.float32(spec.scale))))
    return (spec.qmin if math.isinf(lo) else max(spec.qmin, q(lo)),
            spec.qmax if math.isinf(hi) else min(spec.qmax, q(hi)))


def _quantized_weights(ctx: LowerContext, node: Node, w: np.ndarray, axis: int | None, name: str):
    p = ctx.precisions[node.name]
    spec = ctx.options.get("weight_specs", {}).get(node.name) or \
        weight_spec(w, p.weight_bits, axis if p.per_channel else None, mse_clip=p.weight_clip == "mse")
    q = ctx.g.add_const(f"{name}_q{p.weight_bits}", spec.quantize(w))
    q.quant = spec
    return q, spec


def _quantized_bias(ctx: LowerContext, b: np.ndarray | None, in_spec: QuantSpec, w_spec: QuantSpec, n: int,
                    name: str, bits: int):
    if b is None:
        return None
    spec = bias_spec(float(in_spec.scale), w_spec, bits)
    b = np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (n,))
    q = ctx.g.add_const(f"{name}_q", spec.quantize(b))
    q.quant = spec
    return q


def bias_correction(ctx: LowerContext, node: Node, x: Value, w: np.ndarray, qw: Value, group: int = 1):
    """(W_q - W) E[x] per output channel, the mean shift that rounding the weights adds to every output, to be
    subtracted from the bias ("bias correction", Nagel et al., Data-Free Quantization, ICCV 2019; OpenVINO's
    NNCF and Qualcomm's AIMET apply it by default). E[x] is the calibrated mean of each input channel (axis 1
    for a Conv, the last axis for a FullyConnected; the mean of a padded border is taken as the interior's).
    w is [N, K] (FullyConnected) or [O, C/group, kH, kW] (Conv). None when the node's plan turns it off, the
    integer weights are given (``weight_specs``: reproducing another tool's integers), or no mean is known.

    Measured at w8a8 output SQNR (docs/quantization.md): the random-weight CNNs gain 0.2 - 9 dB (AlexNet and
    SqueezeNet most: post-ReLU inputs with large means), the zoo models 0.1 - 1.4 dB; at 4-bit weights more."""
    given = ctx.options.get("bias_corrections")
    if given is not None:
        return given.get(node.name)
    p = ctx.precisions.get(node.name)
    if p is None or not p.bias_correction or node.name in ctx.options.get("weight_specs", {}):
        return None
    st = ctx.stats.get(x.name)
    mean = None if st is None else st.channel_mean(1 if w.ndim == 4 else -1)
    if mean is None:
        return None
    dw = qw.quant.dequantize(qw.const).astype(np.float64) - np.asarray(w, np.float64)
    if w.ndim == 2:
        if mean.size != w.shape[1]:
            return None
        corr = dw @ mean
    else:
        if mean.size != w.shape[1] * group:
            return None
        per_group = mean.reshape(group, w.shape[1])
        corr = np.einsum("oc,oc->o", dw.sum(axis=(2, 3)), per_group[np.arange(w.shape[0]) // (w.shape[0] // group)])
    ctx.bias_corrections[node.name] = corr
    return corr


def _corrected(bias: np.ndarray | None, corr: np.ndarray | None, n: int) -> np.ndarray | None:
    if corr is None:
        return bias
    base = np.zeros(n) if bias is None else np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (n,))
    return base - corr


def _accumulator(in_spec: QuantSpec, w_spec: QuantSpec) -> str:
    return "int64" if in_spec.bits == 16 or w_spec.bits == 16 else "int32"


@lowering("Conv")
def lower_conv(ctx: LowerContext, node: Node) -> bool:
    """Conv2D with constant weights -> lowbit.int Conv (NCHW, per-channel weights, fused Relu/Clip)."""
    x, w = node.inputs[0], node.const_input(1)
    if not _is_float(x) or w is None or w.ndim != 4 or x.shape is None or node.outputs[0].shape is None:
        return False
    pads = _explicit_pads(node, x.shape, w.shape)
    if pads is None:
        return False
    target, bounds = _fused_activation(ctx, node)
    qx = ctx.integer(x, ctx.node_bits(node))
    out_spec = ctx.spec_of(target)
    qw, w_spec = _quantized_weights(ctx, node, w, 0, node.inputs[1].name)
    acc = _accumulator(qx.quant, w_spec)
    bias = _corrected(node.const_input(2), bias_correction(ctx, node, x, w, qw, int(node.attrs.get("group", 1))),
                      w.shape[0])
    qb = _quantized_bias(ctx, bias, qx.quant, w_spec, w.shape[0], f"{node.name}_bias", 64 if acc == "int64" else 32)
    lo, hi = _act_range(out_spec, bounds)
    try:
        attrs = pl.prepare_conv(qx.quant, w_spec, out_spec, lo, hi, accumulator=acc)
    except ValueError:
        return False
    attrs.update(layout="NCHW", strides=list(node.attrs.get("strides", [1, 1])), pads=pads,
                 dilations=list(node.attrs.get("dilations", [1, 1])), group=int(node.attrs.get("group", 1)))
    ctx.emit("Conv", [qx, qw, qb], [ctx.new_int(target, out_spec)], attrs, node)
    return True


def _explicit_pads(node: Node, xs, ws) -> list[int] | None:
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        pads = list(node.attrs.get("pads", [0, 0, 0, 0])) if mode == "NOTSET" else [0, 0, 0, 0]
        return pads if len(pads) == 4 else None
    strides = node.attrs.get("strides", [1, 1])
    dil = node.attrs.get("dilations", [1, 1])
    begin, end = [], []
    for i in range(2):
        size = xs[2 + i]
        if not isinstance(size, int):
            return None
        out = -(-size // strides[i])
        total = max((out - 1) * strides[i] + (ws[2 + i] - 1) * dil[i] + 1 - size, 0)
        small, big = total // 2, total - total // 2
        begin.append(small if mode == "SAME_UPPER" else big)
        end.append(big if mode == "SAME_UPPER" else small)
    return begin + end


def _linear(ctx: LowerContext, node: Node, x: Value, w_nk: np.ndarray, bias: np.ndarray | None,
            correct: bool = True) -> bool:
    """``correct=False``: no bias correction (the weights are not the node's own, e.g. a rotation folded in)."""
    out = node.outputs[0]
    if bias is None:
        bias, out = _following_bias(ctx, out, w_nk.shape[0])
    target, bounds = _fused_activation(ctx, node, out)
    qx = ctx.integer(x, ctx.node_bits(node))
    out_spec = ctx.spec_of(target)
    qw, w_spec = _quantized_weights(ctx, node, w_nk, 0, f"{node.name}_weight")
    if correct:
        bias = _corrected(bias, bias_correction(ctx, node, x, w_nk, qw), w_nk.shape[0])
    acc = _accumulator(qx.quant, w_spec)
    qb = _quantized_bias(ctx, bias, qx.quant, w_spec, w_nk.shape[0], f"{node.name}_bias", 64 if acc == "int64" else 32)
    lo, hi = _act_range(out_spec, bounds)
    try:
        attrs = pl.prepare_fully_connected(qx.quant, w_spec, out_spec, lo, hi, accumulator=acc,
                                           requant=ctx.options.get("fc_requant", "multiplier"))
    except ValueError:
        return False
    ctx.emit("FullyConnected", [qx, qw, qb], [ctx.new_int(target, out_spec)], attrs, node)
    return True


def _following_bias(ctx: LowerContext, out: Value, n: int):
    """A MatMul's bias as exporters write it, Add(MatMul(x, W), b) with constant b of shape [N] (or [1.., N]):
    fuse it into the FullyConnected. Returns (bias or None, the float value the linear op now produces)."""
    if len(out.consumers) != 1 or out in ctx.f.outputs:
        return None, out
    add = out.consumers[0]
    if add.domain != "" or add.op_type != "Add":
        return None, out
    other = add.inputs[1] if add.inputs[0] is out else add.inputs[0]
    c = other.const
    if c is None or c.dtype.kind != "f" or c.size != n or c.shape[-1:] != (n,):
        return None, out
    ctx.fused.add(add.name)
    return c.reshape(-1).astype(np.float64), add.outputs[0]


@lowering("Gemm")
def lower_gemm(ctx: LowerContext, node: Node) -> bool:
    """Gemm with constant B -> FullyConnected (alpha folded into the weights, beta into the bias)."""
    x, b = node.inputs[0], node.const_input(1)
    if not _is_float(x) or b is None or node.attrs.get("transA", 0):
        return False
    w = (b if node.attrs.get("transB", 0) else b.T) * float(node.attrs.get("alpha", 1.0))
    c = node.const_input(2)
    if node.input(2) is not None and c is None:
        return False
    if c is not None:
        if c.size not in (1, w.shape[0]):
            return False
        c = np.broadcast_to(c.reshape(-1), (w.shape[0],)) * float(node.attrs.get("beta", 1.0))
    return _linear(ctx, node, x, np.ascontiguousarray(w), c)


@lowering("MatMul")
def lower_matmul(ctx: LowerContext, node: Node) -> bool:
    """MatMul with a constant 2-D right operand -> FullyConnected; two activations -> BatchMatMul."""
    a, b = node.inputs
    if not _is_float(a) or not _is_float(b):
        return False
    if b.const is not None:
        if b.const.ndim != 2 or a.shape is None or len(a.shape) < 2:
            return False
        return _linear(ctx, node, a, np.ascontiguousarray(b.const.T), None)
    if a.const is not None or a.shape is None or b.shape is None or len(a.shape) < 2 or len(b.shape) < 2:
        return False
    qa, qb = ctx.integer(a, ctx.node_bits(node)), ctx.integer(b, ctx.node_bits(node))
    out_spec = ctx.spec_of(node.outputs[0])
    try:
        attrs = pe.prepare_batch_matmul(qa.quant, qb.quant, out_spec)
    except pe.PrepareError:
        return False
    ctx.emit("BatchMatMul", [qa, qb], [ctx.new_int(node.outputs[0], out_spec)], attrs, node)
    return True


def _binary(ctx: LowerContext, node: Node, prepare, op: str) -> bool:
    a, b = node.inputs
    if not (_is_float(a) and _is_float(b)):
        return False
    target, bounds = _fused_activation(ctx, node) if op != "Mul" else (node.outputs[0], None)
    qa, qb = ctx.integer(a, ctx.node_bits(node)), ctx.integer(b, ctx.node_bits(node))
    out_spec = ctx.spec_of(target)
    lo, hi = _act_range(out_spec, bounds)
    try:
        attrs = prepare(qa.quant, qb.quant, out_spec, lo, hi)
    except (pe.PrepareError, ValueError):
        return False
    ctx.emit(op, [qa, qb], [ctx.new_int(target, out_spec)], attrs, node)
    return True


@lowering("Add", "Sum")
def lower_add(ctx: LowerContext, node: Node) -> bool:
    """Add (and two-input Sum) -> lowbit.int Add: both inputs rescaled to a common scale with headroom."""
    return len(node.inputs) == 2 and _binary(ctx, node, pe.prepare_add, "Add")


@lowering("Sub")
def lower_sub(ctx: LowerContext, node: Node) -> bool:
    return _binary(ctx, node, pe.prepare_sub, "Sub")


@lowering("Mul")
def lower_mul(ctx: LowerContext, node: Node) -> bool:
    return _binary(ctx, node, pe.prepare_mul, "Mul")


def _unary(ctx: LowerContext, node: Node, make, fixed: str | None = None) -> bool:
    """A unary op whose attributes come from ``make(in_spec, out_spec) -> (op, attrs)``."""
    x = node.inputs[0]
    if not _is_float(x):
        return False
    qx = ctx.integer(x, ctx.node_bits(node))
    out_spec = _fixed_spec(fixed, qx.quant.bits) if fixed else ctx.spec_of(node.outputs[0])
    if out_spec.bits != qx.quant.bits:
        return False
    try:
        op, attrs = make(qx.quant, out_spec)
    except (pe.PrepareError, ValueError):
        return False
    ctx.emit(op, [qx], [ctx.new_int(node.outputs[0], out_spec)], attrs, node)
    return True


@lowering("Sigmoid")
def lower_sigmoid(ctx, node):
    return _unary(ctx, node, pe.prepare_logistic, "Sigmoid")


@lowering("Tanh")
def lower_tanh(ctx, node):
    return _unary(ctx, node, pe.prepare_tanh, "Tanh")


@lowering("Softmax")
def lower_softmax(ctx, node):
    """Softmax over the last axis -> lowbit.int Softmax (TFLite's int8 / int16 arithmetic).

    int8 softmax outputs are fixed at scale 1/256, which rounds every probability below 1/512 to zero. A
    Softmax whose result is a model output (class probabilities, not attention weights) therefore runs at
    16 bits under an 8-bit plan (input requantized to int16, output scale 1/32768), with ``exp_cutoff``:
    TFLite's int16 kernel tabulates exp only down to a difference of -10 and clamps below, which with many
    classes and peaked logits adds up to N * exp(-10) of spurious mass; the cut-off gives exact zeros there,
    as the int8 kernel does. Measured (w8a8 output SQNR): SqueezeNet 26.8 dB (int8) -> 29.3 dB; Inception v1,
    whose logits are peaked, 48.2 dB (int8), 24.8 dB (TFLite int16), see docs/quantization.md for the
    cut-off's. Option ``output_softmax = "tflite"`` (the tflite target's) keeps TFLite's exact semantics.
    """
    x = node.inputs[0]
    if not _is_float(x) or x.shape is None or int(node.attrs.get("axis", -1)) % len(x.shape) != len(x.shape) - 1:
        return False
    qx = ctx.integer(x, ctx.node_bits(node))
    cutoff = False
    if _feeds_graph_output(ctx, node.outputs[0]):
        if qx.quant.bits == 8:
            from lowbit.quant.lower import requantize
            from lowbit.quant.spec import activation_spec
            st = ctx.stats.get(x.name)
            lo, hi = (0.0, 0.0) if st is None else st.range("minmax", 16)
            qx = requantize(ctx, qx, activation_spec(lo, hi, 16))
        cutoff = ctx.options.get("output_softmax", "cutoff") != "tflite"
    out_spec = _fixed_spec("Softmax", qx.quant.bits)
    try:
        attrs = pe.prepare_softmax(qx.quant, out_spec)
    except pe.PrepareError:
        return False
    if cutoff:
        attrs["exp_cutoff"] = 1
    ctx.emit("Softmax", [qx], [ctx.new_int(node.outputs[0], out_spec)], attrs, node)
    return True


def _feeds_graph_output(ctx: LowerContext, v: Value) -> bool:
    """True when ``v`` reaches a graph output through data-movement ops only."""
    from lowbit.quant.lower import DATA_MOVEMENT
    while True:
        if v in ctx.f.outputs:
            return True
        if len(v.consumers) != 1 or v.consumers[0].op_type not in DATA_MOVEMENT:
            return False
        v = v.consumers[0].outputs[0]


@lowering("Gelu")
def lower_gelu(ctx, node):
    approx = node.attrs.get("approximate", "none") == "tanh"
    return _unary(ctx, node, lambda i, o: ("Lut", pe.prepare_gelu(i, o, approx)))


@lowering("Exp")
def lower_exp(ctx, node):
    return _unary(ctx, node, lambda i, o: ("Lut", pe.prepare_exp(i, o)))


@lowering("Elu")
def lower_elu(ctx, node):
    if float(node.attrs.get("alpha", 1.0)) != 1.0:
        return lower_generic_lut(ctx, node)
    return _unary(ctx, node, lambda i, o: ("Lut", pe.prepare_elu(i, o)))


@lowering("LeakyRelu")
def lower_leaky_relu(ctx, node):
    alpha = float(node.attrs.get("alpha", 0.01))
    return _unary(ctx, node, lambda i, o: ("LeakyRelu", pe.prepare_leaky_relu(i, o, alpha)))


@lowering("HardSwish")
def lower_hard_swish(ctx, node):
    return _unary(ctx, node, lambda i, o: ("HardSwish", pe.prepare_hard_swish(i, o)))


@lowering("Relu")
def lower_relu(ctx, node):
    return _unary(ctx, node, lambda i, o: ("Relu", pe.prepare_relu(i, o)))


@lowering("Clip")
def lower_clip(ctx, node):
    lo, hi = node.const_input(1), node.const_input(2)
    if (node.input(1) is not None and lo is None) or (node.input(2) is not None and hi is None):
        return False
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if math.isinf(lo):
        return lower_generic_lut(ctx, node)
    return _unary(ctx, node, lambda i, o: ("Relu", pe.prepare_relu(i, o, lo, hi)))


# element-wise functions with no TFLite integer kernel: a table over every input code
_GENERIC = {
    "Erf": lambda x, a: np.vectorize(math.erf, otypes=[np.float64])(x),
    "HardSigmoid": lambda x, a: np.clip(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
    "Softplus": lambda x, a: np.logaddexp(0, x),
    "Softsign": lambda x, a: x / (1 + np.abs(x)),
    "Sqrt": lambda x, a: np.sqrt(np.maximum(x, 0)),
    "Log": lambda x, a: np.log(np.maximum(x, np.finfo(np.float32).tiny)),
    "Reciprocal": lambda x, a: 1.0 / np.where(x == 0, np.finfo(np.float32).tiny, x),
    "Neg": lambda x, a: -x,
    "Abs": lambda x, a: np.abs(x),
    "Elu": lambda x, a: np.where(x > 0, x, a.get("alpha", 1.0) * np.expm1(np.minimum(x, 0))),
    "Selu": lambda x, a: a.get("gamma", 1.0507) * np.where(x > 0, x, a.get("alpha", 1.67326) * np.expm1(np.minimum(x, 0))),
    "Mish": lambda x, a: x * np.tanh(np.logaddexp(0, x)),
    "Clip": lambda x, a: np.clip(x, a.get("_lo", -np.inf), a.get("_hi", np.inf)),
    "Sin": lambda x, a: np.sin(x),
    "Cos": lambda x, a: np.cos(x),
}


@lowering("Sqrt")
def lower_sqrt(ctx: LowerContext, node: Node) -> bool:
    """Sqrt read only by a Reciprocal -> one lowbit.int Rsqrt (TFLite's RSQRT: a fixed-point inverse square
    root at 8 bits, a table at 16) producing the Reciprocal's output; any other Sqrt -> a table."""
    out = node.outputs[0]
    rec = out.consumers[0] if len(out.consumers) == 1 and out not in ctx.f.outputs else None
    if rec is None or rec.op_type != "Reciprocal" or rec.domain != "" or not _is_float(node.inputs[0]):
        return lower_generic_lut(ctx, node)
    qx = ctx.integer(node.inputs[0], ctx.node_bits(node))
    out_spec = ctx.spec_of(rec.outputs[0])
    if out_spec.bits != qx.quant.bits or (qx.quant.bits == 8 and int(qx.quant.zero_point) > qx.quant.qmin):
        return lower_generic_lut(ctx, node)  # int8 RSQRT fails on inputs below the zero point: a table then
    try:
        op, attrs = pe.prepare_rsqrt(qx.quant, out_spec)
    except (pe.PrepareError, ValueError):
        return lower_generic_lut(ctx, node)
    ctx.emit(op, [qx], [ctx.new_int(rec.outputs[0], out_spec)], attrs, rec)
    ctx.fused.add(rec.name)
    return True


@lowering(*[op for op in _GENERIC if op not in ("Elu", "Clip", "Sqrt")])
def lower_generic_lut(ctx: LowerContext, node: Node) -> bool:
    """An element-wise function f -> Lut with table[q] = Q_out(f(D_in(q))) over every input code."""
    fn = _GENERIC[node.op_type]
    attrs = dict(node.attrs)
    if node.op_type == "Clip":
        lo, hi = node.const_input(1), node.const_input(2)
        attrs["_lo"] = -np.inf if lo is None else float(lo)
        attrs["_hi"] = np.inf if hi is None else float(hi)
    transform = lambda v: np.asarray(fn(np.asarray(v, np.float64), attrs), np.float32)
    return _unary(ctx, node, lambda i, o: ("Lut", pe._lut(transform, i, o, node.op_type)))


@lowering("Pad")
def lower_pad(ctx: LowerContext, node: Node) -> bool:
    """Pad with constant pads -> the same op on the codes; the constant value is quantized with the input's
    spec (real 0 pads with the zero point, exactly)."""
    x = node.inputs[0]
    if not _is_float(x) or node.const_input(1) is None or (node.input(3) is not None and node.const_input(3) is None):
        return False
    qx = ctx.integer(x, ctx.node_bits(node))
    value = node.const_input(2)
    code = qx.quant.quantize(np.asarray(0.0 if value is None else value, np.float64).reshape(()))
    ins = [qx, ctx.floating(node.inputs[1]), ctx.g.add_const(f"{node.name}_value_q", np.asarray(code, qx.quant.dtype))]
    if node.input(3) is not None:
        ins.append(ctx.floating(node.inputs[3]))
    ctx.emit("Pad", ins, [ctx.new_int(node.outputs[0], qx.quant)], node.attrs, node, domain="")
    return True


@lowering("MaxPool")
def lower_max_pool(ctx: LowerContext, node: Node) -> bool:
    """MaxPool -> lowbit.int MaxPool on the codes (same spec in and out)."""
    return _pool(ctx, node, "MaxPool")


@lowering("AveragePool")
def lower_avg_pool(ctx: LowerContext, node: Node) -> bool:
    """AveragePool without padding counted -> lowbit.int AvgPool (TFLite divides by the valid taps)."""
    pads = node.attrs.get("pads", [0, 0, 0, 0])
    if node.attrs.get("count_include_pad", 0) and any(pads):
        return False
    return _pool(ctx, node, "AvgPool")


def _pool(ctx: LowerContext, node: Node, op: str) -> bool:
    x = node.inputs[0]
    if not _is_float(x) or x.shape is None or len(x.shape) != 4 or len(node.outputs) != 1:
        return False
    if node.attrs.get("ceil_mode", 0) or any(d != 1 for d in node.attrs.get("dilations", [1, 1])):
        return False
    if node.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return False
    qx = ctx.integer(x, ctx.node_bits(node))
    attrs = {"layout": "NCHW", "kernel_shape": list(node.attrs["kernel_shape"]),
             "strides": list(node.attrs.get("strides", [1, 1])), "pads": list(node.attrs.get("pads", [0, 0, 0, 0])),
             **pl.prepare_pool(qx.quant)}
    ctx.emit(op, [qx], [ctx.new_int(node.outputs[0], qx.quant)], attrs, node)
    return True


@lowering("GlobalAveragePool", "ReduceMean")
def lower_mean(ctx: LowerContext, node: Node) -> bool:
    """GlobalAveragePool / ReduceMean over constant axes -> lowbit.int Mean (TFLite's MEAN arithmetic)."""
    x = node.inputs[0]
    if not _is_float(x) or x.shape is None:
        return False
    rank = len(x.shape)
    if node.op_type == "GlobalAveragePool":
        axes, keep = list(range(2, rank)), 1
    else:
        ax = node.const_input(1)
        if node.input(1) is not None and ax is None:
            return False
        axes = list(range(rank)) if ax is None else sorted(int(a) % rank for a in ax.reshape(-1))
        keep = int(node.attrs.get("keepdims", 1))
    qx = ctx.integer(x, ctx.node_bits(node))
    out_spec = ctx.spec_of(node.outputs[0])
    if out_spec.bits != qx.quant.bits:
        return False
    try:
        attrs = pl.prepare_mean(qx.quant, out_spec)
    except ValueError:
        return False
    attrs.update(axes=axes, keepdims=keep)
    ctx.emit("Mean", [qx], [ctx.new_int(node.outputs[0], out_spec)], attrs, node)
    return True
