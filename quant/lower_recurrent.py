"""Lowering rules for recurrent and spiking layers, and the 1-D convolutions and BatchNorms around them
(registered into ``lower.LOWERINGS``; the integer semantics are in runtime/kernels/int/{recurrent,spiking}.py).

- ``Conv`` on [N, C, L] (1-D, incl. depthwise): Unsqueeze -> lowbit.int Conv on [N, C, 1, L] -> Squeeze. A
  following Slice that drops the last outputs (a causal conv exported as "pad both sides, cut the tail") becomes
  less right padding, and a BatchNormalization after it is folded into the weights exactly as
  graph/passes/fold.py folds it, so the whole-sequence graph and the step graph (where the pass folds it) get
  the same integer weights. A Relu/Clip right after, or behind one Transpose, is fused. 4-D Convs go to the
  rule of lower_ops.py.
- ``BatchNormalization`` left on a 3-D/4-D activation: folded into a following LIF (Transpose -> BN ->
  Transpose -> LIF, the spiking LMUFormer's "BN before every LIF": the LIF's per-channel scale and bias), or
  else a per-channel affine map run as a depthwise 1x1 integer Conv (weights exact at any bit width: one value
  per channel).
- ``lowbit.LMUMemory``: 16-bit Abar rows, state int32 at scale 2 max|m| / (2^31 - 1) (m's calibrated range
  over every step); ``lowbit.SelectiveScan``: state int32 at scale 8 max|h_last| / (2^31 - 1), decay through
  the exp2 table; ``lowbit.LIF``: int16 membrane at scale 2^-F. These internal widths hold whatever the plan
  (docs/hybrid_ops.md measures why); the op outputs follow the plan's activation bits.
- spikes: LIF outputs, and data movement, Concat and Add of spikes, are QuantSpec(bits, 1, 0) tensors (int8,
  or int16 under 16-bit activations, holding 0/1); a Conv/FullyConnected reading one becomes SpikeConv /
  SpikeFullyConnected (same integers, AC accounting).
- inputs are requantized to the node's activation bits when their producer ran at others (mixed plans).

Streaming (the streamed mean pooling rule; step graphs lowered with the whole-sequence specs and integer state
I/O) is in quant/lower_streaming.py.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.graph.ir import Graph, Node, Value
from lowbit.quant import lower_ops as lo  # imported first: its rules must exist before they are chained
from lowbit.quant import prepare_recurrent as pr
from lowbit.quant.lower import (DATA_MOVEMENT, LOWERINGS, PART_READERS, SPEC_CHOICES, LowerContext,
                               lowering, requantize)
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.prepare_linear import prepare_conv
from lowbit.quant.spec import QuantSpec, activation_spec
from lowbit.runtime.registry import INT_DOMAIN

LMU_STATE_BITS, LMU_HEADROOM = 32, 2.0    # measured: docs/hybrid_ops.md, "Recurrent and spiking layers"
SCAN_STATE_BITS, SCAN_HEADROOM = 32, 8.0
LIF_STATE_BITS = 16
LIF_CURRENT_BITS = 16     # a LIF's input current under 8-bit activations (None: the plan's bits); see choose_lif_currents
SCAN_DELTA_TABLE = True   # delta = softplus(dt) from a table over the int8 dt codes (a Softplus the scan absorbs)
SCAN_FUSE_GATE = True     # y * gate computed inside the scan, only the product quantized
SCAN_HADAMARD = False     # rotate the gated scan output, H folded into out_proj: measured, it does not pay here


def spike_spec(bits: int = 8) -> QuantSpec:
    """Spikes: codes 0/1 (sums of k spike trains: 0..k) at scale 1, zero point 0, in the activation dtype."""
    return QuantSpec(bits, 1.0, 0)


def _is_float(v: Value | None) -> bool:
    return v is not None and v.dtype is not None and v.dtype.kind == "f"


def _given(ctx: LowerContext, v: Value | None) -> QuantSpec | None:
    """The spec fixed for ``v`` by ``options["activation_specs"]`` (step graphs), if any."""
    if v is None:
        return None
    return ctx.options.get("activation_specs", {}).get(v.name)


def _sole_consumer(ctx: LowerContext, v: Value, op: str | None = None, domain: str = "") -> Node | None:
    if len(v.consumers) != 1 or v in ctx.f.outputs:
        return None
    c = v.consumers[0]
    if c.domain != domain or (op is not None and c.op_type != op) or c.name in ctx.fused:
        return None
    return c


def _is_swap_last_two(node: Node | None) -> bool:
    return node is not None and node.op_type == "Transpose" and node.domain == "" \
        and list(node.attrs.get("perm", [])) == [0, 2, 1]


def _int_const(ctx: LowerContext, hint: str, array: np.ndarray, spec: QuantSpec | None = None) -> Value:
    c = ctx.g.add_const(hint, array)
    c.quant = spec
    return c


def _axes_const(ctx: LowerContext, axes) -> Value:
    return ctx.g.add_const("axes", np.asarray(axes, np.int64))


def _emit_int(ctx: LowerContext, op: str, inputs, spec: QuantSpec, shape, hint: str, attrs=None, name: str = "",
              domain: str = INT_DOMAIN) -> Value:
    """A fresh integer value ``hint`` (``spec``, ``shape``) computed by a new node named ``name`` (or ``op``)."""
    out = ctx.g.new_value(hint, shape, spec.dtype)
    out.quant = spec
    ctx.g.add_node(op, inputs, [out], attrs or {}, name=ctx.g.unique_node_name(name or op), domain=domain)
    return out


def _rebits(spec: QuantSpec, bits: int) -> QuantSpec:
    """The spec at ``bits`` covering the real range ``spec`` covers (spikes stay spikes)."""
    if float(spec.scale) == 1.0 and int(spec.zero_point) == 0:
        return spike_spec(bits)
    lo_, hi_ = spec.dequantize(np.array([spec.qmin, spec.qmax]))
    return activation_spec(float(lo_), float(hi_), bits)


def _int_at_node_bits(ctx: LowerContext, node: Node, x: Value) -> Value:
    """The integer form of ``x`` at ``node``'s activation bits, requantized when its producer ran at others."""
    qx = ctx.integer(x)
    p = ctx.precisions.get(node.name)
    if p is None or qx.quant.bits == p.act_bits or qx.quant.per_channel:
        return qx
    return requantize(ctx, qx, _rebits(qx.quant, p.act_bits))


