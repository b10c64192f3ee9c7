"""Prepare (float -> integer parameters) for the linear, pooling and (re)quantization ops: Conv (incl.
depthwise/grouped), FullyConnected, MaxPool/AvgPool, Mean, Quantize, Dequantize, Requantize.

Each ``prepare_*`` returns exactly the attribute dict the integer kernel of that op takes (docs/integer_ir.md),
so the TFLite importer and lowbit's own float -> integer lowering produce the same nodes. The float arithmetic
follows TFLite's Prepare code, in TFLite's precision: scales are float32 in a .tflite file and TFLite widens
them to double before forming products and quotients (PopulateConvolutionQuantizationParams,
GetQuantizedConvolutionMultipler, the QUANTIZE/MEAN Prepare), so every scale is first rounded to float32 here.
"""
from __future__ import annotations

import numpy as np

from lowbit.quant.fixedpoint import quantize_multiplier, quantize_multipliers
from lowbit.quant.spec import QuantSpec

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _f32(x) -> np.ndarray:
    """Scales as TFLite stores them (float32), widened to float64 for the products TFLite forms in double."""
    return np.asarray(x, np.float32).astype(np.float64)


def _scalar_scale(spec: QuantSpec, what: str) -> float:
    if spec.per_channel:
        raise ValueError(f"{what} must be quantized per tensor, got {spec.describe()}")
    return float(_f32(spec.scale).reshape(-1)[0])


def _dtype_range(spec: QuantSpec) -> tuple[int, int]:
    info = np.iinfo(spec.dtype)
    return int(info.min), int(info.max)


