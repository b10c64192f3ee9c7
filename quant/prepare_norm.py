"""Prepare (float -> integer parameters) for the integer LayerNorm and RMSNorm (runtime/kernels/int/norm.py).

The kernel's docstring defines the arithmetic; this module chooses its constants from the QuantSpecs:
- ``epsilon_term`` = round(C^2 * eps / s_in^2 * 4^variance_shift): epsilon in squared input codes, scaled as D0;
- ``variance_shift`` g: the largest g <= 15 with C^2 * max|d|^2 * 4^g + epsilon_term < 2^62, so that eps is
  represented with at least 2g extra bits (its rounding then moves D by under 2^-(2g+1) of its smallest
  nonzero value);
- ``z_frac_bits`` = 30 - ceil(log2(C) / 2): the normalised value |z| <= sqrt(C) fills an int32;
- gamma: per-channel (multiplier, shift) of gamma_i / s_out * 2^(bias_frac_bits - z_frac_bits), the quantized
  scale (31-bit mantissa; gamma 0 gives multiplier 0, negative gamma a negative multiplier);
- beta: int32 round(beta_i / s_out * 2^bias_frac_bits), with bias_frac_bits = 10.
"""
from __future__ import annotations

import numpy as np

from lowbit.quant.fixedpoint import quantize_multipliers
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.spec import QuantSpec

BIAS_FRAC_BITS = 10
_LIMIT = 1 << 62


def _dmax(spec: QuantSpec) -> int:
    """The largest |code - zero point| of a tensor with ``spec``."""
    zp = int(spec.zero_point)
    return max(spec.qmax - zp, zp - spec.qmin)


def prepare_norm(x: QuantSpec, out: QuantSpec, gamma: np.ndarray, beta: np.ndarray | None, epsilon: float,
                 op: str = "LayerNorm") -> dict:
    """Attributes of lowbit.int LayerNorm / RMSNorm normalising the last axis of C = len(gamma) channels."""
    if x.per_channel or out.per_channel:
        raise PrepareError(f"{op}: per-tensor input and output specs expected, got {x.describe()} -> {out.describe()}")
    if x.bits != out.bits or x.bits not in (8, 16):
        raise PrepareError(f"{op}: int8 -> int8 or int16 -> int16 expected, got {x.describe()} -> {out.describe()}")
    gamma = np.asarray(gamma, np.float64).reshape(-1)
    c = gamma.size
    beta = np.zeros(c) if beta is None else np.broadcast_to(np.asarray(beta, np.float64).reshape(-1), (c,))
    dmax = _dmax(x)
    if c < 1 or 2 * c * dmax >= (1 << 32):
        raise PrepareError(f"{op}: {c} channels of up to {dmax} codes overflow the int64 normalisation")
    s_in, s_out = float(x.scale), float(out.scale)
    eps_codes = float(epsilon) / (s_in * s_in) * c * c
    d0_max = c * c * dmax * dmax
    shift = 15
    while shift >= 0 and (d0_max << (2 * shift)) + round(eps_codes * 4.0 ** shift) >= _LIMIT:
        shift -= 1
    if shift < 0:
        raise PrepareError(f"{op}: epsilon {epsilon} at input scale {s_in:.3g} is too large for int64 statistics")
    z_frac_bits = 30 - ((c - 1).bit_length() + 1) // 2
    real = gamma / s_out * 2.0 ** (BIAS_FRAC_BITS - z_frac_bits)
    mult, shifts = quantize_multipliers(real)
    if np.any(shifts > 30):
        raise PrepareError(f"{op}: gamma / output scale up to {np.max(np.abs(gamma)) / s_out:.3g} is too large")
    beta_q = np.round(beta / s_out * (1 << BIAS_FRAC_BITS))
    if np.any(np.abs(beta_q) >= (1 << 31)):
        raise PrepareError(f"{op}: beta / output scale up to {np.max(np.abs(beta)) / s_out:.3g} overflows int32")
    return {"input_offset": -int(x.zero_point), "epsilon_term": int(round(eps_codes * 4.0 ** shift)),
            "variance_shift": shift, "z_frac_bits": z_frac_bits, "gamma_multiplier": mult, "gamma_shift": shifts,
            "beta": beta_q.astype(np.int32), "bias_frac_bits": BIAS_FRAC_BITS,
            "output_offset": int(out.zero_point), "act_min": out.qmin, "act_max": out.qmax, "channels": c}
