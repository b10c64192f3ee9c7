"""TFLite converters for element-wise arithmetic, activations, softmax and batch matmul.

Every converter reads the operator's quantization parameters, computes the integer attributes with
``lowbit.quant.prepare_elementwise`` (TFLite's Prepare arithmetic) and adds one ``lowbit.int`` node:

    ADD, SUB -> Add, Sub          MUL -> Mul          SQUARED_DIFFERENCE -> SquaredDifference (int8)
    RSQRT -> Rsqrt (int8) | Lut (int16)               SOFTMAX -> Softmax
    TANH, LOGISTIC -> Lut (int8) | Tanh, Logistic (int16)
    GELU, EXP, LOG -> Lut         ELU -> Lut (int8)   HARD_SWISH -> HardSwish (int8)
    RELU, RELU_N1_TO_1, RELU_0_TO_1 -> Relu           RELU6 -> Relu6          LEAKY_RELU -> LeakyRelu
    BATCH_MATMUL -> BatchMatMul
    NEG of a dequantized tensor (the float island the int8 converter leaves in Keras LayerNormalization) ->
        Dequantize with the scale negated (-(s (q - zp)) is exactly (-s) (q - zp) in float)

Operators TFLite's own kernels reject (e.g. int16 SQUARED_DIFFERENCE, int16 HARD_SWISH) are reported as
unsupported with the reason.
"""
from __future__ import annotations

import math

from lowbit.graph.tflite.reader import ImportContext, tflite_op
from lowbit.quant import prepare_elementwise as prep
from lowbit.runtime.registry import INT_DOMAIN


def _prepared(ctx: ImportContext, fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except prep.PrepareError as e:
        ctx.unsupported(str(e))


def _unary(ctx: ImportContext, op_type: str, attrs: dict) -> None:
    ctx.add_node(op_type, [ctx.input(0)], [ctx.output(0)], attrs)


def _is_pot(spec) -> bool:
    return prep.checked_log2(float(spec.scale))[0]


@tflite_op("ADD", "SUB")
def add_sub(ctx: ImportContext) -> None:
    ctx.require_quantized(inputs=(0, 1))
    a, b, out = ctx.input_quant(0), ctx.input_quant(1), ctx.output_quant(0)
    if out.bits == 16 and ctx.options.get("pot_scale_int16", True) and all(_is_pot(s) for s in (a, b, out)):
        ctx.unsupported("the int16 power-of-two-scale path (pot_scale_int16, used by LSTM cells) is not "
                        "implemented")
    act_min, act_max = ctx.activation_range()
    if ctx.op_name == "ADD":
        attrs = _prepared(ctx, prep.prepare_add, a, b, out, act_min, act_max)
    else:
        attrs = _prepared(ctx, prep.prepare_sub, a, b, out, act_min, act_max)
    ctx.add_node("Add" if ctx.op_name == "ADD" else "Sub", [ctx.input(0), ctx.input(1)], [ctx.output(0)], attrs)


@tflite_op("MUL")
def mul(ctx: ImportContext) -> None:
    ctx.require_quantized(inputs=(0, 1))
    a, b, out = ctx.input_quant(0), ctx.input_quant(1), ctx.output_quant(0)
    if a.bits != out.bits:
        ctx.unsupported(f"MUL with {a.describe()} inputs and {out.describe()} output is not supported")
    act_min, act_max = ctx.activation_range()
    attrs = _prepared(ctx, prep.prepare_mul, a, b, out, act_min, act_max)
    ctx.add_node("Mul", [ctx.input(0), ctx.input(1)], [ctx.output(0)], attrs)


@tflite_op("SQUARED_DIFFERENCE")
def squared_difference(ctx: ImportContext) -> None:
    ctx.require_quantized(inputs=(0, 1))
    attrs = _prepared(ctx, prep.prepare_squared_difference, ctx.input_quant(0), ctx.input_quant(1),
                      ctx.output_quant(0))
    ctx.add_node("SquaredDifference", [ctx.input(0), ctx.input(1)], [ctx.output(0)], attrs)


@tflite_op("RSQRT")
def rsqrt(ctx: ImportContext) -> None:
    ctx.require_quantized()
    op_type, attrs = _prepared(ctx, prep.prepare_rsqrt, ctx.input_quant(0), ctx.output_quant(0))
    _unary(ctx, op_type, attrs)


@tflite_op("SOFTMAX")
def softmax(ctx: ImportContext) -> None:
    ctx.require_quantized()
    attrs = _prepared(ctx, prep.prepare_softmax, ctx.input_quant(0), ctx.output_quant(0),
                      float(ctx.options.get("beta", 1.0)))
    _unary(ctx, "Softmax", {"axis": -1, **attrs})


@tflite_op("TANH", "LOGISTIC")
def tanh_logistic(ctx: ImportContext) -> None:
    ctx.require_quantized()
    fn = prep.prepare_tanh if ctx.op_name == "TANH" else prep.prepare_logistic
    op_type, attrs = _prepared(ctx, fn, ctx.input_quant(0), ctx.output_quant(0))
    _unary(ctx, op_type, attrs)


@tflite_op("GELU")
def gelu(ctx: ImportContext) -> None:
    ctx.require_quantized()
    attrs = _prepared(ctx, prep.prepare_gelu, ctx.input_quant(0), ctx.output_quant(0),
                      bool(ctx.options.get("approximate", False)))
    _unary(ctx, "Lut", attrs)


@tflite_op("EXP", "LOG", "ELU")
def exp_log_elu(ctx: ImportContext) -> None:
    ctx.require_quantized()
    fn = {"EXP": prep.prepare_exp, "LOG": prep.prepare_log, "ELU": prep.prepare_elu}[ctx.op_name]
    _unary(ctx, "Lut", _prepared(ctx, fn, ctx.input_quant(0), ctx.output_quant(0)))


_RELU_BOUNDS = {"RELU": (0.0, math.inf), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0),
                "RELU_0_TO_1": (0.0, 1.0)}


