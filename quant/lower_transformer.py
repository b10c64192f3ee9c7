"""Lowering rules for transformer and LFM2 layers: LayerNormalization, lowbit.RMSNorm, lowbit.ShortConv and the
masked attention softmax. (Attention's matmuls and softmax, GELU and the SwiGLU sigmoid use lower_ops.py's rules;
an unfolded BatchNormalization, as in the VLM's Mobile-MQA block, lower_recurrent.py's.)

- LayerNormalization (last axis) / lowbit.RMSNorm -> lowbit.int LayerNorm / RMSNorm (runtime/kernels/int/norm.py):
  exact integer statistics, a 30-bit integer reciprocal square root and one rounding; the output spec comes
  from calibration, gamma and beta become a per-channel 31-bit multiplier and an int32 bias
  (quant/prepare_norm.py). The input is requantized to the node's activation bits when its producer ran at
  other bits.
- lowbit.ShortConv -> lowbit.int ShortConv (runtime/kernels/int/short_conv.py). **The conv state is int16 at
  every precision** (scale: the largest |B * x| the bcx spec can hold, or the spec fixed for the state tensor
  by ``activation_specs`` so that a step graph reuses its whole-sequence graph's), the taps are quantized
  per channel at the node's weight bits, the gate product and conv accumulate in int64.
- ``Softmax(Where(mask, fill, scores))`` with a constant fill at least 30 below the lowest value of the
  scores' calibrated spec (the causal / padding masks exporters write as -1e4, -1e9, -3.4e38 or -inf) -> lowbit.int
  MaskedSoftmax(scores, mask) (runtime/kernels/int/masked_softmax.py): the scores keep their own
  calibrated spec (the fill never enters a range) and masked entries contribute exactly 0, as in float.
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Node, Value
from lowbit.quant import prepare_elementwise as pe
from lowbit.quant.lower import LowerContext, lowering, requantize
from lowbit.quant.lower_ops import _quantized_weights
from lowbit.quant.prepare_norm import prepare_norm
from lowbit.quant.prepare_short_conv import prepare_short_conv, state_spec
from lowbit.quant.spec import QuantSpec, activation_spec

MASK_MARGIN = 30.0  # a fill this far below every score contributes exp(-30) < 1e-13: "minus infinity"
SOFTMAX_OUTPUT = {8: (1 / 256, -128), 16: (1 / 32768, 0)}  # TFLite's fixed softmax output specs


def _is_float(v: Value | None) -> bool:
    return v is not None and v.dtype is not None and v.dtype.kind == "f"


def _int_at_node_bits(ctx: LowerContext, node: Node, x: Value) -> Value:
    """The integer form of ``x`` at ``node``'s activation bits (requantized when its producer ran at others)."""
    qx = ctx.integer(x)
    bits = ctx.precisions[node.name].act_bits if node.name in ctx.precisions else qx.quant.bits
    if qx.quant.bits == bits:
        return qx
    st = ctx.stats.get(x.name)
    lo, hi = (0.0, 0.0) if st is None else st.range("minmax", bits)
    return requantize(ctx, qx, activation_spec(lo, hi, bits))


def _only_output_used(ctx: LowerContext, node: Node) -> bool:
    return all(not o.consumers and o not in ctx.f.outputs for o in node.outputs[1:])


def _norm(ctx: LowerContext, node: Node, op: str, gamma, beta, epsilon: float) -> bool:
    qx = _int_at_node_bits(ctx, node, node.inputs[0])
    out_spec = ctx.spec_of(node.outputs[0])
    if out_spec.bits != qx.quant.bits:
        return False
    try:
        attrs = prepare_norm(qx.quant, out_spec, gamma, beta, epsilon, op)
    except pe.PrepareError:
        return False
    ctx.emit(op, [qx], [ctx.new_int(node.outputs[0], out_spec)], attrs, node)
    return True


def _last_axis_params(x: Value, gamma) -> bool:
    return gamma is not None and x.shape is not None and isinstance(x.shape[-1], int) and \
        np.size(gamma) == x.shape[-1] and np.squeeze(gamma).ndim <= 1


@lowering("LayerNormalization")
def lower_layer_norm(ctx: LowerContext, node: Node) -> bool:
    """LayerNormalization over the last axis (Mean / InvStdDev outputs unused) -> lowbit.int LayerNorm."""
    x, gamma = node.inputs[0], node.const_input(1)
    beta = node.const_input(2)
    if not _is_float(x) or not _last_axis_params(x, gamma) or (node.input(2) is not None and beta is None):
        return False
    if int(node.attrs.get("axis", -1)) % len(x.shape) != len(x.shape) - 1 or not _only_output_used(ctx, node):
        return False
    return _norm(ctx, node, "LayerNorm", gamma, beta, float(node.attrs.get("epsilon", 1e-5)))


