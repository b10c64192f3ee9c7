"""Integer MaskedSoftmax: TFLite's Softmax over the unmasked entries of each row (lowbit-defined).

Attention masks are exported as ``Softmax(Where(mask, -1e4, scores))`` (or a -inf/-3.4e38 fill). In float the
masked entries contribute exp(-1e4 - max) = 0 exactly. Quantizing the Where's output cannot reproduce that:
the fill would either stretch the scores' scale (every score rounds to a few codes) or, clamped to the lowest
code, still contribute exp(lowest - max) > 0 to every row sum, so a causal row would see its future. This op
keeps the exact float semantics of the mask:

    y[r, i] = softmax over {j : not mask[r, j]} of x[r, j]     for unmasked i     (same arithmetic as lowbit.int
    y[r, i] = zero-probability code (-128 int8, 0 int16)       for masked i        Softmax, runtime/kernels/int/
                                                                                   softmax.py)

The max is taken over the unmasked entries only and masked entries add exactly 0 to the sum of exponentials,
so a row's result depends only on its unmasked entries: with no entry masked it equals lowbit.int Softmax bit
for bit, and a causal row equals the row of a shorter sequence (what makes KV-cache decoding bit-exact with the
whole-sequence run). A fully masked row outputs all zero-probability codes (float would give 1/n each).

Inputs: ``x`` int8/int16 [..., n], ``mask`` bool broadcastable to x (True = masked out). Attributes: those of
Softmax (quant.prepare_elementwise.prepare_softmax; ``exp_cutoff`` as there). The arithmetic reuses
softmax.py's exp tables and reciprocal, so the two kernels cannot drift apart.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.runtime.kernels.int.elementwise import count_leading_zeros32, wrap32
from lowbit.runtime.kernels.int.softmax import (_int8_exp_tables, _int16_exp_table, normalize_int16,
                                                one_over_one_plus_x_for_x_in_0_1)
from lowbit.runtime.registry import int_kernel


def _masked_max(x, mask):
    lowest = np.iinfo(x.dtype).min
    return np.where(mask, lowest, x).max(axis=-1, keepdims=True)


@int_kernel("MaskedSoftmax")
def MaskedSoftmax(x, mask, *, axis=-1, input_multiplier, input_left_shift, diff_min=None, exp_table=None,
                  one_over_one_plus_x_table=None, rounding="double", exp_cutoff=0):
    """Softmax over the last axis restricted to the entries where ``mask`` is False (module docstring)."""
    if axis not in (-1, x.ndim - 1):
        raise ModelError(f"MaskedSoftmax: the integer kernel works on the last axis, got axis={axis} for an input "
                         f"of rank {x.ndim}")
    mask = np.broadcast_to(np.asarray(mask, bool), x.shape)
    if x.dtype == np.int8:
        if diff_min is None:
            raise ModelError("MaskedSoftmax: an int8 input needs the diff_min attribute")
        return _masked_int8(x, mask, int(input_multiplier), int(input_left_shift), int(diff_min))
    if x.dtype == np.int16:
        if exp_table is None or one_over_one_plus_x_table is None:
            raise ModelError("MaskedSoftmax: an int16 input needs exp_table and one_over_one_plus_x_table")
        return _masked_int16(x, mask, int(input_multiplier), int(input_left_shift), np.asarray(exp_table),
                             np.asarray(one_over_one_plus_x_table), rounding, bool(exp_cutoff))
    raise ModelError(f"MaskedSoftmax: input must be int8 or int16, got {x.dtype}")


def _masked_int8(x, mask, input_multiplier, input_left_shift, diff_min):
    """reference_ops::Softmax (int8) of softmax.py with masked entries removed from the max and the sum."""
    keep_t, exp_t, exp12_t = _int8_exp_tables(input_multiplier, input_left_shift, diff_min)
    neg_diff = np.where(mask, 0, _masked_max(x, mask).astype(np.int16) - x)
    keep = keep_t[neg_diff] & ~mask
    sum_of_exps = wrap32(np.where(keep, exp12_t[neg_diff], 0).sum(axis=-1, keepdims=True))
    sum_of_exps = np.where(sum_of_exps == 0, 1 << 19, sum_of_exps)  # fully masked row: its outputs are masked
    headroom_plus_one = count_leading_zeros32(sum_of_exps)
    num_bits_over_unit = 12 - headroom_plus_one
    shifted_sum_minus_one = wrap32(((sum_of_exps << headroom_plus_one) & 0xFFFFFFFF) - (1 << 31))
    shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one)
    exponent = num_bits_over_unit + 31 - 8
    prod = (shifted_scale * exp_t[neg_diff] + (1 << 30)) >> 31
    out = ((prod + (np.int64(1) << (exponent - 1))) >> exponent) - 128
    return np.where(keep, np.minimum(out, 127), -128).astype(np.int8)


def _masked_int16(x, mask, input_multiplier, input_left_shift, exp_table, recip_table, rounding, cutoff):
    """SoftmaxInt16 of softmax.py with masked entries removed from the max and the sum."""
    exp_t = _int16_exp_table(input_multiplier, input_left_shift,
                             np.ascontiguousarray(exp_table, np.int16).tobytes(), rounding, cutoff)
    neg_diff = np.where(mask, 0, _masked_max(x, mask).astype(np.int32) - x)
    exps = np.where(mask, 0, exp_t[neg_diff])
    sum_of_exps = wrap32(exps.sum(axis=-1, keepdims=True))
    sum_of_exps = np.where(sum_of_exps == 0, 32767, sum_of_exps)  # fully masked row: its outputs are 0
    return normalize_int16(exps, sum_of_exps, recip_table)
