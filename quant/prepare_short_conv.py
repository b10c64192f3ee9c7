"""Prepare (float -> integer parameters) for the integer ShortConv (runtime/kernels/int/short_conv.py).

- the state spec: int16, symmetric. Unless the caller fixes it (a step graph must reuse its whole-sequence
  graph's), its scale covers the largest product |B * x| the bcx spec can represent, max|d|^2 * s_bcx^2, so the
  state never saturates (``state_spec``);
- ``v_multiplier``, ``v_shift``: s_bcx^2 / s_v (TFLite QuantizeMultiplier; the product is exact in int32);
- ``multiplier[C]``, ``shift[C]``: s_bcx * s_v * s_w[i] / s_y, applied to the int64 accumulator with TFLite's
  int64 rescale, which needs |acc| < 2^47: checked from the codes' ranges and the largest weight row.
"""
from __future__ import annotations

import numpy as np

from lowbit.quant.fixedpoint import quantize_multiplier, quantize_multipliers
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.spec import QuantSpec

STATE_BITS = 16


def _dmax(spec: QuantSpec) -> int:
    zp = int(spec.zero_point)
    return max(spec.qmax - zp, zp - spec.qmin)


def state_spec(bcx: QuantSpec) -> QuantSpec:
    """The int16 spec of the gated input B * x (the conv state) covering every product the bcx codes allow."""
    vmax = (_dmax(bcx) * float(bcx.scale)) ** 2
    return QuantSpec(STATE_BITS, float(np.float32(vmax / 32767.0)) if vmax > 0 else 1.0, 0)


def prepare_short_conv(bcx: QuantSpec, weight: QuantSpec, state: QuantSpec, out: QuantSpec, w_abs_rowsum: int) -> dict:
    """Attributes of lowbit.int ShortConv; ``w_abs_rowsum`` = max over channels of sum_k |weight codes|."""
    if bcx.per_channel or out.per_channel or state.per_channel:
        raise PrepareError("ShortConv: per-tensor bcx, state and output specs expected")
    if bcx.bits != out.bits or bcx.bits not in (8, 16):
        raise PrepareError(f"ShortConv: int8 -> int8 or int16 -> int16 expected, got {bcx.describe()} -> "
                           f"{out.describe()}")
    if state.bits != STATE_BITS or int(state.zero_point) != 0:
        raise PrepareError(f"ShortConv: the state must be int16 symmetric, got {state.describe()}")
    dmax = _dmax(bcx)
    if dmax * (1 << 15) * w_abs_rowsum >= (1 << 47):
        raise PrepareError(f"ShortConv: gate codes up to {dmax} times taps summing to {w_abs_rowsum} can exceed the "
                           f"2^47 bound of the int64 rescale")
    s, s_v, s_y = float(bcx.scale), float(state.scale), float(out.scale)
    v_mult, v_shift = quantize_multiplier(s * s / s_v)
    if v_shift > 15:
        raise PrepareError(f"ShortConv: state scale {s_v:.3g} is too fine for input scale {s:.3g}")
    w_scale = np.broadcast_to(np.asarray(weight.scale, np.float64).reshape(-1), (np.size(weight.scale),))
    mult, shifts = quantize_multipliers(s * s_v * w_scale / s_y)
    return {"input_offset": -int(bcx.zero_point), "v_multiplier": v_mult, "v_shift": v_shift,
            "multiplier": mult, "shift": shifts, "output_offset": int(out.zero_point),
            "act_min": out.qmin, "act_max": out.qmax}