# --- activations fused after a linear op (possibly behind one Transpose) ---------------------------------------------
def _relu_bounds(ctx: LowerContext, act: Node):
    if act.op_type == "Relu":
        return 0.0, math.inf
    lo_, hi_ = act.const_input(1), act.const_input(2)
    if (act.input(1) is not None and lo_ is None) or (act.input(2) is not None and hi_ is None):
        return None
    return (-math.inf if lo_ is None else float(lo_)), (math.inf if hi_ is None else float(hi_))


def _activation_after(ctx: LowerContext, v: Value):
    """(target float value, (lo, hi) bounds or None, Transpose node or None) for the Relu/Clip that reads ``v``
    directly or through one Transpose; the fused nodes are marked. Without one: (v, None, None)."""
    act = _sole_consumer(ctx, v)
    tr = None
    if act is not None and act.op_type == "Transpose":
        tr, act = act, _sole_consumer(ctx, act.outputs[0])
    if act is None or act.op_type not in ("Relu", "Clip"):
        return v, None, None
    bounds = _relu_bounds(ctx, act)
    if bounds is None:
        return v, None, None
    ctx.fused.add(act.name)
    if tr is not None:
        ctx.fused.add(tr.name)
    return act.outputs[0], bounds, tr


# --- BatchNorm folding (the arithmetic of graph/passes/fold.py, so both graphs fold alike) ----------------------------
def _bn_params(bn: Node):
    params = [bn.const_input(i) for i in range(1, 5)]
    if any(p is None for p in params):
        return None
    if len(bn.outputs) > 1 and any(o.consumers for o in bn.outputs[1:]):
        return None
    gamma, beta, mean, var = (p.astype(np.float64).reshape(-1) for p in params)
    s = gamma / np.sqrt(var + float(bn.attrs.get("epsilon", 1e-5)))
    return s, beta - mean * s


def _fold_bn(w: np.ndarray, b: np.ndarray | None, s: np.ndarray, shift: np.ndarray):
    """(w', b') with w' = w * s per output channel (axis 0), b' = b * s + shift, as float32 like fold_batchnorm."""
    w_new = (w * s.reshape([-1] + [1] * (w.ndim - 1))).astype(w.dtype)
    base = np.zeros(w.shape[0], w.dtype) if b is None else np.broadcast_to(b.reshape(-1), (w.shape[0],))
    return w_new, (base * s + shift).astype(w.dtype)


# --- Conv ------------------------------------------------------------------------------------------------------------
def _causal_tail(ctx: LowerContext, out: Value, length: int) -> tuple[Node, int] | None:
    """(Slice node, outputs it drops) when ``out`` [N, C, length] is only read by a Slice keeping [0, e) of the
    last axis (step 1)."""
    sl = _sole_consumer(ctx, out, "Slice")
    if sl is None:
        return None
    starts, ends = sl.const_input(1), sl.const_input(2)
    axes = sl.const_input(3) if sl.input(3) is not None else np.array([len(out.shape) - 1])
    steps = sl.const_input(4) if sl.input(4) is not None else np.array([1])
    if starts is None or ends is None or axes is None or steps is None or starts.size != 1 or axes.size != 1:
        return None
    if int(axes.reshape(-1)[0]) % 3 != 2 or int(starts.reshape(-1)[0]) != 0 or int(steps.reshape(-1)[0]) != 1:
        return None
    e = int(ends.reshape(-1)[0])
    e = length + e if e < 0 else min(e, length)
    return sl, length - e


def _conv_op(ctx: LowerContext, qx: Value) -> str:
    return "SpikeConv" if is_spike_value(qx) else "Conv"


_BASE_CONV = LOWERINGS["Conv"]


@lowering("Conv")
def lower_conv(ctx: LowerContext, node: Node) -> bool:
    """1-D Conv here (see the module docstring); 2-D Conv by lower_ops' rule, marked as a spike layer when
    its input is spikes."""
    w = node.const_input(1)
    if w is not None and w.ndim == 3:
        return _lower_conv1d(ctx, node)
    return _spike_layer(ctx, _BASE_CONV, node)


