"""Lowering: float IR + calibration ranges + precision plan -> integer IR (docs/integer_ir.md).

The algebra first (TFLite's quantization spec, real = s * (q - z)):
- linear ops (Conv, Gemm/MatMul with constant weights): acc = sum (q_x - z_x) * q_w + q_b with
  s_b = s_x * s_w[c]; q_y = z_y + M[c] * acc, M[c] = s_x * s_w[c] / s_y, then clamp to the activation range
  (a fused Relu/Relu6/Clip only narrows that range).
- element-wise nonlinearities f: a lookup table over every input code, q_y = Q_y(f(D_x(q_x))).
- data movement (Reshape, Transpose, Slice, ...): the codes move unchanged, so the output spec is the input's.
- Concat: inputs are requantized to the output spec first.
Ops with no integer lowering yet run as float islands: Dequantize -> the float op -> Quantize, each listed in
``Lowered.float_islands`` so that reports say so plainly.

``LOWERINGS`` maps an op type to a function ``(ctx, node) -> bool``; False means "not lowerable as-is", and the
node becomes a float island.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from lowbit.graph.ir import Graph, Node, Value
from lowbit.quant.calibrate import TensorStats
from lowbit.quant.plan import NodePrecision
from lowbit.quant.prepare_linear import prepare_dequantize, prepare_quantize
from lowbit.quant.spec import QuantSpec, activation_spec
from lowbit.runtime.registry import INT_DOMAIN

# ops whose output codes are the input codes rearranged (same QuantSpec)
DATA_MOVEMENT = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Gather", "Split",
                 "Identity", "DepthToSpace", "SpaceToDepth", "Expand", "Tile", "GlobalMaxPool"}


@dataclass
class Lowered:
    graph: Graph
    float_of: dict[str, str] = field(default_factory=dict)  # integer value name -> float value it stands for
    float_islands: list[str] = field(default_factory=list)  # float nodes left in the integer graph
    precisions: dict[str, str] = field(default_factory=dict)
    bias_corrections: dict[str, np.ndarray] = field(default_factory=dict)  # node name -> what its bias lost


class LowerContext:
    """State of one lowering: the float graph, its ranges and precisions, and the integer graph being built."""

    def __init__(self, fgraph: Graph, stats: dict[str, TensorStats], precisions: dict[str, NodePrecision],
                 options: dict | None = None):
        self.options = dict(options or {})
        self.f = fgraph
        self.stats = stats
        self.precisions = precisions
        self.g = Graph(fgraph.name, dict(fgraph.opsets))
        self.g.metadata = dict(fgraph.metadata)
        self.int_of: dict[int, Value] = {}    # id(float value) -> integer value carrying it
        self.float_of: dict[int, Value] = {}  # id(float value) -> float value in the integer graph
        self.islands: list[str] = []
        self.map_back: dict[str, str] = {}
        self.spec_override: dict[int, QuantSpec] = {}
        self.fused: set[str] = set()  # float nodes folded into their producer (Relu/Clip after Conv, ...)
        self.rebits: dict[tuple[int, int], Value] = {}  # (id(float value), bits) -> requantized integer value
        # id(float Concat output) -> (its Concat node, the integer inputs, each in its own spec): a channel
        # Concat whose readers take the parts (PART_READERS) is not materialised (see _lower_concat)
        self.parts: dict[int, tuple[Node, list[Value]]] = {}
        self.bias_corrections: dict[str, np.ndarray] = {}  # node name -> (W_q - W) E[x] (lower_ops.bias_correction)

    # -- specs ---------------------------------------------------------------------------------------------
    def act_bits(self, v: Value) -> int:
        node = v.producer or (v.consumers[0] if v.consumers else None)
        p = self.precisions.get(node.name) if node is not None else None
        return p.act_bits if p is not None else 8

    def node_bits(self, node: Node) -> int:
        p = self.precisions.get(node.name)
        return p.act_bits if p is not None else 8

    def spec_of(self, v: Value) -> QuantSpec:
        """The activation spec of float value ``v``: fixed by an op where TFLite fixes it, else from ranges."""
        if id(v) in self.spec_override:
            return self.spec_override[id(v)]
        given = self.options.get("activation_specs", {}).get(v.name)
        if given is not None:
            return given
        st = self.stats.get(v.name)
        node = v.producer
        p = self.precisions.get(node.name) if node is not None else None
        observer = p.observer if p is not None else "minmax"
        bits = self.act_bits(v)
        lo, hi = (0.0, 0.0) if st is None else st.range(observer, bits)
        return activation_spec(lo, hi, bits)

    # -- values ----------------------------------------------------------------------------------------------
    def integer(self, v: Value, bits: int | None = None) -> Value:
        """The integer value standing for float value ``v`` (quantizing it where it only exists as float).

        With ``bits`` (the consuming node's activation bits under a mixed plan), a value held at other bits is
        requantized to a spec of those bits over the same calibrated range."""
        got = self.int_of.get(id(v))
        if got is not None and bits is not None and got.quant.bits != bits:
            key = (id(v), bits)
            if key not in self.rebits:
                st = self.stats.get(v.name)
                if v.const is not None:
                    spec = _const_spec(v.const, bits)
                    q = self.g.add_const(f"{v.name}_q{bits}", spec.quantize(v.const))
                    q.quant = spec
                    self.rebits[key] = q
                else:
                    lo, hi = (0.0, 0.0) if st is None else st.range("minmax", bits)
                    self.rebits[key] = requantize(self, got, activation_spec(lo, hi, bits))
            return self.rebits[key]
        if got is not None:
            return got
        if id(v) in self.parts:
            return self._materialize(v)
        if v.const is not None:
            # a spec given for a constant operand (activation_specs, e.g. a TFLite model's) wins over the one
            # its values imply, as it does for every other value in spec_of
            spec = self.options.get("activation_specs", {}).get(v.name) or _const_spec(v.const, self.act_bits(v))
            q = self.g.add_const(f"{v.name}_q", spec.quantize(v.const))
            q.quant = spec
            self.int_of[id(v)] = q
            return q
        fv = self.floating(v)
        spec = self.spec_of(v)
        q = self.g.new_value(f"{v.name}_q", fv.shape, spec.dtype)
        q.quant = spec
        self.g.add_node("Quantize", [fv], [q], prepare_quantize(spec), domain=INT_DOMAIN,
                        name=self.g.unique_node_name(f"{v.name}_quantize"))
        self.int_of[id(v)] = q
        self.map_back[q.name] = v.name
        return q

    def floating(self, v: Value) -> Value:
        """The float value standing for ``v`` (dequantizing the integer one where needed)."""
        got = self.float_of.get(id(v))
        if got is not None:
            return got
        if v.const is not None:
            c = self.g.add_const(v.name, v.const)
            self.float_of[id(v)] = c
            return c
        q = self.int_of.get(id(v))
        if q is None and id(v) in self.parts:
            q = self._materialize(v)
        if q is None:
            raise KeyError(v.name)
        fv = self.g.new_value(f"{v.name}_f" if self.g.values.get(v.name) else v.name, v.shape, np.float32)
        self.g.add_node("Dequantize", [q], [fv], prepare_dequantize(q.quant),
                        domain=INT_DOMAIN, name=self.g.unique_node_name(f"{v.name}_dequantize"))
        self.float_of[id(v)] = fv
        return fv

    def parts_of(self, v: Value, axis: int) -> list[Value] | None:
        """The integer parts of ``v`` when it is an unmaterialised Concat along ``axis``, else None."""
        got = self.parts.get(id(v))
        if got is None or id(v) in self.int_of:
            return None
        node, parts = got
        return parts if _concat_axis(node) == axis else None

    def _materialize(self, v: Value) -> Value:
        """The Concat ``v`` as one integer tensor in its own spec, for a reader that needs one."""
        node, parts = self.parts[id(v)]
        spec = self.spec_of(v)
        ins = [requantize(self, q, spec) for q in parts]
        self.emit("Concat", ins, [self.new_int(v, spec)], node.attrs, node, domain="")
        return self.int_of[id(v)]

    def new_int(self, fv: Value, spec: QuantSpec) -> Value:
        """A fresh integer value for float value ``fv`` with ``spec``, registered as its integer form."""
        q = self.g.new_value(f"{fv.name}_q", fv.shape, spec.dtype)
        q.quant = spec
        self.int_of[id(fv)] = q
        self.map_back[q.name] = fv.name
        return q

    def emit(self, op: str, inputs, outputs, attrs=None, node: Node | None = None, domain: str = INT_DOMAIN) -> Node:
        name = self.g.unique_node_name(node.name if node is not None else op)
        return self.g.add_node(op, inputs, outputs, attrs or {}, name=name, domain=domain)


def _const_spec(c: np.ndarray, bits: int) -> QuantSpec:
    return activation_spec(float(np.min(c)) if c.size else 0.0, float(np.max(c)) if c.size else 0.0, bits)


# -- lowering rules ---------------------------------------------------------------------------------------------
Lowering = Callable[[LowerContext, Node], bool]
LOWERINGS: dict[str, Lowering] = {}


def lowering(*ops: str):
    def deco(fn: Lowering) -> Lowering:
        for op in ops:
            LOWERINGS[op] = fn
        return fn
    return deco


@lowering(*DATA_MOVEMENT)
def _lower_data_movement(ctx: LowerContext, node: Node) -> bool:
    """Codes move unchanged: the outputs reuse the (first) input's spec."""
    x = node.inputs[0]
    if x.dtype is None or x.dtype.kind != "f":
        return False  # shape arithmetic and index tensors are not quantized
    qx = ctx.integer(x)
    ins = [qx] + [None if v is None else ctx.floating(v) for v in node.inputs[1:]]
    outs = [ctx.new_int(o, qx.quant) for o in node.outputs]
    ctx.emit(node.op_type, ins, outs, node.attrs, node, domain="")
    return True


# readers of a channel Concat that take its inputs as separate integer parts, each in its own spec: they
# apply their per-channel arithmetic to each part and write one output spec (lower_recurrent: BatchNorm)
PART_READERS = {"Concat"}


@lowering("Concat")
def _lower_concat(ctx: LowerContext, node: Node) -> bool:
    """Requantize every input to the output spec, then concatenate the codes (inputs whose producer already
    writes the output spec, see ``share_concat_scales``, need no Requantize).

    A Concat along the channel axis of a 4-D tensor whose readers are all PART_READERS is not materialised:
    its inputs stay integer parts in their own specs (a nested Concat's parts are flattened), so no part is
    rounded to the coarser common scale. DenseNet is the case: every dense layer concatenates all earlier
    feature maps and normalises the result per channel; at one per-tensor scale the small early maps lose
    most of their bits, which the BatchNorm then scales up (DenseNet121 w8a8, see docs/quantization.md).
    A reader that needs one tensor gets it materialised (``LowerContext._materialize``)."""
    out = node.outputs[0]
    axis = _concat_axis(node)
    ins = [q for v in node.inputs for q in (ctx.parts_of(v, axis) or [ctx.integer(v)])]
    if _keep_parts(ctx, node, axis):
        ctx.parts[id(out)] = (node, ins)
        return True
    out_spec = ctx.spec_of(out)
    ins = [requantize(ctx, q, out_spec) for q in ins]
    ctx.emit("Concat", ins, [ctx.new_int(out, out_spec)], node.attrs, node, domain="")
    return True


def _concat_axis(node: Node) -> int | None:
    x = node.outputs[0]
    if x.shape is None:
        return None
    return int(node.attrs.get("axis", 0)) % len(x.shape)


def _keep_parts(ctx: LowerContext, node: Node, axis: int | None) -> bool:
    out = node.outputs[0]
    if axis != 1 or len(out.shape) != 4 or out.dtype is None or out.dtype.kind != "f" or out in ctx.f.outputs:
        return False
    if out.name in ctx.options.get("activation_specs", {}) or not out.consumers:
        return False
    return all(c.domain == "" and c.op_type in PART_READERS
               and (_concat_axis(c) == axis if c.op_type == "Concat" else c.inputs[0] is out)
               for c in out.consumers)


def share_concat_scales(ctx: LowerContext) -> None:
    """Give a Concat's output spec to the tensors feeding it, as TFLite's converter does (its CONCATENATION
    requires one scale for operands and result, SameOperandsAndResultsScale), wherever that costs nothing:
    the input reaches the Concat through data movement only and has no other reader. The op computing it
    then rescales straight to the Concat's spec (where the op fixes its own output spec, e.g. Sigmoid or
    spikes, the override is ignored and the Concat requantizes as before), and its codes go into the Concat
    unchanged instead of being rounded twice. The Concat's calibrated range covers every value that reaches
    it (values a Gather/Slice drops on the way may saturate: nothing reads them). Pinned specs
    (``activation_specs``) are never changed."""
    given = ctx.options.get("activation_specs", {})
    for node in ctx.f.nodes:
        out = node.outputs[0]
        if node.op_type != "Concat" or node.domain != "" or out.name in given or out.dtype is None \
                or out.dtype.kind != "f" or _keep_parts(ctx, node, _concat_axis(node)):
            continue
        out_spec = ctx.spec_of(out)
        for v in node.inputs:
            src = _sole_reader_source(ctx, v)
            if src is not None and src.name not in given and ctx.act_bits(src) == out_spec.bits:
                ctx.spec_override.setdefault(id(src), out_spec)


def _sole_reader_source(ctx: LowerContext, v: Value) -> Value | None:
    """The value from which ``v`` is reached through data movement only, each value on the way (``v`` and the
    source included) read by one node and no graph output; None when the path forks."""
    while True:
        if len(v.consumers) != 1 or v in ctx.f.outputs or v.const is not None:
            return None
        p = v.producer
        if p is None or not (p.domain == "" and p.op_type in DATA_MOVEMENT):
            return v
        v = p.inputs[0]


# run in order before any node is lowered: each may fix specs (ctx.spec_override) that depend on how a value
# is read rather than on its range alone (lower_recurrent adds the LIF input currents)
SPEC_CHOICES: list[Callable[[LowerContext], None]] = [share_concat_scales]


def requantize(ctx: LowerContext, q: Value, spec: QuantSpec) -> Value:
    """``q`` re-expressed in ``spec`` (the same value when the specs already agree)."""
    if _same_spec(q.quant, spec):
        return q
    from lowbit.quant.prepare_linear import prepare_requantize
    out = ctx.g.new_value(f"{q.name}_rq", q.shape, spec.dtype)
    out.quant = spec
    ctx.emit("Requantize", [q], [out], prepare_requantize(q.quant, spec))
    return out


def _same_spec(a: QuantSpec, b: QuantSpec) -> bool:
    return a.bits == b.bits and np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point)


