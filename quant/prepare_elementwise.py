"""Prepare (float -> integer parameters) for element-wise, activation, softmax and batch-matmul integer ops.

Each ``prepare_*`` function takes the QuantSpecs of the op's tensors (and its float options) and returns the
attribute dict of the matching ``lowbit.int`` kernel (runtime/kernels/int/{elementwise,activation,softmax,
matmul}.py). They compute exactly what TFLite's Prepare computes (tensorflow/lite/kernels/{add,sub,mul,
squared_difference,elementwise,activations,exp,batch_matmul}.cc), in the same precision: TFLite stores scales
as float32 and many of its multipliers are float32 expressions (``input->params.scale * alpha /
output->params.scale`` is float arithmetic) converted to double only at the end, so the arithmetic below is
done in np.float32 where TFLite's is float and in Python floats (double) where TFLite's is double.

Lookup tables are built as TFLite's LUTPopulate builds them (internal/common.h), with the transcendental
functions taken from the C math library through ctypes (``expf``, ``tanhf``, ``erfcf``, ``expm1f``, ``logf``,
``sqrtf``, ``exp``): the LiteRT runtime calls the platform's libm, and NumPy's own float32 ``exp``/``tanh``
differ from glibc's by an ulp now and then, which moves a table entry whenever the value sits on a rounding
boundary. Where no C math library can be loaded, NumPy's functions are used (tables may then differ by one
step on a few entries from the platform's TFLite).

Conventions (docs/integer_ir.md): ``*_offset`` is added to the raw integers (``input_offset = -zero_point``,
``output_offset = +zero_point``); int8 tables are indexed by ``x + 128``; int16 tables have TFLite's 513
entries with 7-bit linear interpolation.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math

import numpy as np

from lowbit.quant.fixedpoint import quantize_multiplier
from lowbit.quant.spec import QuantSpec

F32 = np.float32
INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


class PrepareError(ValueError):
    """The quantization parameters cannot be prepared (TFLite's Prepare would fail the same way)."""


# ---------------------------------------------------------------------------------------------------------------
# C math library: the functions TFLite's Prepare calls
# ---------------------------------------------------------------------------------------------------------------
def _load_libm():
    name = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(name) if name else None
    except OSError:
        lib = None
    funcs = {}
    if lib is None:
        return funcs
    for fname, ctype in (("expf", ctypes.c_float), ("tanhf", ctypes.c_float), ("erfcf", ctypes.c_float),
                         ("expm1f", ctypes.c_float), ("logf", ctypes.c_float), ("sqrtf", ctypes.c_float),
                         ("exp", ctypes.c_double)):
        fn = getattr(lib, fname, None)
        if fn is not None:
            fn.restype, fn.argtypes = ctype, [ctype]
            funcs[fname] = fn
    return funcs


_LIBM = _load_libm()
_NUMPY_FALLBACK = {"expf": np.exp, "tanhf": np.tanh, "expm1f": np.expm1, "logf": np.log, "sqrtf": np.sqrt,
                   "exp": np.exp}


def _erfc32(x):
    from lowbit.runtime.kernels.float.elementwise import erf64
    return (1.0 - erf64(np.asarray(x, np.float64))).astype(F32)


def libm(name: str, x) -> np.ndarray:
    """The C library's ``name`` (e.g. "expf") applied element-wise to ``x`` (float32, or float64 for "exp")."""
    dtype = np.float64 if name == "exp" else F32
    x = np.asarray(x, dtype)
    fn = _LIBM.get(name)
    if fn is None:
        if name == "erfcf":
            return _erfc32(x)
        with np.errstate(all="ignore"):
            return _NUMPY_FALLBACK[name](x).astype(dtype)
    flat = [fn(float(v)) for v in x.reshape(-1)]
    return np.asarray(flat, dtype).reshape(x.shape)


# ---------------------------------------------------------------------------------------------------------------
# float helpers mirroring C++ conversions
# ---------------------------------------------------------------------------------------------------------------
def tflite_round(x) -> np.ndarray:
    """std::round (TfLiteRound): nearest integer, ties away from zero, exact for float32 and float64."""
    x = np.asarray(x)
    t = np.trunc(x)
    frac = x - t  # exact
    return t + np.where(np.abs(frac) >= 0.5, np.sign(x), 0).astype(x.dtype)


def float_to_int32(x) -> np.ndarray:
    """static_cast<int32_t>(float) as x86 executes it (cvttss2si): truncation; NaN or out of range gives
    INT32_MIN (the "integer indefinite" value)."""
    x = np.asarray(x, np.float64)
    ok = np.isfinite(x) & (x > INT32_MIN - 1.0) & (x < INT32_MAX + 1.0)
    return np.where(ok, np.trunc(np.where(ok, x, 0.0)), INT32_MIN).astype(np.int64)


def _scale32(spec: QuantSpec) -> np.float32:
    if spec.per_channel:
        raise PrepareError(f"element-wise ops need per-tensor quantization, got {spec.describe()}")
    return F32(float(spec.scale))


def _zp(spec: QuantSpec) -> int:
    return int(spec.zero_point)


def _multiplier(real: float) -> tuple[int, int]:
    return quantize_multiplier(float(real))


def _check_int16_symmetric(*specs: QuantSpec, op: str) -> None:
    for s in specs:
        if s.bits == 16 and _zp(s) != 0:
            raise PrepareError(f"{op}: int16 tensors must be symmetric (zero point 0), got {s.describe()}")


# ---------------------------------------------------------------------------------------------------------------
# lookup tables (TFLite LUTPopulate)
# ---------------------------------------------------------------------------------------------------------------
def lut_int8(transform, input_spec: QuantSpec, output_spec: QuantSpec) -> np.ndarray:
    """int8[256] table indexed by x + 128: TFLite's LUTPopulateInt8 (float32 arithmetic throughout).

    ``transform`` maps a float32 array to a float32 array (the op's float function, as TFLite writes it).
    """
    values = np.arange(-128, 128, dtype=np.int64)
    dequantized = _scale32(input_spec) * (values - _zp(input_spec)).astype(F32)
    transformed = np.asarray(transform(dequantized.astype(F32)), F32)
    inverse_scale = F32(1.0) / _scale32(output_spec)
    with np.errstate(over="ignore", invalid="ignore"):
        rescaled = tflite_round(transformed * inverse_scale)
        shifted = rescaled + F32(_zp(output_spec))
    return np.clip(float_to_int32(shifted), -128, 127).astype(np.int8)


def lut_int16(transform, input_spec: QuantSpec, output_spec: QuantSpec) -> np.ndarray:
    """int16[513] table of ``transform`` (float32 -> float32) between two int16 specs: TFLite's
    LUTPopulateInt16<float>, as its GELU, EXP, LOG and RSQRT Prepare build them."""
    return lut_int16_raw(transform, _scale32(input_spec), _zp(input_spec), _scale32(output_spec),
                         _zp(output_spec), F32)


def lut_int16_raw(transform, in_scale, in_zp: int, out_scale, out_zp: int, float_type=F32) -> np.ndarray:
    """TFLite LUTPopulateInt16<FloatT> on raw parameters: 512 segments over the input range, each entry the
    sampled value corrected by half the interpolation error at the segment midpoint, plus the end point.
    FloatT is float (float_type=np.float32) for the ops, double for int16 SOFTMAX's tables."""
    T = float_type
    in_scale, out_scale = T(in_scale), T(out_scale)
    input_min = in_scale * T(-32768 - in_zp)
    input_max = in_scale * T(32767 - in_zp)
    output_min = out_scale * T(-32768 - out_zp)
    output_max = out_scale * T(32767 - out_zp)
    nb_steps = 512
    step = (input_max - input_min) / T(nb_steps)
    half_step = step / T(2)
    scaling_inv = T(65536) / (output_max - output_min)
    i = np.arange(nb_steps).astype(T)
    at = input_min + i * step
    val = np.asarray(transform(at), T)
    val_mid = np.asarray(transform(at + half_step), T)
    val_next = np.asarray(transform(input_min + (i + T(1)) * step), T)
    with np.errstate(over="ignore", invalid="ignore"):
        sample = tflite_round(val * scaling_inv)
        mid_interp = tflite_round((val_next * scaling_inv + tflite_round(val * scaling_inv)) / T(2))
        mid_val = tflite_round(val_mid * scaling_inv)
        bias = tflite_round((mid_interp - mid_val) / T(2))
        entries = np.minimum(np.maximum(sample - bias, T(-32768)), T(32767))
        last = tflite_round(np.asarray(transform(np.asarray([input_max], T)), T) * scaling_inv)
        last = np.minimum(np.maximum(last, T(-32768)), T(32767))
    table = np.concatenate([float_to_int32(entries), float_to_int32(last)])
    return table.astype(np.int16)  # static_cast<int16_t> of an int32 keeps the low 16 bits


# float functions as TFLite's Prepare writes them (float32 in, float32 out) ---------------------------------
def tanh_f32(x):
    return libm("tanhf", x)


def logistic_f32(x):
    x = np.asarray(x, F32)
    with np.errstate(over="ignore"):
        return (F32(1.0) / (F32(1.0) + libm("expf", -x))).astype(F32)


_SQRT1_2 = 0.70710678118654752440
_SQRT_2_OVER_PI = F32(1.12837916709551257390 * 0.70710678118654752440)  # M_2_SQRTPI * M_SQRT1_2, as float


def gelu_f32(x):
    """0.5f * x * erfcf(x * -M_SQRT1_2)"""
    x = np.asarray(x, F32)
    return ((F32(0.5) * x) * libm("erfcf", x * F32(-_SQRT1_2))).astype(F32)


def gelu_tanh_f32(x):
    """0.5f * x * (1 + tanhf(sqrt(2/pi) * (x + 0.044715f * x * x * x)))"""
    x = np.asarray(x, F32)
    with np.errstate(over="ignore", invalid="ignore"):
        cube = ((F32(0.044715) * x) * x) * x
        inner = _SQRT_2_OVER_PI * (x + cube)
        return ((F32(0.5) * x) * (F32(1.0) + libm("tanhf", inner))).astype(F32)


def elu_f32(x):
    x = np.asarray(x, F32)
    return np.where(x < 0, libm("expm1f", np.minimum(x, F32(0))), x).astype(F32)


def exp_f32(x):
    return libm("expf", x)


# ---------------------------------------------------------------------------------------------------------------
# binary arithmetic
# ---------------------------------------------------------------------------------------------------------------
def _arith_offsets(a: QuantSpec, b: QuantSpec, out: QuantSpec) -> dict:
    return {"a_offset": -_zp(a), "b_offset": -_zp(b), "output_offset": _zp(out)}


def _twice_max(a: QuantSpec, b: QuantSpec) -> float:
    return float(F32(2) * max(_scale32(a), _scale32(b)))  # 2 * std::max(float, float) is a float product


def _smaller_than_one(real: float, what: str, op: str) -> tuple[int, int]:
    if not 0.0 < real < 1.0:
        raise PrepareError(f"{op}: {what} multiplier {real:.6g} must lie in (0, 1) (TFLite's "
                           f"QuantizeMultiplierSmallerThanOneExp)")
    m, s = _multiplier(real)
    return m, s


def prepare_add(a: QuantSpec, b: QuantSpec, out: QuantSpec, act_min: int, act_max: int, *,
                op: str = "Add") -> dict:
    """ADD / SUB attributes (int8, and int16 with general scales): TFLite add.cc / sub.cc Prepare.

    Inputs are rescaled to twice the larger input scale with 20 (int8) or 15 (int16) bits of headroom:
        left_shift = 20 | 15;  M_a = s_a / (2 max(s_a, s_b));  M_b likewise;  M_out = 2 max(s_a, s_b) /
        (2^left_shift s_out).  SUB accepts M_out > 1 (QuantizeMultiplierGreaterThanOne); ADD does not.
    """
    if a.bits != b.bits or a.bits != out.bits or a.bits not in (8, 16):
        raise PrepareError(f"{op}: inputs and output must all be int8 or all int16, got "
                           f"{a.describe()}, {b.describe()} -> {out.describe()}")
    _check_int16_symmetric(a, b, out, op=op)
    left_shift = 15 if out.bits == 16 else 20
    twice_max = _twice_max(a, b)
    ma, sa = _smaller_than_one(float(_scale32(a)) / twice_max, "input 0", op)
    mb, sb = _smaller_than_one(float(_scale32(b)) / twice_max, "input 1", op)
    real_out = twice_max / float(F32(1 << left_shift) * _scale32(out))
    if op == "Sub" and real_out > 1.0:
        mo, so = _multiplier(real_out)
    else:
        mo, so = _smaller_than_one(real_out, "output", op)
    return {"left_shift": left_shift, **_arith_offsets(a, b, out),
            "a_multiplier": ma, "a_shift": sa, "b_multiplier": mb, "b_shift": sb,
            "output_multiplier": mo, "output_shift": so, "act_min": int(act_min), "act_max": int(act_max)}


def prepare_sub(a: QuantSpec, b: QuantSpec, out: QuantSpec, act_min: int, act_max: int) -> dict:
    """SUB attributes: as ``prepare_add`` (the kernel subtracts the rescaled inputs)."""
    return prepare_add(a, b, out, act_min, act_max, op="Sub")


def prepare_mul(a: QuantSpec, b: QuantSpec, out: QuantSpec, act_min: int, act_max: int) -> dict:
    """MUL attributes: M = s_a * s_b / s_out, a float32 expression in TFLite (mul.cc)."""
    if a.bits != b.bits or a.bits != out.bits or a.bits not in (8, 16):
        raise PrepareError(f"Mul: inputs and output must all be int8 or all int16, got "
                           f"{a.describe()}, {b.describe()} -> {out.describe()}")
    _check_int16_symmetric(a, b, out, op="Mul")
    real = float((_scale32(a) * _scale32(b)) / _scale32(out))
    m, s = _multiplier(real)
    return {**_arith_offsets(a, b, out), "output_multiplier": m, "output_shift": s,
            "act_min": int(act_min), "act_max": int(act_max)}


def prepare_squared_difference(a: QuantSpec, b: QuantSpec, out: QuantSpec) -> dict:
    """SQUARED_DIFFERENCE attributes (int8 only in TFLite): inputs rescaled to twice the larger scale with 7
    bits of headroom, the squared difference rescaled by (2 max(s_a, s_b))^2 / (2^14 s_out)."""
    if not (a.bits == b.bits == out.bits == 8):
        raise PrepareError(f"SquaredDifference: TFLite's kernel is int8 only, got {a.describe()}, "
                           f"{b.describe()} -> {out.describe()}")
    left_shift = 7
    twice_max = _twice_max(a, b)
    ma, sa = _smaller_than_one(float(_scale32(a)) / twice_max, "input 0", "SquaredDifference")
    mb, sb = _smaller_than_one(float(_scale32(b)) / twice_max, "input 1", "SquaredDifference")
    real_out = (twice_max * twice_max) / float(F32(1 << (2 * left_shift)) * _scale32(out))
    mo, so = _smaller_than_one(real_out, "output", "SquaredDifference")
    return {"left_shift": left_shift, **_arith_offsets(a, b, out),
            "a_multiplier": ma, "a_shift": sa, "b_multiplier": mb, "b_shift": sb,
            "output_multiplier": mo, "output_shift": so, "act_min": -128, "act_max": 127}


# ---------------------------------------------------------------------------------------------------------------
# unary ops
# ---------------------------------------------------------------------------------------------------------------
def prepare_rsqrt(x: QuantSpec, out: QuantSpec) -> tuple[str, dict]:
    """RSQRT: int8 -> ("Rsqrt", {input_offset, output_offset, multiplier, shift}) with M = 1 / (sqrt(s_in)
    s_out) (elementwise.cc); int16 -> ("Lut", {table}) of 1/sqrt(x) (x <= 0 maps to 32767 * s_out)."""
    if x.bits == 16:
        _check_int16_symmetric(x, out, op="Rsqrt")
        s_out = _scale32(out)

        def rsqrt(v):
            v = np.asarray(v, F32)
            with np.errstate(divide="ignore", invalid="ignore"):
                r = (F32(1.0) / libm("sqrtf", np.maximum(v, F32(0)))).astype(F32)
            return np.where(v <= 0, F32(32767) * s_out, r).astype(F32)
        return "Lut", {"table": lut_int16(rsqrt, x, out)}
    if x.bits != 8 or out.bits != 8:
        raise PrepareError(f"Rsqrt: int8 or int16 tensors expected, got {x.describe()} -> {out.describe()}")
    real = 1.0 / float(libm("sqrtf", _scale32(x)) * _scale32(out))
    m, s = _multiplier(real)
    return "Rsqrt", {"input_offset": -_zp(x), "output_offset": _zp(out), "multiplier": m, "shift": s}


def _lut(transform, x: QuantSpec, out: QuantSpec, op: str) -> dict:
    if x.bits == 8 and out.bits == 8:
        return {"table": lut_int8(transform, x, out)}
    if x.bits == 16 and out.bits == 16:
        _check_int16_symmetric(x, out, op=op)
        return {"table": lut_int16(transform, x, out)}
    raise PrepareError(f"{op}: int8 -> int8 or int16 -> int16 expected, got {x.describe()} -> {out.describe()}")


def prepare_gelu(x: QuantSpec, out: QuantSpec, approximate: bool = False) -> dict:
    """GELU as a Lut (int8 and int16), exact (erfc form) or tanh approximation."""
    return _lut(gelu_tanh_f32 if approximate else gelu_f32, x, out, "Gelu")


def prepare_exp(x: QuantSpec, out: QuantSpec) -> dict:
    """EXP as a Lut (int8 and int16)."""
    return _lut(exp_f32, x, out, "Exp")


def prepare_elu(x: QuantSpec, out: QuantSpec) -> dict:
    """ELU as a Lut: int8 only in TFLite (x < 0 ? expm1f(x) : x)."""
    if x.bits != 8:
        raise PrepareError(f"Elu: TFLite's integer ELU is int8 only, got {x.describe()}")
    return _lut(elu_f32, x, out, "Elu")


def prepare_log(x: QuantSpec, out: QuantSpec) -> dict:
    """LOG as a Lut (int8 and int16); x <= 0 maps to the output's lowest representable value."""
    out_min = F32(out.qmin - _zp(out)) * _scale32(out)

    def log(v):
        v = np.asarray(v, F32)
        with np.errstate(divide="ignore", invalid="ignore"):
            r = libm("logf", np.maximum(v, F32(0)))
        return np.where(v <= 0, out_min, r).astype(F32)
    return _lut(log, x, out, "Log")


def checked_log2(scale) -> tuple[bool, int]:
    """TFLite CheckedLog2: float32 log(x) / log(2), rounded; 'power of two' when within 1e-3."""
    x_log2 = libm("logf", F32(scale)) * (F32(1.0) / libm("logf", F32(2.0)))
    rounded = tflite_round(F32(x_log2))
    return bool(abs(F32(x_log2) - rounded) < F32(1e-3)), int(rounded)


def _prepare_sigmoid_int16(x: QuantSpec, out: QuantSpec, op: str, pot_shifts: tuple[int, ...]) -> dict:
    _check_int16_symmetric(x, out, op=op)
    pot, log2_in = checked_log2(_scale32(x))
    left_shift = (15 - 3) + log2_in
    multiplier = 0
    if not (pot and left_shift in pot_shifts):
        # rescale the input to 1 / (3 * 4096) per step, as the 256-entry sigmoid table with 3/4 range
        # expansion needs
        real = float(_scale32(x)) * 4096.0 * 3.0
        left_shift = 0
        while real <= 32767.0 / 2.0 and left_shift <= 30:
            left_shift += 1
            real *= 2.0
        multiplier = int(real)
    ok, log2_out = checked_log2(_scale32(out))
    if not ok or log2_out != -15:
        raise PrepareError(f"{op}: int16 output scale must be 2^-15, got {out.describe()}")
    return {"input_multiplier": multiplier, "input_left_shift": left_shift}


def prepare_tanh(x: QuantSpec, out: QuantSpec) -> tuple[str, dict]:
    """TANH: int8 -> ("Lut", table of tanhf); int16 -> ("Tanh", {input_multiplier, input_left_shift}) for
    TFLite's sigmoid-table kernel (output scale 2^-15)."""
    if x.bits == 16:
        return "Tanh", _prepare_sigmoid_int16(x, out, "Tanh", (0, 1))
    return "Lut", _lut(tanh_f32, x, out, "Tanh")


def prepare_logistic(x: QuantSpec, out: QuantSpec) -> tuple[str, dict]:
    """LOGISTIC: int8 -> ("Lut", table of 1 / (1 + expf(-x))), output scale 1/256 required; int16 ->
    ("Logistic", {input_multiplier, input_left_shift}), output scale 2^-15."""
    if x.bits == 16:
        return "Logistic", _prepare_sigmoid_int16(x, out, "Logistic", (0,))
    if float(_scale32(out)) != 1.0 / 256:
        raise PrepareError(f"Logistic: int8 output scale must be 1/256, got {out.describe()}")
    return "Lut", _lut(logistic_f32, x, out, "Logistic")


def _relu_bound(out: QuantSpec, value: float) -> int:
    return _zp(out) + int(float_to_int32(tflite_round(F32(value) / _scale32(out))))


def prepare_relu(x: QuantSpec, out: QuantSpec, lo: float = 0.0, hi: float = math.inf) -> dict:
    """RELU (lo=0), RELU6 (0, 6), RELU_N1_TO_1 (-1, 1), RELU_0_TO_1 (0, 1): requantize by s_in / s_out (float32)
    and clamp to [zp + round(lo / s_out), zp + round(hi / s_out)] within the type's range (QuantizedReluX)."""
    if x.bits != out.bits:
        raise PrepareError(f"Relu: input and output types differ: {x.describe()} -> {out.describe()}")
    _check_int16_symmetric(x, out, op="Relu")
    m, s = _multiplier(float(_scale32(x) / _scale32(out)))
    act_min = max(out.qmin, _relu_bound(out, lo))
    act_max = out.qmax if math.isinf(hi) else min(out.qmax, _relu_bound(out, hi))
    return {"input_offset": -_zp(x), "output_offset": _zp(out), "multiplier": m, "shift": s,
            "act_min": act_min, "act_max": act_max}


def prepare_leaky_relu(x: QuantSpec, out: QuantSpec, alpha: float) -> dict:
    """LEAKY_RELU: identity multiplier s_in / s_out and alpha multiplier s_in * alpha / s_out (float32
    expressions); a negative alpha gives a negative alpha_multiplier."""
    if x.bits != out.bits:
        raise PrepareError(f"LeakyRelu: input and output types differ: {x.describe()} -> {out.describe()}")
    _check_int16_symmetric(x, out, op="LeakyRelu")
    am, ash = _multiplier(float((_scale32(x) * F32(alpha)) / _scale32(out)))
    im, ish = _multiplier(float(_scale32(x) / _scale32(out)))
    return {"input_offset": -_zp(x), "output_offset": _zp(out), "identity_multiplier": im,
            "identity_shift": ish, "alpha_multiplier": am, "alpha_shift": ash}


def _int16_multiplier(m32: int) -> int:
    """TFLite DownScaleInt32ToInt16Multiplier: round a Q31 multiplier to Q15."""
    if m32 >= INT32_MAX - (1 << 15):
        return 32767
    return (m32 + (1 << 15)) >> 16


def prepare_hard_swish(x: QuantSpec, out: QuantSpec) -> dict:
    """HARD_SWISH (int8): TFLite's HardSwishParams from float32 scales (activations.cc HardSwishPrepare)."""
    if x.bits != 8 or out.bits != 8:
        raise PrepareError(f"HardSwish: TFLite's integer HARD_SWISH is int8 only, got {x.describe()}")
    hires_input_scale = F32(1.0 / 128.0) * _scale32(x)
    reluish_scale = F32(3.0) / F32(32768.0)
    om, oe = _multiplier(float(hires_input_scale / _scale32(out)))
    if oe > 0:
        raise PrepareError(f"HardSwish: output multiplier exponent {oe} > 0 (output scale too small for "
                           f"{x.describe()} -> {out.describe()})")
    rm, re_ = _multiplier(float(hires_input_scale / reluish_scale))
    return {"input_offset": -_zp(x), "output_offset": _zp(out),
            "output_multiplier": _int16_multiplier(om), "output_shift": oe,
            "reluish_multiplier": _int16_multiplier(rm), "reluish_shift": re_}


# ---------------------------------------------------------------------------------------------------------------
# softmax
# ---------------------------------------------------------------------------------------------------------------
def _input_radius(integer_bits: int, left_shift: int, total_bits: int = 31) -> int:
    """TFLite CalculateInputRadius."""
    return math.floor(1.0 * ((1 << integer_bits) - 1) * (1 << (total_bits - integer_bits)) / (1 << left_shift))


def prepare_softmax(x: QuantSpec, out: QuantSpec, beta: float = 1.0) -> dict:
    """SOFTMAX over the last axis.

    int8 (output fixed at scale 1/256, zero point -128): ``input_multiplier``, ``input_left_shift`` from
    beta * s_in * 2^26 (capped at 2^31 - 1, double), ``diff_min`` = -floor(31 * 2^26 / 2^left_shift).
    int16 (output scale 2^-15, symmetric): ``exp_table`` (exp on [-10, 0]) and ``one_over_one_plus_x_table``
    (1/(1+x) on [0, 1]), both 513-entry int16 tables built in double, and ``input_multiplier``,
    ``input_left_shift`` from s_in * beta / (10 / 65535) (float product, double division).
    """
    beta32 = F32(beta)
    if x.bits == 8 and out.bits == 8:
        if _zp(out) != -128 or abs(float(_scale32(out)) - 1.0 / 256) > 0.001 / 256:
            raise PrepareError(f"Softmax: int8 output must be quantized with scale 1/256 and zero point -128, "
                               f"got {out.describe()}")
        real = min(float(beta32) * float(_scale32(x)) * float(1 << (31 - 5)), float((1 << 31) - 1))
        if real <= 1.0:
            raise PrepareError(f"Softmax: beta * input scale * 2^26 = {real:.6g} must exceed 1")
        m, s = _multiplier(real)
        return {"input_multiplier": m, "input_left_shift": s, "diff_min": -_input_radius(5, s)}
    if x.bits == 16 and out.bits == 16:
        _check_int16_symmetric(x, out, op="Softmax")
        if abs(float(_scale32(out)) - 1.0 / 32768) > 0.001 / 32768:
            raise PrepareError(f"Softmax: int16 output scale must be 1/32768, got {out.describe()}")
        rng = 65535
        exp_table = lut_int16_raw(lambda v: libm("exp", v), 10.0 / rng, 32767, 2.0 / rng, 0, np.float64)
        recip_table = lut_int16_raw(lambda v: 1.0 / (1.0 + np.asarray(v, np.float64)), 1.0 / rng, -32768,
                                    2.0 / rng, 0, np.float64)
        real = float(_scale32(x) * beta32) / (10.0 / 65535.0)
        m, s = _multiplier(real)
        return {"input_multiplier": m, "input_left_shift": s, "exp_table": exp_table,
                "one_over_one_plus_x_table": recip_table}
    raise PrepareError(f"Softmax: int8 -> int8 or int16 -> int16 expected, got {x.describe()} -> "
                       f"{out.describe()}")


# ---------------------------------------------------------------------------------------------------------------
# batch matmul
# ---------------------------------------------------------------------------------------------------------------
def prepare_batch_matmul(a: QuantSpec, b: QuantSpec, out: QuantSpec, adj_x: bool = False,
                         adj_y: bool = False) -> dict:
    """BATCH_MATMUL of two activations: M = float32(s_a * s_b) / s_out (double division); int8 uses int32
    accumulation and the int32 rescale, int16 (16x16 and 16x8) int64 accumulation and the int64 rescale."""
    if a.bits not in (8, 16) or out.bits != a.bits or b.bits not in (8, a.bits):
        raise PrepareError(f"BatchMatMul: int8 x int8 -> int8, int16 x int16 -> int16 or int16 x int8 -> int16 "
                           f"expected, got {a.describe()}, {b.describe()} -> {out.describe()}")
    if a.bits == 16 and (_zp(a) or _zp(b) or _zp(out)):
        raise PrepareError(f"BatchMatMul: with int16 activations every zero point must be 0, got "
                           f"{a.describe()}, {b.describe()} -> {out.describe()}")
    if b.per_channel:
        raise PrepareError(f"BatchMatMul: per-channel quantization of the right operand is not supported "
                           f"({b.describe()})")
    real = float(F32(_scale32(a) * _scale32(b))) / float(_scale32(out))
    m, s = _multiplier(real)
    return {"adj_x": int(bool(adj_x)), "adj_y": int(bool(adj_y)), "a_offset": -_zp(a), "b_offset": -_zp(b),
            "output_offset": _zp(out), "multiplier": m, "shift": s, "act_min": out.qmin, "act_max": out.qmax,
            "accumulator": "int64" if a.bits == 16 else "int32", "rounding": "double"}


__all__ = ["PrepareError", "checked_log2", "float_to_int32", "libm", "lut_int16", "lut_int16_raw", "lut_int8",
           "prepare_add", "prepare_batch_matmul", "prepare_elu", "prepare_exp", "prepare_gelu", "prepare_hard_swish",
           "prepare_leaky_relu", "prepare_log", "prepare_logistic", "prepare_mul", "prepare_relu", "prepare_rsqrt",
           "prepare_softmax", "prepare_squared_difference", "prepare_sub", "prepare_tanh", "tflite_round"]