def _lower_conv1d(ctx: LowerContext, node: Node) -> bool:
    x, w, b = node.inputs[0], node.const_input(1), node.const_input(2)
    out = node.outputs[0]
    if not _is_float(x) or x.shape is None or len(x.shape) != 3 or out.shape is None or not isinstance(out.shape[2], int):
        return False
    if node.input(2) is not None and b is None:
        return False
    mode = node.attrs.get("auto_pad", "NOTSET")
    if mode not in ("NOTSET", "VALID"):
        return False
    pads = list(node.attrs.get("pads", [0, 0])) if mode == "NOTSET" else [0, 0]
    strides = list(node.attrs.get("strides", [1]))
    dil = list(node.attrs.get("dilations", [1]))
    group = int(node.attrs.get("group", 1))
    fused_before = set(ctx.fused)
    target = out
    tail = _causal_tail(ctx, out, out.shape[2]) if strides == [1] else None
    if tail is not None and tail[1] <= pads[1]:
        sl, dropped = tail
        pads = [pads[0], pads[1] - dropped]
        ctx.fused.add(sl.name)
        target = sl.outputs[0]
    bn = _sole_consumer(ctx, target, "BatchNormalization")
    params = _bn_params(bn) if bn is not None else None
    if params is not None:
        w, b = _fold_bn(w, b, *params)
        ctx.fused.add(bn.name)
        target = bn.outputs[0]
    target, bounds, transpose = _activation_after(ctx, target)
    qx = _int_at_node_bits(ctx, node, x)
    out_spec = ctx.spec_of(target)
    w4 = np.ascontiguousarray(w[:, :, None, :])
    qw, w_spec = lo._quantized_weights(ctx, node, w4, 0, node.inputs[1].name)
    acc = lo._accumulator(qx.quant, w_spec)
    b = lo._corrected(b, lo.bias_correction(ctx, node, x, w4, qw, group), w.shape[0])
    qb = lo._quantized_bias(ctx, b, qx.quant, w_spec, w.shape[0], f"{node.name}_bias", 64 if acc == "int64" else 32)
    lo_, hi_ = lo._act_range(out_spec, bounds)
    try:
        attrs = prepare_conv(qx.quant, w_spec, out_spec, lo_, hi_, accumulator=acc)
    except ValueError:
        ctx.fused = fused_before
        return False
    n, c, length = x.shape
    attrs.update(layout="NCHW", strides=[1] + strides, pads=[0, pads[0], 0, pads[1]], dilations=[1] + dil,
                 group=group)
    x4 = _emit_int(ctx, "Unsqueeze", [qx, _axes_const(ctx, [2])], qx.quant, (n, c, 1, length), f"{x.name}_h1",
                   name=f"{node.name}/unsqueeze", domain="")
    l_out = (length + pads[0] + pads[1] - dil[0] * (w.shape[2] - 1) - 1) // strides[0] + 1
    y4 = _emit_int(ctx, _conv_op(ctx, qx), [x4, qw, qb], out_spec, (n, w.shape[0], 1, l_out), f"{node.name}_y4",
                   attrs, name=node.name)
    _squeeze_out(ctx, node, y4, target, out_spec, transpose)
    return True


def _squeeze_out(ctx: LowerContext, node: Node, y4: Value, target: Value, spec: QuantSpec, transpose: Node | None):
    """[N, C, 1, L] -> [N, C, L] as ``target``'s integer value, through ``transpose`` when an activation behind
    it was fused."""
    n, c, _, length = y4.shape
    if transpose is None:
        ctx.g.add_node("Squeeze", [y4, _axes_const(ctx, [2])], [ctx.new_int(target, spec)],
                       name=ctx.g.unique_node_name(f"{node.name}/squeeze"))
        return
    y3 = _emit_int(ctx, "Squeeze", [y4, _axes_const(ctx, [2])], spec, (n, c, length), f"{node.name}_y",
                   name=f"{node.name}/squeeze", domain="")
    ctx.emit("Transpose", [y3], [ctx.new_int(target, spec)], transpose.attrs, transpose, domain="")


# --- BatchNormalization ------------------------------------------------------------------------------------------------
PART_READERS.add("BatchNormalization")


@lowering("BatchNormalization")
def lower_batchnorm(ctx: LowerContext, node: Node) -> bool:
    """A BatchNorm the passes could not fold: into the LIF it feeds (through a Transpose pair), else a
    per-channel affine map as a depthwise 1x1 integer Conv (Relu/Clip after it, or behind a Transpose, fused)."""
    x = node.inputs[0]
    params = _bn_params(node)
    if params is None or not _is_float(x) or x.shape is None or len(x.shape) not in (3, 4):
        return False
    s, shift = params
    tr_in = x.producer
    tr_out = _sole_consumer(ctx, node.outputs[0], "Transpose")
    lif = _sole_consumer(ctx, tr_out.outputs[0], "LIF", "lowbit") if _is_swap_last_two(tr_out) else None
    if lif is not None and _is_swap_last_two(tr_in) and lif.inputs[0] is tr_out.outputs[0] \
            and _is_float(tr_in.inputs[0]):
        fused_before = set(ctx.fused)
        ctx.fused.update({tr_out.name, lif.name})
        if _lower_lif(ctx, lif, tr_in.inputs[0], s, shift):
            return True
        ctx.fused = fused_before
    return _channel_affine(ctx, node, x, s, shift)


