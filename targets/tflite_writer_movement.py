"""TFLite exporters for data movement (standard ONNX ops on integer or float tensors) and float islands:
Reshape, Flatten, Squeeze, Unsqueeze, Identity -> RESHAPE; Transpose; Concat -> CONCATENATION; Pad -> PAD |
PADV2; Slice -> STRIDED_SLICE; Gather; Split -> SPLIT_V; Expand -> BROADCAST_TO; Tile; GlobalMaxPool ->
REDUCE_MAX; the element-wise float ops with a TFLite float builtin and LRN (see tflite_writer_ops.py)."""
from __future__ import annotations


import numpy as np

from lowbit.graph.ir import Node, Value
from lowbit.targets.tflite_writer import TfliteWriter, exporter
from lowbit.targets.tflite_writer_ops import _const, _require_same_quant, _static


# --- data movement (integer or float tensors) ------------------------------------------------------------------
def _movement(w: TfliteWriter, node: Node, x: Value, y: Value, op: str) -> None:
    if x.dtype is not None and y.dtype is not None and np.dtype(x.dtype) != np.dtype(y.dtype):
        w.fail(f"input {x.dtype} and output {y.dtype} differ")
    if x.quant is not None or y.quant is not None:
        if x.dtype is not None and np.dtype(x.dtype).kind != "f":
            _require_same_quant(w, x, y, op)


@exporter("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", domain="")
def reshape(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "RESHAPE")
    shape = list(_static(w, y))
    w.op("RESHAPE", [w.tensor(x), w.int32(f"{y.name}_shape", shape)], [w.tensor(y)], "ReshapeOptions",
         NewShape=shape)


@exporter("Transpose", domain="")
def transpose(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "TRANSPOSE")
    rank = len(_static(w, x))
    if rank > 6:
        w.fail(f"TFLite's TRANSPOSE takes rank 6 at most, got {rank}")
    perm = node.attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else [int(p) % rank for p in perm]
    w.op("TRANSPOSE", [w.tensor(x), w.int32(f"{y.name}_perm", perm)], [w.tensor(y)], "TransposeOptions")


@exporter("Concat", domain="")
def concat(w: TfliteWriter, node: Node) -> None:
    y = node.outputs[0]
    for x in node.inputs:
        _movement(w, node, x, y, "CONCATENATION")
    rank = len(_static(w, y))
    w.op("CONCATENATION", [w.tensor(x) for x in node.inputs], [w.tensor(y)], "ConcatenationOptions",
         Axis=int(node.attrs.get("axis", 0)) % rank, FusedActivationFunction=0)


@exporter("Pad", domain="")
def pad(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "PAD")
    if node.attrs.get("mode", "constant") != "constant":
        w.fail(f"pad mode {node.attrs.get('mode')!r} (TFLite's PAD/PADV2 pad with a constant; MIRROR_PAD is not "
               f"exported)")
    rank = len(_static(w, x))
    pads = _const(w, node, 1, "the pads").astype(np.int64).reshape(-1)
    axes = node.const_input(3)
    if node.input(3) is not None and axes is None:
        w.fail("the pad axes are not constant")
    axes = list(range(rank)) if axes is None else [int(a) % rank for a in axes.reshape(-1)]
    full = np.zeros((rank, 2), np.int64)
    for i, a in enumerate(axes):
        full[a] = pads[i], pads[i + len(axes)]
    if np.any(full < 0):
        w.fail("negative pads (cropping)")
    value = node.const_input(2)
    if node.input(2) is not None and value is None:
        w.fail("the pad value is not constant")
    zero = int(x.quant.zero_point) if _quantized(x) else 0
    value = zero if value is None or value.size == 0 else value.reshape(-1)[0]
    paddings = w.int32(f"{y.name}_paddings", full)
    if value == zero:
        w.op("PAD", [w.tensor(x), paddings], [w.tensor(y)], "PadOptions")
    else:
        v = w.const(f"{y.name}_value", np.asarray(value, x.dtype).reshape(()), x.quant if _quantized(x) else None)
        w.op("PADV2", [w.tensor(x), paddings, v], [w.tensor(y)], "PadV2Options")