def _lower_float_island(ctx: LowerContext, node: Node) -> None:
    ins = [None if v is None else ctx.floating(v) for v in node.inputs]
    outs = []
    for o in node.outputs:
        fo = ctx.g.new_value(o.name, o.shape, o.dtype)
        ctx.float_of[id(o)] = fo
        outs.append(fo)
    ctx.emit(node.op_type, ins, outs, node.attrs, node, domain=node.domain)
    ctx.islands.append(node.name)


def lower(fgraph: Graph, stats: dict[str, TensorStats], precisions: dict[str, NodePrecision],
          options: dict | None = None) -> Lowered:
    """Lower a shape-inferred float graph to the integer IR; graph inputs and outputs stay float.

    ``options`` select arithmetic variants a target needs, e.g. ``{"fc_requant": "float64"}`` for LiteRT's
    reference FULLY_CONNECTED, which rescales in double precision (docs/integer_ir.md), and can fix specs
    instead of deriving them from ranges: ``activation_specs`` {float value name: QuantSpec} and
    ``weight_specs`` {node name: QuantSpec} (used to check that lowbit's lowering, given a TFLite model's own
    scales, produces the same integers; no bias correction then), and ``bias_corrections`` {node name: vector}
    fixes the bias corrections (an earlier lowering's, ``Lowered.bias_corrections``) instead of computing them
    from the calibrated means.
    """
    ctx = LowerContext(fgraph, stats, precisions, options)
    for choose in SPEC_CHOICES:
        choose(ctx)
    for v in fgraph.inputs:
        fv = ctx.g.new_value(v.name, v.shape, v.dtype)
        ctx.g.inputs.append(fv)
        ctx.float_of[id(v)] = fv
    for node in fgraph.nodes:
        if node.name in ctx.fused:
            continue
        rule = LOWERINGS.get(node.op_type) if node.domain == "" else LOWERINGS.get(f"{node.domain}.{node.op_type}")
        fused_before = set(ctx.fused)
        if rule is None or not _all_float_inputs_known(ctx, node) or not rule(ctx, node):
            ctx.fused = fused_before
            _lower_float_island(ctx, node)
    for v in fgraph.outputs:
        out = ctx.floating(v)
        if out.name != v.name:  # keep the float graph's output names
            ident = ctx.g.new_value(v.name, v.shape, np.float32) if v.name not in ctx.g.values else None
            if ident is not None:
                ctx.emit("Identity", [out], [ident], domain="")
                out = ident
        ctx.g.outputs.append(out)
    ctx.g.toposort()
    ctx.g.verify()
    from lowbit.graph.passes import remove_dead_nodes
    remove_dead_nodes(ctx.g)
    ctx.g.prune_values()  # constants a rule made but did not use (a failed rule, a Concat read in parts)
    return Lowered(ctx.g, ctx.map_back, ctx.islands, {k: p.name for k, p in precisions.items()},
                   ctx.bias_corrections)


def _all_float_inputs_known(ctx: LowerContext, node: Node) -> bool:
    return all(v is None or v.const is not None or id(v) in ctx.int_of or id(v) in ctx.float_of
               or id(v) in ctx.parts for v in node.inputs)


def _register_rules() -> None:
    """Import every ``quant/lower_*.py`` module: each registers its rules into LOWERINGS."""
    import importlib
    import pkgutil

    import lowbit.quant as pkg
    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("lower_"):
            importlib.import_module(f"lowbit.quant.{mod.name}")


_register_rules()