def _following_channel_affine(ctx: LowerContext, v: Value, s: np.ndarray, shift: np.ndarray, rank: int):
    """Absorb the Mul / Add by per-channel constants that follow ``v`` one after the other (a BatchNorm
    exported with a separate scale layer, as Caffe2's DenseNet does: BN -> Mul(w) -> Add(b)) into the affine
    map s x + shift, so the chain is one integer op with one output rounding instead of three, and the
    constants are never quantized as int8 tensors. Returns (float value now produced, s, shift); the absorbed
    nodes are marked fused."""
    from lowbit.graph.passes.fold import _per_channel
    while True:
        op = _sole_consumer(ctx, v)
        if op is None or op.op_type not in ("Mul", "Add") or len(op.inputs) != 2:
            return v, s, shift
        other = op.inputs[1] if op.inputs[0] is v else op.inputs[0]
        vec = _per_channel(other.const, s.size, rank) if other is not v else None
        if vec is None:
            return v, s, shift
        if op.op_type == "Mul":
            s, shift = s * vec, shift * vec
        else:
            shift = shift + vec
        ctx.fused.add(op.name)
        v = op.outputs[0]


def _channel_affine(ctx: LowerContext, node: Node, x: Value, s: np.ndarray, shift: np.ndarray) -> bool:
    """y = s[c] x + shift[c] over channel axis 1 of a 3-D/4-D tensor, as a depthwise 1x1 integer Conv (the
    per-channel weight is one value: exact at any weight bits, up to its rounding to 2^-bits). On a channel
    Concat kept as parts (lower.PART_READERS) one depthwise Conv per part, each from its part's own spec to
    the common output spec, then a Concat of equal specs."""
    shape = x.shape
    if not all(isinstance(d, int) for d in shape) or shape[1] != s.size:
        return False
    fused_before = set(ctx.fused)
    out, s, shift = _following_channel_affine(ctx, node.outputs[0], s, shift, len(shape))
    target, bounds, transpose = _activation_after(ctx, out)
    parts = ctx.parts_of(x, 1) if len(shape) == 4 and transpose is None else None
    qxs = [_int_at_node_bits(ctx, node, x)] if parts is None else [_part_at_node_bits(ctx, node, q) for q in parts]
    out_spec = ctx.spec_of(target)
    c = s.size
    qw, w_spec = lo._quantized_weights(ctx, node, s.reshape(c, 1, 1, 1).astype(np.float32), 0, f"{node.name}_scale")
    lo_, hi_ = lo._act_range(out_spec, bounds)
    convs, first = [], 0
    for qx in qxs:
        k = qx.shape[1]
        part_w = QuantSpec(w_spec.bits, w_spec.scale[first:first + k], w_spec.zero_point[first:first + k], 0,
                           narrow=True)
        acc = lo._accumulator(qx.quant, part_w)
        qb = lo._quantized_bias(ctx, shift[first:first + k], qx.quant, part_w, k, f"{node.name}_shift",
                                64 if acc == "int64" else 32)
        try:
            attrs = prepare_conv(qx.quant, part_w, out_spec, lo_, hi_, accumulator=acc)
        except ValueError:
            ctx.fused = fused_before
            return False
        attrs.update(layout="NCHW", strides=[1, 1], pads=[0, 0, 0, 0], dilations=[1, 1], group=k)
        qwk = qw if len(qxs) == 1 else _int_const(ctx, f"{qw.name}_{first}", qw.const[first:first + k], part_w)
        convs.append((qx, qwk, qb, attrs))
        first += k
    if len(shape) == 4:
        if transpose is not None:
            ctx.fused = fused_before
            return False
        if len(convs) == 1:
            ctx.emit("Conv", list(convs[0][:3]), [ctx.new_int(target, out_spec)], convs[0][3], node)
            return True
        ys = [_emit_int(ctx, "Conv", [qx, qw_, qb], out_spec, qx.shape, f"{node.name}_part{i}", attrs,
                        name=node.name) for i, (qx, qw_, qb, attrs) in enumerate(convs)]
        ctx.emit("Concat", ys, [ctx.new_int(target, out_spec)], {"axis": 1}, node, domain="")
        return True
    qx, qw, qb, attrs = convs[0]
    x4 = _emit_int(ctx, "Unsqueeze", [qx, _axes_const(ctx, [2])], qx.quant, (shape[0], c, 1, shape[2]),
                   f"{x.name}_h1", name=f"{node.name}/unsqueeze", domain="")
    y4 = _emit_int(ctx, "Conv", [x4, qw, qb], out_spec, x4.shape, f"{node.name}_y4", attrs, name=node.name)
    _squeeze_out(ctx, node, y4, target, out_spec, transpose)
    return True


def _part_at_node_bits(ctx: LowerContext, node: Node, q: Value) -> Value:
    """A Concat part at ``node``'s activation bits (requantized when it was produced at others)."""
    p = ctx.precisions.get(node.name)
    if p is None or q.quant.bits == p.act_bits:
        return q
    return requantize(ctx, q, _rebits(q.quant, p.act_bits))


