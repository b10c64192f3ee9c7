"""Lowering again with the QuantSpecs of an earlier lowering: the same model at other input shapes (a longer
token sequence, another batch size), or its streaming step graph.

A compiled artifact is bound to the shapes it was calibrated at (reshape targets and causal masks are folded
to constants). Greedy decoding re-runs the prefill graph on a longer sequence, and streaming runs the step
graph; both must compute with *exactly* the reference artifact's scales and zero points, or their integers
(and tokens) drift apart. ``pinned_specs`` collects {float value name: QuantSpec} from a lowering, with the
step graph's ``state_in_<i>_<kind>`` taking the spec of the whole-sequence graph's ``state_out_<i>_<kind>``;
``lower_pinned`` lowers another graph with those specs (a value with no pinned spec is an error, never a
silent re-calibration), and ``PinnedRunner`` is a ``run_fn(feeds)`` that binds, lowers (cached per input
shapes) and runs the integer program at whatever shapes it is given.
"""
from __future__ import annotations

import copy
from typing import Mapping

import numpy as np

from lowbit.errors import InputError
from lowbit.graph.ir import Graph, Value
from lowbit.quant.lower import Lowered, lower
from lowbit.quant.plan import NodePrecision
from lowbit.quant.spec import QuantSpec


class PinnedSpecs(dict):
    """{float value name: QuantSpec}, carrying the reference lowering's bias corrections {node name: vector}
    (``bias_corrections``) along, so that a pinned lowering corrects its biases exactly as the reference did."""
    bias_corrections: dict


def pinned_specs(lowered: Lowered) -> PinnedSpecs:
    """{float value name: QuantSpec} of every integer tensor of ``lowered``, plus ``state_in_X`` = the spec of
    ``state_out_X`` (the correspondence of a step graph's state inputs to the whole-sequence graph's states);
    ``.bias_corrections`` holds ``lowered``'s."""
    specs = PinnedSpecs()
    specs.bias_corrections = dict(lowered.bias_corrections)
    for v in lowered.graph.values.values():
        name = lowered.float_of.get(v.name)
        if name is not None and v.quant is not None:
            specs.setdefault(name, v.quant)
    for name in list(specs):
        if name.startswith("state_out_"):
            specs.setdefault("state_in_" + name[len("state_out_"):], specs[name])
    return specs


class _NoStats(Mapping):
    """Calibration stats for a pinned lowering: asking for one means a value has no pinned spec."""

    def __init__(self, graph_name: str):
        self.graph_name = graph_name

    def __getitem__(self, name):
        raise InputError(f"graph '{self.graph_name}': value '{name}' has no counterpart in the reference lowering, "
                         f"so its quantization spec is unknown; pin it through options['activation_specs']")

    def get(self, name, default=None):
        return self[name]

    def __iter__(self):
        return iter(())

    def __len__(self):
        return 0


def lower_pinned(fgraph: Graph, specs: Mapping[str, QuantSpec], precisions: Mapping[str, NodePrecision],
                 default: NodePrecision, options: dict | None = None) -> Lowered:
    """``lower`` with every activation spec taken from ``specs`` and each node's precision from ``precisions``
    by node name (``default`` for nodes the reference graph lacks); bias corrections from
    ``options["bias_corrections"]``, else ``specs.bias_corrections`` (``pinned_specs``), else none."""
    opts = dict(options or {})
    opts["activation_specs"] = {**specs, **opts.get("activation_specs", {})}
    opts.setdefault("bias_corrections", dict(getattr(specs, "bias_corrections", {})))
    precs = {n.name: precisions.get(n.name, default) for n in fgraph.nodes}
    return lower(fgraph, _NoStats(fgraph.name), precs, opts)


def bind_and_optimize(graph: Graph, shapes: Mapping[str, tuple]) -> Graph:
    """A copy of unbound ``graph`` with its dynamic input dimensions bound to ``shapes``, canonicalised."""
    from lowbit.graph.onnx_import import bind_input_shapes
    from lowbit.graph.passes import optimize
    g = copy.deepcopy(graph)
    dynamic = {v.name: tuple(shapes[v.name]) for v in g.inputs if not v.is_static and v.name in shapes}
    if dynamic:
        bind_input_shapes(g, dynamic)
    optimize(g)
    return g