def _quantized(v: Value) -> bool:
    return v.quant is not None and v.dtype is not None and np.dtype(v.dtype).kind in "iu"


@exporter("Slice", domain="")
def slice_(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "STRIDED_SLICE")
    shape = _static(w, x)
    rank = len(shape)
    starts = _const(w, node, 1, "starts").reshape(-1)
    ends = _const(w, node, 2, "ends").reshape(-1)
    axes = node.const_input(3) if node.input(3) is not None else np.arange(len(starts))
    steps = node.const_input(4) if node.input(4) is not None else np.ones(len(starts), np.int64)
    if axes is None or steps is None:
        w.fail("the slice axes / steps are not constant")
    begin, end, stride, end_mask = [0] * rank, list(shape), [1] * rank, 0
    for s, e, a, t in zip(starts, ends, axes.reshape(-1), steps.reshape(-1)):
        a = int(a) % rank
        lo, hi, st = slice(int(s), int(e), int(t)).indices(shape[a])
        begin[a], end[a], stride[a] = lo, hi, st
        if hi < 0:  # a negative step running through index 0
            end[a], end_mask = 0, end_mask | (1 << a)
    name = y.name
    w.op("STRIDED_SLICE", [w.tensor(x), w.int32(f"{name}_begin", begin), w.int32(f"{name}_end", end),
                           w.int32(f"{name}_strides", stride)], [w.tensor(y)], "StridedSliceOptions",
         EndMask=end_mask)


@exporter("Gather", domain="")
def gather(w: TfliteWriter, node: Node) -> None:
    x, idx, y = node.inputs[0], node.inputs[1], node.outputs[0]
    _movement(w, node, x, y, "GATHER")
    rank = len(_static(w, x))
    axis = int(node.attrs.get("axis", 0)) % rank
    if idx.const is not None:
        n = x.shape[axis]
        ii = w.const(f"{idx.name}_i32", np.where(idx.const < 0, idx.const + n, idx.const).astype(np.int32))
    else:
        ii = w.tensor(idx)
    w.op("GATHER", [w.tensor(x), ii], [w.tensor(y)], "GatherOptions", Axis=axis)


@exporter("Split", domain="")
def split(w: TfliteWriter, node: Node) -> None:
    x = node.inputs[0]
    for y in node.outputs:
        _movement(w, node, x, y, "SPLIT_V")
    rank = len(_static(w, x))
    axis = int(node.attrs.get("axis", 0)) % rank
    sizes = [_static(w, y)[axis] for y in node.outputs]
    w.op("SPLIT_V", [w.tensor(x), w.int32(f"{node.name}_sizes", sizes),
                     w.const(f"{node.name}_axis", np.asarray(axis, np.int32))],
         [w.tensor(y) for y in node.outputs], "SplitVOptions", NumSplits=len(sizes))


@exporter("Expand", domain="")
def expand(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "BROADCAST_TO")
    w.op("BROADCAST_TO", [w.tensor(x), w.int32(f"{y.name}_shape", _static(w, y))], [w.tensor(y)])


@exporter("Tile", domain="")
def tile(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "TILE")
    w.op("TILE", [w.tensor(x), w.int32(f"{y.name}_multiples", _const(w, node, 1, "repeats"))], [w.tensor(y)])


