"""Integer spiking kernels: LIF neurons, and the layers fed by spikes (accumulate-only Conv / FullyConnected).

Spike tensors (docs/hybrid_ops.md): codes 0 or 1 at scale 1, zero point 0 (QuantSpec(8 or 16, 1, 0): a 1-bit
payload in the activation dtype, int8 or int16; a residual sum of k spike trains holds 0 .. k). A layer whose input is spikes multiplies by
nothing: acc = sum of the weights of the inputs that fired, an accumulate (AC) per spike and fan-out. The
kernels record in the executor's per-node ``_stats``:

- ``spikes``: sum of the input (spike) codes, i.e. spikes received (LIF: spikes emitted);
- ``ac``: accumulates, spikes x fan-out (Conv: exact count over the receptive fields, FullyConnected: x N);
- ``firing_rate``: the fraction of input (LIF: output) elements that are non-zero (a float, for reports);
- ``elements``: how many input (LIF: output) elements that fraction is over.
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import ModelError
from lowbit.quant import fixedpoint as fp
from lowbit.runtime.kernels.int.linear import Conv, FullyConnected
from lowbit.runtime.registry import int_kernel

_STATE = {16: np.int16, 32: np.int32}


def _count(stats, spikes: int, nonzero: int, elements: int, ac: int | None = None) -> None:
    if stats is None:
        return
    stats["spikes"] = stats.get("spikes", 0) + int(spikes)
    stats["elements"] = stats.get("elements", 0) + int(elements)
    stats["nonzero"] = stats.get("nonzero", 0) + int(nonzero)
    stats["firing_rate"] = stats["nonzero"] / stats["elements"] if stats["elements"] else 0.0
    if ac is not None:
        stats["ac"] = stats.get("ac", 0) + int(ac)


def _per_channel(a, n: int, name: str) -> np.ndarray:
    a = np.asarray(a, np.int64).reshape(-1)
    if a.size not in (1, n):
        raise ModelError(f"LIF: {name} has {a.size} values for {n} channels (last axis)")
    return a


@int_kernel("LIF")
def LIF(x, v0=None, *, input_offset=0, input_multiplier=None, input_shift=None, input_bias=0, threshold=None,
        v_reset=0, reset="hard", leak_multiplier=0, leak_shift=1, state_bits=16, to="int8", _stats=None):
    """Integer leaky integrate-and-fire neurons over time (axis 1), decay_input (lowbit.LIF, spikingjelly LIFNode).

    Inputs: x [B, T, *F] int8/int16 codes; v0 [B|1, *F] membrane codes (zeros when None). Per-channel
    attributes run along the last axis (or hold one value): they fold a BatchNorm before the neuron in. The
    membrane is int``state_bits`` at the fixed-point scale s_v = 2^-F (quant/prepare_recurrent.membrane_spec).

        c_t = MultiplyByQuantizedMultiplier(x_t + input_offset, input_multiplier[c], input_shift[c])
              + input_bias[c]                                     (input current, membrane steps)
        H_t = saturate_state(V_{t-1} + leak(c_t - (V_{t-1} - v_reset)))
              leak(z) = RoundingDivideByPOT(z, leak_shift) when leak_multiplier == 0 (tau = 2^leak_shift),
                        else MultiplyByQuantizedMultiplier(z, leak_multiplier, leak_shift)        (1/tau)
        S_t = 1 if H_t >= threshold else 0
        V_t = v_reset if S_t else H_t              (reset "hard")
        V_t = H_t - S_t * threshold                (reset "soft")

    Outputs: spikes [B, T, *F] (0/1 as ``to``: int8, or int16 next to 16-bit activations; QuantSpec(bits, 1, 0)),
    v_last [B, *F] (membrane codes).
    Widths: c and H in int64 before the state clamp; Prepare chooses F so that no reachable potential
    saturates (saturations would be counted in ``_stats["state_saturated"]``).

    Error bound, against the float LIF on the dequantized input with the same BN scale/shift: from the same
    V_{t-1}, the current is off by <= 3/2 membrane steps (the multiplier's double rounding <= 1, the bias's
    rounding 1/2) and the leak rounds once more (<= 1), so |H_t - H_ref_t / s_v| <= 3 / (2 tau) + 1 <= 2 steps
    and a spike can differ only where |H_ref - threshold| <= 2 s_v (within 2 / 2^F of the threshold). Carried
    over time the membrane error contracts by 1 - 1/tau per step, so while both fire alike it stays below
    2 tau steps; a hard reset re-aligns the two membranes. ``_stats``: spikes, elements, nonzero, firing_rate
    (of the output).
    """
    if input_multiplier is None or input_shift is None or threshold is None:
        raise ModelError("LIF: missing integer attribute(s) input_multiplier/input_shift/threshold "
                         "(see docs/hybrid_ops.md)")
    if reset not in ("hard", "soft"):
        raise ModelError(f"LIF: reset must be 'hard' or 'soft', got {reset!r}")
    try:
        sdt = np.dtype(_STATE[int(state_bits)])
    except KeyError:
        raise ModelError(f"LIF: state_bits must be 16 or 32, got {state_bits!r}") from None
    x = np.asarray(x)
    if x.ndim < 3:
        raise ModelError(f"LIF: x {list(x.shape)} must be [B, T, *F]")
    batch, steps = x.shape[:2]
    feat = x.shape[2:]
    nch = feat[-1]
    im = _per_channel(input_multiplier, nch, "input_multiplier")
    ish = _per_channel(input_shift, nch, "input_shift")
    ib = _per_channel(input_bias, nch, "input_bias")
    if v0 is None:
        v = np.zeros((batch,) + feat, np.int64)
    else:
        v0 = np.asarray(v0)
        if v0.dtype.kind not in "iu":
            raise ModelError(f"LIF: the initial membrane must be integer codes, got {v0.dtype}")
        v = np.broadcast_to(v0.astype(np.int64), (batch,) + feat).copy()
    current = fp.multiply_by_quantized_multiplier(x.astype(np.int64) + int(input_offset), im, ish) + ib
    info = np.iinfo(sdt)
    th, vr = int(threshold), int(v_reset)
    if to not in ("int8", "int16"):
        raise ModelError(f"LIF: 'to' must be 'int8' or 'int16', got {to!r}")
    spikes = np.empty(x.shape, np.dtype(to))
    saturated = 0
    for t in range(steps):
        z = current[:, t] - (v - vr)
        leak = fp.rounding_divide_by_pot(z, int(leak_shift)) if int(leak_multiplier) == 0 else \
            fp.multiply_by_quantized_multiplier(z, int(leak_multiplier), int(leak_shift))
        h = v + leak
        saturated += fp.saturate_count(h, int(info.min), int(info.max))
        h = np.clip(h, info.min, info.max)
        fired = h >= th
        spikes[:, t] = fired
        v = np.where(fired, vr, h) if reset == "hard" else h - fired * th
    if _stats is not None:
        _stats["state_saturated"] = _stats.get("state_saturated", 0) + saturated
        n = int(np.count_nonzero(spikes))
        _count(_stats, n, n, spikes.size)
    return spikes, np.clip(v, info.min, info.max).astype(sdt)


def _spike_totals(s: np.ndarray, input_offset: int) -> tuple[np.ndarray, int, int]:
    s = np.asarray(s, np.int64) + int(input_offset)
    if s.size and int(s.min()) < 0:
        raise ModelError("spike input holds negative codes; spikes are 0/1 (or counts) with zero point 0")
    return s, int(s.sum()), int(np.count_nonzero(s))


@int_kernel("SpikeFullyConnected")
def SpikeFullyConnected(s, w, bias=None, *, input_offset=0, _stats=None, **attrs):
    """FullyConnected (runtime/kernels/int/linear.py, same attributes and integers) whose input is spikes:
    acc[b, n] = bias[n] + sum over the inputs k that fired of s[b, k] * w[n, k], i.e. accumulates only.
    ``_stats``: spikes (sum of s), ac = spikes * N, firing_rate (non-zero fraction of s), elements."""
    w = np.asarray(w)
    s_pos, total, nonzero = _spike_totals(s, input_offset)
    y = FullyConnected(s, w, bias, input_offset=input_offset, _stats=_stats, **attrs)
    _count(_stats, total, nonzero, s_pos.size, total * w.shape[0])
    return y


def _window_sum(xs: np.ndarray, kernel, strides, dilations, pads, out) -> int:
    """sum over the output positions of the sum of ``xs`` [N, H, W] over each receptive field (zero padding)."""
    n, h, w = xs.shape
    top, left = pads[0], pads[1]
    need_h = (out[0] - 1) * strides[0] + (kernel[0] - 1) * dilations[0] + 1
    need_w = (out[1] - 1) * strides[1] + (kernel[1] - 1) * dilations[1] + 1
    xp = np.zeros((n, max(need_h, top + h), max(need_w, left + w)), np.int64)
    xp[:, top:top + h, left:left + w] = xs
    total = 0
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            y0, x0 = i * dilations[0], j * dilations[1]
            total += int(xp[:, y0:y0 + (out[0] - 1) * strides[0] + 1:strides[0],
                            x0:x0 + (out[1] - 1) * strides[1] + 1:strides[1]].sum())
    return total


@int_kernel("SpikeConv")
def SpikeConv(s, w, bias=None, *, input_offset=0, layout="NCHW", strides=None, pads=None, dilations=None,
              group=1, _stats=None, **attrs):
    """Conv (runtime/kernels/int/linear.py, same attributes and integers) whose input is spikes: every output
    sums the weights of the taps that fired. ``_stats``: spikes (sum of s), ac = sum over output elements of
    the spikes in their receptive field (each spike counted once per output channel of its group and per window
    that holds it: spikes x fan-out, exactly, padding and borders included), firing_rate, elements."""
    w = np.asarray(w)
    s_pos, total, nonzero = _spike_totals(s, input_offset)
    y = Conv(s, w, bias, input_offset=input_offset, layout=layout, strides=strides, pads=pads,
             dilations=dilations, group=group, _stats=_stats, **attrs)
    if _stats is not None:
        if s_pos.ndim == 3:  # 1-D: [N, C, L] / [N, L, C]
            s_pos = s_pos[:, :, None, :] if layout == "NCHW" else s_pos[:, None, :, :]
        per_pos = s_pos.sum(axis=1 if layout == "NCHW" else 3)        # [N, H, W], channels summed
        kh, kw = w.shape[2], w.shape[-1]
        st = [1, 1] if strides is None else ([1] + list(strides) if len(strides) == 1 else list(strides))
        dl = [1, 1] if dilations is None else ([1] + list(dilations) if len(dilations) == 1 else list(dilations))
        pd = [0, 0, 0, 0] if pads is None else ([0, pads[0], 0, pads[1]] if len(pads) == 2 else list(pads))
        out = y.shape[2:] if layout == "NCHW" else y.shape[1:-1]
        out = (1, out[0]) if len(out) == 1 else tuple(out)
        ac = _window_sum(per_pos, (kh if w.ndim == 4 else 1, kw), st, dl, pd, out) * (w.shape[0] // int(group))
        _count(_stats, total, nonzero, s_pos.size, ac)
    return y
