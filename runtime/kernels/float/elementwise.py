"""Element-wise arithmetic and math: broadcasting binary ops, variadic Min/Max/Sum/Mean, unary functions.

Binary ops broadcast as NumPy does (ONNX multidirectional broadcasting). Integer arithmetic wraps like the
C++ of ONNX Runtime; integer Div truncates toward zero, not toward -inf as NumPy's ``//`` does.
"""
import functools

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.registry import float_kernel


def trunc_div(a, b):
    """Integer a / b rounded toward zero (C semantics); 0 where b == 0 (ONNX leaves that undefined)."""
    q = np.floor_divide(a, b)
    inexact = np.remainder(a, b) != 0
    if q.dtype.kind == "i":  # a floor differs from a truncation only when the exact quotient is negative
        return q + (inexact & ((a < 0) != (b < 0))).astype(q.dtype)
    return q


@float_kernel("Add")
def Add(a, b):
    """c = a + b"""
    return np.add(a, b)


@float_kernel("Sub")
def Sub(a, b):
    """c = a - b"""
    return np.subtract(a, b)


@float_kernel("Mul")
def Mul(a, b):
    """c = a * b"""
    return np.multiply(a, b)


@float_kernel("Div")
def Div(a, b):
    """c = a / b; for integers the quotient is truncated toward zero (-7 / 2 = -3)."""
    if a.dtype.kind in "iu":
        return trunc_div(a, b)
    return np.divide(a, b)


@float_kernel("Pow")
def Pow(x, y):
    """z = x ** y in the dtype of the base x.

    Mixed dtypes and integer bases are computed as ONNX Runtime does, with C's pow in double precision and a
    C cast back (so 2 ** -1 = 0 for integers, and out-of-range results take the cast's value)."""
    if x.dtype == y.dtype and x.dtype.kind == "f":
        return np.power(x, y)
    return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)


@float_kernel("Mod")
def Mod(a, b, *, fmod=0):
    """fmod=0: remainder with the sign of the divisor (Python's %, -7 mod 2 = 1);
    fmod=1: C fmod, with the sign of the dividend (-7 fmod 2 = -1). x mod 0 is 0 for integers."""
    if fmod:
        return np.fmod(a, b)
    return np.mod(a, b)


def _variadic(op, inputs, fn):
    if not inputs or any(x is None for x in inputs):
        raise ModelError(f"{op} needs one or more inputs, none omitted")
    return functools.reduce(fn, inputs)


@float_kernel("Max")
def Max(*data_0):
    """Element-wise maximum of all inputs, broadcast together; NaN wins."""
    return _variadic("Max", data_0, np.maximum)


@float_kernel("Min")
def Min(*data_0):
    """Element-wise minimum of all inputs, broadcast together; NaN wins."""
    return _variadic("Min", data_0, np.minimum)


@float_kernel("Sum")
def Sum(*data_0):
    """Element-wise sum of all inputs, broadcast together, added left to right."""
    return _variadic("Sum", data_0, np.add)


@float_kernel("Mean")
def Mean(*data_0):
    """Element-wise mean of all inputs, broadcast together: Sum(inputs) / number of inputs."""
    total = np.asarray(_variadic("Mean", data_0, np.add))
    return np.divide(total, np.asarray(len(data_0), total.dtype))


@float_kernel("Abs")
def Abs(x):
    """y = |x| (the most negative integer stays itself, as in C)"""
    return np.abs(x)


@float_kernel("Neg")
def Neg(x):
    """y = -x"""
    return np.negative(x)


@float_kernel("Sign")
def Sign(x):
    """y = -1, 0 or 1 by the sign of x; NaN stays NaN."""
    return np.sign(x)


@float_kernel("Exp")
def Exp(x):
    """y = e ** x"""
    return np.exp(x)


@float_kernel("Log")
def Log(x):
    """y = ln(x); -inf at 0, NaN below."""
    return np.log(x)


@float_kernel("Sqrt")
def Sqrt(x):
    """y = sqrt(x); NaN below 0."""
    return np.sqrt(x)