# --- LIF ---------------------------------------------------------------------------------------------------------------
@lowering("lowbit.LIF")
def lower_lif(ctx: LowerContext, node: Node) -> bool:
    """lowbit.LIF -> lowbit.int LIF (int16 membrane, spikes at scale 1, zero point 0)."""
    return _lower_lif(ctx, node, node.inputs[0], np.ones(1), np.zeros(1))


def _bn_before_lif(ctx: LowerContext, lif: Node) -> tuple[Node, Value] | None:
    """(BatchNorm, its input behind the first Transpose) for Transpose -> BN -> Transpose -> LIF, the pattern
    lower_batchnorm folds into the LIF; None otherwise."""
    tr_out = lif.inputs[0].producer
    bn = tr_out.inputs[0].producer if _is_swap_last_two(tr_out) else None
    if bn is None or bn.op_type != "BatchNormalization" or bn.domain != "" or _bn_params(bn) is None:
        return None
    tr_in = bn.inputs[0].producer
    if not _is_swap_last_two(tr_in) or _sole_consumer(ctx, bn.outputs[0]) is not tr_out \
            or _sole_consumer(ctx, tr_out.outputs[0], "LIF", "lowbit") is not lif:
        return None
    return bn, tr_in.inputs[0]


def choose_lif_currents(ctx: LowerContext) -> None:
    """A LIF's input current at 16 bits under 8-bit activations (LIF_CURRENT_BITS).

    The current is the neuron's pre-activation: the op computing it (FullyConnected, Conv, LMUMemory, behind
    data movement and a BatchNorm the LIF absorbs) rescales its accumulator straight to an int16 spec over the
    calibrated range, and only the spikes leave the neuron at the plan's activation bits. This is TFLite's
    int8 LSTM (8x8_16: int8 activations and weights, int16 gate pre-activations and cell state) applied to the
    LIF cell, and TFLite's activation fusion (a Conv + ReLU never rounds its pre-activation to int8): a spike
    flips wherever the current's rounding moves the membrane across the threshold, so an int8 current costs
    accuracy (spiking_lmuformer w8a8, docs/hybrid_ops.md). Applies where the current's source has no other
    reader and its spec is not pinned."""
    if LIF_CURRENT_BITS is None:
        return
    given = ctx.options.get("activation_specs", {})
    from lowbit.quant.lower import _sole_reader_source
    for node in ctx.f.nodes:
        if node.domain != "lowbit" or node.op_type != "LIF" or not _is_float(node.inputs[0]):
            continue
        folded = _bn_before_lif(ctx, node)
        src = _sole_reader_source(ctx, node.inputs[0] if folded is None else folded[1])
        if src is None or src.name in given or ctx.act_bits(src) >= LIF_CURRENT_BITS:
            continue
        st = ctx.stats.get(src.name)
        p = ctx.precisions.get(src.producer.name) if src.producer is not None else None
        lo_, hi_ = (0.0, 0.0) if st is None else st.range(p.observer if p is not None else "minmax",
                                                           LIF_CURRENT_BITS)
        ctx.spec_override.setdefault(id(src), activation_spec(lo_, hi_, LIF_CURRENT_BITS))


SPEC_CHOICES.append(choose_lif_currents)


def _lower_lif(ctx: LowerContext, node: Node, x: Value, scale: np.ndarray, bias: np.ndarray) -> bool:
    if not _is_float(x) or x.shape is None or len(x.shape) < 3 or len(node.outputs) < 1:
        return False
    tau = float(node.attrs.get("tau", 2.0))
    v_th = float(node.attrs.get("v_threshold", 1.0))
    v_r = node.attrs.get("v_reset", 0.0)
    v_r = None if v_r is None else float(v_r)
    ch = x.shape[-1]
    scale = np.broadcast_to(np.asarray(scale, np.float64).reshape(-1), (ch,)) if np.size(scale) == 1 else scale
    bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), (ch,)) if np.size(bias) == 1 else bias
    v0 = node.input(1)
    outs = node.outputs
    if not _ensure_lowered(ctx, v0):
        return False
    qx = _lif_input(ctx, node, x)
    bits = ctx.node_bits(node)
    v_spec = _given(ctx, outs[1] if len(outs) > 1 else None) or \
        (_given(ctx, v0) if v0 is not None and v0.const is None else None) or \
        pr.membrane_spec(qx.quant, scale, bias, v_th, 0.0 if v_r is None else v_r, LIF_STATE_BITS)
    try:
        attrs = pr.prepare_lif(qx.quant, v_spec, scale, bias, tau, v_th, v_r)
    except PrepareError:
        return False
    qv0 = _state_input(ctx, v0, v_spec, f"{node.name}_v0")
    _mark_spikes(ctx)
    attrs["to"] = spike_spec(bits).dtype.name
    spikes = ctx.new_int(outs[0], spike_spec(bits))
    v_last = ctx.new_int(outs[1], v_spec) if len(outs) > 1 else ctx.g.new_value(f"{node.name}_v_last")
    v_last.quant = v_spec
    ctx.emit("LIF", [qx, qv0], [spikes, v_last], attrs, node)
    return True


