"""Integer ShortConv (runtime/kernels/int/short_conv.py, quant/prepare_short_conv.py): the kernel against the
float op (float64, on dequantized inputs and weights) within the docstring's bound, streaming through the int16
state bit-exact with one whole-sequence call, and the hard points (zero state, saturation, int4 taps, a
hand-computed case, prepare refusals)."""
import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.prepare_short_conv import prepare_short_conv, state_spec
from lowbit.quant.spec import QuantSpec, activation_spec, weight_spec
from lowbit.runtime.kernels.float.lowbit_short_conv import ShortConv as ShortConvFloat
from lowbit.runtime.kernels.int.short_conv import ShortConv


def _deq(q, spec):
    """Dequantize in float64; per-channel specs (weights [C, K]) along axis 0."""
    zp, scale = spec.zero_point, spec.scale
    if spec.per_channel:
        zp, scale = zp.reshape(-1, 1), scale.reshape(-1, 1)
    return (q.astype(np.float64) - zp) * scale


def _case(rng, bits, wbits, c=8, k=3, steps=11, batch=3):
    lo, hi = -rng.uniform(0.2, 6), rng.uniform(0.2, 6)
    xs = activation_spec(lo, hi, bits)
    bcx = rng.uniform(lo, hi, (batch, steps, 3 * c))
    w = rng.normal(0, 0.5, (c, k))
    ws = weight_spec(w, wbits, 0)
    st = state_spec(xs) if rng.uniform() < 0.5 else QuantSpec(16, float(np.float32(
        rng.uniform(1.0, 4.0) * (max(-lo, hi) ** 2) / 32767)), 0)  # no state saturation
    state0 = st.quantize(rng.uniform(-1, 1, (batch, k - 1, c)) * 32767 * 0.9 * float(st.scale))
    bq, wq = xs.quantize(bcx), ws.quantize(w)
    y, _ = ShortConvFloat(_deq(bq, xs), _deq(wq, ws), _deq(state0, st))
    ys = activation_spec(y.min(), y.max(), bits)
    rowsum = int(np.max(np.sum(np.abs(wq.astype(np.int64)), axis=1)))
    return xs, ws, st, ys, bq, wq, state0, prepare_short_conv(xs, ws, st, ys, rowsum)


@pytest.mark.parametrize("bits,wbits", [(8, 8), (8, 4), (16, 8), (16, 4)])
def test_matches_float_within_bound(bits, wbits):
    rng = np.random.default_rng(bits * 10 + wbits)
    for _ in range(20):
        xs, ws, st, ys, bq, wq, s0, attrs = _case(rng, bits, wbits)
        stats = {}
        y, last = ShortConv(bq, wq, s0, **attrs, _stats=stats)
        xd, wd = _deq(bq, xs), _deq(wq, ws)
        y_f, _ = ShortConvFloat(xd, wd, _deq(s0, st))
        c = wq.shape[0]
        exact = y_f / float(ys.scale) + int(ys.zero_point)
        bound = (0.5 + np.abs(y_f) / float(ys.scale) * 2.0 ** -15 + 2.0 ** -8
                 + np.abs(xd[..., c:2 * c]) * np.sum(np.abs(wd), axis=1) * float(st.scale) / (2 * float(ys.scale)))
        inside = (exact > ys.qmin) & (exact < ys.qmax)
        assert np.all((np.abs(y - exact) <= bound)[inside])
        assert y.dtype == bq.dtype and last.dtype == np.int16 and last.shape == s0.shape
        clamped = (exact > ys.qmax + bound) | (exact < ys.qmin - bound)
        assert np.all(np.isin(y[clamped], [ys.qmin, ys.qmax])) and stats["saturated"] >= np.count_nonzero(clamped)