@tflite_op(*_RELU_BOUNDS)
def relu(ctx: ImportContext) -> None:
    ctx.require_quantized()
    x, out = ctx.input_quant(0), ctx.output_quant(0)
    if x.bits == 16 and ctx.op_name in ("RELU_N1_TO_1", "RELU_0_TO_1"):
        ctx.unsupported(f"TFLite's {ctx.op_name} kernel has no int16 path")
    lo, hi = _RELU_BOUNDS[ctx.op_name]
    attrs = _prepared(ctx, prep.prepare_relu, x, out, lo, hi)
    _unary(ctx, "Relu6" if ctx.op_name == "RELU6" else "Relu", attrs)


@tflite_op("LEAKY_RELU")
def leaky_relu(ctx: ImportContext) -> None:
    ctx.require_quantized()
    attrs = _prepared(ctx, prep.prepare_leaky_relu, ctx.input_quant(0), ctx.output_quant(0),
                      float(ctx.options.get("alpha", 0.2)))
    _unary(ctx, "LeakyRelu", attrs)


@tflite_op("HARD_SWISH")
def hard_swish(ctx: ImportContext) -> None:
    ctx.require_quantized()
    _unary(ctx, "HardSwish", _prepared(ctx, prep.prepare_hard_swish, ctx.input_quant(0), ctx.output_quant(0)))


@tflite_op("BATCH_MATMUL")
def batch_matmul(ctx: ImportContext) -> None:
    ctx.require_quantized(inputs=(0, 1))
    a, b, out = ctx.input_quant(0), ctx.input_quant(1), ctx.output_quant(0)
    attrs = _prepared(ctx, prep.prepare_batch_matmul, a, b, out, bool(ctx.options.get("adj_x", False)),
                      bool(ctx.options.get("adj_y", False)))
    ctx.add_node("BatchMatMul", [ctx.input(0), ctx.input(1)], [ctx.output(0)], attrs)


@tflite_op("NEG")
def neg(ctx: ImportContext) -> None:
    """Only the float NEG of a DEQUANTIZE output is imported: LiteRT computes float32(double(s) (q - zp)) and
    negates it, which equals Dequantize with scale -s bit for bit (rounding to float32 is symmetric)."""
    x = ctx.input(0)
    src = x.producer
    if (ctx.input_dtype(0).kind == "f" and src is not None and src.domain == INT_DOMAIN
            and src.op_type == "Dequantize"):
        attrs = dict(src.attrs)
        attrs["scale"] = -float(attrs["scale"])
        ctx.add_node("Dequantize", [src.inputs[0]], [ctx.output(0)], attrs)
        return
    ctx.unsupported("NEG is imported only as the negation of a dequantized tensor (TFLite's int8 NEG negates "
                    "raw codes, which the converter does not emit)")