def _lif_input(ctx: LowerContext, node: Node, x: Value) -> Value:
    """The LIF's input current: as produced when it is wider than the node's activation bits (an int16 current,
    choose_lif_currents), else at the node's bits."""
    qx = ctx.integer(x)
    if qx.quant.bits > ctx.node_bits(node) and not qx.quant.per_channel:
        return qx
    return _int_at_node_bits(ctx, node, x)


def _state_input(ctx: LowerContext, v: Value | None, spec: QuantSpec, hint: str) -> Value | None:
    """The integer initial state in ``spec``: a constant quantized directly, a graph input (a step graph's
    state_in) quantized straight to ``spec``, anything else requantized to it."""
    if v is None:
        return None
    if v.const is not None:
        return _int_const(ctx, hint, spec.quantize(v.const), spec)
    if v in ctx.f.inputs and id(v) not in ctx.int_of:
        ctx.spec_override[id(v)] = spec
    return requantize(ctx, ctx.integer(v), spec)


# --- spikes ------------------------------------------------------------------------------------------------------------
_SPIKE_PASS = DATA_MOVEMENT | {"Concat"}


def spike_values(graph: Graph) -> set[int]:
    """ids of the float values that hold spikes: LIF outputs 0, and data movement / Concat / Add / Sum of them."""
    found: set[int] = set()
    for n in graph.nodes:
        if n.domain == "lowbit" and n.op_type == "LIF":
            found.add(id(n.outputs[0]))
        elif n.domain == "" and n.op_type in _SPIKE_PASS and n.inputs and id(n.inputs[0]) in found and \
                (n.op_type != "Concat" or all(id(v) in found for v in n.inputs)):
            found.update(id(o) for o in n.outputs)
        elif n.domain == "" and n.op_type in ("Add", "Sum") and n.inputs and all(id(v) in found for v in n.inputs):
            found.add(id(n.outputs[0]))
    return found


def _mark_spikes(ctx: LowerContext) -> None:
    """Fix the spike spec for every spike-carrying value of the float graph (once per lowering)."""
    if getattr(ctx, "_spikes_marked", False):
        return
    ctx._spikes_marked = True
    ids = spike_values(ctx.f)
    for n in ctx.f.nodes:
        for v in n.outputs:
            if id(v) in ids:
                ctx.spec_override[id(v)] = spike_spec(ctx.act_bits(v))


def _has_spike_spec(q: Value | None) -> bool:
    return q is not None and q.quant is not None and not q.quant.per_channel and q.quant.bits in (8, 16) \
        and float(q.quant.scale) == 1.0 and int(q.quant.zero_point) == 0


def is_spike_value(q: Value) -> bool:
    """True for an integer value that carries spikes: spike spec, produced by a LIF through data movement,
    Concat or Add of spikes (a step graph's Concat([state_in, spikes]) of a conv window counts: its state holds
    the earlier spikes). Evaluated without recursion (a chain of thousands of Adds must not overflow the
    stack), each value once."""
    known: dict[int, bool] = {}
    stack = [q]
    while stack:
        v = stack[-1]
        if id(v) in known:
            stack.pop()
            continue
        deps = _spike_deps(v)
        pending = [d for d in deps if id(d) not in known]
        if pending:
            stack.extend(pending)
            continue
        stack.pop()
        known[id(v)] = _spike_rule(v, [known[id(d)] for d in deps])
    return known[id(q)]


def _spike_deps(q: Value) -> list[Value]:
    """The values whose spike-ness decides ``q``'s (none when its spec or producer already decides it)."""
    p = q.producer
    if not _has_spike_spec(q) or p is None:
        return []
    if p.domain == "" and p.op_type in DATA_MOVEMENT:
        return [p.inputs[0]]
    if p.domain == "" and p.op_type == "Concat" and all(_has_spike_spec(v) for v in p.inputs):
        return list(p.inputs)
    if p.domain == INT_DOMAIN and p.op_type == "Add" and all(v is not None for v in p.inputs):
        return list(p.inputs)
    return []


def _spike_rule(q: Value, deps: list[bool]) -> bool:
    p = q.producer
    if not _has_spike_spec(q) or p is None:
        return False
    if p.domain == INT_DOMAIN and p.op_type == "LIF":
        return q is p.outputs[0]
    if p.domain == "" and p.op_type in DATA_MOVEMENT:
        return deps[0]
    if p.domain == "" and p.op_type == "Concat":
        return bool(deps) and any(deps)
    if p.domain == INT_DOMAIN and p.op_type == "Add":
        return bool(deps) and all(deps)
    return False


def _spike_layer(ctx: LowerContext, base, node: Node) -> bool:
    """Run the base rule; a FullyConnected/Conv it emitted on a spike input becomes SpikeFullyConnected/SpikeConv."""
    first = len(ctx.g.nodes)
    if not base(ctx, node):
        return False
    for n in ctx.g.nodes[first:]:
        if n.domain == INT_DOMAIN and n.op_type in ("FullyConnected", "Conv") and is_spike_value(n.inputs[0]):
            n.op_type = "Spike" + n.op_type
    return True


_BASE_MATMUL, _BASE_GEMM = LOWERINGS["MatMul"], LOWERINGS["Gemm"]


