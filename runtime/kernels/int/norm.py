"""Integer LayerNorm and RMSNorm over the last axis (lowbit-defined: TFLite has no integer LAYER_NORM op).

Both ops normalise each row ``x[..., :]`` of C codes with exact integer statistics and one fixed-point
reciprocal square root, then apply the quantized affine (gamma, beta) and requantize to the output spec.
Semantics, with d = x + input_offset (the codes minus the input zero point), per row:

    S1 = sum_i d_i,  S2 = sum_i d_i^2                                    int64, exact
    LayerNorm:  n_i = C d_i - S1,   D0 = C S2 - S1^2                     = C (d_i - mean),  C^2 var
    RMSNorm:    n_i = C d_i,        D0 = C S2                            = C d_i,           C^2 mean(d^2)
    D  = max(D0 * 4^variance_shift + epsilon_term, 4^variance_shift)     int64 < 2^62
    1/sqrt(D) = m * 2^(e - 61)      (inverse_sqrt: integer Newton isqrt of D normalised to [2^60, 2^62),
                                     m in [2^30, 2^31), relative error < 2^-29)
    z_i = RoundShift(n_i * m, 61 - e - z_frac_bits - variance_shift)     int32, z_i ~ (x_i - mean) / std * 2^z_frac_bits
    t_i = (z_i * gamma_multiplier_i + 2^(30 - gamma_shift_i)) >> (31 - gamma_shift_i)      (single rounding)
    y_i = RoundShift(t_i + beta_i, bias_frac_bits) + output_offset, clamped to [act_min, act_max]

where RoundShift(v, k) = (v + 2^(k-1)) >> k (half up), ``epsilon_term`` = round(C^2 eps / s_in^2 *
4^variance_shift), the gamma multiplier is gamma_i / s_out * 2^(bias_frac_bits - z_frac_bits) as (m0, shift), and
``beta_i`` = round(beta_i / s_out * 2^bias_frac_bits) (int32; zero for RMSNorm). The zero point cancels in n
and D0, so int8 (asymmetric) and int16 (symmetric) inputs take the same path.

Widths: S1, S2, D in int64 (C * max|d|^2 * C * 4^variance_shift < 2^62 is checked by Prepare); the normalised
value z is an int32 with z_frac_bits = 30 - ceil(log2(C) / 2) fractional bits (|z| <= sqrt(C)); the affine
and the bias run in int64 at 2^bias_frac_bits output steps.

Error bound (tests/test_int_norm.py): against the float op evaluated on the dequantized input (float64), the
output before clamping is within 0.5 + 2^-(bias_frac_bits - 1) + 2^-12 output steps, i.e. it is the correctly
rounded result up to a few thousandths of a step; the only loss is the final rounding.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.registry import int_kernel

_POW2 = np.int64(1) << np.arange(63, dtype=np.int64)
_NEWTON_STEPS = 7  # from 2^31 down to floor(sqrt(n)) for n in [2^60, 2^62): 6 suffice, one spare


def bit_length(v) -> np.ndarray:
    """Number of bits of each positive int64 (integer comparisons only)."""
    return np.searchsorted(_POW2, np.asarray(v, np.int64), side="right").astype(np.int64)


def isqrt_normalised(n) -> np.ndarray:
    """floor(sqrt(n)) for int64 n in [2^60, 2^62): integer Newton iteration from 2^31 (>= sqrt(n)), which
    decreases monotonically to floor(sqrt(n)) or one above it; one final correction step."""
    n = np.asarray(n, np.int64)
    x = np.full(n.shape, np.int64(1) << 31)
    for _ in range(_NEWTON_STEPS):
        x = (x + n // x) >> 1
    return x - (x * x > n)


def inverse_sqrt(d) -> tuple[np.ndarray, np.ndarray]:
    """(m, e) with 1/sqrt(d) ~= m * 2^(e - 61), m in [2^30, 2^31), for int64 d in [1, 2^63).

    d is normalised by an even shift to dn = d * 4^e in [2^60, 2^62), s = floor(sqrt(dn)) in [2^30, 2^31) and
    m = floor((2^61 - 1) / s); the relative error of m * 2^(e-61) is below 2^-29."""
    d = np.asarray(d, np.int64)
    e = (62 - bit_length(d)) // 2
    dn = np.where(e >= 0, d << np.maximum(2 * e, 0), d >> np.maximum(-2 * e, 0))
    s = isqrt_normalised(dn)
    return ((np.int64(1) << 61) - 1) // s, e


def _normalise(x, centered, *, input_offset, epsilon_term, variance_shift, z_frac_bits, gamma_multiplier,
               gamma_shift, beta, bias_frac_bits, output_offset, act_min, act_max, channels, op, _stats):
    if x.dtype not in (np.int8, np.int16):
        raise ModelError(f"{op}: input must be int8 or int16, got {x.dtype}")
    c = x.shape[-1]
    if c != channels:
        raise ModelError(f"{op}: prepared for {channels} channels on the last axis, got input {list(x.shape)}")
    d = x.astype(np.int64) + input_offset
    s1 = d.sum(axis=-1, keepdims=True)
    s2 = (d * d).sum(axis=-1, keepdims=True)
    if centered:
        n, d0 = c * d - s1, c * s2 - s1 * s1
    else:
        n, d0 = c * d, c * s2
    floor = np.int64(1) << (2 * variance_shift)
    m, e = inverse_sqrt(np.maximum((d0 << (2 * variance_shift)) + epsilon_term, floor))
    z = fp.rounding_right_shift(n * m, 61 - e - z_frac_bits - variance_shift)
    t = fp.multiply_by_quantized_multiplier_single_round(z, np.asarray(gamma_multiplier, np.int64),
                                                        np.asarray(gamma_shift, np.int64))
    raw = fp.rounding_right_shift(t + np.asarray(beta, np.int64), bias_frac_bits) + output_offset
    if _stats is not None:
        _stats["saturated"] = fp.saturate_count(raw, act_min, act_max)
    return np.clip(raw, act_min, act_max).astype(x.dtype)


@int_kernel("LayerNorm")
def LayerNorm(x, *, input_offset, epsilon_term, variance_shift, z_frac_bits, gamma_multiplier, gamma_shift, beta,
              bias_frac_bits, output_offset, act_min, act_max, channels, _stats=None):
    """y = gamma * (x - mean) / sqrt(var + eps) + beta over the last axis; integer arithmetic of the module
    docstring (n_i = C d_i - S1). Output dtype = input dtype; attributes from quant.prepare_norm."""
    return _normalise(x, True, input_offset=input_offset, epsilon_term=epsilon_term, variance_shift=variance_shift,
                      z_frac_bits=z_frac_bits, gamma_multiplier=gamma_multiplier, gamma_shift=gamma_shift,
                      beta=beta, bias_frac_bits=bias_frac_bits, output_offset=output_offset, act_min=act_min,
                      act_max=act_max, channels=channels, op="LayerNorm", _stats=_stats)


@int_kernel("RMSNorm")
def RMSNorm(x, *, input_offset, epsilon_term, variance_shift, z_frac_bits, gamma_multiplier, gamma_shift, beta,
            bias_frac_bits, output_offset, act_min, act_max, channels, _stats=None):
    """y = gamma * x / sqrt(mean(x^2) + eps) over the last axis; integer arithmetic of the module docstring
    (n_i = C d_i, no centring). Output dtype = input dtype; attributes from quant.prepare_norm."""
    return _normalise(x, False, input_offset=input_offset, epsilon_term=epsilon_term, variance_shift=variance_shift,
                      z_frac_bits=z_frac_bits, gamma_multiplier=gamma_multiplier, gamma_shift=gamma_shift,
                      beta=beta, bias_frac_bits=bias_frac_bits, output_offset=output_offset, act_min=act_min,
                      act_max=act_max, channels=channels, op="RMSNorm", _stats=_stats)