def align_to_reference(step: Graph, whole: Graph) -> list[str]:
    """Give ``step`` the requantizations ``whole`` performs where the step graph skips a Concat.

    A prefill graph concatenates parts of its sequence (visual tokens and the text embedding, say) before the
    first layer, and the Concat requantizes each part to one spec; its step graph feeds the new token's part
    straight to that layer. Where a step node reads value V at the input where the same-named whole node reads
    the output of a Concat that has an input named V, a single-input Concat named like the whole Concat's
    output is inserted, so that lowering with pinned specs requantizes V exactly as the whole graph does.
    Returns the names of the inserted values."""
    wnodes = {n.name: n for n in whole.nodes}
    made: dict[tuple[str, str], Value] = {}
    for node in list(step.nodes):
        wn = wnodes.get(node.name)
        if wn is None or wn.op_type != node.op_type or len(wn.inputs) != len(node.inputs):
            continue
        for i, (sv, wv) in enumerate(zip(node.inputs, wn.inputs)):
            if sv is None or wv is None or sv.name == wv.name or wv.producer is None:
                continue
            cat = wv.producer
            if cat.op_type != "Concat" or sv.name not in {v.name for v in cat.inputs if v is not None}:
                continue
            key = (sv.name, wv.name)
            if key not in made:
                if wv.name in step.values:
                    continue
                out = step.new_value(wv.name, sv.shape, sv.dtype)
                step.add_node("Concat", [sv], [out], dict(cat.attrs), name=step.unique_node_name(cat.name))
                made[key] = out
            step.set_input(node, i, made[key])
    if made:
        step.toposort()
        step.verify()
    return [k[1] for k in made]


def integer_state_io(graph: Graph) -> list[str]:
    """Make a lowered graph's ``state_in_*`` inputs and ``state_out_*`` outputs integer tensors (their codes, in
    the spec the lowering gave them): the Quantize after a state input and the Dequantize before a state output
    go away, so a caller carries the state between calls as integers. Returns the names converted."""
    from lowbit.graph.passes import remove_dead_nodes
    from lowbit.runtime.registry import INT_DOMAIN
    done = []
    for i, v in enumerate(list(graph.inputs)):
        q = v.consumers[0] if v.name.startswith("state_in_") and len(v.consumers) == 1 else None
        if q is None or q.domain != INT_DOMAIN or q.op_type != "Quantize":
            continue
        qv = q.outputs[0]
        graph.remove_node(q)
        graph.values.pop(v.name, None)
        graph.values.pop(qv.name, None)
        qv.name = v.name
        graph.values[qv.name] = qv
        graph.inputs[i] = qv
        done.append(v.name)
    for i, v in enumerate(list(graph.outputs)):
        p = v.producer if v.name.startswith("state_out_") else None
        while p is not None and p.op_type == "Identity" and p.domain == "" and len(p.inputs[0].consumers) == 1:
            p = p.inputs[0].producer
        if p is None or p.domain != INT_DOMAIN or p.op_type != "Dequantize":
            continue
        qv = p.inputs[0]
        out = graph.new_value(f"{v.name}_int", qv.shape, qv.dtype)
        out.quant = qv.quant
        graph.add_node("Identity", [qv], [out], {}, name=graph.unique_node_name(f"{v.name}_codes"))
        graph.outputs[i] = out
        remove_dead_nodes(graph)  # the Dequantize (and Identity) that produced the float output
        graph.values.pop(v.name, None)
        graph.values.pop(out.name, None)
        out.name = v.name
        graph.values[out.name] = out
        done.append(v.name)
    graph.toposort()
    graph.verify()
    return done


class PinnedRunner:
    """``run_fn(feeds) -> {output: array}`` for the integer program of unbound float ``graph`` with pinned specs,
    lowered once per distinct set of input shapes. With ``specs=None`` it runs the float graph instead (the
    float reference at any shape). With ``integer_states`` the ``state_in_*`` inputs and ``state_out_*``
    outputs are integer codes (``integer_state_io``), so streaming carries integer state. With ``reference`` (the
    bound whole-sequence float graph the specs come from) a step graph is first aligned to it
    (``align_to_reference``)."""

    def __init__(self, graph: Graph, specs: Mapping[str, QuantSpec] | None = None,
                 precisions: Mapping[str, NodePrecision] | None = None, default: NodePrecision | None = None,
                 options: dict | None = None, integer_states: bool = False, reference: Graph | None = None):
        self.graph, self.specs, self.reference = graph, specs, reference
        self.precisions, self.default, self.options = dict(precisions or {}), default, options
        self.integer_states = integer_states
        self.programs: dict[tuple, tuple[Graph, Lowered | None]] = {}

    def program(self, feeds: Mapping[str, np.ndarray]) -> tuple[Graph, Lowered | None]:
        key = tuple(sorted((k, tuple(np.shape(v))) for k, v in feeds.items()))
        got = self.programs.get(key)
        if got is None:
            g = bind_and_optimize(self.graph, {k: np.shape(v) for k, v in feeds.items()})
            if self.reference is not None:
                align_to_reference(g, self.reference)
            if self.specs is None:
                got = (g, None)
            else:
                low = lower_pinned(g, self.specs, self.precisions, self.default, self.options)
                if self.integer_states:
                    integer_state_io(low.graph)
                got = (low.graph, low)
            self.programs[key] = got
        return got

    def __call__(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        graph, low = self.program(feeds)
        if low is None:
            from lowbit.runtime.float_executor import run as run_float
            return run_float(graph, dict(feeds))
        from lowbit.runtime.int_executor import run as run_int
        return run_int(graph, dict(feeds))