@lowering("MatMul")
def lower_matmul(ctx: LowerContext, node: Node) -> bool:
    """lower_ops' MatMul rule; a FullyConnected on spikes becomes SpikeFullyConnected, and one reading a
    Hadamard-rotated scan output gets the rotation folded into its weights (x W = (x H^T)(H W))."""
    rot = getattr(ctx, "rotated", {}).get(id(node.inputs[0]))
    if rot is not None:
        w = node.const_input(1)
        return lo._linear(ctx, node, node.inputs[0], np.ascontiguousarray((rot @ w.astype(np.float64)).T), None,
                          correct=False)
    return _spike_layer(ctx, _BASE_MATMUL, node)


@lowering("Gemm")
def lower_gemm(ctx: LowerContext, node: Node) -> bool:
    """lower_ops' Gemm rule; a FullyConnected on spikes becomes SpikeFullyConnected."""
    return _spike_layer(ctx, _BASE_GEMM, node)


# --- LMUMemory ---------------------------------------------------------------------------------------------------------
def _absmax(ctx: LowerContext, v: Value) -> float:
    st = ctx.stats.get(v.name)
    if st is None or st.count == 0:
        return 0.0
    return max(abs(st.min), abs(st.max))


@lowering("lowbit.LMUMemory")
def lower_lmu_memory(ctx: LowerContext, node: Node) -> bool:
    """lowbit.LMUMemory -> lowbit.int LMUMemory: 16-bit Abar rows, int32 state (scale: 2 x the calibrated
    max |m| over all steps / (2^31 - 1)), output m in the plan's activation spec."""
    u, abar, bbar = node.inputs[0], node.const_input(1), node.const_input(2)
    if not _is_float(u) or abar is None or bbar is None or u.shape is None or len(u.shape) != 3:
        return False
    outs = node.outputs
    m0 = node.input(3)
    m_spec = _given(ctx, outs[1] if len(outs) > 1 else None) or \
        (_given(ctx, m0) if m0 is not None and m0.const is None else None) or \
        pr.state_spec(_absmax(ctx, outs[0]), LMU_STATE_BITS, LMU_HEADROOM)
    if not _ensure_lowered(ctx, m0):
        return False
    qu = _int_at_node_bits(ctx, node, u)
    out_spec = ctx.spec_of(outs[0])
    try:
        abar_q, bbar_q, attrs = pr.prepare_lmu_memory(abar, bbar, qu.quant, m_spec, out_spec)
    except PrepareError:
        return False
    attrs["input_is_spikes"] = int(is_spike_value(qu))
    qm0 = _state_input(ctx, m0, m_spec, f"{node.name}_m0")
    ins = [qu, _int_const(ctx, f"{node.inputs[1].name}_q16", abar_q),
           _int_const(ctx, f"{node.inputs[2].name}_q", bbar_q), qm0]
    y = ctx.new_int(outs[0], out_spec)
    m_last = ctx.new_int(outs[1], m_spec) if len(outs) > 1 else ctx.g.new_value(f"{node.name}_m_last")
    m_last.quant = m_spec
    ctx.emit("LMUMemory", ins, [y, m_last], attrs, node)
    return True


# --- SelectiveScan -----------------------------------------------------------------------------------------------------

def _ensure_lowered(ctx: LowerContext, v: Value | None) -> bool:
    """Lower the producers of float value ``v`` now, ahead of the main loop (which then skips them), so that a
    rule can read ``v``'s integer form before ``v``'s node comes up in order (a float island where a producer
    has no integer lowering, as the main loop would). False when some producer input is no graph input,
    constant or node output."""
    if v is None or v.const is not None or id(v) in ctx.int_of or id(v) in ctx.float_of:
        return True
    p = v.producer
    if p is None or p.name in ctx.fused or not all(_ensure_lowered(ctx, i) for i in p.inputs):
        return False
    from lowbit.quant.lower import _lower_float_island
    rule = LOWERINGS.get(p.op_type) if p.domain == "" else LOWERINGS.get(f"{p.domain}.{p.op_type}")
    fused_before = set(ctx.fused)
    if rule is None or not rule(ctx, p):
        ctx.fused = fused_before
        _lower_float_island(ctx, p)
    ctx.fused.add(p.name)
    return True


def _gate_of(ctx: LowerContext, y: Value):
    """(Mul node, gate value) when the scan output ``y`` is only read by Mul(y, gate) (Mamba's y * SiLU(z))."""
    mul = _sole_consumer(ctx, y, "Mul")
    if mul is None or len(mul.inputs) != 2:
        return None
    g = mul.inputs[1] if mul.inputs[0] is y else mul.inputs[0]
    if g is y or not _is_float(g) or g.shape != y.shape or not _ensure_lowered(ctx, g):
        return None
    return mul, g


def _foldable_rotation(ctx: LowerContext, v: Value) -> bool:
    """True when every reader of ``v`` is a MatMul with a constant 2-D weight (H can be folded into it)."""
    return bool(v.consumers) and v not in ctx.f.outputs and all(
        c.op_type == "MatMul" and c.domain == "" and c.inputs[0] is v and c.const_input(1) is not None
        and c.const_input(1).ndim == 2 for c in v.consumers)


def hadamard_matrix(n: int) -> np.ndarray:
    """The orthonormal Sylvester Hadamard matrix of order n (a power of two): symmetric, its own inverse."""
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(n)


