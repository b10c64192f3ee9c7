"""The TFLite exporters, one per lowbit op (registered into ``tflite_writer.EXPORTERS``).

Integer ops (domain ``lowbit.int``), each the inverse of its converter in graph/tflite/ops_*.py:

    Conv -> CONV_2D | DEPTHWISE_CONV_2D        FullyConnected -> FULLY_CONNECTED   BatchMatMul -> BATCH_MATMUL
    Add, Sub, Mul, SquaredDifference -> ADD, SUB, MUL, SQUARED_DIFFERENCE         Rsqrt -> RSQRT
    MaxPool, AvgPool -> MAX_POOL_2D, AVERAGE_POOL_2D                               Mean -> MEAN
    Softmax -> SOFTMAX (beta recovered)        Lut -> TANH | LOGISTIC | GELU | EXP | LOG | ELU | RSQRT (by table)
    Tanh, Logistic (int16) -> TANH, LOGISTIC   Relu, Relu6 -> RELU | RELU6 | RELU_N1_TO_1 | RELU_0_TO_1
    LeakyRelu -> LEAKY_RELU (alpha recovered)  HardSwish -> HARD_SWISH
    Quantize, Requantize -> QUANTIZE           Dequantize -> DEQUANTIZE (a negated scale: DEQUANTIZE + NEG)

Data movement and float islands are in tflite_writer_movement.py: Reshape, Flatten, Squeeze, Unsqueeze, Identity -> RESHAPE;
Transpose; Concat -> CONCATENATION; Pad -> PAD | PADV2; Slice -> STRIDED_SLICE; Gather; Split -> SPLIT_V;
Expand -> BROADCAST_TO; Tile; GlobalMaxPool -> REDUCE_MAX. Float islands: the element-wise float ops with a
TFLite float builtin (ADD, SUB, MUL, DIV, MAXIMUM, MINIMUM, RELU, LOGISTIC, TANH, EXP, LOG, SQRT, ABS, NEG, ELU,
GELU, LEAKY_RELU, HARD_SWISH, SOFTMAX) and LRN -> LOCAL_RESPONSE_NORMALIZATION (between float TRANSPOSEs: ONNX
LRN runs over axis 1, TFLite's over the last axis).
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.graph.ir import Node, Value
from lowbit.graph.tflite.ops_linear import _same_pads
from lowbit.quant import prepare_elementwise as pe
from lowbit.quant import prepare_linear as pl
from lowbit.quant.spec import QuantSpec, bias_spec
from lowbit.targets.tflite_writer import TfliteWriter, exporter

PADDING = {"SAME": 0, "VALID": 1}
F32 = np.float32


# --- helpers -------------------------------------------------------------------------------------------------
def _spec(w: TfliteWriter, v: Value, what: str) -> QuantSpec:
    if v.dtype is None or np.dtype(v.dtype) not in (np.int8, np.int16) or v.quant is None:
        w.fail(f"{what} '{v.name}' must be a quantized int8 or int16 tensor, got "
               f"{v.dtype}{'' if v.quant is not None else ' without quantization'}")
    if v.quant.per_channel:
        w.fail(f"{what} '{v.name}' is quantized per channel; TFLite activations are quantized per tensor")
    return v.quant


def _same_quant(a: QuantSpec | None, b: QuantSpec | None) -> bool:
    if a is None or b is None:
        return a is b
    return (a.bits == b.bits and np.array_equal(np.asarray(a.scale, F32), np.asarray(b.scale, F32))
            and np.array_equal(np.asarray(a.zero_point), np.asarray(b.zero_point)))


def _require_same_quant(w: TfliteWriter, x: Value, y: Value, op: str) -> None:
    if not _same_quant(x.quant, y.quant):
        w.fail(f"TFLite's {op} copies codes, so input '{x.name}' ({_describe(x.quant)}) and output '{y.name}' "
               f"({_describe(y.quant)}) must share one quantization")


def _describe(q: QuantSpec | None) -> str:
    return "no quantization" if q is None else q.describe()


def _static(w: TfliteWriter, v: Value) -> tuple[int, ...]:
    if v.shape is None or not v.is_static:
        w.fail(f"value '{v.name}' has no static shape ({v.shape})")
    return tuple(int(d) for d in v.shape)


def _const(w: TfliteWriter, node: Node, i: int, what: str) -> np.ndarray:
    c = node.const_input(i)
    if c is None:
        w.fail(f"{what} (input {i}) must be a constant tensor")
    return c


def _nhwc(node: Node, shape) -> tuple[int, int, int, int]:
    """(N, H, W, C) of a spatial op's input (a 1-D NCHW conv input [N, C, L] counts as height 1)."""
    if len(shape) == 3:
        return (shape[0], 1, shape[2], shape[1]) if node.attrs.get("layout", "NCHW") == "NCHW" else \
            (shape[0], 1, shape[1], shape[2])
    if node.attrs.get("layout", "NCHW") == "NCHW":
        return shape[0], shape[2], shape[3], shape[1]
    return tuple(shape)