@exporter("GlobalMaxPool", domain="")
def global_max_pool(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _movement(w, node, x, y, "REDUCE_MAX")
    rank = len(_static(w, x))
    w.op("REDUCE_MAX", [w.tensor(x), w.int32(f"{y.name}_axes", list(range(2, rank)))], [w.tensor(y)],
         "ReducerOptions", KeepDims=True)


# --- float islands -----------------------------------------------------------------------------------------------
_FLOAT_UNARY = {"Relu": "RELU", "Sigmoid": "LOGISTIC", "Tanh": "TANH", "Exp": "EXP", "Log": "LOG", "Sqrt": "SQRT",
                "Abs": "ABS", "Neg": "NEG", "HardSwish": "HARD_SWISH"}
_FLOAT_BINARY = {"Add": ("ADD", "AddOptions"), "Sub": ("SUB", "SubOptions"), "Mul": ("MUL", "MulOptions"),
                 "Div": ("DIV", "DivOptions"), "Max": ("MAXIMUM", None), "Min": ("MINIMUM", None)}


def _float_only(w: TfliteWriter, node: Node) -> None:
    for v in [*node.inputs, *node.outputs]:
        if v is not None and v.const is None and (v.dtype is None or np.dtype(v.dtype) != np.float32):
            w.fail(f"a float island op needs float32 tensors, '{v.name}' is {v.dtype}")
    w.notes.append(f"{node.describe()} exported as a float {node.op_type} (float islands are not bit-exact "
                   f"across runtimes)")


def _float_tensor(w: TfliteWriter, v: Value) -> int:
    if v.const is not None and v.const.dtype != np.float32:
        return w.const(v.name, v.const.astype(np.float32))
    return w.tensor(v)


@exporter(*_FLOAT_UNARY, "Elu", "Gelu", "LeakyRelu", "Softmax", domain="")
def float_unary(w: TfliteWriter, node: Node) -> None:
    _float_only(w, node)
    x, y = node.inputs[0], node.outputs[0]
    op, a = node.op_type, node.attrs
    if op == "Elu" and float(a.get("alpha", 1.0)) != 1.0:
        w.fail("TFLite's ELU has alpha 1")
    if op == "Softmax":
        rank = len(_static(w, x))
        if int(a.get("axis", -1)) % rank != rank - 1:
            w.fail("TFLite's SOFTMAX runs over the last axis")
        w.op("SOFTMAX", [w.tensor(x)], [w.tensor(y)], "SoftmaxOptions", Beta=1.0)
    elif op == "Gelu":
        w.op("GELU", [w.tensor(x)], [w.tensor(y)], "GeluOptions", Approximate=a.get("approximate", "none") == "tanh")
    elif op == "LeakyRelu":
        w.op("LEAKY_RELU", [w.tensor(x)], [w.tensor(y)], "LeakyReluOptions", Alpha=float(a.get("alpha", 0.01)))
    else:
        w.op(_FLOAT_UNARY.get(op, "ELU"), [w.tensor(x)], [w.tensor(y)])


@exporter(*_FLOAT_BINARY, domain="")
def float_binary(w: TfliteWriter, node: Node) -> None:
    _float_only(w, node)
    if len(node.inputs) != 2:
        w.fail(f"{node.op_type} with {len(node.inputs)} inputs")
    builtin, options = _FLOAT_BINARY[node.op_type]
    fields = {"FusedActivationFunction": 0} if options else {}
    w.op(builtin, [_float_tensor(w, v) for v in node.inputs], [w.tensor(node.outputs[0])], options, **fields)


@exporter("LRN", domain="")
def lrn(w: TfliteWriter, node: Node) -> None:
    """ONNX LRN (axis 1, window ``size``, alpha / size) -> TRANSPOSE, LOCAL_RESPONSE_NORMALIZATION (last axis,
    radius (size - 1) / 2, alpha per element), TRANSPOSE."""
    _float_only(w, node)
    x, y = node.inputs[0], node.outputs[0]
    shape = _static(w, x)
    size = int(node.attrs["size"])
    if len(shape) != 4 or size % 2 == 0:
        w.fail(f"LRN over a {len(shape)}-D input with an even size {size} has no TFLite form")
    nhwc = (shape[0], shape[2], shape[3], shape[1])
    xt = w.new_tensor(f"{x.name}_nhwc", nhwc, np.float32)
    yt = w.new_tensor(f"{y.name}_nhwc", nhwc, np.float32)
    w.op("TRANSPOSE", [w.tensor(x), w.int32(f"{x.name}_to_nhwc", [0, 2, 3, 1])], [xt], "TransposeOptions")
    a = node.attrs
    w.op("LOCAL_RESPONSE_NORMALIZATION", [xt], [yt], "LocalResponseNormalizationOptions", Radius=(size - 1) // 2,
         Bias=float(a.get("bias", 1.0)), Alpha=float(a.get("alpha", 1e-4)) / size, Beta=float(a.get("beta", 0.75)))
    w.op("TRANSPOSE", [yt, w.int32(f"{y.name}_to_nchw", [0, 3, 1, 2])], [w.tensor(y)], "TransposeOptions")
