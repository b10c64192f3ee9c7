"""TFLite converters for the linear and spatial ops and for data movement:

- CONV_2D, DEPTHWISE_CONV_2D -> lowbit.int Conv (layout NHWC, weights in ONNX order [O, I/group, kH, kW])
- FULLY_CONNECTED -> lowbit.int FullyConnected (requant "float64": LiteRT's reference kernel rescales in double)
- MAX_POOL_2D, AVERAGE_POOL_2D -> lowbit.int MaxPool / AvgPool; MEAN -> lowbit.int Mean
- QUANTIZE -> lowbit.int Quantize (float input) or Requantize (integer input); DEQUANTIZE -> Dequantize
- CONCATENATION, RESHAPE, SQUEEZE, TRANSPOSE, PAD, PADV2, STRIDED_SLICE, SLICE, GATHER -> standard ONNX
  data-movement ops on the integer tensors (their inputs and outputs share one quantization)
"""
from __future__ import annotations

import numpy as np

from lowbit.graph.tflite.reader import ImportContext, tflite_op
from lowbit.quant.prepare_linear import (prepare_conv, prepare_dequantize, prepare_fully_connected, prepare_mean,
                                         prepare_quantize, prepare_requantize)
from lowbit.quant.spec import QuantSpec

INT64_MIN = -(1 << 63)