@pytest.mark.parametrize("bits", [8, 16])
def test_streaming_is_bit_exact(bits):
    """One call over T steps == T calls of one step chaining state_last -> state0 (and any split in between)."""
    rng = np.random.default_rng(7 + bits)
    xs, ws, st, ys, bq, wq, s0, attrs = _case(rng, bits, 8, steps=16)
    y_all, last_all = ShortConv(bq, wq, s0, **attrs)
    state, ys_step = s0, []
    for t in range(bq.shape[1]):
        y_t, state = ShortConv(bq[:, t:t + 1], wq, state, **attrs)
        ys_step.append(y_t)
    assert np.array_equal(np.concatenate(ys_step, 1), y_all) and np.array_equal(state, last_all)
    y_a, mid = ShortConv(bq[:, :5], wq, s0, **attrs)
    y_b, end = ShortConv(bq[:, 5:], wq, mid, **attrs)
    assert np.array_equal(np.concatenate([y_a, y_b], 1), y_all) and np.array_equal(end, last_all)


def test_hand_computed_case_and_zero_state():
    """C = 1, K = 3, int8 codes with zero point 1: d = code - 1; v = d_B d_x (multiplier 1); taps [1, 2, 3]."""
    xs = QuantSpec(8, 0.5, 1)
    st = QuantSpec(16, 0.25, 0)  # s^2 / s_v = 1
    ws = QuantSpec(8, np.array([1.0]), np.array([0]), 0, narrow=True)
    ys = QuantSpec(8, 0.125, 0)  # s * s_v * s_w / s_y = 1
    attrs = prepare_short_conv(xs, ws, st, ys, 6)
    bcx = np.array([[[3, 2, 4], [1, 3, 0], [2, -1, 3]]], np.int8)  # d: B=[2,0,1] C=[1,2,-2] x=[3,-1,2]
    w = np.array([[1, 2, 3]], np.int8)
    y, last = ShortConv(bcx, w, None, **attrs)
    # v = [6, 0, 2]; conv_t = 1 w[t-2] + 2 w[t-1] + 3 w[t] over [0, 0, 6, 0, 2] = [18, 12, 12]; y = C conv
    assert np.array_equal(y[0, :, 0], [18, 24, -24]) and np.array_equal(last[0, :, 0], [0, 2])
    y0, _ = ShortConv(bcx, w, np.zeros((1, 2, 1), np.int16), **attrs)
    assert np.array_equal(y0, y)


def test_state_and_output_saturation_are_counted():
    xs = QuantSpec(16, 1.0, 0)
    st = QuantSpec(16, 1.0, 0)  # far too fine for products up to 2^30: the state saturates
    ws = QuantSpec(8, np.array([1.0]), np.array([0]), 0, narrow=True)
    ys = QuantSpec(16, 1.0, 0)
    attrs = prepare_short_conv(xs, ws, st, ys, 1)
    bcx = np.array([[[30000, 2, 30000]]], np.int16)
    stats = {}
    y, last = ShortConv(bcx, np.array([[0, 0, 1]], np.int8), None, **attrs, _stats=stats)
    assert last[0, -1, 0] == 32767 and y[0, 0, 0] == 32767 and stats["saturated"] == 2


def test_refusals():
    xs = QuantSpec(16, 1.0, 0)
    ws = QuantSpec(16, np.array([1.0]), np.array([0]), 0, narrow=True)
    with pytest.raises(PrepareError, match="2\\^47"):
        prepare_short_conv(xs, ws, QuantSpec(16, 1.0, 0), xs, 5 * 32767)
    with pytest.raises(PrepareError, match="int16 symmetric"):
        prepare_short_conv(xs, ws, QuantSpec(8, 1.0, 0), xs, 3)
    attrs = prepare_short_conv(QuantSpec(8, 1.0, 0), ws, QuantSpec(16, 1.0, 0), QuantSpec(8, 1.0, 0), 3)
    with pytest.raises(ModelError, match="bcx"):
        ShortConv(np.zeros((1, 2, 5), np.int8), np.zeros((1, 3), np.int8), None, **attrs)
    with pytest.raises(ModelError, match="int16 state"):
        ShortConv(np.zeros((1, 2, 3), np.int8), np.zeros((1, 3), np.int8), np.zeros((1, 2, 1), np.int8), **attrs)