def activation_range(output: QuantSpec, activation: str = "NONE") -> tuple[int, int]:
    """(act_min, act_max) for a fused activation on ``output`` (TFLite CalculateActivationRangeQuantized):
    bounds ``zp + round(f / scale)`` with the division and round in float32 (half away from zero), intersected
    with the dtype range. ``activation`` is one of NONE, RELU, RELU6, RELU_N1_TO_1."""
    lo, hi = _dtype_range(output)
    scale = np.float32(_scalar_scale(output, "the output of a fused activation"))
    zp = int(output.zero_point)

    def q(f: float) -> int:
        r = np.float32(np.float32(f) / scale)
        return zp + int(np.trunc(r + np.copysign(np.float32(0.5), r)))

    if activation == "NONE":
        return lo, hi
    if activation == "RELU":
        return max(lo, q(0.0)), hi
    if activation == "RELU6":
        return max(lo, q(0.0)), min(hi, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(lo, q(-1.0)), min(hi, q(1.0))
    raise ValueError(f"fused activation {activation!r} has no integer clamp; expected one of {ACTIVATIONS}")


def _default_accumulator(input_spec: QuantSpec) -> str:
    return "int64" if input_spec.bits == 16 else "int32"


def _effective_scales(input_spec: QuantSpec, weight_spec: QuantSpec, output_spec: QuantSpec) -> np.ndarray:
    """double(s_in) * double(s_w[c]) / double(s_out), per weight channel (one entry per tensor)."""
    s_in = _scalar_scale(input_spec, "the input")
    s_out = _scalar_scale(output_spec, "the output")
    return s_in * _f32(weight_spec.scale).reshape(-1) / s_out


def _linear_common(input_spec, weight_spec, output_spec, act_min, act_max, accumulator, rounding) -> dict:
    if np.any(np.asarray(weight_spec.zero_point) != 0):
        raise ValueError(f"weights must be symmetric (zero point 0), got {weight_spec.describe()} with zero "
                         f"points {np.unique(weight_spec.zero_point).tolist()}")
    if input_spec.bits == 16 and (int(input_spec.zero_point) != 0 or int(output_spec.zero_point) != 0):
        raise ValueError("int16 activations must be symmetric (zero point 0), as in TFLite's 16x8 mode")
    lo, hi = _dtype_range(output_spec)
    act_min, act_max = (lo if act_min is None else int(act_min)), (hi if act_max is None else int(act_max))
    if not lo <= act_min <= act_max <= hi:
        raise ValueError(f"activation range [{act_min}, {act_max}] must lie in the output range [{lo}, {hi}]")
    accumulator = accumulator or _default_accumulator(input_spec)
    if accumulator not in ("int32", "int64"):
        raise ValueError(f"accumulator must be 'int32' or 'int64', got {accumulator!r}")
    if rounding not in ("double", "single"):
        raise ValueError(f"rounding must be 'double' or 'single', got {rounding!r}")
    if output_spec.dtype.itemsize < input_spec.dtype.itemsize:
        raise ValueError(f"the output ({output_spec.describe()}) must be at least as wide as the input "
                         f"({input_spec.describe()})")
    multiplier, shift = quantize_multipliers(_effective_scales(input_spec, weight_spec, output_spec))
    attrs = {"input_offset": -int(input_spec.zero_point), "output_offset": int(output_spec.zero_point),
             "multiplier": multiplier, "shift": shift, "act_min": act_min, "act_max": act_max,
             "accumulator": accumulator, "rounding": rounding}
    if output_spec.dtype != input_spec.dtype:  # an int8 input rescaled to an int16 output (a LIF's current)
        attrs["to"] = output_spec.dtype.name
    return attrs


def prepare_conv(input_spec: QuantSpec, weight_spec: QuantSpec, output_spec: QuantSpec, act_min=None,
                 act_max=None, accumulator: str | None = None, rounding: str = "double") -> dict:
    """Integer attributes of a Conv (also depthwise / grouped): TFLite's PopulateConvolutionQuantizationParams.

    multiplier[c], shift[c] = quantize_multiplier(double(s_in) * double(s_w[c]) / double(s_out)), one per
    weight channel (a single entry for per-tensor weights; the kernel broadcasts it). ``act_min``/``act_max``
    default to the output dtype range; ``accumulator`` defaults to int64 for int16 inputs (TFLite 16x8 with
    int64 bias) and int32 otherwise.
    """
    return _linear_common(input_spec, weight_spec, output_spec, act_min, act_max, accumulator, rounding)


def prepare_fully_connected(input_spec: QuantSpec, weight_spec: QuantSpec, output_spec: QuantSpec,
                            act_min=None, act_max=None, accumulator: str | None = None, rounding: str = "double",
                            requant: str = "multiplier") -> dict:
    """Integer attributes of a FullyConnected.

    ``requant="multiplier"`` (default; integer-only, what TFLite's optimized kernels, TFLM and NPUs do): the
    rescale is multiplier[n]/shift[n] as for Conv. ``requant="float64"`` reproduces LiteRT's *reference*
    FULLY_CONNECTED kernel, which since 2025 rescales in double precision: the attributes then also carry
    ``effective_scale[n]`` = double(s_in) * double(s_w[n]) / double(s_out) (float64), and the kernel computes
    round_half_away(double(acc) * effective_scale[n]).
    """
    attrs = _linear_common(input_spec, weight_spec, output_spec, act_min, act_max, accumulator, rounding)
    if requant not in ("multiplier", "float64"):
        raise ValueError(f"requant must be 'multiplier' or 'float64', got {requant!r}")
    attrs["requant"] = requant
    if requant == "float64":
        attrs["effective_scale"] = _effective_scales(input_spec, weight_spec, output_spec)
    return attrs


def prepare_pool(output_spec: QuantSpec, activation: str = "NONE") -> dict:
    """MaxPool / AvgPool: no rescale (input and output share their quantization); only the clamp."""
    act_min, act_max = activation_range(output_spec, activation)
    return {"act_min": act_min, "act_max": act_max}


def prepare_mean(input_spec: QuantSpec, output_spec: QuantSpec, rounding: str = "double") -> dict:
    """Mean: multiplier/shift of double(s_in) / double(s_out) (TFLite PrepareMeanOrSum); the kernel folds
    1/num_elements into them at run time, in integers, as TFLite's QuantizedMeanOrSum does."""
    if input_spec.bits == 16 and (int(input_spec.zero_point) != 0 or int(output_spec.zero_point) != 0):
        raise ValueError("int16 Mean needs symmetric input and output (zero point 0)")
    m, s = quantize_multiplier(_scalar_scale(input_spec, "the Mean input")
                               / _scalar_scale(output_spec, "the Mean output"))
    return {"input_offset": -int(input_spec.zero_point), "output_offset": int(output_spec.zero_point),
            "multiplier": m, "shift": s, "rounding": rounding}


def _to(spec: QuantSpec) -> str:
    return spec.dtype.name


def prepare_quantize(output_spec: QuantSpec) -> dict:
    """Quantize (float -> integer): the output scale as float32 (TFLite divides in float32), zero point and
    the full range of the output dtype (TFLite's AffineQuantize clamps to the dtype, not a narrow range)."""
    lo, hi = _dtype_range(output_spec)
    return {"scale": float(_scalar_scale(output_spec, "the Quantize output")),
            "zero_point": int(output_spec.zero_point), "qmin": lo, "qmax": hi, "to": _to(output_spec)}


def prepare_dequantize(input_spec: QuantSpec) -> dict:
    """Dequantize: the input's float32 scale (applied in double, as TFLite does) and zero point."""
    return {"scale": float(_scalar_scale(input_spec, "the Dequantize input")),
            "zero_point": int(input_spec.zero_point)}


def prepare_requantize(input_spec: QuantSpec, output_spec: QuantSpec, rounding: str = "double") -> dict:
    """Requantize (integer -> integer, TFLite QUANTIZE on an integer input): multiplier/shift of
    double(s_in) / double(s_out), offsets, and the output dtype range as the clamp."""
    m, s = quantize_multiplier(_scalar_scale(input_spec, "the Requantize input")
                               / _scalar_scale(output_spec, "the Requantize output"))
    lo, hi = _dtype_range(output_spec)
    return {"input_offset": -int(input_spec.zero_point), "output_offset": int(output_spec.zero_point),
            "multiplier": m, "shift": s, "qmin": lo, "qmax": hi, "to": _to(output_spec), "rounding": rounding}