_BASE_SOFTPLUS = LOWERINGS.get("Softplus")


def _absorbable_softplus(ctx: LowerContext, node: Node) -> bool:
    """A Softplus whose only reader is a SelectiveScan's delta input, on int8 codes: the scan tabulates it."""
    scan = _sole_consumer(ctx, node.outputs[0], "SelectiveScan", "lowbit")
    return SCAN_DELTA_TABLE and scan is not None and scan.input(1) is node.outputs[0] and scan.input(0) is not node.outputs[0] \
        and _is_float(node.inputs[0]) and ctx.integer(node.inputs[0]).quant.bits == 8


@lowering("Softplus")
def lower_softplus(ctx: LowerContext, node: Node) -> bool:
    """Softplus: absorbed into the SelectiveScan that reads it (its output stands for the int8 dt codes until
    the scan is lowered; the scan looks delta up in a table), else lower_ops' table rule."""
    if _absorbable_softplus(ctx, node):
        ctx.int_of[id(node.outputs[0])] = ctx.integer(node.inputs[0])
        ctx.absorbed = {**getattr(ctx, "absorbed", {}), id(node.outputs[0]): node}
        return True
    return _BASE_SOFTPLUS is not None and _BASE_SOFTPLUS(ctx, node)


def _restore_softplus(ctx: LowerContext, delta: Value) -> None:
    """Undo an absorption (the scan could not be lowered): lower the Softplus for real now."""
    sp = getattr(ctx, "absorbed", {}).pop(id(delta), None)
    if sp is None:
        return
    del ctx.int_of[id(delta)]
    if _BASE_SOFTPLUS is None or not _BASE_SOFTPLUS(ctx, sp):
        from lowbit.quant.lower import _lower_float_island
        _lower_float_island(ctx, sp)


@lowering("lowbit.SelectiveScan")
def lower_selective_scan(ctx: LowerContext, node: Node) -> bool:
    """lowbit.SelectiveScan -> lowbit.int SelectiveScan: int32 state (scale: 8 x the calibrated max |h_last| /
    (2^31 - 1)), decay from the exp2 table. An absorbed Softplus makes delta a 2^20-step table over the int8 dt
    codes; a Mul(y, gate) reading the output is fused (only the gated product is quantized, in the plan's
    activation spec), and with SCAN_HADAMARD rotated, H folded into out_proj."""
    x, delta, b, c = node.input(0), node.input(1), node.input(3), node.input(4)
    A, D = node.const_input(2), node.const_input(5)
    h0 = node.input(6)
    ok = A is not None and D is not None and all(_is_float(v) for v in (x, delta, b, c)) and \
        _lower_scan(ctx, node, x, delta, b, c, A, D, h0)
    if not ok:
        _restore_softplus(ctx, delta)
    return ok


def _lower_scan(ctx: LowerContext, node: Node, x, delta, b, c, A, D, h0) -> bool:
    outs = node.outputs
    h_spec = _given(ctx, outs[1] if len(outs) > 1 else None) or \
        (_given(ctx, h0) if h0 is not None and h0.const is None else None) or \
        pr.state_spec(_absmax(ctx, outs[1]) if len(outs) > 1 else 0.0, SCAN_STATE_BITS, SCAN_HEADROOM)
    if not _ensure_lowered(ctx, h0):
        return False
    delta_is_dt = id(delta) in getattr(ctx, "absorbed", {})
    qx, qb, qc = (_int_at_node_bits(ctx, node, v) for v in (x, b, c))
    qd = ctx.integer(delta) if delta_is_dt else _int_at_node_bits(ctx, node, delta)
    fused_before = set(ctx.fused)
    gated = _gate_of(ctx, outs[0]) if SCAN_FUSE_GATE else None
    target, qg = outs[0], None
    if gated is not None:
        ctx.fused.add(gated[0].name)
        target, qg = gated[0].outputs[0], _int_at_node_bits(ctx, gated[0], gated[1])
    rotate = SCAN_HADAMARD and qg is not None and _foldable_rotation(ctx, target)
    out_spec = ctx.spec_of(target)
    try:
        attrs = pr.prepare_selective_scan(A, D, qx.quant, qd.quant, qb.quant, qc.quant, h_spec, out_spec,
                                          delta_is_dt, None if qg is None else qg.quant, rotate)
    except PrepareError:
        ctx.fused = fused_before
        return False
    qh0 = _state_input(ctx, h0, h_spec, f"{node.name}_h0")
    if rotate:  # the rotated codes stand for no float tensor: registered for the readers, not for compare
        y = ctx.g.new_value(f"{target.name}_rot", target.shape, out_spec.dtype)
        y.quant = out_spec
        ctx.int_of[id(target)] = y
        ctx.rotated = {**getattr(ctx, "rotated", {}), id(target): hadamard_matrix(int(A.shape[0]))}
    else:
        y = ctx.new_int(target, out_spec)
    h_last = ctx.new_int(outs[1], h_spec) if len(outs) > 1 else ctx.g.new_value(f"{node.name}_h_last")
    h_last.quant = h_spec
    ctx.emit("SelectiveScan", [qx, qd, qb, qc, qh0] + ([qg] if qg is not None else []), [y, h_last], attrs, node)
    return True