@lowering("lowbit.RMSNorm")
def lower_rms_norm(ctx: LowerContext, node: Node) -> bool:
    """lowbit.RMSNorm (last axis) -> lowbit.int RMSNorm."""
    x, gamma = node.inputs[0], node.const_input(1)
    if not _is_float(x) or not _last_axis_params(x, gamma):
        return False
    return _norm(ctx, node, "RMSNorm", gamma, None, float(node.attrs.get("epsilon", 1e-6)))


# -- ShortConv -----------------------------------------------------------------------------------------------
def _state_spec(ctx: LowerContext, node: Node, bcx: QuantSpec) -> QuantSpec:
    """The int16 conv-state spec: fixed by the caller for the state tensors (a step graph must use its whole-
    sequence graph's), else covering every product the bcx codes allow."""
    given = ctx.options.get("activation_specs", {})
    for v in (node.outputs[1] if len(node.outputs) > 1 else None, node.input(2)):
        if v is not None and v.const is None and v.name in given:
            return given[v.name]
    return state_spec(bcx)


@lowering("lowbit.ShortConv")
def lower_short_conv(ctx: LowerContext, node: Node) -> bool:
    """lowbit.ShortConv -> lowbit.int ShortConv with an int16 state (see the module docstring)."""
    bcx, w, state0 = node.inputs[0], node.const_input(1), node.input(2)
    if not _is_float(bcx) or w is None or w.ndim != 2 or (state0 is not None and not _is_float(state0)):
        return False
    qbcx = _int_at_node_bits(ctx, node, bcx)
    st_spec = _state_spec(ctx, node, qbcx.quant)
    out_spec = ctx.spec_of(node.outputs[0])
    qw, w_spec = _quantized_weights(ctx, node, w, 0, node.inputs[1].name)
    rowsum = int(np.max(np.sum(np.abs(qw.const.astype(np.int64)), axis=1)))
    try:
        attrs = prepare_short_conv(qbcx.quant, w_spec, st_spec, out_spec, rowsum)
    except pe.PrepareError:
        return False
    if state0 is None:
        qs = None
    elif state0.const is not None:
        qs = ctx.g.add_const(f"{state0.name}_q", st_spec.quantize(state0.const))
        qs.quant = st_spec
    else:
        qs = requantize(ctx, ctx.integer(state0), st_spec)
    outs = [ctx.new_int(node.outputs[0], out_spec)]
    if len(node.outputs) > 1:
        outs.append(ctx.new_int(node.outputs[1], st_spec))
    ctx.emit("ShortConv", [qbcx, qw, qs], outs, attrs, node)
    return True


# -- masked softmax --------------------------------------------------------------------------------------------
def _mask_fill(ctx: LowerContext, fill: Value, scores: Value) -> bool:
    """True when constant ``fill`` acts as minus infinity for ``scores``: every fill value lies MASK_MARGIN or
    more below the lowest value the scores' spec represents (so below every calibrated score)."""
    c = fill.const
    if c is None or c.size == 0:
        return False
    spec = ctx.spec_of(scores)
    if spec.per_channel:
        return False
    lowest = (spec.qmin - int(spec.zero_point)) * float(spec.scale)
    return bool(np.all(np.asarray(c, np.float64) <= lowest - MASK_MARGIN))


@lowering("Where")
def lower_masked_softmax(ctx: LowerContext, node: Node) -> bool:
    """Softmax(Where(mask, fill, scores)) (or Where(keep, scores, fill)) with a minus-infinity fill ->
    lowbit.int MaskedSoftmax(scores, mask) producing the Softmax's output; the Where's output never exists."""
    cond, a, b = node.inputs
    out = node.outputs[0]
    if cond is None or cond.dtype is None or cond.dtype != np.bool_ or len(out.consumers) != 1 or out in ctx.f.outputs:
        return False
    sm = out.consumers[0]
    if sm.op_type != "Softmax" or sm.domain != "" or out.shape is None:
        return False
    if int(sm.attrs.get("axis", -1)) % len(out.shape) != len(out.shape) - 1:
        return False
    if _is_float(b) and _mask_fill(ctx, a, b):
        scores, invert = b, False
    elif _is_float(a) and _mask_fill(ctx, b, a):
        scores, invert = a, True
    else:
        return False
    qx = ctx.integer(scores)
    scale, zp = SOFTMAX_OUTPUT[qx.quant.bits]
    out_spec = QuantSpec(qx.quant.bits, scale, zp)
    try:
        attrs = pe.prepare_softmax(qx.quant, out_spec)
    except pe.PrepareError:
        return False
    if cond.const is not None:
        mask = ctx.g.add_const(f"{cond.name}_mask", np.logical_not(cond.const) if invert else cond.const)
    else:
        mask = ctx.floating(cond)
        if invert:
            inv = ctx.g.new_value(f"{cond.name}_not", cond.shape, np.bool_)
            ctx.emit("Not", [mask], [inv], domain="")
            mask = inv
    ctx.fused.add(sm.name)
    ctx.emit("MaskedSoftmax", [qx, mask], [ctx.new_int(sm.outputs[0], out_spec)], attrs, sm)
    return True
