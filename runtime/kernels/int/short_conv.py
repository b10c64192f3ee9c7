"""Integer gated short convolution, the core of LFM2's ``y = W_out(C * causal_dwconv_k(B * x))`` (lowbit-defined;
the float op is runtime/kernels/float/lowbit_short_conv.py).

Inputs: ``bcx`` int8/int16 [B, T, 3C] (gates B, C and input x along the last axis, one QuantSpec, codes
offset by input_offset = -zero point), ``weight`` int8 (int4 values) or int16 [C, K] (symmetric, per channel),
``state0`` int16 [B or 1, K-1, C] or None (zeros): the last K-1 gated inputs of the previous call, in the state
spec (int16, symmetric, scale s_v). Per channel i and step t, with d = bcx + input_offset:

    v_t   = sat16(MultiplyByQuantizedMultiplier(d_B,t * d_x,t, v_multiplier, v_shift))     int16 state codes
    w     = concat(state0, v) along time                                                 [B, K-1+T, C] int16
    acc_t = d_C,t * sum_k weight[i, k] * w[t + k]                                          int64, exact
    y_t   = clamp(MultiplyByQuantizedMultiplier_int64(acc_t, multiplier_i, shift_i) + output_offset)

with real multipliers s_bcx^2 / s_v (the product d_B d_x is exact in int32, |d| <= 2^15) and
s_bcx * s_v * s_w,i / s_y (TFLite's 16x8 int64 rescale, 16-bit mantissa; Prepare checks |acc| < 2^47).
Outputs: ``y`` [B, T, C] (output spec) and ``state_last`` [B, K-1, C] = the last K-1 rows of w (int16, state
spec): every gated input is held at the state precision, in the whole-sequence run as in a step-by-step run,
so that chaining calls through state_last -> state0 is bit-exact with one call over the whole sequence.

State and accumulator widths: state int16 (>= 16 bits at every activation precision), v product int32,
convolution and gate product int64.

Error bound (tests/test_int_short_conv.py), against the float op evaluated on the dequantized bcx, state and
weights, in output steps s_y, before clamping:
    |y - y_float / s_y - zp_y| <= 0.5 + |y_float| / s_y * 2^-15 + |C_t| * sum_k |w_ik| * s_v / (2 s_y) + 2^-8
(final rounding, the 16-bit multiplier, and the state's own rounding of B * x to s_v propagated through the
taps and the C gate).
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.registry import int_kernel


@int_kernel("ShortConv")
def ShortConv(bcx, weight, state0=None, *, input_offset, v_multiplier, v_shift, multiplier, shift, output_offset,
              act_min, act_max, _stats=None):
    """y, state_last = the gated causal depthwise convolution of the module docstring."""
    if bcx.ndim != 3 or bcx.shape[-1] % 3 or weight.ndim != 2 or weight.shape[0] != bcx.shape[-1] // 3:
        raise ModelError(f"ShortConv: bcx [B, T, 3C] and weight [C, K] expected, got {list(bcx.shape)} and "
                         f"{list(weight.shape)}")
    if bcx.dtype not in (np.int8, np.int16):
        raise ModelError(f"ShortConv: bcx must be int8 or int16, got {bcx.dtype}")
    batch, steps, three_c = bcx.shape
    c = three_c // 3
    k = weight.shape[1]
    d = bcx.astype(np.int64) + input_offset
    gate_b, gate_c, xin = d[..., :c], d[..., c:2 * c], d[..., 2 * c:]
    v_raw = fp.multiply_by_quantized_multiplier(gate_b * xin, v_multiplier, v_shift)
    v = np.clip(v_raw, -32768, 32767)
    if state0 is None:
        init = np.zeros((batch, k - 1, c), np.int64)
    else:
        if state0.dtype != np.int16:
            raise ModelError(f"ShortConv: state0 must hold int16 state codes, got {state0.dtype}")
        init = np.broadcast_to(state0, (batch, k - 1, c)).astype(np.int64)
    window = np.concatenate([init, v], axis=1)
    w = weight.astype(np.int64)
    conv = np.zeros((batch, steps, c), np.int64)
    for j in range(k):
        conv += window[:, j:j + steps] * w[:, j]
    raw = fp.multiply_by_quantized_multiplier_int64(gate_c * conv, multiplier, shift) + output_offset
    if _stats is not None:
        _stats["saturated"] = fp.saturate_count(raw, act_min, act_max) + fp.saturate_count(v_raw, -32768, 32767)
    return np.clip(raw, act_min, act_max).astype(bcx.dtype), window[:, steps:].astype(np.int16)
