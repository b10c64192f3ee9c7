"""Streaming: lowering a step graph (one time step per call) so that it runs bit for bit like the
whole-sequence integer program.

- streamed mean pooling (step graphs): ReduceSum -> Add(state) -> state_out -> Mul(1/n) becomes an exact int32
  RunningSum and a Requantize that reproduces the whole-sequence Mean kernel's integers (a lowering rule,
  registered into ``lower.LOWERINGS``).
- ``lower_step``: a step graph is lowered with the whole-sequence artifact's specs for every tensor the two
  graphs share (``step_activation_specs``), its precisions and bias corrections, and its state inputs/outputs
  become integer tensors (quant/pinned.py's ``integer_state_io``), so the state is carried between calls as
  integers.
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.ir import Graph, Node
from lowbit.quant import prepare_recurrent as pr
from lowbit.quant.lower import Lowered, LowerContext, lowering
from lowbit.quant.lower_recurrent import _given, _is_float, _sole_consumer
from lowbit.quant.spec import QuantSpec


# --- streamed mean pooling (step graphs) -------------------------------------------------------------------------------
@lowering("ReduceSum")
def lower_reduce_sum(ctx: LowerContext, node: Node) -> bool:
    """ReduceSum -> Add(state_in) -> state_out -> Mul(1/n): RunningSum (int32 at the input's scale) and a
    Requantize with the Mean kernel's integers, so the streamed mean equals the whole-sequence Mean."""
    x = node.inputs[0]
    axes = node.const_input(1)
    if not _is_float(x) or axes is None or int(node.attrs.get("keepdims", 1)) != 0 or x.shape is None:
        return False
    add = _sole_consumer(ctx, node.outputs[0], "Add")
    if add is None:
        return False
    state = add.inputs[1] if add.inputs[0] is node.outputs[0] else add.inputs[0]
    acc_out = add.outputs[0]
    if state not in ctx.f.inputs or acc_out not in ctx.f.outputs:
        return False
    muls = [n for n in acc_out.consumers if n.op_type == "Mul" and n.domain == ""]
    if len(muls) != 1 or len(acc_out.consumers) != 1:
        return False
    mul = muls[0]
    k = mul.const_input(1) if mul.inputs[0] is acc_out else mul.const_input(0)
    if k is None or k.size != 1 or float(k.reshape(())) <= 0:
        return False
    n = int(round(1.0 / float(k.reshape(()))))
    if n < 1 or abs(float(np.float32(1.0 / n)) - float(k.reshape(()))) > 0:
        return False
    qx = ctx.integer(x)
    if qx.quant.per_channel:
        return False
    acc_spec = _given(ctx, acc_out) or _given(ctx, state) or QuantSpec(32, qx.quant.scale, 0)
    if float(acc_spec.scale) != float(qx.quant.scale) or acc_spec.bits != 32:
        return False
    out_spec = ctx.spec_of(mul.outputs[0])
    try:
        attrs = pr.prepare_streamed_mean(qx.quant, out_spec, n)
    except ValueError:
        return False
    ctx.spec_override[id(state)] = acc_spec
    qs = ctx.integer(state)
    rank = len(x.shape)
    acc = ctx.new_int(acc_out, acc_spec)
    ctx.emit("RunningSum", [qs, qx], [acc], {"axes": sorted(int(a) % rank for a in axes.reshape(-1)),
                                             "input_offset": -int(qx.quant.zero_point)}, node)
    ctx.emit("Requantize", [acc], [ctx.new_int(mul.outputs[0], out_spec)], attrs, mul)
    ctx.fused.update({add.name, mul.name})
    return True



def _strip_prefix(name: str, prefix: str = "") -> str:
    """``name`` without ``prefix`` (the step graph's extra leading path, such as "/net")."""
    return name[len(prefix):] if prefix and name.startswith(prefix + "/") else name


def name_prefix(step: Graph, whole: Graph) -> str:
    """The leading path that step-graph node names carry over the whole graph's ("/net" for the zoo's step
    graphs, which wrap the network in a module): the one under which most step nodes find a same-named node."""
    wnames = {n.name for n in whole.nodes}
    counts: dict[str, int] = {}
    for n in step.nodes:
        parts = n.name.split("/")
        for i in range(1, len(parts) - 1):
            prefix = "/".join(parts[:i + 1]) if parts[0] == "" else "/".join(parts[:i])
            if n.name[len(prefix):] in wnames:
                counts[prefix] = counts.get(prefix, 0) + 1
    direct = sum(n.name in wnames for n in step.nodes)
    best = max(counts, key=counts.get, default="")
    return best if counts.get(best, 0) > direct else ""


def whole_specs(lowered: Lowered) -> dict[str, QuantSpec]:
    """{float value name: QuantSpec of the integer value standing for it} of a lowered graph."""
    out = {}
    for int_name, float_name in lowered.float_of.items():
        v = lowered.graph.values.get(int_name)
        if v is not None and v.quant is not None:
            out.setdefault(float_name, v.quant)
    return out


def _state_pairs(step: Graph) -> dict[str, str]:
    """state_in_<i>_<kind> -> state_out_<i>_<kind> of a step graph."""
    outs = {v.name for v in step.outputs}
    return {v.name: "state_out_" + v.name[len("state_in_"):] for v in step.inputs
            if v.name.startswith("state_in_") and "state_out_" + v.name[len("state_in_"):] in outs}


def step_activation_specs(whole: Graph, lowered: Lowered, step: Graph) -> dict[str, QuantSpec]:
    """Specs for the step graph's values from the whole-sequence lowering: a step value takes the spec of the
    whole-graph value with the same name (after dropping the step graph's name prefix, ``name_prefix``), else of
    the value in the same position of the same-named node of the same op (the LMU / LIF / scan state outputs;
    the input of a step conv that reads Concat([state, x_t])); a state input takes its state output's spec,
    and a state that a step Concat prepends to x_t takes that Concat's."""
    specs = whole_specs(lowered)
    prefix = name_prefix(step, whole)
    wnodes = {n.name: n for n in whole.nodes}
    pairs: dict[str, str] = {}
    for n in step.nodes:
        wn = wnodes.get(_strip_prefix(n.name, prefix))
        if wn is None or wn.op_type != n.op_type or wn.domain != n.domain:
            continue
        for sv, wv in list(zip(n.inputs, wn.inputs)) + list(zip(n.outputs, wn.outputs)):
            if sv is not None and wv is not None and wv.name in specs:
                pairs.setdefault(sv.name, wv.name)
    out: dict[str, QuantSpec] = {}
    for v in list(step.inputs) + [o for n in step.nodes for o in n.outputs]:
        name = _strip_prefix(v.name, prefix)
        name = name if name in specs else pairs.get(v.name)
        if name is not None:
            out[v.name] = specs[name]
    states = _state_pairs(step)
    for sin, sout in states.items():
        if sout in out:
            out[sin] = out[sout]
    for n in step.nodes:  # a causal conv's window: Concat([state_in, x_t]) -> Conv, state_out = Slice(window)
        if n.op_type == "Concat" and n.outputs[0].name in out:
            for v in n.inputs:
                if v is not None and v.name in states:
                    out[v.name] = out[states[v.name]] = out[n.outputs[0].name]
    return out


def step_precisions(step: Graph, whole: Graph, whole_precisions: dict, default):
    """Each step node's precision: that of the whole-graph node with the same (prefix-stripped) name."""
    prefix = name_prefix(step, whole)
    return {n.name: whole_precisions.get(_strip_prefix(n.name, prefix), default) for n in step.nodes}


def step_bias_corrections(whole: Graph, lowered: Lowered, step: Graph) -> dict[str, np.ndarray]:
    """Each step node's bias correction: that of the whole-graph node with the same (prefix-stripped) name."""
    prefix = name_prefix(step, whole)
    got = {n.name: lowered.bias_corrections.get(_strip_prefix(n.name, prefix)) for n in step.nodes}
    return {k: v for k, v in got.items() if v is not None}


def lower_step(step: Graph, whole: Graph, whole_lowered: Lowered, whole_precisions: dict, default,
               options=None) -> Lowered:
    """Lower step graph ``step`` (shapes bound, passes run) with the whole-sequence lowering's specs for every
    tensor (``step_activation_specs``; a tensor without one is an error, never a re-calibration) and the
    precisions and bias corrections of the same-named whole nodes; its state inputs/outputs become integer
    codes (quant.pinned.integer_state_io), carried between calls as integers."""
    from lowbit.quant.pinned import integer_state_io, lower_pinned
    specs = step_activation_specs(whole, whole_lowered, step)
    opts = dict(options or {})
    opts.setdefault("bias_corrections", step_bias_corrections(whole, whole_lowered, step))
    low = lower_pinned(step, specs, step_precisions(step, whole, whole_precisions, default), default, opts)
    integer_state_io(low.graph)
    return low


def zero_states(graph: Graph, batch: int) -> dict[str, np.ndarray]:
    """The initial (zero) state of every integer ``state_in_*`` input: the code of 0.0, its zero point."""
    out = {}
    for v in graph.inputs:
        if v.name.startswith("state_in_") and v.quant is not None:
            shape = tuple(batch if not isinstance(d, int) else d for d in v.shape)
            out[v.name] = np.full(shape, int(v.quant.zero_point), v.quant.dtype)
    return out