@float_kernel("Reciprocal")
def Reciprocal(x):
    """y = 1 / x"""
    return np.reciprocal(x)


@float_kernel("Floor")
def Floor(x):
    """y = the largest integer <= x"""
    return np.floor(x)


@float_kernel("Ceil")
def Ceil(x):
    """y = the smallest integer >= x"""
    return np.ceil(x)


@float_kernel("Round")
def Round(x):
    """y = x rounded to the nearest integer, halves to even (2.5 -> 2, -1.5 -> -2)."""
    return np.round(x)


@float_kernel("Sin")
def Sin(x):
    """y = sin(x)"""
    return np.sin(x)


@float_kernel("Cos")
def Cos(x):
    """y = cos(x)"""
    return np.cos(x)


@float_kernel("Tan")
def Tan(x):
    """y = tan(x)"""
    return np.tan(x)


@float_kernel("Asin")
def Asin(x):
    """y = arcsin(x)"""
    return np.arcsin(x)


@float_kernel("Acos")
def Acos(x):
    """y = arccos(x)"""
    return np.arccos(x)


@float_kernel("Atan")
def Atan(x):
    """y = arctan(x)"""
    return np.arctan(x)


@float_kernel("Sinh")
def Sinh(x):
    """y = sinh(x)"""
    return np.sinh(x)


@float_kernel("Cosh")
def Cosh(x):
    """y = cosh(x)"""
    return np.cosh(x)


@float_kernel("Tanh")
def Tanh(x):
    """y = tanh(x)"""
    return np.tanh(x)


@float_kernel("Asinh")
def Asinh(x):
    """y = arsinh(x)"""
    return np.arcsinh(x)


@float_kernel("Acosh")
def Acosh(x):
    """y = arcosh(x)"""
    return np.arccosh(x)


@float_kernel("Atanh")
def Atanh(x):
    """y = artanh(x)"""
    return np.arctanh(x)


@float_kernel("IsNaN")
def IsNaN(x):
    """y = (x is NaN), bool"""
    return np.isnan(x)


@float_kernel("IsInf")
def IsInf(x, *, detect_negative=1, detect_positive=1):
    """y = (x == +inf and detect_positive) or (x == -inf and detect_negative), bool"""
    y = np.zeros(x.shape, bool)
    if detect_positive:
        y |= np.isposinf(x)
    if detect_negative:
        y |= np.isneginf(x)
    return y


@float_kernel("Identity")
def Identity(input):
    """y = x (the same array; kernels never write to their inputs)"""
    return input


@float_kernel("Erf")
def Erf(x):
    """y = erf(x) = 2 / sqrt(pi) * integral from 0 to x of exp(-t*t) dt, computed in float64 (erf64)."""
    return blockwise_float64(_erf64_block, x, x.dtype)


# The rational approximations of Sun's fdlibm s_erf.c (freely distributable; also FreeBSD's and musl's erf),
# error below 1 ulp of float64. Each tuple lists polynomial coefficients from the constant term up.
_ERX = 8.45062911510467529297e-01  # erf(1) rounded to float32
_PP = (1.28379167095512558561e-01, -3.25042107247001499370e-01, -2.84817495755985104766e-02,
       -5.77027029648944159157e-03, -2.37630166566501626084e-05)
_QQ = (1.0, 3.97917223959155352819e-01, 6.50222499887672944485e-02, 5.08130628187576562776e-03,
       1.32494738004321644526e-04, -3.96022827877536812320e-06)
_PA = (-2.36211856075265944077e-03, 4.14856118683748331666e-01, -3.72207876035701323847e-01,
       3.18346619901161753674e-01, -1.10894694282396677476e-01, 3.54783043256182359371e-02,
       -2.16637559486879084300e-03)
_QA = (1.0, 1.06420880400844228286e-01, 5.40397917702171048937e-01, 7.18286544141962662868e-02,
       1.26171219808761642112e-01, 1.36370839120290507362e-02, 1.19844998467991074170e-02)
