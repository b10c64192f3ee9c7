"""Integer spiking kernels (runtime/kernels/int/spiking.py) and their Prepare (quant/prepare_recurrent.py): the
LIF's stated per-step bound against lowbit's float LIF (runtime/kernels/float/lowbit_lif.py, checked against
ONNX Runtime by tests/test_zoo_ops.py) with a BatchNorm folded in, hard points (threshold ties, resets,
saturation), and the accumulate counts of the spike-driven layers against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant import prepare_linear as pl
from lowbit.quant import prepare_recurrent as pr
from lowbit.quant.spec import QuantSpec, activation_spec, weight_spec
from lowbit.runtime.kernels.float.lowbit_lif import LIF as lif_float
from lowbit.runtime.kernels.int import spiking as S
from lowbit.runtime.kernels.int.linear import Conv, FullyConnected


def _lif_case(rng, bits, tau, soft, channels=6):
    x = rng.standard_normal((3, 40, channels)) * rng.uniform(0.5, 3)
    in_spec = activation_spec(float(x.min()), float(x.max()), bits)
    scale = rng.uniform(0.3, 2.0, channels) * rng.choice([1, 1, -1], channels)  # a folded BN, one negative gamma
    bias = rng.uniform(-0.5, 0.8, channels)
    v_reset = None if soft else 0.0
    v_spec = pr.membrane_spec(in_spec, scale, bias, 1.0, 0.0)
    attrs = pr.prepare_lif(in_spec, v_spec, scale, bias, tau, 1.0, v_reset)
    attrs["to"] = in_spec.dtype.name
    return in_spec.quantize(x), in_spec, v_spec, scale, bias, attrs


def _float_step(v_real, y, tau, soft):
    """One float LIF step (the float kernel's formula, soft reset: subtract the threshold)."""
    if not soft:
        s, _ = lif_float(y[:, None], v_real, tau=tau, v_threshold=1.0, v_reset=0.0)
        h = v_real + (y - v_real) / tau
        return s[:, 0], h
    h = v_real + (y - v_real) / tau
    return (h >= 1.0).astype(np.float64), h


@pytest.mark.parametrize("bits,tau,soft", [(8, 2.0, False), (16, 2.0, False), (8, 3.0, False), (8, 2.0, True),
                                           (16, 4.0, True)])
def test_lif_step_within_stated_bound_of_float_lif(bits, tau, soft):
    rng = np.random.default_rng(bits + int(tau) * 10 + soft)
    xq, in_spec, v_spec, scale, bias, attrs = _lif_case(rng, bits, tau, soft)
    s_v = float(v_spec.scale)
    th = attrs["threshold"]
    v = None
    agree = total = 0
    for t in range(xq.shape[1]):
        v_prev = np.zeros(xq[:, 0].shape, np.int64) if v is None else v.astype(np.int64)
        spikes, v = S.LIF(xq[:, t:t + 1], v, **attrs)
        y = scale * in_spec.dequantize(xq[:, t]).astype(np.float64) + bias
        s_ref, h_ref = _float_step(v_prev * s_v, y, tau, soft)
        h_ref = h_ref / s_v
        sure = np.abs(h_ref - th) > 2  # the docstring's band: outside it the spike must agree
        assert np.array_equal(spikes[:, 0][sure], s_ref[sure].astype(spikes.dtype))
        fired = spikes[:, 0] == 1
        h_int = v + fired * th  # soft reset: V = H - threshold; hard reset: H is only known when it did not fire
        known = np.ones_like(fired) if soft else ~fired
        assert np.all(np.abs(h_int[known] - h_ref[known]) <= 2)
        agree += int(np.count_nonzero(spikes[:, 0] == s_ref))
        total += s_ref.size
    assert agree / total > 0.97


def test_lif_whole_sequence_matches_float_lif_spikes():
    rng = np.random.default_rng(1)
    xq, in_spec, _, scale, bias, attrs = _lif_case(rng, 16, 2.0, False)
    spikes, v_last = S.LIF(xq, None, **attrs)
    y = scale * in_spec.dequantize(xq).astype(np.float64) + bias
    s_ref, _ = lif_float(y, None, tau=2.0, v_threshold=1.0, v_reset=0.0)
    assert np.mean(spikes == s_ref) > 0.99
    assert spikes.dtype == np.int16 and v_last.dtype == np.int16
    step_v, outs = None, []
    for t in range(xq.shape[1]):
        s, step_v = S.LIF(xq[:, t:t + 1], step_v, **attrs)
        outs.append(s)
    assert np.array_equal(np.concatenate(outs, 1), spikes) and np.array_equal(step_v, v_last)


def test_lif_hard_points():
    base = dict(input_offset=0, input_multiplier=np.array([1 << 30]), input_shift=np.array([1]), input_bias=0,
                threshold=100, v_reset=0, leak_shift=1)
    # H = V + (c - V) / 2 with V = 0: c = 200 gives H = 100 = threshold exactly -> fires (Theta(0) = 1)
    s, v = S.LIF(np.array([[[127]], [[125]]], np.int8), None, **dict(base, input_bias=73))
    assert s[:, 0, 0].tolist() == [1, 0] and v[:, 0].tolist() == [0, 99]  # c = 200 -> H = 100; c = 198 -> 99
    s, v = S.LIF(np.array([[[100]]], np.int8), None, **dict(base, input_bias=100))
    assert int(s[0, 0, 0]) == 1 and int(v[0, 0]) == 0             # hard reset to v_reset
    s, v = S.LIF(np.array([[[100]]], np.int8), None, **dict(base, input_bias=100, reset="soft"))
    assert int(s[0, 0, 0]) == 1 and int(v[0, 0]) == 0             # soft reset: 100 - 100
    s, v = S.LIF(np.array([[[110]]], np.int8), None, **dict(base, input_bias=100, reset="soft"))
    assert int(v[0, 0]) == 5                                      # H = 105 -> 105 - 100
    s, v = S.LIF(np.array([[[-3]]], np.int8), np.array([[0]], np.int16), **base)
    assert int(v[0, 0]) == -2                                     # -3 / 2 = -1.5 -> -2 (ties away from zero)
    stats = {}
    s, v = S.LIF(np.full((1, 3, 1), 127, np.int8), None, **dict(base, input_shift=np.array([20]), threshold=10 ** 9),
                 _stats=stats)
    assert int(v[0, 0]) == 32767 and stats["state_saturated"] == 3 and stats["spikes"] == 0
    assert stats["firing_rate"] == 0.0 and stats["elements"] == 3
    with pytest.raises(ModelError, match="reset"):
        S.LIF(np.zeros((1, 1, 1), np.int8), None, **dict(base, reset="none"))


def test_lif_membrane_spec_cannot_saturate():
    rng = np.random.default_rng(2)
    for bits in (8, 16):
        in_spec = activation_spec(-7.0, 9.0, bits)
        scale, bias = rng.uniform(-3, 3, 4), rng.uniform(-2, 2, 4)
        v_spec = pr.membrane_spec(in_spec, scale, bias, 1.0, 0.0)
        attrs = pr.prepare_lif(in_spec, v_spec, scale, bias, 2.0, 1.0, 0.0)
        info = np.iinfo(in_spec.dtype)
        x = np.where(rng.random((2, 64, 4)) < 0.5, info.min, info.max).astype(in_spec.dtype)
        stats = {}
        S.LIF(x, None, **attrs, _stats=stats)
        assert stats["state_saturated"] == 0
        assert attrs["threshold"] * float(v_spec.scale) == 1.0  # the threshold is exact (scale 2^-F)


# --- spike-driven layers -------------------------------------------------------------------------------------------
def _fc_attrs(w_spec, out_spec):
    return pl.prepare_fully_connected(QuantSpec(8, 1.0, 0), w_spec, out_spec)


def test_spike_fully_connected_is_fully_connected_plus_accumulate_counts():
    rng = np.random.default_rng(3)
    s = (rng.random((5, 7, 12)) < 0.2).astype(np.int8)
    s[0, 0, :3] = 2  # a residual sum of two spike trains
    w = rng.standard_normal((9, 12))
    w_spec = weight_spec(w, 8, 0)
    qw = w_spec.quantize(w)
    attrs = _fc_attrs(w_spec, activation_spec(-4, 4, 8))
    stats = {}
    y = S.SpikeFullyConnected(s, qw, None, **attrs, _stats=stats)
    assert np.array_equal(y, FullyConnected(s, qw, None, **attrs))
    assert stats["spikes"] == int(s.sum()) and stats["ac"] == int(s.sum()) * 9
    assert stats["firing_rate"] == pytest.approx(np.count_nonzero(s) / s.size)


def _brute_ac(s, w_shape, group, strides, dilations, pads, out_hw):
    """sum over (n, o, y, x, c in o's group, i, j) of s at the tap (0 outside the image)."""
    h, wd = s.shape[2:]
    o, cg, kh, kw = w_shape
    total = 0
    for oo in range(o):
        g = oo // (o // group)
        for yy in range(out_hw[0]):
            for xx in range(out_hw[1]):
                for i in range(kh):
                    for j in range(kw):
                        r = yy * strides[0] + i * dilations[0] - pads[0]
                        q = xx * strides[1] + j * dilations[1] - pads[1]
                        if 0 <= r < h and 0 <= q < wd:
                            total += int(s[:, g * cg:(g + 1) * cg, r, q].sum())
    return total


@pytest.mark.parametrize("group,strides,dilations,pads", [(1, [1, 1], [1, 1], [1, 1, 1, 1]),
                                                          (2, [2, 1], [1, 2], [0, 2, 1, 0]),
                                                          (4, [1, 2], [1, 1], [2, 0, 0, 1])])
def test_spike_conv_counts_accumulates_exactly(group, strides, dilations, pads):
    rng = np.random.default_rng(group)
    s = (rng.random((2, 4, 6, 7)) < 0.3).astype(np.int8)
    w = rng.standard_normal((8, 4 // group, 3, 2))
    w_spec = weight_spec(w, 8, 0)
    qw = w_spec.quantize(w)
    attrs = pl.prepare_conv(QuantSpec(8, 1.0, 0), w_spec, activation_spec(-5, 5, 8))
    geo = dict(layout="NCHW", strides=strides, dilations=dilations, pads=pads, group=group)
    stats = {}
    y = S.SpikeConv(s, qw, None, **attrs, **geo, _stats=stats)
    assert np.array_equal(y, Conv(s, qw, None, **attrs, **geo))
    assert stats["ac"] == _brute_ac(s, qw.shape, group, strides, dilations, pads, y.shape[2:])
    assert stats["spikes"] == int(s.sum())


def test_spike_conv_1d_counts_a_causal_window():
    s = np.array([[[1, 0, 1, 1]]], np.int8)  # [N, C, L]
    w = np.ones((3, 1, 3), np.int8)           # 3 output channels, k = 3
    attrs = dict(multiplier=np.array([1 << 30]), shift=np.array([1]))
    stats = {}
    S.SpikeConv(s, w, None, **attrs, pads=[2, 0], _stats=stats)
    # outputs t = 0..3 see taps [t-2, t]: spikes in windows 1, 1, 2, 2 -> 6, times 3 channels
    assert stats["ac"] == 18 and stats["spikes"] == 3
    with pytest.raises(ModelError, match="negative"):
        S.SpikeConv(-s, w, None, **attrs, pads=[2, 0])


def test_spike_detection_walks_thousands_of_adds_without_recursion():
    """A LIF's spikes summed through a chain of 3,000 integer Adds are still spikes, and the check does not
    recurse once per Add (it used to overflow Python's stack on deep residual chains)."""
    from lowbit.graph.ir import Graph
    from lowbit.quant.lower_recurrent import is_spike_value
    from lowbit.quant.spec import QuantSpec
    from lowbit.runtime.registry import INT_DOMAIN
    g = Graph()
    spike = QuantSpec(8, 1.0, 0)
    x = g.new_value("x", (1, 4), np.int8)
    s = g.new_value("s", (1, 4), np.int8)
    s.quant = spike
    g.add_node("LIF", [x], [s], domain=INT_DOMAIN)
    v = s
    for i in range(3000):
        y = g.new_value(f"y{i}", (1, 4), np.int8)
        y.quant = spike
        g.add_node("Add", [v, s], [y], domain=INT_DOMAIN)
        v = y
    assert is_spike_value(v)
    x.quant = spike
    z = g.new_value("z", (1, 4), np.int8)
    z.quant = spike
    g.add_node("Add", [v, x], [z], domain=INT_DOMAIN)   # x is not produced by a LIF
    assert not is_spike_value(z)