def _two(values, default, n_spatial: int) -> list[int]:
    v = [int(x) for x in (values or [default] * n_spatial)]
    return [1] * (2 - len(v)) + v if len(v) < 2 else v


def _pads4(node: Node) -> list[int]:
    p = [int(x) for x in (node.attrs.get("pads") or [0, 0, 0, 0])]
    return [0, p[0], 0, p[1]] if len(p) == 2 else p


def _padding(hw, kernel, strides, dilations, pads) -> str | None:
    """"SAME" / "VALID" when TFLite's padding of that name gives exactly ``pads`` [t, l, b, r], else None."""
    t, l, b, r = pads
    if (t, l, b, r) == (0, 0, 0, 0):
        return "VALID"
    same = [_same_pads(hw[i], kernel[i], strides[i], dilations[i], "SAME") for i in range(2)]
    if (t, b) == same[0][:2] and (l, r) == same[1][:2]:
        return "SAME"
    return None


def _pad_input(w: TfliteWriter, x: Value, xi: int, shape4, pads, value: int) -> int:
    """PAD (value = zero point) or PADV2 (any other value) of the NHWC tensor ``xi`` by pads [t, l, b, r]."""
    t, l, b, r = pads
    n, h, wd, c = shape4
    out = w.new_tensor(f"{x.name}_padded", (n, h + t + b, wd + l + r, c), x.dtype, x.quant)
    paddings = w.int32(f"{x.name}_paddings", [[0, 0], [t, b], [l, r], [0, 0]])
    if value == int(x.quant.zero_point):
        w.op("PAD", [xi, paddings], [out], "PadOptions")
    else:
        v = w.const(f"{x.name}_pad_value", np.asarray([value], x.dtype).reshape(()), x.quant)
        w.op("PADV2", [xi, paddings, v], [out], "PadV2Options")
    return out


def _accumulator(w: TfliteWriter, node: Node, x: Value, b: Value | None, depthwise: bool = False) -> str:
    """The accumulator TFLite picks (the importer's rule, reversed) and the bias dtype that makes it pick the
    node's: int8 inputs accumulate in int32; int16 inputs in int64, or int32 with an int32 bias (not depthwise)."""
    acc = node.attrs.get("accumulator", "int32")
    if np.dtype(x.dtype) == np.int8:
        if acc != "int32":
            w.fail(f"TFLite accumulates int8 {node.op_type} in int32, the node in {acc}")
        return "int32"
    if acc == "int32" and depthwise:
        w.fail("TFLite's 16x8 DEPTHWISE_CONV_2D accumulates in int64 (int64 bias), the node in int32")
    return acc


def _bias(w: TfliteWriter, name: str, values: np.ndarray | None, xq: QuantSpec, wq: QuantSpec, n: int,
          acc: str) -> int:
    """The bias tensor: int32, or int64 for an int64 accumulator. A node without bias gets zeros: LiteRT's
    convolutions require the bias input, and with int16 inputs its type selects the accumulator."""
    dtype = np.int64 if acc == "int64" else np.int32
    if values is None:
        values = np.zeros(n, np.int64)
    if values.size != n:
        w.fail(f"bias has {values.size} values for {n} output channels")
    info = np.iinfo(dtype)
    if values.size and (values.min() < info.min or values.max() > info.max):
        w.fail(f"bias values exceed {np.dtype(dtype).name}")
    spec = bias_spec(float(F32(float(xq.scale))), wq, 64 if acc == "int64" else 32)
    return w.const(name, values.astype(dtype), spec, qdim=0)