# --- helpers -------------------------------------------------------------------------------------------------
def _same_pads(size: int, kernel: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    """(pad before, pad after, output size) of TFLite's SAME / VALID padding (ComputePaddingHeightWidth)."""
    span = (kernel - 1) * dilation + 1
    if padding == "SAME":
        out = (size + stride - 1) // stride
    elif padding == "VALID":
        out = (size - span + stride) // stride
    else:
        raise ValueError(padding)
    total = max((out - 1) * stride + span - size, 0)
    return total // 2, total - total // 2, out


def _spatial_pads(ctx: ImportContext, hw, khw, strides, dilations) -> list[int]:
    padding = ctx.options.get("padding", "SAME")
    if padding not in ("SAME", "VALID"):
        ctx.unsupported(f"padding {padding}")
    (t, b, _), (l, r, _) = (_same_pads(hw[i], khw[i], strides[i], dilations[i], padding) for i in range(2))
    return [t, l, b, r]


def _with_axis(spec: QuantSpec, axis: int | None) -> QuantSpec:
    """The same quantization with its channel axis moved (weights re-laid out in ONNX order)."""
    if not spec.per_channel:
        return spec
    return QuantSpec(spec.bits, spec.scale, spec.zero_point, axis, True, spec.signed)


def _weights(ctx: ImportContext, i: int, what: str) -> tuple[np.ndarray, QuantSpec]:
    w, q = ctx.const(i), ctx.input_quant(i)
    if w is None:
        ctx.unsupported(f"{what} weights (input {i}) are not a constant tensor")
    if q is None or w.dtype not in (np.int8,):
        ctx.unsupported(f"{what} weights are {w.dtype}{' without quantization' if q is None else ''}; lowbit "
                        f"imports int8 (or int4) quantized weights")
    if np.any(q.zero_point != 0):
        ctx.unsupported(f"{what} weights have non-zero zero points (asymmetric weights)")
    return w, q


def _bias(ctx: ImportContext, i: int, n: int):
    if ctx.input(i) is None:
        return None
    b = ctx.const(i)
    if b is None or b.dtype not in (np.int32, np.int64) or b.size != n:
        ctx.unsupported(f"bias (input {i}) must be a constant int32/int64 tensor of {n} values")
    return ctx.add_const(f"{ctx.input_name(i)}", b.reshape(n), ctx.input_quant(i))


def _accumulator(ctx: ImportContext, bias_pos: int) -> str:
    """int32 for int8 inputs; for int16 inputs int32 only when the model asks for int32 biases
    (quantized_bias_type INT32), else int64 (TFLite's conv.cc / fully_connected.cc choice)."""
    if ctx.input_dtype(0) != np.int16:
        return "int32"
    bias_type = ctx.options.get("quantized_bias_type", 0)
    if bias_type == 2:  # TensorType.INT32
        return "int32"
    if bias_type == 0 and ctx.input(bias_pos) is not None and ctx.input_dtype(bias_pos) == np.int32:
        return "int32"
    return "int64"


def _check_same_quant(ctx: ImportContext, a: QuantSpec | None, b: QuantSpec | None, what: str):
    if a is None or b is None:
        ctx.unsupported(f"{what}: missing quantization parameters")
    if a.per_channel or b.per_channel or np.float32(a.scale) != np.float32(b.scale) \
            or int(a.zero_point) != int(b.zero_point):
        ctx.unsupported(f"{what}: input ({a.describe()}) and output ({b.describe()}) must share one "
                        f"quantization")


def _i64(values) -> np.ndarray:
    return np.asarray(values, np.int64)


# --- convolutions and fully connected -----------------------------------------------------------------------
@tflite_op("CONV_2D")
def conv_2d(ctx: ImportContext) -> None:
    ctx.require_quantized()
    w, wq = _weights(ctx, 1, "CONV_2D")
    x_shape = ctx.input_shape(0)
    o, kh, kw, cg = w.shape
    strides = [ctx.options.get("stride_h", 1), ctx.options.get("stride_w", 1)]
    dilations = [ctx.options.get("dilation_h_factor", 1), ctx.options.get("dilation_w_factor", 1)]
    if len(x_shape) != 4 or x_shape[3] % cg:
        ctx.unsupported(f"input {list(x_shape)} does not match filter {list(w.shape)}")
    attrs = {"layout": "NHWC", "strides": strides, "dilations": dilations, "group": x_shape[3] // cg,
             "kernel_shape": [kh, kw], "pads": _spatial_pads(ctx, x_shape[1:3], (kh, kw), strides, dilations)}
    try:
        act_min, act_max = ctx.activation_range()
        attrs.update(prepare_conv(ctx.input_quant(0), wq, ctx.output_quant(0), act_min, act_max,
                                  _accumulator(ctx, 2)))
    except ValueError as e:
        ctx.unsupported(str(e))
    wv = ctx.add_const(ctx.input_name(1), w.transpose(0, 3, 1, 2), _with_axis(wq, 0))
    ctx.add_node("Conv", [ctx.input(0), wv, _bias(ctx, 2, o)], [ctx.output(0)], attrs)


@tflite_op("DEPTHWISE_CONV_2D")
def depthwise_conv_2d(ctx: ImportContext) -> None:
    ctx.require_quantized()
    w, wq = _weights(ctx, 1, "DEPTHWISE_CONV_2D")
    x_shape = ctx.input_shape(0)
    _, kh, kw, o = w.shape
    c = x_shape[3] if len(x_shape) == 4 else -1
    if w.shape[0] != 1 or c <= 0 or o % c:
        ctx.unsupported(f"filter {list(w.shape)} does not match input {list(x_shape)}")
    strides = [ctx.options.get("stride_h", 1), ctx.options.get("stride_w", 1)]
    dilations = [ctx.options.get("dilation_h_factor", 1), ctx.options.get("dilation_w_factor", 1)]
    attrs = {"layout": "NHWC", "strides": strides, "dilations": dilations, "group": c, "kernel_shape": [kh, kw],
             "pads": _spatial_pads(ctx, x_shape[1:3], (kh, kw), strides, dilations)}
    try:
        act_min, act_max = ctx.activation_range()
        accumulator = "int64" if ctx.input_dtype(0) == np.int16 else "int32"  # depthwise 16x8: int64 bias
        attrs.update(prepare_conv(ctx.input_quant(0), wq, ctx.output_quant(0), act_min, act_max, accumulator))
    except ValueError as e:
        ctx.unsupported(str(e))
    # [1, kH, kW, C*m] -> [C*m, 1, kH, kW]: output channel c*m + j reads input channel c (group c)
    wv = ctx.add_const(ctx.input_name(1), w[0].transpose(2, 0, 1)[:, None], _with_axis(wq, 0))
    ctx.add_node("Conv", [ctx.input(0), wv, _bias(ctx, 2, o)], [ctx.output(0)], attrs)


@tflite_op("FULLY_CONNECTED")
def fully_connected(ctx: ImportContext) -> None:
    ctx.require_quantized()
    if ctx.options.get("weights_format", 0) != 0:
        ctx.unsupported("shuffled weights (weights_format other than DEFAULT)")
    w, wq = _weights(ctx, 1, "FULLY_CONNECTED")
    if w.ndim != 2:
        ctx.unsupported(f"weights {list(w.shape)} must be [N, K]")
    n, k = w.shape
    if wq.per_channel and wq.axis != 0:
        ctx.unsupported(f"per-channel weights along axis {wq.axis} (TFLite requires axis 0)")
    try:
        act_min, act_max = ctx.activation_range()
        attrs = prepare_fully_connected(ctx.input_quant(0), wq, ctx.output_quant(0), act_min, act_max,
                                        _accumulator(ctx, 2), requant="float64")
    except ValueError as e:
        ctx.unsupported(str(e))
    x = ctx.input(0)
    x_shape = ctx.input_shape(0)
    size = int(np.prod(x_shape))
    if size % k:
        ctx.unsupported(f"input {list(x_shape)} does not hold whole rows of K = {k}")
    out_shape = ctx.output_shape(0)
    if not ctx.options.get("keep_num_dims", False) and len(x_shape) != 2:
        flat = ctx.new_value(f"{x.name}_2d", (size // k, k), x.dtype, x.quant)
        ctx.add_node("Reshape", [x, ctx.add_const(f"{x.name}_2d_shape", _i64([size // k, k]))], [flat],
                     domain="")
        x = flat
    y = ctx.output(0)
    fc_shape = tuple(x.shape[:-1]) + (n,)
    if tuple(out_shape) != fc_shape:  # e.g. keep_num_dims with an output TFLite stores reshaped
        tmp = ctx.new_value(f"{y.name}_fc", fc_shape, y.dtype, y.quant)
        ctx.add_node("FullyConnected", [x, ctx.add_const(ctx.input_name(1), w, wq), _bias(ctx, 2, n)], [tmp],
                     attrs)
        ctx.add_node("Reshape", [tmp, ctx.add_const(f"{y.name}_shape", _i64(out_shape))], [y], domain="")
        return
    ctx.add_node("FullyConnected", [x, ctx.add_const(ctx.input_name(1), w, wq), _bias(ctx, 2, n)], [y], attrs)


# --- pooling and mean ----------------------------------------------------------------------------------------
def _pool(ctx: ImportContext, op_type: str) -> None:
    ctx.require_quantized()
    x_shape = ctx.input_shape(0)
    if len(x_shape) != 4:
        ctx.unsupported(f"input {list(x_shape)} must be 4-D NHWC")
    _check_same_quant(ctx, ctx.input_quant(0), ctx.output_quant(0), ctx.op_name)
    kernel = [ctx.options.get("filter_height", 1), ctx.options.get("filter_width", 1)]
    strides = [ctx.options.get("stride_h", 1), ctx.options.get("stride_w", 1)]
    act_min, act_max = ctx.activation_range()
    attrs = {"layout": "NHWC", "kernel_shape": kernel, "strides": strides,
             "pads": _spatial_pads(ctx, x_shape[1:3], kernel, strides, (1, 1)), "act_min": act_min,
             "act_max": act_max}
    ctx.add_node(op_type, [ctx.input(0)], [ctx.output(0)], attrs)


@tflite_op("MAX_POOL_2D")
def max_pool_2d(ctx: ImportContext) -> None:
    _pool(ctx, "MaxPool")


@tflite_op("AVERAGE_POOL_2D")
def average_pool_2d(ctx: ImportContext) -> None:
    _pool(ctx, "AvgPool")


@tflite_op("MEAN")
def mean(ctx: ImportContext) -> None:
    ctx.require_quantized()
    axes = ctx.const(1)
    if axes is None:
        ctx.unsupported("the reduction axes are not a constant tensor")
    rank = len(ctx.input_shape(0))
    try:
        attrs = prepare_mean(ctx.input_quant(0), ctx.output_quant(0))
    except ValueError as e:
        ctx.unsupported(str(e))
    attrs.update(axes=sorted({int(a) % rank for a in axes.reshape(-1)}),
                 keepdims=int(bool(ctx.options.get("keep_dims", False))))
    ctx.add_node("Mean", [ctx.input(0)], [ctx.output(0)], attrs)


# --- quantize / dequantize -----------------------------------------------------------------------------------
@tflite_op("QUANTIZE")
def quantize(ctx: ImportContext) -> None:
    ctx.require_quantized(inputs=(), outputs=(0,))
    out_q = ctx.output_quant(0)
    if out_q.per_channel:
        ctx.unsupported("per-channel QUANTIZE")
    if ctx.input_dtype(0).kind == "f":
        ctx.add_node("Quantize", [ctx.input(0)], [ctx.output(0)], prepare_quantize(out_q))
        return
    ctx.require_quantized(inputs=(0,), outputs=())
    ctx.add_node("Requantize", [ctx.input(0)], [ctx.output(0)], prepare_requantize(ctx.input_quant(0), out_q))


@tflite_op("DEQUANTIZE")
def dequantize(ctx: ImportContext) -> None:
    data = ctx.const(0)
    if ctx.input_dtype(0) == np.float16:
        if data is None:
            ctx.unsupported("float16 DEQUANTIZE of a non-constant tensor")
        ctx.set_output(0, ctx.add_const(ctx.output_name(0), data.astype(np.float32)))
        return
    ctx.require_quantized(inputs=(0,), outputs=())
    q = ctx.input_quant(0)
    if q.per_channel:
        ctx.unsupported("per-channel DEQUANTIZE")
    ctx.add_node("Dequantize", [ctx.input(0)], [ctx.output(0)], prepare_dequantize(q))


# --- data movement -------------------------------------------------------------------------------------------
def _movement_checks(ctx: ImportContext) -> None:
    if ctx.input_dtype(0).kind == "f":
        ctx.unsupported("a float tensor (lowbit imports only quantized operators)")
    if ctx.input_quant(0) is not None or ctx.output_quant(0) is not None:
        _check_same_quant(ctx, ctx.input_quant(0), ctx.output_quant(0), ctx.op_name)


def _reshape_to_output(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    shape = ctx.add_const(f"{ctx.output_name(0)}_shape", _i64(ctx.output_shape(0)))
    ctx.add_node("Reshape", [ctx.input(0), shape], [ctx.output(0)], domain="")


@tflite_op("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def reshape(ctx: ImportContext) -> None:
    _reshape_to_output(ctx)


@tflite_op("TRANSPOSE")
def transpose(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    perm = ctx.const(1)
    if perm is None:
        ctx.unsupported("the permutation is not a constant tensor")
    rank = len(ctx.input_shape(0))
    ctx.add_node("Transpose", [ctx.input(0)], [ctx.output(0)],
                 {"perm": [int(p) % rank for p in perm.reshape(-1)]}, domain="")


@tflite_op("CONCATENATION")
def concatenation(ctx: ImportContext) -> None:
    if ctx.options.get("fused_activation_function", "NONE") != "NONE":
        ctx.unsupported("a fused activation on a quantized CONCATENATION")
    out_q = ctx.output_quant(0)
    if ctx.output_dtype(0).kind == "f":
        ctx.unsupported("a float tensor (lowbit imports only quantized operators)")
    for i in range(ctx.num_inputs):
        _check_same_quant(ctx, ctx.input_quant(i), out_q, f"CONCATENATION input {i}")
    rank = len(ctx.output_shape(0))
    inputs = [ctx.input(i) for i in range(ctx.num_inputs)]
    ctx.add_node("Concat", inputs, [ctx.output(0)], {"axis": int(ctx.options.get("axis", 0)) % rank}, domain="")


@tflite_op("PAD", "PADV2")
def pad(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    paddings = ctx.const(1)
    if paddings is None:
        ctx.unsupported("the paddings are not a constant tensor")
    paddings = paddings.reshape(-1, 2).astype(np.int64)
    out_q = ctx.output_quant(0)
    if ctx.input(2) is not None:
        value = ctx.const(2)
        if value is None or value.size != 1:
            ctx.unsupported("the pad value is not a constant scalar")
        if value.dtype != ctx.input_dtype(0):
            ctx.unsupported(f"the pad value is {value.dtype.name} but the input {ctx.input_dtype(0).name} (the "
                            f"converter left it unquantized; LiteRT refuses this model too)")
        if out_q is not None:
            _check_same_quant(ctx, ctx.input_quant(2), out_q, "PADV2 constant value")
        value = value.reshape(()).astype(ctx.input_dtype(0))
    else:
        value = np.asarray(0 if out_q is None else int(out_q.zero_point), ctx.input_dtype(0))
    pads = ctx.add_const(f"{ctx.output_name(0)}_pads", np.concatenate([paddings[:, 0], paddings[:, 1]]))
    ctx.add_node("Pad", [ctx.input(0), pads, ctx.add_const(f"{ctx.output_name(0)}_value", value)],
                 [ctx.output(0)], domain="")


def _slice_node(ctx: ImportContext, starts, ends, steps) -> None:
    """ONNX Slice over every input axis, then a Reshape to the output shape when the rank changes."""
    axes = list(range(len(starts)))
    y = ctx.output(0)
    sliced_shape = tuple(len(range(*slice(s, None if e == INT64_MIN else e, t).indices(n)))
                         for s, e, t, n in zip(starts, ends, steps, ctx.input_shape(0)))
    target = y if sliced_shape == tuple(ctx.output_shape(0)) else \
        ctx.new_value(f"{y.name}_slice", sliced_shape, y.dtype, y.quant)
    name = ctx.output_name(0)
    ctx.add_node("Slice", [ctx.input(0), ctx.add_const(f"{name}_starts", _i64(starts)),
                           ctx.add_const(f"{name}_ends", _i64(ends)), ctx.add_const(f"{name}_axes", _i64(axes)),
                           ctx.add_const(f"{name}_steps", _i64(steps))], [target], domain="")
    if target is not y:
        ctx.add_node("Reshape", [target, ctx.add_const(f"{name}_shape", _i64(ctx.output_shape(0)))], [y],
                     domain="")


@tflite_op("SLICE")
def slice_(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    begin, size = ctx.const(1), ctx.const(2)
    if begin is None or size is None:
        ctx.unsupported("begin/size are not constant tensors")
    shape = ctx.input_shape(0)
    starts = [int(b) for b in begin.reshape(-1)]
    ends = [n if int(s) < 0 else b + int(s) for b, s, n in zip(starts, size.reshape(-1), shape)]
    _slice_node(ctx, starts, ends, [1] * len(starts))


@tflite_op("STRIDED_SLICE")
def strided_slice(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    begin, end, strides = ctx.const(1), ctx.const(2), ctx.const(3)
    if begin is None or end is None or strides is None:
        ctx.unsupported("begin/end/strides are not constant tensors")
    o = ctx.options
    if o.get("ellipsis_mask", 0) or o.get("new_axis_mask", 0):
        ctx.unsupported("ellipsis_mask / new_axis_mask")
    shape = ctx.input_shape(0)
    begin, end, strides = (list(map(int, a.reshape(-1))) for a in (begin, end, strides))
    if len(begin) > len(shape):
        ctx.unsupported(f"{len(begin)} slice dimensions for an input of rank {len(shape)}")
    starts, ends, steps = [], [], []
    for i, n in enumerate(shape):
        if i >= len(begin):
            starts.append(0), ends.append(n), steps.append(1)
            continue
        s, e, t = begin[i], end[i], strides[i]
        if t == 0:
            ctx.unsupported("a zero stride")
        if o.get("offset", False):
            e = s + e
        if o.get("shrink_axis_mask", 0) >> i & 1:
            s = s + n if s < 0 else s
            starts.append(s), ends.append(s + 1), steps.append(1)
            continue
        lo_first = t > 0
        if o.get("begin_mask", 0) >> i & 1:
            s = 0 if lo_first else n - 1
        if o.get("end_mask", 0) >> i & 1:
            e = n if lo_first else INT64_MIN
        starts.append(s), ends.append(e), steps.append(t)
    _slice_node(ctx, starts, ends, steps)


@tflite_op("GATHER")
def gather(ctx: ImportContext) -> None:
    _movement_checks(ctx)
    if ctx.options.get("batch_dims", 0) != 0:
        ctx.unsupported("batch_dims other than 0")
    axis = int(ctx.options.get("axis", 0)) % len(ctx.input_shape(0))
    ctx.add_node("Gather", [ctx.input(0), ctx.input(1)], [ctx.output(0)], {"axis": axis}, domain="")
