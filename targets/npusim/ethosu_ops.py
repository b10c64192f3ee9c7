"""How Vela lowers a TFLite operator into Ethos-U operations, over lowbit's Layers (used by ethosu.py).

A Layer becomes one or more ``NpuOp`` (NHWC feature maps of batch 1): grouped convolutions one per group,
strides over 3 one operation per output pixel, FULLY_CONNECTED rows folded into a near-square H x W, MEAN a
depthwise sum and a rescaling MUL, BATCH_MATMUL a MUL and a reduce-sum per output column, SOFTMAX its chain of
elementwise ops, standalone activations a 1x1 pooling with the activation; ``fuse_activations`` folds a ReLU
or table activation into the op that alone feeds it, as Vela does.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

from lowbit.targets.npusim.workload import Layer

MAX_STRIDE = 3             # larger convolution strides run as one operation per output pixel
WEIGHT_BITS = 8            # Ethos-U55/U65 weights are 8-bit: lowbit's INT4 weights reach them as int8 tensors
                           # holding the same values (the tflite export), so they cost as much


@dataclass(frozen=True)
class NpuOp:
    """One Ethos-U operation; shapes are (H, W, C)."""
    hw: str                                  # conv | depthwise | vector | pool | reduce_sum | elementwise
    ifm: tuple[int, int, int]
    ofm: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)         # (KH, KW)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    ifm_bits: int = 8
    ofm_bits: int = 8
    ifm2: tuple[int, int, int] | None = None
    op_class: str = "other"                  # output_cycles class: other | mul | mul32 | add | maxpool
    activation: str = "none"                 # none | relu | lut
    weights: int = 0                         # weight elements (0: no weights)
    weight_bits: int = 8
    brick: bool = True                       # OFM in NHCWB16 bricks (4-D tensors), else NHWC
    ifm_brick: bool = True
    scratch: str = ""                        # "ifm" / "ofm": that operand lives in scratch_memory
    dependency_fit: bool = False             # search blocks for a 1/2-1/3 slice (MatMul: fewer stalls)

    @property
    def has_weights(self) -> bool:
        return self.weights > 0


def _ceil(a, b) -> int:
    return -(-int(a) // int(b))


def _round_up(a, b):
    return -(-a // b) * b


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """(H, W, C) of a lowbit tensor: NCHW for 4-D (batch folded into H), else (1, rows, last dim)."""
    if len(shape) == 4:
        n, c, h, w = shape
        return (n * h, w, c)
    if not shape:
        return (1, 1, 1)
    return (1, math.prod(shape[:-1]), shape[-1])


def _square(rows: int, depth: int) -> tuple[int, int, int]:
    """Vela folds the rows of a batched FULLY_CONNECTED into H x W with W = max(rows/16, ceil(sqrt(rows)))
    raised to a divisor of rows (square-ish OFMs fill the blocks better)."""
    if rows <= 1:
        return (1, 1, depth)
    w = max(rows // 16, math.ceil(math.sqrt(rows)))
    while rows % w:
        w += 1
    return (rows // w, w, depth)


def _conv_ops(l: Layer) -> list[NpuOp] | None:
    """CONV_2D per group (the exporter splits grouped convolutions); strides over 3 one per output pixel."""
    c = l.conv
    if c is None:
        return None
    g = max(c.groups, 1)
    kw = dict(kernel=(c.kh, c.kw), stride=(c.sh, c.sw), dilation=(c.dh, c.dw), ifm_bits=l.act_bits,
              ofm_bits=l.out_bits, weights=c.kh * c.kw * (c.ic // g) * (c.oc // g), weight_bits=WEIGHT_BITS)
    if max(c.sh, c.sw) > MAX_STRIDE:
        return [NpuOp("conv", (c.kh, c.kw, c.ic // g), (1, 1, c.oc // g), **kw)] * (g * c.n * c.oh * c.ow)
    return [NpuOp("conv", (c.ih, c.iw, c.ic // g), (c.oh, c.ow, c.oc // g), **kw)] * (g * c.n)


def _depthwise_ops(l: Layer) -> list[NpuOp] | None:
    c = l.conv
    if c is None:
        return None
    return [NpuOp("depthwise", (c.ih, c.iw, c.ic), (c.oh, c.ow, c.oc), (c.kh, c.kw), (c.sh, c.sw), (c.dh, c.dw),
                  l.act_bits, l.out_bits, weights=c.kh * c.kw * c.oc, weight_bits=WEIGHT_BITS)] * c.n


def _fc_ops(l: Layer) -> list[NpuOp] | None:
    g = l.gemm
    if g is None:
        return None
    return [NpuOp("vector", _square(g.m, g.k), _square(g.m, g.n), ifm_bits=l.act_bits, ofm_bits=l.out_bits,
                  weights=g.k * g.n, weight_bits=WEIGHT_BITS, brick=False, ifm_brick=False)] * g.batch


def _matmul_ops(l: Layer) -> list[NpuOp] | None:
    """Activation x activation: per output column, a MUL of the (batch, M, K) left operand by the column into
    32-bit products (a scratch tensor) and a reduce-sum over K into the (batch, M, 1) output column."""
    g = l.gemm
    if g is None:
        return None
    left = (g.batch, g.m, g.k)
    mul = NpuOp("elementwise", left, left, ifm_bits=l.act_bits, ofm_bits=32, ifm2=(g.batch, 1, g.k),
                op_class="mul32", brick=False, ifm_brick=False, scratch="ofm", dependency_fit=True)
    total = NpuOp("reduce_sum", left, (g.batch, g.m, 1), ifm_bits=32, ofm_bits=l.out_bits, brick=False,
                  ifm_brick=False, scratch="ifm", dependency_fit=True)
    return [mul, total] * g.n


def _pool_ops(l: Layer) -> list[NpuOp] | None:
    c = l.conv
    if c is None:
        return None
    return [NpuOp("pool", (c.ih, c.iw, c.ic), (c.oh, c.ow, c.oc), (c.kh, c.kw), (c.sh, c.sw),
                  ifm_bits=l.act_bits, ofm_bits=l.out_bits,
                  op_class="maxpool" if l.op == "MaxPool" else "other")] * c.n


def _reduce_ops(l: Layer) -> list[NpuOp] | None:
    """MEAN: a depthwise sum over the reduced window (all-ones weights, about 1 bit each once encoded) and a
    rescaling MUL."""
    x = l.input_shapes[0] if l.input_shapes else ()
    if len(x) == 4 and l.elements == x[0] * x[1]:       # over H and W of an NCHW tensor
        n, ch, h, w = x
        ifm = (h, w, ch)
    elif l.conv is not None:                            # over a flattened window (workload's reduce view)
        n, ch = 1, l.conv.ic
        ifm = (l.conv.iw, 1, ch)
    else:
        return None
    ofm = (1, 1, ch)
    acc_bits = 32 if l.act_bits > 8 else 8
    dw = NpuOp("depthwise", ifm, ofm, (ifm[0], ifm[1]), ifm_bits=l.act_bits, ofm_bits=acc_bits,
               weights=ifm[0] * ifm[1] * ch, weight_bits=1)
    mul = NpuOp("elementwise", ofm, ofm, ifm_bits=acc_bits, ofm_bits=l.out_bits, ifm2=(1, 1, 1), op_class="mul")
    return [dw, mul] * n


ELEMENTWISE_CLASS = {"Add": "add", "Sub": "add", "SquaredDifference": "add", "Mul": "mul"}
LUT_OPS = {"Lut", "Logistic", "Tanh", "HardSwish", "Rsqrt", "LeakyRelu"}


def _elementwise_ops(l: Layer) -> list[NpuOp] | None:
    """Binary ops (the second operand broadcast when smaller); unary ones (Requantize) a 1x1 pooling."""
    if not l.output_shape:
        return None
    brick = len(l.output_shape) == 4
    ofm = _hwc(l.output_shape)
    shapes = [s for s in l.input_shapes if s]
    if len(shapes) < 2:
        return [NpuOp("pool", ofm, ofm, ifm_bits=l.act_bits, ofm_bits=l.out_bits, brick=brick, ifm_brick=brick)]
    ifm2 = _hwc(shapes[1]) if math.prod(shapes[1]) > 1 else (1, 1, 1)
    return [NpuOp("elementwise", _hwc(shapes[0]), ofm, ifm_bits=l.act_bits, ofm_bits=l.out_bits, ifm2=ifm2,
                  op_class=ELEMENTWISE_CLASS.get(l.op, "other"), brick=brick, ifm_brick=brick)]


def _squared_difference_ops(l: Layer) -> list[NpuOp] | None:
    """Vela's integer SQUARED_DIFFERENCE (tflite_graph_optimiser's convert_squared_difference, TFLite's reference
    arithmetic as eight NPU operations): each input cast to int32 with a left shift (a memory copy) and scaled
    by a 32-bit Mul, the 32-bit difference, its square, an Add and the rescale to the output width."""
    shapes = [s for s in l.input_shapes if s]
    if not l.output_shape or len(shapes) < 2:
        return None
    kw = dict(brick=len(l.output_shape) == 4, ifm_brick=len(l.output_shape) == 4)
    ofm, a = _hwc(l.output_shape), _hwc(shapes[0])
    b = _hwc(shapes[1]) if math.prod(shapes[1]) > 1 else (1, 1, 1)
    one = (1, 1, 1)

    def cast(shape):
        return NpuOp("pool", shape, shape, ifm_bits=l.act_bits, ofm_bits=32, **kw)

    def scale(shape):
        return NpuOp("elementwise", shape, shape, ifm_bits=32, ofm_bits=32, ifm2=one, op_class="mul32", **kw)
    return [cast(a), scale(a), cast(b), scale(b),
            NpuOp("elementwise", a, ofm, ifm_bits=32, ofm_bits=32, ifm2=b, op_class="add", **kw),
            NpuOp("elementwise", ofm, ofm, ifm_bits=32, ofm_bits=32, ifm2=ofm, op_class="mul32", **kw),
            NpuOp("elementwise", ofm, ofm, ifm_bits=32, ofm_bits=32, ifm2=one, op_class="add", **kw),
            NpuOp("elementwise", ofm, ofm, ifm_bits=32, ofm_bits=l.out_bits, ifm2=one, op_class="mul", **kw)]


def _activation_ops(l: Layer) -> list[NpuOp] | None:
    """A standalone activation: a 1x1 pooling pass with the activation (a LUT for tables and curves)."""
    if not l.output_shape:
        return None
    brick = len(l.output_shape) == 4
    ofm = _hwc(l.output_shape)
    return [NpuOp("pool", ofm, ofm, ifm_bits=l.act_bits, ofm_bits=l.out_bits,
                  activation="lut" if l.op in LUT_OPS else "relu", brick=brick, ifm_brick=brick)]


SOFTMAX_ROW_OPS = 21          # Vela's 8-bit SOFTMAX: CLZ, the headroom steps and 3 Newton-Raphson rounds on the sums
SOFTMAX_BRICKED_ROWS = 32    # fewer rows than this: Vela keeps the per-row tensors NHCWB16 (16 elements a row)


def _softmax_ops(l: Layer) -> list[NpuOp] | None:
    """Vela's int8 SOFTMAX: a max over each row (pooling), x - max with exp through a LUT, a rescale, a row
    reduce-sum, 21 elementwise ops on the per-row sums (leading zeros, headroom, reciprocal by Newton-Raphson),
    then three full-size ops (multiply by the reciprocal, round, shift to 8 bits). The full-size tensors are
    NHCWB16 (depth padded to 16). The per-row tensors (depth 1) are too below 32 rows, so each row costs 16
    elements there, and are not from 32 rows on: measured with Vela 5.2 on softmaxes of 8 to 64 rows (8 rows:
    128 - 256 cycles a row op; 32 and 64 rows: 1 - 2 cycles a row)."""
    if not l.output_shape:
        return None
    depth = l.output_shape[-1]
    rows = math.prod(l.output_shape[:-1])
    full = _square(rows, depth)
    row = (full[0], full[1], 1)
    nhcwb16 = dict(brick=True, ifm_brick=True)
    row_layout = nhcwb16 if rows < SOFTMAX_BRICKED_ROWS else dict(brick=False, ifm_brick=False)

    def full_op(ifm_bits, ofm_bits, op_class="other", activation="none"):
        return NpuOp("elementwise", full, full, ifm_bits=ifm_bits, ofm_bits=ofm_bits, ifm2=row,
                     op_class=op_class, activation=activation, **nhcwb16)
    return ([NpuOp("pool", full, row, (1, depth), ifm_bits=l.act_bits, op_class="maxpool", **nhcwb16),
             full_op(l.act_bits, 32, "add", "lut"), full_op(32, 32),
             NpuOp("reduce_sum", full, row, ifm_bits=32, ofm_bits=32, **nhcwb16)]
            + [NpuOp("elementwise", row, row, ifm_bits=32, ofm_bits=32, ifm2=row, op_class="mul32", **row_layout)]
            * SOFTMAX_ROW_OPS
            + [full_op(32, 32, "mul32"), full_op(32, 32, "add"), full_op(32, l.out_bits)])


BY_OP: dict[str, Callable[[Layer], list[NpuOp] | None]] = {"SquaredDifference": _squared_difference_ops}
NPU_OPS: dict[str, Callable[[Layer], list[NpuOp] | None]] = {
    "conv": _conv_ops, "depthwise": _depthwise_ops, "fc": _fc_ops, "matmul": _matmul_ops, "pool": _pool_ops,
    "reduce": _reduce_ops, "elementwise": _elementwise_ops, "activation": _activation_ops,
    "softmax": _softmax_ops,
}


def npu_ops(layer: Layer) -> list[NpuOp] | None:
    """The Ethos-U operations of ``layer``; None for what the NPU does not run here (norms, recurrent and
    neuron layers, data movement, conversions, spike-input layers). An activation fused into the layer
    (``extra["activation"]``, see fuse_activations) runs in its output unit."""
    fn = BY_OP.get(layer.op) or NPU_OPS.get(layer.kind)
    ops = None if fn is None or layer.spike_input else fn(layer)
    fused = layer.extra.get("activation")
    if ops and fused:
        ops = [replace(op, activation=fused) if op.activation == "none" else op for op in ops]
    return ops


FUSABLE_INTO = ("conv", "depthwise", "fc", "pool", "elementwise")
FUSED_ACTIVATIONS = {"Relu": "relu", "Relu6": "relu", "Lut": "lut", "Logistic": "lut", "Tanh": "lut"}


def fuse_activations(layers: list[Layer], accel=None) -> list[Layer]:
    """Vela folds a ReLU or a table activation (sigmoid, tanh, lowbit's LUTs such as GELU) into the output
    unit of the convolution, fully-connected, pooling or elementwise op that feeds it when that op's output
    has no other reader: the pair is one NPU operation whose output cycles per element are the larger of the
    op's and the activation's. The activation Layer becomes a "view" (no work, its output aliases the op's)
    with ``extra["fused_into"]``; the op gets ``extra["activation"]`` and the activation's output precision."""
    readers: dict[str, int] = {}
    for l in layers:
        for name in l.inputs:
            readers[name] = readers.get(name, 0) + 1
    producer = {out: i for i, l in enumerate(layers) for out in l.outputs}
    out = list(layers)
    for i, act in enumerate(layers):
        kind = FUSED_ACTIVATIONS.get(act.op)
        if kind is None or act.kind != "activation" or len(act.inputs) != 1:
            continue
        j = producer.get(act.inputs[0])
        if j is None or readers.get(act.inputs[0]) != 1 or out[j].kind not in FUSABLE_INTO \
                or out[j].extra.get("activation") or out[j].spike_input or len(out[j].outputs) != 1:
            continue
        out[j] = replace(out[j], out_bits=act.out_bits, extra={**out[j].extra, "activation": kind})
        out[i] = replace(act, kind="view", extra={**act.extra, "fused_into": out[j].name})
    return out
