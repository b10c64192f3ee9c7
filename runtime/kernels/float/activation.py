"""Element-wise activations and Clip.

Float attributes (alpha, beta, ...) are applied in the input's dtype, as ONNX Runtime does; float16 inputs of
transcendental formulas are computed in float32 and rounded once at the end.
"""
import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.elementwise import blockwise_float64, erf64
from lowbit.runtime.registry import float_kernel


def _const(value, x):
    """A 0-d array of ``value`` in x's dtype, so that arithmetic keeps that dtype."""
    return np.asarray(value, x.dtype)


def _wide(x):
    """x in the dtype to compute transcendental functions in: float16 is widened to float32."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _split(w):
    """(max(w, 0), min(w, 0)): adding a function of one part that is 0 at 0 to the other selects exactly
    by sign, without a slow np.where on a random mask."""
    zero = np.zeros((), w.dtype)
    return np.maximum(w, zero), np.minimum(w, zero)


@float_kernel("Relu")
def Relu(x):
    """y = max(x, 0)"""
    return np.maximum(x, np.zeros((), x.dtype))


@float_kernel("LeakyRelu")
def LeakyRelu(x, *, alpha=0.01):
    """y = x if x >= 0 else alpha * x, computed as max(x, alpha * x) (min when alpha > 1)"""
    return (np.maximum if alpha <= 1 else np.minimum)(x, _const(alpha, x) * x)


@float_kernel("PRelu")
def PRelu(x, slope):
    """y = x if x >= 0 else slope * x; slope broadcasts to x's shape (unidirectionally)."""
    try:
        shape = np.broadcast_shapes(x.shape, slope.shape)
    except ValueError:
        shape = None
    if shape != x.shape:
        raise ModelError(f"PRelu: slope of shape {list(slope.shape)} does not broadcast to the input's shape "
                         f"{list(x.shape)}")
    pos, neg = _split(x)
    pos += slope * neg
    return pos


@float_kernel("ThresholdedRelu")
def ThresholdedRelu(x, *, alpha=1.0):
    """y = x if x > alpha else 0"""
    return np.where(x > _const(alpha, x), x, np.zeros((), x.dtype))


@float_kernel("Sigmoid")
def Sigmoid(x):
    """y = 1 / (1 + exp(-x)) (exp(-x) overflows to inf below about -88 in float32, giving the right limit 0)"""
    w = _wide(x)
    one = np.ones((), w.dtype)
    return (one / (one + np.exp(-w))).astype(x.dtype, copy=False)


@float_kernel("HardSigmoid")
def HardSigmoid(x, *, alpha=0.2, beta=0.5):
    """y = max(0, min(1, alpha * x + beta))"""
    return np.clip(_const(alpha, x) * x + _const(beta, x), _const(0, x), _const(1, x))


@float_kernel("HardSwish")
def HardSwish(x):
    """y = x * max(0, min(1, x / 6 + 0.5))"""
    return x * HardSigmoid(x, alpha=1 / 6, beta=0.5)


@float_kernel("Elu")
def Elu(x, *, alpha=1.0):
    """y = x if x >= 0 else alpha * (exp(x) - 1)"""
    pos, neg = _split(_wide(x))
    pos += _const(alpha, neg) * np.expm1(neg, out=neg)
    return pos.astype(x.dtype, copy=False)


@float_kernel("Selu")
def Selu(x, *, alpha=1.67326319217681884765625, gamma=1.05070102214813232421875):
    """y = gamma * x if x > 0 else gamma * alpha * (exp(x) - 1)"""
    pos, neg = _split(_wide(x))
    pos += _const(alpha, neg) * np.expm1(neg, out=neg)
    pos *= _const(gamma, pos)
    return pos.astype(x.dtype, copy=False)


@float_kernel("Celu")
def Celu(x, *, alpha=1.0):
    """y = max(0, x) + min(0, alpha * (exp(x / alpha) - 1))"""
    pos, neg = _split(_wide(x))
    a = _const(alpha, pos)
    neg /= a
    pos += a * np.expm1(neg, out=neg)
    return pos.astype(x.dtype, copy=False)


def _softplus(w):
    """ln(exp(w) + 1) without overflow: max(w, 0) + ln(1 + exp(-|w|))"""
    return np.maximum(w, np.zeros((), w.dtype)) + np.log1p(np.exp(-np.abs(w)))


@float_kernel("Softplus")
def Softplus(x):
    """y = ln(exp(x) + 1)"""
    return _softplus(_wide(x)).astype(x.dtype, copy=False)


@float_kernel("Softsign")
def Softsign(x):
    """y = x / (1 + |x|)"""
    return x / (_const(1, x) + np.abs(x))


@float_kernel("Mish")
def Mish(x):
    """y = x * tanh(softplus(x)) = x * tanh(ln(1 + exp(x)))"""
    w = _wide(x)
    return (w * np.tanh(_softplus(w))).astype(x.dtype, copy=False)


@float_kernel("Gelu")
def Gelu(x, *, approximate="none"):
    """approximate="none": y = x / 2 * (1 + erf(x / sqrt(2)));
    approximate="tanh": y = x / 2 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))"""
    if approximate == "none":
        return blockwise_float64(lambda d: 0.5 * d * (1.0 + erf64(d * np.sqrt(0.5))), x, x.dtype)
    if approximate == "tanh":
        w = _wide(x)
        inner = _const(np.sqrt(2 / np.pi), w) * (w + _const(0.044715, w) * w * w * w)
        return (_const(0.5, w) * w * (_const(1, w) + np.tanh(inner))).astype(x.dtype, copy=False)
    raise ModelError(f"Gelu: approximate='{approximate}' is not one of 'none', 'tanh'")


def _bound(name, v, x):
    """The bound as a 0-d array of x's dtype, or None when it is omitted or NaN (which does not clip)."""
    if v is None:
        return None
    if v.size != 1:
        raise ModelError(f"Clip: {name} must be a scalar, got shape {list(v.shape)}")
    v = v.reshape(()).astype(x.dtype, copy=False)
    return None if v.dtype.kind == "f" and np.isnan(v) else v


@float_kernel("Clip")
def Clip(x, min=None, max=None):
    """y = min(max(x, min), max); an omitted or NaN bound does not clip. NaN in x stays NaN; where
    min > max, y = max."""
    lo, hi = _bound("min", min, x), _bound("max", max, x)
    y = x if lo is None else np.maximum(x, lo)
    return y if hi is None else np.minimum(y, hi)