_RA = (-9.86494403484714822705e-03, -6.93858572707181764372e-01, -1.05586262253232909814e+01,
       -6.23753324503260060396e+01, -1.62396669462573470355e+02, -1.84605092906711035994e+02,
       -8.12874355063065934246e+01, -9.81432934416914548592e+00)
_SA = (1.0, 1.96512716674392571292e+01, 1.37657754143519042600e+02, 4.34565877475229228821e+02,
       6.45387271733267880336e+02, 4.29008140027567833386e+02, 1.08635005541779435134e+02,
       6.57024977031928170135e+00, -6.04244152148580987438e-02)
_RB = (-9.86494292470009928597e-03, -7.99283237680523006574e-01, -1.77579549177547519889e+01,
       -1.60636384855821916062e+02, -6.37566443368389627722e+02, -1.02509513161107724954e+03,
       -4.83519191608651397019e+02)
_SB = (1.0, 3.03380607434824582924e+01, 3.25792512996573918826e+02, 1.53672958608443695994e+03,
       3.19985821950859553908e+03, 2.55305040643316442583e+03, 4.74528541206955367215e+02,
       -2.24409524465858183362e+01)


def _poly(z, coeffs):
    acc = np.full_like(z, coeffs[-1])
    for c in coeffs[-2::-1]:
        acc *= z
        acc += c
    return acc


BLOCK = 32768  # elements per block of blockwise_float64: a block's temporaries stay in the CPU cache


def blockwise_float64(fn, x, dtype):
    """fn (an element-wise function of float64 arrays) applied to x block by block, the result in ``dtype``.

    For long formulas of many NumPy passes this is about twice as fast as whole-array evaluation, and it
    never holds a full-size float64 copy of a float32 tensor."""
    flat = np.asarray(x).reshape(-1)
    out = np.empty(flat.shape, dtype)
    for i in range(0, flat.size, BLOCK):
        out[i:i + BLOCK] = fn(flat[i:i + BLOCK].astype(np.float64))
    return out.reshape(np.shape(x))


def erf64(x):
    """erf of an array, computed in float64 (vectorised fdlibm; see _erf64_block); the result is float64."""
    return blockwise_float64(_erf64_block, x, np.float64)


def _erf64_block(x):
    """fdlibm's erf: odd rational R(x^2) below 0.84375, erf(1) + P(s)/Q(s) around 1, and
    1 - exp(-x^2 - 0.5625 + R(1/x^2)/S(1/x^2)) / x in the tail up to 6, beyond which erf = +-1.

    Every branch is evaluated on the whole block with its argument clamped into its interval (so all values
    stay finite) and the branches are blended with 0/1 weights, which is exact and, unlike boolean indexing
    on a random mask, fast. NaN propagates through the blend."""
    a = np.abs(x)
    t = np.minimum(a, 0.84375)
    z = t * t
    small = t + t * (_poly(z, _PP) / _poly(z, _QQ))
    s = np.clip(a, 0.84375, 1.25) - 1.0
    mid = _ERX + _poly(s, _PA) / _poly(s, _QA)
    at = np.clip(a, 1.25, 6.0)
    s = 1.0 / (at * at)
    near = at < 1 / 0.35
    r = _poly(s, _RA) / _poly(s, _SA) * near + _poly(s, _RB) / _poly(s, _SB) * ~near
    # exp(-x*x) as exp(-z*z) * exp((z-x)(z+x)), z = x with the low 32 bits of its significand cleared so that
    # z*z is exact
    z = (at.view(np.uint64) & np.uint64(0xFFFFFFFF00000000)).view(np.float64)
    tail = 1.0 - np.exp(-z * z - 0.5625) * np.exp((z - at) * (z + at) + r) / at
    y = small * (a < 0.84375) + mid * ((a >= 0.84375) & (a < 1.25)) + tail * ((a >= 1.25) & (a < 6.0))
    y += a >= 6.0  # +-inf included; erf(6) = 1 - 2e-17 rounds to 1
    return np.copysign(y, x)
