"""What each node of an integer graph asks of an accelerator: a ``Layer`` (op kind, shapes in a canonical
NHWC / GEMM view, precisions, operation counts and bytes), extracted once per graph by ``extract_layers``.

Cost models (targets/npusim/compute.py and the array models) read only Layers, never graph nodes, so they can
be tested on hand-made shapes. A node maps to a Layer through ``LAYER_KINDS``: op type -> kind, plus one
describer per kind that fills the shape views:

    conv       Conv with group == 1 or grouped (ConvShape + GemmShape: M = N·OH·OW, N = OC/g, K = KH·KW·IC/g)
    depthwise  Conv with group == IC > 1        (ConvShape; GemmShape per channel: batch = IC, N = OC/IC)
    fc         FullyConnected                  (GemmShape: M = rows, N = out features, K = in features)
    matmul     BatchMatMul (activation x activation; no constant weights)
    recurrent  LMUMemory / SelectiveScan / ShortConv / RunningSum: ``steps`` sequential steps
    elementwise, activation, pool, reduce, softmax, norm, neuron (LIF), convert (Quantize/Dequantize)
    view       Reshape/Flatten/Squeeze/Unsqueeze/Identity: no data moves
    copy       Transpose/Concat/Split/Slice/Pad/Gather/...: the output is written once

Spiking layers (SpikeConv, SpikeFullyConnected) are conv/fc Layers with ``spike_input=True``: their dense MAC
count stays in ``macs`` and ``acs`` holds accumulates (spikes x fan-out) once a calibration run has measured
them (``extract_layers(graph, stats=...)`` with the integer executor's per-node statistics).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Mapping

import numpy as np

from lowbit.graph.ir import Graph, Node, Value
from lowbit.graph.stats import node_macs
from lowbit.runtime.registry import INT_DOMAIN


@dataclass(frozen=True)
class ConvShape:
    """A 2-D convolution or pooling window in NHWC terms (1-D ops have ih = oh = kh = 1)."""
    n: int
    ih: int
    iw: int
    ic: int
    oh: int
    ow: int
    oc: int
    kh: int = 1
    kw: int = 1
    sh: int = 1
    sw: int = 1
    dh: int = 1
    dw: int = 1
    groups: int = 1


@dataclass(frozen=True)
class GemmShape:
    """``batch`` independent products of (M x K) by (K x N)."""
    m: int
    n: int
    k: int
    batch: int = 1

    @property
    def macs(self) -> int:
        return self.batch * self.m * self.n * self.k


@dataclass(frozen=True)
class Layer:
    name: str
    op: str                      # op type without domain ("Conv", "Add", "Transpose")
    kind: str                    # see the module docstring
    act_bits: int                # bits of the first activation input
    out_bits: int
    weight_bits: int | None = None
    input_shapes: tuple[tuple[int, ...], ...] = ()
    output_shape: tuple[int, ...] = ()
    conv: ConvShape | None = None
    gemm: GemmShape | None = None
    steps: int = 1               # sequential time steps of a recurrent op (its work is not parallel across them)
    macs: int = 0
    acs: int = 0                 # accumulates of a spike-input layer (measured), 0 when not measured
    spike_input: bool = False
    firing_rate: float | None = None   # measured fraction of non-zero spikes in the input
    elements: int = 0            # output elements (the vector unit's work)
    ifm_bytes: int = 0           # activation inputs, each read once
    ofm_bytes: int = 0
    weight_bytes: int = 0        # constant inputs as stored (INT4 packed two per byte), bias included
    inputs: tuple[str, ...] = ()     # names of the activation inputs (for liveness and traffic)
    outputs: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def precision(self) -> str:
        """``w8a8``-style label; ops without weights are labelled by their activation bits (``a16``)."""
        return f"w{self.weight_bits}a{self.act_bits}" if self.weight_bits else f"a{self.act_bits}"

    @property
    def mac_kind(self) -> bool:
        return self.kind in ("conv", "depthwise", "fc", "matmul")


# -- op type -> kind -----------------------------------------------------------------------------------------
LAYER_KINDS: dict[str, str] = {
    "Conv": "conv", "SpikeConv": "conv", "FullyConnected": "fc", "SpikeFullyConnected": "fc",
    "BatchMatMul": "matmul",
    "LMUMemory": "recurrent", "SelectiveScan": "recurrent", "ShortConv": "recurrent", "RunningSum": "recurrent",
    "Add": "elementwise", "Sub": "elementwise", "Mul": "elementwise", "SquaredDifference": "elementwise",
    "Requantize": "elementwise",
    "Relu": "activation", "Relu6": "activation", "LeakyRelu": "activation", "HardSwish": "activation",
    "Lut": "activation", "Logistic": "activation", "Tanh": "activation", "Rsqrt": "activation",
    "MaxPool": "pool", "AvgPool": "pool", "Mean": "reduce",
    "Softmax": "softmax", "MaskedSoftmax": "softmax", "LayerNorm": "norm", "RMSNorm": "norm",
    "LIF": "neuron", "Quantize": "convert", "Dequantize": "convert",
    # standard ONNX ops the integer executor runs on integer tensors
    "Reshape": "view", "Flatten": "view", "Squeeze": "view", "Unsqueeze": "view", "Identity": "view",
    "Transpose": "copy", "Concat": "copy", "Split": "copy", "Slice": "copy", "Pad": "copy", "Gather": "copy",
    "Tile": "copy", "Expand": "copy", "DepthToSpace": "copy", "SpaceToDepth": "copy", "Resize": "copy",
    "Where": "elementwise", "Max": "elementwise", "Min": "elementwise", "Equal": "elementwise",
    "Cast": "convert",
}
SPIKE_OPS = ("SpikeConv", "SpikeFullyConnected")


def _shape(v: Value | None) -> tuple[int, ...]:
    if v is None or v.shape is None or not all(isinstance(d, int) for d in v.shape):
        return ()
    return tuple(int(d) for d in v.shape)


def _size(shape) -> int:
    return int(np.prod(shape)) if shape else (1 if shape == () else 0)


def _bits(v: Value | None) -> int:
    if v is None:
        return 8
    if v.quant is not None:
        return int(v.quant.bits)
    if v.const is not None:
        return int(v.const.dtype.itemsize * 8)
    return int(np.dtype(v.dtype).itemsize * 8) if v.dtype is not None else 8


def _bytes(v: Value) -> int:
    shape = _shape(v) if v.const is None else v.const.shape
    bits = _bits(v)
    return (_size(shape) * bits + 7) // 8


# -- shape views per kind ------------------------------------------------------------------------------------
def _conv_view(node: Node) -> dict:
    x, w, y = _shape(node.inputs[0]), _shape(node.inputs[1]), _shape(node.outputs[0])
    if len(x) < 3 or len(w) < 3 or len(y) != len(x):
        return {}
    nchw = node.attrs.get("layout", "NCHW") == "NCHW"
    if len(x) == 3:  # 1-D convolution: height 1
        x, y, w = x[:2] + (1,) + x[2:] if nchw else x[:1] + (1,) + x[1:], \
            y[:2] + (1,) + y[2:] if nchw else y[:1] + (1,) + y[1:], w[:2] + (1,) + w[2:]
    n, ic, ih, iw = (x[0], x[1], x[2], x[3]) if nchw else (x[0], x[3], x[1], x[2])
    oc, oh, ow = (y[1], y[2], y[3]) if nchw else (y[3], y[1], y[2])
    kh, kw = w[-2], w[-1]
    strides = list(node.attrs.get("strides") or [1, 1])
    dil = list(node.attrs.get("dilations") or [1, 1])
    if len(strides) == 1:
        strides, dil = [1] + strides, [1] + dil
    g = int(node.attrs.get("group", 1))
    conv = ConvShape(n, ih, iw, ic, oh, ow, oc, kh, kw, strides[0], strides[1], dil[0], dil[1], g)
    if g > 1 and g == ic:
        gemm = GemmShape(m=n * oh * ow, n=oc // g, k=kh * kw, batch=g)
        return {"conv": conv, "gemm": gemm, "kind": "depthwise"}
    return {"conv": conv, "gemm": GemmShape(m=n * oh * ow, n=oc // g, k=kh * kw * (ic // g), batch=g)}


def _fc_view(node: Node) -> dict:
    x, w = _shape(node.inputs[0]), _shape(node.inputs[1])
    if not x or len(w) != 2:
        return {}
    return {"gemm": GemmShape(m=_size(x[:-1]), n=w[0], k=w[1])}


def _matmul_view(node: Node) -> dict:
    a, b, y = _shape(node.inputs[0]), _shape(node.inputs[1]), _shape(node.outputs[0])
    if len(a) < 2 or len(y) < 2:
        return {}
    k = a[-2] if node.attrs.get("adj_x", 0) else a[-1]
    return {"gemm": GemmShape(m=y[-2], n=y[-1], k=k, batch=_size(y[:-2]))}


def _pool_view(node: Node) -> dict:
    x, y = _shape(node.inputs[0]), _shape(node.outputs[0])
    if len(x) != 4 or len(y) != 4:
        return {}
    kh, kw = (node.attrs.get("kernel_shape") or [1, 1])[-2:]
    sh, sw = (node.attrs.get("strides") or [1, 1])[-2:]
    nchw = node.attrs.get("layout", "NCHW") == "NCHW"
    n, c, ih, iw = (x[0], x[1], x[2], x[3]) if nchw else (x[0], x[3], x[1], x[2])
    oh, ow = (y[2], y[3]) if nchw else (y[1], y[2])
    return {"conv": ConvShape(n, ih, iw, c, oh, ow, c, kh, kw, sh, sw, groups=c)}


def _reduce_view(node: Node) -> dict:
    """Mean over axes: priced as a pooling window covering the reduced axes."""
    x, y = _shape(node.inputs[0]), _shape(node.outputs[0])
    if not x:
        return {}
    axes = [a % len(x) for a in (node.attrs.get("axes") or range(len(x)))]
    window = _size([x[a] for a in axes])
    out = max(_size(x) // max(window, 1), 1)
    return {"conv": ConvShape(1, 1, window, out, 1, 1, out, 1, window, 1, 1, groups=out)}


def _recurrent_view(node: Node) -> dict:
    x = _shape(node.inputs[0])
    steps = x[1] if len(x) == 3 else 1
    if node.op_type == "LMUMemory" and len(x) == 3:
        d = _shape(node.inputs[1])[0] if _shape(node.inputs[1]) else 0
        return {"steps": steps, "gemm": GemmShape(m=x[0], n=d, k=d + x[2], batch=steps)}
    return {"steps": steps}


VIEWS: dict[str, Callable[[Node], dict]] = {
    "conv": _conv_view, "fc": _fc_view, "matmul": _matmul_view, "pool": _pool_view, "reduce": _reduce_view,
    "recurrent": _recurrent_view,
}


def describe_node(node: Node, stats: Mapping[str, Mapping] | None = None) -> Layer:
    """One node as a Layer (``kind`` "other" when LAYER_KINDS does not know the op)."""
    kind = LAYER_KINDS.get(node.op_type, "other") if node.domain in ("", INT_DOMAIN) else "other"
    acts = [v for v in node.inputs if v is not None and v.const is None]
    consts = [v for v in node.inputs if v is not None and v.const is not None]
    # the weight of a conv / fc / recurrent op is its constant second input (LMU: Ā; scan: A)
    weight = node.input(1) if kind in ("conv", "fc", "recurrent") else None
    view = VIEWS.get(kind, lambda n: {})(node)
    kind = view.pop("kind", kind)
    out = node.outputs[0] if node.outputs else None
    fields = dict(
        name=node.name, op=node.op_type, kind=kind,
        act_bits=_bits(acts[0]) if acts else 8, out_bits=_bits(out),
        weight_bits=_bits(weight) if weight is not None and weight.const is not None else
        (_bits(acts[1]) if kind == "matmul" and len(acts) > 1 else None),  # act x act: B is the "weight"
        input_shapes=tuple(_shape(v) for v in acts), output_shape=_shape(out),
        macs=node_macs(node), elements=sum(_size(_shape(o)) for o in node.outputs if o is not None),
        ifm_bytes=sum(_bytes(v) for v in acts),
        ofm_bytes=sum(_bytes(o) for o in node.outputs if o is not None),
        weight_bytes=sum(_bytes(v) for v in consts) if kind not in ("view", "copy") else 0,
        inputs=tuple(v.name for v in acts), outputs=tuple(o.name for o in node.outputs if o is not None),
        spike_input=node.op_type in SPIKE_OPS, **view)
    if node.op_type in SPIKE_OPS and stats and node.name in stats:
        s = stats[node.name]
        fields["acs"] = int(s.get("ac", 0))
        fields["firing_rate"] = float(s.get("firing_rate", 0.0))
    if node.op_type == "LIF" and stats and node.name in stats:
        fields["firing_rate"] = float(stats[node.name].get("firing_rate", 0.0))
    return Layer(**fields)


def extract_layers(graph: Graph, stats: Mapping[str, Mapping] | None = None, runs: int = 1) -> list[Layer]:
    """Every node of ``graph`` (in its stored topological order) as a Layer. ``stats``: per-node statistics
    of ``runs`` integer-executor runs (``int_executor.run(graph, feeds, stats=...)``); accumulate counts are
    divided by ``runs`` so a Layer describes one inference."""
    layers = [describe_node(n, stats) for n in graph.nodes]
    if runs > 1:
        layers = [replace(l, acs=l.acs // runs) if l.acs else l for l in layers]
    return layers