def _weights(w: TfliteWriter, node: Node, wv: Value, what: str) -> QuantSpec:
    if wv.const is None:
        w.fail(f"{what} weights '{wv.name}' are not constant (TFLite needs constant filters)")
    q = wv.quant
    if q is None or wv.const.dtype != np.int8 or q.bits not in (4, 8):
        bits = None if q is None else q.bits
        w.fail(f"{what} weights must be int8 or int4 (TFLite has no {bits}-bit-weight kernel), got "
               f"{wv.const.dtype} {'' if q is None else q.describe()}")
    if np.any(np.asarray(q.zero_point) != 0):
        w.fail(f"{what} weights must be symmetric (zero point 0)")
    if q.per_channel and q.axis != 0:
        w.fail(f"{what} weights are quantized per channel along axis {q.axis}; TFLite needs the output-channel "
               f"axis (0)")
    return q


def _act_range(node: Node, spec: QuantSpec) -> tuple[int, int]:
    info = np.iinfo(spec.dtype)
    lo, hi = node.attrs.get("act_min"), node.attrs.get("act_max")
    return int(info.min if lo is None else lo), int(info.max if hi is None else hi)


def _prepared(w: TfliteWriter, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (pe.PrepareError, ValueError) as e:
        w.fail(f"TFLite's Prepare refuses these scales: {e}")


def _f32_neighbours(guess: float, steps: int = 24):
    """float32 values around ``guess``, nearest first."""
    if not math.isfinite(guess) or guess == 0:
        return []
    g = F32(guess)
    up, down, out = g, g, [float(g)]
    for _ in range(steps):
        up, down = np.nextafter(up, F32(np.inf)), np.nextafter(down, F32(-np.inf))
        out += [float(up), float(down)]
    return out


def _recover(w: TfliteWriter, node: Node, make, keys, guesses, what: str) -> float:
    """The float option (e.g. SOFTMAX beta) whose Prepare gives exactly the node's attributes ``keys``."""
    for g in guesses:
        for c in [g] if g == 1.0 else _f32_neighbours(g):
            try:
                attrs = make(c)
            except (pe.PrepareError, ValueError):
                continue
            if all(np.array_equal(np.asarray(node.attrs.get(k)), np.asarray(attrs[k])) for k in keys):
                return c
    w.fail(f"no {what} makes TFLite's Prepare reproduce the node's {', '.join(keys)}")


def _real(multiplier: int, shift: int) -> float:
    return float(multiplier) * 2.0 ** (int(shift) - 31)


# --- convolution, fully connected, batch matmul ----------------------------------------------------------------
@exporter("Conv")
def conv(w: TfliteWriter, node: Node) -> None:
    """CONV_2D (group 1, and grouped: LiteRT's reference kernel runs groups natively; with the writer's
    ``grouped_conv="split"``: SPLIT, one CONV_2D per group, CONCATENATION, for runtimes without grouped
    CONV_2D) or DEPTHWISE_CONV_2D (group == input channels, one input channel per group)."""
    x, wv, b, y = node.inputs[0], node.inputs[1], node.input(2), node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    wq = _weights(w, node, wv, "Conv")
    shape = _nhwc(node, _static(w, x))
    weights = wv.const if wv.const.ndim == 4 else wv.const[:, :, None, :]
    o, cg, kh, kw = weights.shape
    n_sp = 1 if wv.const.ndim == 3 else 2
    strides, dilations = _two(node.attrs.get("strides"), 1, n_sp), _two(node.attrs.get("dilations"), 1, n_sp)
    pads = _pads4(node) if n_sp == 2 else [0, int(_pads4(node)[1]), 0, int(_pads4(node)[3])]
    group, c = int(node.attrs.get("group", 1)), shape[3]
    if c != cg * group or o % group:
        w.fail(f"input channels {c}, weights {list(weights.shape)} and group {group} do not match")
    depthwise = group > 1 and cg == 1 and group == c
    acc = _accumulator(w, node, x, b, depthwise)
    act_min, act_max = _act_range(node, yq)
    expected = _prepared(w, pl.prepare_conv, xq, wq, yq, act_min, act_max, acc, "double")
    w.expect(node, expected, ("input_offset", "output_offset", "multiplier", "shift", "rounding"))
    bias = None if b is None else _const(w, node, 2, "the bias").reshape(-1).astype(np.int64)
    int16_in = np.dtype(x.dtype) == np.int16
    xi = w.tensor(x)
    padding = _padding(shape[1:3], (kh, kw), strides, dilations, pads)
    if padding is None:
        xi = _pad_input(w, x, xi, shape, pads, int(xq.zero_point))
        padding = "VALID"
    geometry = dict(Padding=PADDING[padding], StrideW=strides[1], StrideH=strides[0],
                    DilationWFactor=dilations[1], DilationHFactor=dilations[0])
    bias_name = b.name if b is not None else f"{node.name}_bias"
    if depthwise:
        # LiteRT's 16x8 depthwise kernel reads an INT4 filter as if it were int8: write those weights as int8
        int8_filter = wq.bits == 4 and int16_in
        if int8_filter:
            w.notes.append(f"{node.describe()}: int4 weights written as int8 (LiteRT's 16x8 DEPTHWISE_CONV_2D "
                           f"does not unpack INT4)")
        filt = w.const(wv.name, weights[:, 0].transpose(1, 2, 0)[None], wq, qdim=3,
                       type_name="INT8" if int8_filter else None)
        bi = _bias(w, bias_name, bias, xq, wq, o, acc)
        w.with_activation("DEPTHWISE_CONV_2D", [xi, filt, bi], y, act_min, act_max, "DepthwiseConv2DOptions",
                          DepthMultiplier=o // c, **geometry)
        return
    if group == 1 or w.grouped_conv == "native":
        filt = w.const(wv.name, weights.transpose(0, 2, 3, 1), wq, qdim=0)
        bi = _bias(w, bias_name, bias, xq, wq, o, acc)
        w.with_activation("CONV_2D", [xi, filt, bi], y, act_min, act_max, "Conv2DOptions", **geometry)
        return
    og, y_shape = o // group, _nhwc(node, _static(w, y))
    pieces = [w.new_tensor(f"{x.name}_group{i}", shape[:3] + (cg,), x.dtype, xq) for i in range(group)]
    w.op("SPLIT", [w.const(f"{node.name}_split_axis", np.asarray(3, np.int32)), xi], pieces, "SplitOptions",
         NumSplits=group)
    outs = []
    for i, piece in enumerate(pieces):
        part = slice(i * og, (i + 1) * og)
        wq_i = _channel_slice(wq, part)
        filt = w.const(f"{wv.name}_group{i}", weights[part].transpose(0, 2, 3, 1), wq_i, qdim=0)
        bi = _bias(w, f"{bias_name}_group{i}", None if bias is None else bias[part], xq, wq_i, og, acc)
        out = w.new_tensor(f"{y.name}_group{i}", y_shape[:3] + (og,), y.dtype, yq)
        w.emit("CONV_2D", [piece, filt, bi], out, yq, y.dtype, y_shape[:3] + (og,), act_min, act_max,
               "Conv2DOptions", **geometry)
        outs.append(out)
    w.op("CONCATENATION", outs, [w.tensor(y)], "ConcatenationOptions", Axis=3, FusedActivationFunction=0)


def _channel_slice(q: QuantSpec, part: slice) -> QuantSpec:
    if not q.per_channel:
        return q
    return QuantSpec(q.bits, q.scale[part], q.zero_point[part], q.axis, q.narrow, q.signed)


@exporter("FullyConnected")
def fully_connected(w: TfliteWriter, node: Node) -> None:
    x, wv, b, y = node.inputs[0], node.inputs[1], node.input(2), node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    wq = _weights(w, node, wv, "FullyConnected")
    n, k = wv.const.shape
    xs = _static(w, x)
    if xs[-1] != k or _static(w, y) != xs[:-1] + (n,):
        w.fail(f"input {list(xs)} and weights [{n}, {k}] do not give output {list(y.shape)}")
    acc = _accumulator(w, node, x, b)
    act_min, act_max = _act_range(node, yq)
    requant = node.attrs.get("requant", "multiplier")
    expected = _prepared(w, pl.prepare_fully_connected, xq, wq, yq, act_min, act_max, acc, "double", requant)
    keys = ["input_offset", "output_offset", "multiplier", "shift", "rounding"]
    w.expect(node, expected, keys + (["effective_scale"] if requant == "float64" else []))
    filt = w.const(wv.name, wv.const, wq, qdim=0)
    bias = None if b is None else _const(w, node, 2, "the bias").reshape(-1).astype(np.int64)
    bi = _bias(w, b.name if b is not None else f"{node.name}_bias", bias, xq, wq, n, acc)
    w.with_activation("FULLY_CONNECTED", [w.tensor(x), filt, bi], y, act_min, act_max, "FullyConnectedOptions",
                      KeepNumDims=len(xs) != 2)


@exporter("BatchMatMul")
def batch_matmul(w: TfliteWriter, node: Node) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    aq, bq, yq = _spec(w, a, "input 0"), _spec(w, b, "input 1"), _spec(w, y, "output")
    adj_x, adj_y = bool(node.attrs.get("adj_x", 0)), bool(node.attrs.get("adj_y", 0))
    expected = _prepared(w, pe.prepare_batch_matmul, aq, bq, yq, adj_x, adj_y)
    w.expect(node, expected)
    if max(len(_static(w, a)), len(_static(w, b))) > 5:
        w.fail("TFLite's BATCH_MATMUL takes operands of rank 5 at most")
    w.op("BATCH_MATMUL", [w.tensor(a), w.tensor(b)], [w.tensor(y)], "BatchMatMulOptions", AdjX=adj_x, AdjY=adj_y)


# --- element-wise arithmetic -------------------------------------------------------------------------------------
@exporter("Add", "Sub")
def add_sub(w: TfliteWriter, node: Node) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    aq, bq, yq = _spec(w, a, "input 0"), _spec(w, b, "input 1"), _spec(w, y, "output")
    act_min, act_max = _act_range(node, yq)
    prepare = pe.prepare_add if node.op_type == "Add" else pe.prepare_sub
    w.expect(node, _prepared(w, prepare, aq, bq, yq, act_min, act_max))
    builtin = node.op_type.upper()
    # pot_scale_int16 = false selects TFLite's general int16 path (left shift 15), which lowbit implements
    w.with_activation(builtin, [w.tensor(a), w.tensor(b)], y, act_min, act_max, f"{node.op_type}Options",
                      PotScaleInt16=False)


@exporter("Mul")
def mul(w: TfliteWriter, node: Node) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    aq, bq, yq = _spec(w, a, "input 0"), _spec(w, b, "input 1"), _spec(w, y, "output")
    act_min, act_max = _act_range(node, yq)
    w.expect(node, _prepared(w, pe.prepare_mul, aq, bq, yq, act_min, act_max))
    w.with_activation("MUL", [w.tensor(a), w.tensor(b)], y, act_min, act_max, "MulOptions")


@exporter("SquaredDifference")
def squared_difference(w: TfliteWriter, node: Node) -> None:
    a, b, y = node.inputs[0], node.inputs[1], node.outputs[0]
    aq, bq, yq = _spec(w, a, "input 0"), _spec(w, b, "input 1"), _spec(w, y, "output")
    w.expect(node, _prepared(w, pe.prepare_squared_difference, aq, bq, yq))
    w.op("SQUARED_DIFFERENCE", [w.tensor(a), w.tensor(b)], [w.tensor(y)])


@exporter("Rsqrt")
def rsqrt(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    op, attrs = _prepared(w, pe.prepare_rsqrt, _spec(w, x, "input"), _spec(w, y, "output"))
    if op != "Rsqrt":
        w.fail("int16 RSQRT is a Lut in lowbit")
    w.expect(node, attrs)
    w.op("RSQRT", [w.tensor(x)], [w.tensor(y)])


# --- pooling and mean --------------------------------------------------------------------------------------------
def pool_geometry(node: Node, shape4) -> tuple[list[int], list[int], list[int], str | None]:
    """(kernel, strides, pads, TFLite padding or None) of a pool on an NHWC input of ``shape4``.

    A spatial axis with a single window covering the whole axis (a global pool written with a kernel larger
    than the input, or with pads) becomes kernel = axis size, stride 1, no pads: the same cells, read by a
    VALID window TFLite accepts."""
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    strides, pads = _two(node.attrs.get("strides"), 1, 2), _pads4(node)
    for i in range(2):
        n = shape4[1 + i]
        out = (n + pads[i] + pads[i + 2] - kernel[i]) // strides[i] + 1
        if out == 1 and pads[i] >= 0 and kernel[i] - pads[i] >= n:
            kernel[i], strides[i], pads[i], pads[i + 2] = n, 1, 0, 0
    return kernel, strides, pads, _padding(shape4[1:3], kernel, strides, (1, 1), pads)


def _pool(w: TfliteWriter, node: Node, builtin: str) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _spec(w, x, "input")
    yq = _spec(w, y, "output")
    _require_same_quant(w, x, y, builtin)
    shape = _nhwc(node, _static(w, x))
    kernel, strides, pads, padding = pool_geometry(node, shape)
    act_min, act_max = _act_range(node, yq)
    xi = w.tensor(x)
    if padding is None:
        if builtin == "AVERAGE_POOL_2D":
            w.fail(f"TFLite's AVERAGE_POOL_2D pads only SAME or VALID (averaging the cells inside the image); "
                   f"pads {pads} on a {shape[1]}x{shape[2]} input with kernel {kernel} and strides {strides} "
                   f"have no exact TFLite form")
        xi = _pad_input(w, x, xi, shape, pads, int(np.iinfo(x.dtype).min))  # never wins a max
        padding = "VALID"
    w.with_activation(builtin, [xi], y, act_min, act_max, "Pool2DOptions", Padding=PADDING[padding],
                      StrideW=strides[1], StrideH=strides[0], FilterWidth=kernel[1], FilterHeight=kernel[0])


@exporter("MaxPool")
def max_pool(w: TfliteWriter, node: Node) -> None:
    _pool(w, node, "MAX_POOL_2D")


@exporter("AvgPool")
def avg_pool(w: TfliteWriter, node: Node) -> None:
    _pool(w, node, "AVERAGE_POOL_2D")


@exporter("Mean")
def mean(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    w.expect(node, _prepared(w, pl.prepare_mean, xq, yq),
             ("input_offset", "output_offset", "multiplier", "shift", "rounding"))
    rank = len(_static(w, x))
    axes = node.attrs.get("axes")
    axes = list(range(rank)) if not axes else sorted({int(a) % rank for a in axes})
    w.op("MEAN", [w.tensor(x), w.int32(f"{y.name}_axes", axes)], [w.tensor(y)], "ReducerOptions",
         KeepDims=bool(node.attrs.get("keepdims", 1)))


# --- activations -------------------------------------------------------------------------------------------------
@exporter("Softmax")
def softmax(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    rank = len(_static(w, x))
    if int(node.attrs.get("axis", -1)) % rank != rank - 1:
        w.fail(f"TFLite's SOFTMAX runs over the last axis, the node over axis {node.attrs.get('axis')}")
    if node.attrs.get("exp_cutoff"):
        if w.softmax_cutoff != "drop":
            w.fail("exp_cutoff=1 (lowbit's exact-zero tail) is not TFLite's SOFTMAX, which clamps exp at a "
                   "difference of -10; lower with output_softmax='tflite'")
        w.notes.append(f"{node.describe()}: lowbit's exact-zero softmax tail dropped (TFLite's SOFTMAX clamps)")
    real = _real(node.attrs["input_multiplier"], node.attrs["input_left_shift"])
    s_in = float(F32(float(xq.scale)))
    guess = real / (s_in * 2.0 ** 26) if xq.bits == 8 else real * (10.0 / 65535.0) / s_in
    keys = [k for k in ("input_multiplier", "input_left_shift", "diff_min", "exp_table", "one_over_one_plus_x_table")
            if k in node.attrs]
    beta = _recover(w, node, lambda beta: pe.prepare_softmax(xq, yq, beta), keys, [1.0, guess], "SOFTMAX beta")
    w.op("SOFTMAX", [w.tensor(x)], [w.tensor(y)], "SoftmaxOptions", Beta=beta)


def _fixed_output(prepare, scale: float, zero_point: int):
    """``prepare`` refusing an output spec other than TFLite's fixed one for that op (int8 TANH, LOGISTIC)."""
    def checked(i: QuantSpec, o: QuantSpec):
        if float(F32(float(o.scale))) != scale or int(o.zero_point) != zero_point:
            raise pe.PrepareError(f"output must be quantized with scale {scale} and zero point {zero_point}")
        return prepare(i, o)[1]
    return checked


def _lut_candidates(bits: int):
    """(builtin, options, fields, prepare(in, out) -> attrs) for every TFLite op lowbit holds as a Lut."""
    gelu = lambda approx: ("GELU", "GeluOptions", {"Approximate": approx},
                           lambda i, o: pe.prepare_gelu(i, o, approx))
    common = [gelu(False), gelu(True), ("EXP", None, {}, pe.prepare_exp), ("LOG", None, {}, pe.prepare_log)]
    if bits == 8:
        return [("TANH", None, {}, _fixed_output(pe.prepare_tanh, 1 / 128, 0)),
                ("LOGISTIC", None, {}, _fixed_output(pe.prepare_logistic, 1 / 256, -128)),
                *common, ("ELU", None, {}, pe.prepare_elu)]
    return [*common, ("RSQRT", None, {}, lambda i, o: pe.prepare_rsqrt(i, o)[1])]


def lut_builtin(node: Node) -> tuple[str, str | None, dict] | None:
    """(builtin, options, fields) of the TFLite op whose table (built by TFLite from the tensors' scales) is
    exactly the Lut node's table, or None."""
    x, y = node.inputs[0], node.outputs[0]
    table = node.attrs.get("table")
    if x.quant is None or y.quant is None or table is None or x.quant.per_channel or y.quant.per_channel:
        return None
    table = np.asarray(table)
    for builtin, options, fields, prepare in _lut_candidates(x.quant.bits):
        try:
            got = np.asarray(prepare(x.quant, y.quant)["table"])
        except (pe.PrepareError, ValueError):
            continue
        if got.shape == table.shape and np.array_equal(got.astype(np.int64), table.astype(np.int64)):
            return builtin, options, fields
    return None


@exporter("Lut")
def lut(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    _spec(w, x, "input"), _spec(w, y, "output")
    found = lut_builtin(node)
    if found is None:
        names = ", ".join(c[0] for c in _lut_candidates(x.quant.bits))
        w.fail(f"its lookup table is not the table TFLite builds for any of {names} on these scales; TFLite "
               f"computes its tables itself and cannot hold a custom one")
    builtin, options, fields = found
    w.op(builtin, [w.tensor(x)], [w.tensor(y)], options, **fields)


@exporter("Tanh", "Logistic")
def tanh_logistic(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    prepare = pe.prepare_tanh if node.op_type == "Tanh" else pe.prepare_logistic
    op, attrs = _prepared(w, prepare, _spec(w, x, "input"), _spec(w, y, "output"))
    if op != node.op_type:
        w.fail(f"TFLite's {node.op_type.upper()} on these types is a table (a Lut in lowbit)")
    w.expect(node, attrs)
    w.op(node.op_type.upper(), [w.tensor(x)], [w.tensor(y)])


_RELUS = (("RELU", 0.0, math.inf), ("RELU6", 0.0, 6.0), ("RELU_N1_TO_1", -1.0, 1.0), ("RELU_0_TO_1", 0.0, 1.0))


@exporter("Relu", "Relu6")
def relu(w: TfliteWriter, node: Node) -> None:
    """RELU / RELU6 / RELU_N1_TO_1 / RELU_0_TO_1 when one of them has exactly the node's clamp; otherwise
    LEAKY_RELU with alpha 1 (the same requantization, clamped only to the type) and MAXIMUM/MINIMUM."""
    x, y = node.inputs[0], node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    keys = ("input_offset", "output_offset", "multiplier", "shift", "act_min", "act_max")
    for builtin, lo, hi in sorted(_RELUS, key=lambda r: r[0] != node.op_type.upper()):
        if xq.bits == 16 and builtin in ("RELU_N1_TO_1", "RELU_0_TO_1"):
            continue
        attrs = _prepared(w, pe.prepare_relu, xq, yq, lo, hi)
        if all(_eq(node.attrs.get(k), attrs[k]) for k in keys) and node.attrs.get("rounding", "double") == "double":
            w.op(builtin, [w.tensor(x)], [w.tensor(y)])
            return
    w.expect(node, {**_prepared(w, pe.prepare_relu, xq, yq), "rounding": "double"},
             ("input_offset", "output_offset", "multiplier", "shift", "rounding"))
    leaky = _prepared(w, pe.prepare_leaky_relu, xq, yq, 1.0)
    if (leaky["identity_multiplier"], leaky["identity_shift"]) != (node.attrs["multiplier"], node.attrs["shift"]):
        w.fail("no TFLite activation reproduces this clamped requantization")
    tmp = w.new_tensor(f"{y.name}_unclamped", _static(w, y), y.dtype, yq)
    w.op("LEAKY_RELU", [w.tensor(x)], [tmp], "LeakyReluOptions", Alpha=1.0)
    w.clamp(tmp, w.tensor(y), yq, y.dtype, int(node.attrs["act_min"]), int(node.attrs["act_max"]), y.shape)


def _eq(a, b) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b))


@exporter("LeakyRelu")
def leaky_relu(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xq, yq = _spec(w, x, "input"), _spec(w, y, "output")
    a = node.attrs
    guess = _real(a["alpha_multiplier"], a["alpha_shift"]) * float(F32(float(yq.scale))) / float(F32(float(xq.scale)))
    keys = ["input_offset", "output_offset", "identity_multiplier", "identity_shift", "alpha_multiplier",
            "alpha_shift"]
    alpha = _recover(w, node, lambda al: pe.prepare_leaky_relu(xq, yq, al), keys, [guess], "LEAKY_RELU alpha")
    w.op("LEAKY_RELU", [w.tensor(x)], [w.tensor(y)], "LeakyReluOptions", Alpha=alpha)


@exporter("HardSwish")
def hard_swish(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    w.expect(node, _prepared(w, pe.prepare_hard_swish, _spec(w, x, "input"), _spec(w, y, "output")))
    w.op("HARD_SWISH", [w.tensor(x)], [w.tensor(y)])


# --- quantize / dequantize ---------------------------------------------------------------------------------------
@exporter("Quantize")
def quantize(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    if x.dtype is None or np.dtype(x.dtype) != np.float32:
        w.fail(f"TFLite's QUANTIZE reads float32, the node {x.dtype}")
    w.expect(node, _prepared(w, pl.prepare_quantize, _spec(w, y, "output")))
    w.op("QUANTIZE", [w.tensor(x)], [w.tensor(y)])


@exporter("Dequantize")
def dequantize(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    xq = _spec(w, x, "input")
    if y.dtype is None or np.dtype(y.dtype) != np.float32:
        w.fail(f"TFLite's DEQUANTIZE writes float32, the node {y.dtype}")
    expected = _prepared(w, pl.prepare_dequantize, xq)
    if float(node.attrs.get("scale", 0)) == -expected["scale"]:  # -(s (q - z)) is exactly (-s)(q - z) in float
        w.expect(node, {"zero_point": expected["zero_point"]})
        tmp = w.new_tensor(f"{y.name}_positive", _static(w, y), np.float32)
        w.op("DEQUANTIZE", [w.tensor(x)], [tmp])
        w.op("NEG", [tmp], [w.tensor(y)])
        return
    w.expect(node, expected)
    w.op("DEQUANTIZE", [w.tensor(x)], [w.tensor(y)])


@exporter("Requantize")
def requantize(w: TfliteWriter, node: Node) -> None:
    x, y = node.inputs[0], node.outputs[0]
    w.expect(node, _prepared(w, pl.prepare_requantize, _spec(w, x, "input"), _spec(w, y, "output")))
    w.op("QUANTIZE", [w.tensor(x)], [w.tensor(y)])
