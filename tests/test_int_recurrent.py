"""Integer recurrent kernels (runtime/kernels/int/recurrent.py) and their Prepare (quant/prepare_recurrent.py):
the error bounds their docstrings state, against lowbit's float ops (runtime/kernels/float/lowbit_*.py, which
tests/test_zoo_ops.py checks against ONNX Runtime), over seeded random inputs and ranges; exact hard points
(zero, ties, saturation, the decay table); whole sequence == step by step, bit for bit."""
from __future__ import annotations

import math

import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.quant import prepare_recurrent as pr
from lowbit.quant.spec import QuantSpec, activation_spec
from lowbit.runtime.kernels.float.lowbit_lmu_memory import LMUMemory as lmu_float
from lowbit.runtime.kernels.float.lowbit_selective_scan import SelectiveScan as scan_float
from lowbit.runtime.kernels.int import recurrent as R
from lowbit.runtime.kernels.int.pool import Mean
from lowbit.tools.zoo.lmu import lmu_matrices


def _q(spec: QuantSpec, x):
    return spec.quantize(x)


def _deq(spec: QuantSpec, q):
    return spec.dequantize(q).astype(np.float64)


# --- LMUMemory -----------------------------------------------------------------------------------------------------
def _lmu_case(rng, order, du, bits, state_bits, steps=24, batch=3):
    abar, bbar = lmu_matrices(order, float(steps))
    abar = abar * rng.uniform(0.8, 1.0)
    bbar = np.tile(bbar, (1, du)) * rng.uniform(0.5, 2.0, size=(1, du))
    hi = rng.uniform(0.1, 3.0)
    u = rng.uniform(-0.3 * hi, hi, size=(batch, steps, du))
    u_spec = activation_spec(float(u.min()), float(u.max()), bits)
    m_ref = lmu_float(u, abar, bbar)[0]
    m_spec = pr.state_spec(float(np.abs(m_ref).max()), state_bits)
    out_spec = activation_spec(float(m_ref.min()), float(m_ref.max()), bits)
    abar_q, bbar_q, attrs = pr.prepare_lmu_memory(abar, bbar, u_spec, m_spec, out_spec)
    return u_spec, m_spec, out_spec, abar_q, bbar_q, attrs, _q(u_spec, u)


def _state_bound(abar_deq: np.ndarray, steps: int) -> np.ndarray:
    """1/2 sum_{k=0..t} ||Abar_q^k||_inf for t = 0 .. steps-1 (the docstring's bound, in state steps)."""
    p = np.eye(abar_deq.shape[0])
    total, out = 0.0, []
    for _ in range(steps):
        total += np.abs(p).sum(1).max()
        out.append(0.5 * total)
        p = abar_deq @ p
    return np.array(out)


@pytest.mark.parametrize("bits,state_bits", [(8, 32), (16, 32), (8, 16), (16, 16)])
def test_lmu_within_stated_bound_of_float_op(bits, state_bits):
    rng = np.random.default_rng(bits + state_bits)
    for trial in range(4):
        order, du = int(rng.choice([4, 16, 64])), int(rng.choice([1, 2]))
        u_spec, m_spec, out_spec, abar_q, bbar_q, attrs, uq = _lmu_case(rng, order, du, bits, state_bits)
        stats = {}
        y, m_last = R.LMUMemory(uq, abar_q, bbar_q, **attrs, _stats=stats)
        assert stats["state_saturated"] == 0
        # the float op on the dequantized parameters and input (the kernel's definition of its reference)
        s_m = float(m_spec.scale)
        abar_deq = abar_q * np.exp2(-attrs["abar_shift"].astype(np.float64))[:, None]
        bbar_deq = bbar_q * (s_m * np.exp2(-attrs["abar_shift"].astype(np.float64))[:, None]) / float(u_spec.scale)
        m_ref, _ = lmu_float(_deq(u_spec, uq), abar_deq, bbar_deq)
        bound = _state_bound(abar_deq, uq.shape[1])
        states = R.LMUMemory(uq, abar_q, bbar_q, **{**attrs, "output_multiplier": 1 << 30, "output_shift": 1,
                                                    "to": "int16", "act_min": -32768, "act_max": 32767,
                                                    "output_offset": 0})[0]
        if state_bits == 16:  # the state itself, read back through an identity output (int16 fits)
            err = np.abs(states - m_ref / s_m).max(axis=(0, 2))
            assert np.all(err <= bound + 1e-6), (trial, err, bound)
        err_y = np.abs(y - (m_ref / float(out_spec.scale) + int(out_spec.zero_point)))
        assert np.all(err_y <= 1.0 + bound[None, :, None] * s_m / float(out_spec.scale) + 1e-6)
        assert np.array_equal(m_last, R.LMUMemory(uq, abar_q, bbar_q, **attrs)[1])


def test_lmu_whole_sequence_equals_step_by_step():
    rng = np.random.default_rng(7)
    *_, abar_q, bbar_q, attrs, uq = _lmu_case(rng, 64, 1, 8, 32, steps=40)
    y, m_last = R.LMUMemory(uq, abar_q, bbar_q, **attrs)
    m = None
    for t in range(uq.shape[1]):
        yt, m = R.LMUMemory(uq[:, t:t + 1], abar_q, bbar_q, m, **attrs)
        assert np.array_equal(yt[:, 0], y[:, t])
    assert np.array_equal(m, m_last) and m.dtype == np.int32


def test_lmu_abar_rows_use_power_of_two_scales_at_16_bits():
    abar, bbar = lmu_matrices(64, 64.0)
    spec = QuantSpec(8, 0.01, -128)
    abar_q, _, attrs = pr.prepare_lmu_memory(abar, bbar, spec, QuantSpec(32, 1e-9, 0), QuantSpec(8, 0.02, 0))
    rowmax = np.abs(abar_q.astype(np.int64)).max(axis=1)
    assert abar_q.dtype == np.int16 and np.all((rowmax >= 1 << 14) & (rowmax < 1 << 15))
    deq = abar_q * np.exp2(-attrs["abar_shift"].astype(np.float64))[:, None]
    assert np.abs(deq - abar).max() <= np.abs(abar).max(axis=1).max() * 2.0 ** -15


def test_lmu_hard_points_zero_ties_saturation():
    one = dict(abar_shift=np.array([1], np.int32), input_offset=0, output_multiplier=1 << 30, output_shift=1,
               to="int16")
    a, b = np.array([[1]], np.int16), np.array([[0]], np.int64)
    zero = np.zeros((2, 5, 1), np.int8)
    y, m = R.LMUMemory(zero, np.array([[3]], np.int16), b, None, **one)
    assert not y.any() and not m.any()                        # zero stays zero
    for m0, want in ((1, 1), (-1, -1), (3, 2), (-3, -2)):     # m0 / 2: ties away from zero
        _, m = R.LMUMemory(np.zeros((1, 1, 1), np.int8), a, b, np.array([[m0]], np.int32), **one)
        assert int(m[0, 0]) == want
    stats = {}
    big = dict(one, abar_shift=np.array([0], np.int32), state_bits=16)
    _, m = R.LMUMemory(np.full((1, 3, 1), 100, np.int8), np.array([[1]], np.int16), np.array([[400]], np.int64),
                       None, **big, _stats=stats)
    assert int(m[0, 0]) == 32767 and m.dtype == np.int16 and stats["state_saturated"] == 3  # 40000 clamps, then 72767, 72767
    with pytest.raises(ModelError, match="abar_shift"):
        R.LMUMemory(zero, a, b, None, input_offset=0)


def test_lmu_records_accumulates_for_spike_input():
    stats = {}
    spikes = np.array([[[1], [0], [1], [1]]], np.int8)
    attrs = dict(abar_shift=np.zeros(3, np.int32), output_multiplier=1 << 30, output_shift=1, input_is_spikes=1)
    R.LMUMemory(spikes, np.eye(3, dtype=np.int16), np.ones((3, 1), np.int64), None, **attrs, _stats=stats)
    assert stats["spikes"] == 3 and stats["ac"] == 9


# --- SelectiveScan -------------------------------------------------------------------------------------------------
def test_decay_table_is_exp2_to_2e_6():
    table = pr.exp2_table()
    assert table[0] == 1 << 30 and table[-1] == 1 << 29
    frac = 20
    t = np.concatenate([np.arange(0, 1 << 21, 997), [0, 1, (1 << 20) - 1, 1 << 20, 30 << 20, 61 << 20]])
    got = R.decay_q30(t, frac, table) / 2.0 ** 30
    want = np.exp2(-t / 2.0 ** frac)
    assert np.all(np.abs(got - want) <= 2e-7 * want + 2.0 ** -30)
    assert R.decay_q30(np.array([1 << 62]), frac, table)[0] == 0


def test_fwht_is_the_sylvester_hadamard_product():
    rng = np.random.default_rng(0)
    x = rng.integers(-1000, 1000, size=(3, 16))
    h = np.ones((1, 1))
    while h.shape[0] < 16:
        h = np.block([[h, h], [h, -h]])
    assert np.array_equal(R.fwht(x, -1), x @ h.T.astype(np.int64))


def _scan_case(rng, bits, state_bits=32, batch=2, steps=16, dim=8, n=4, gate=False, table=False):
    A = -np.exp(rng.uniform(-1.0, 2.5, size=(dim, n)))
    D = rng.uniform(-1.5, 1.5, size=dim)
    x = rng.standard_normal((batch, steps, dim)) * rng.uniform(0.2, 2)
    dt = rng.uniform(-6, 2, size=(batch, steps, dim))
    b = rng.standard_normal((batch, steps, n))
    c = rng.standard_normal((batch, steps, n))
    g = rng.standard_normal((batch, steps, dim))
    d_in = dt if table else np.logaddexp(0, dt)
    specs = {k: activation_spec(float(a.min()), float(a.max()), bits)
             for k, a in (("x", x), ("delta", d_in), ("b", b), ("c", c), ("gate", g))}
    xq, dq, bq, cq, gq = (_q(specs[k], a) for k, a in (("x", x), ("delta", d_in), ("b", b), ("c", c), ("gate", g)))
    if table:
        tab, s_d = pr.softplus_delta_table(specs["delta"])
        delta_deq = tab[dq.astype(np.int64) + 128] * s_d
    else:
        delta_deq = _deq(specs["delta"], dq)
    y_ref, h_ref = scan_float(_deq(specs["x"], xq), delta_deq, A, _deq(specs["b"], bq), _deq(specs["c"], cq), D)
    if gate:
        y_ref = y_ref * _deq(specs["gate"], gq)
    h_spec = pr.state_spec(float(np.abs(h_ref).max()), state_bits, 8.0)
    y_spec = activation_spec(float(y_ref.min()), float(y_ref.max()), bits)
    attrs = pr.prepare_selective_scan(A, D, specs["x"], specs["delta"], specs["b"], specs["c"], h_spec, y_spec,
                                      table, specs["gate"] if gate else None)
    return dict(attrs=attrs, ins=(xq, dq, bq, cq), gq=gq if gate else None, y_ref=y_ref, h_ref=h_ref,
                y_spec=y_spec, h_spec=h_spec, specs=specs, cabs=np.abs(_deq(specs["c"], cq)).sum(-1),
                gabs=np.abs(_deq(specs["gate"], gq)) if gate else 1.0)


def _scan_bound(case, steps):
    """The docstring's bound on |y - y_ref / s_y| in output steps, per [B, T, D]."""
    a = case["attrs"]
    s_h, s_y = float(case["h_spec"].scale), float(case["y_spec"].scale)
    s_acc = s_h * float(case["specs"]["c"].scale)
    eps_a = 2.0 ** -a["exp_frac_bits"] * math.log(2) + (math.log(2) / 1024) ** 2 / 8 + 2.0 ** -28
    hmax = np.abs(case["h_ref"]).max() / s_h
    state = np.arange(1, steps + 1)[None, :, None] * (1 + eps_a * hmax + 2 * 2.0 ** -15 * hmax)
    xabs = np.abs(case["ins"][0].astype(np.int64) + a["x_offset"])
    acc_err = case["cabs"][:, :, None] * state * s_h + 0.5 * (2.0 ** a["output_pre_shift"] + xabs) * s_acc
    return acc_err * case["gabs"] / s_y + 0.5 + 2.0 ** -14 * np.abs(case["y_ref"]) / s_y


@pytest.mark.parametrize("bits,gate,table", [(8, False, False), (16, False, False), (8, True, False),
                                             (8, True, True), (16, True, False)])
def test_scan_within_stated_bound_of_float_op(bits, gate, table):
    rng = np.random.default_rng(bits * 7 + gate * 3 + table)
    for _ in range(4):
        case = _scan_case(rng, bits, gate=gate, table=table)
        stats = {}
        y, h = R.SelectiveScan(*case["ins"], None, case["gq"], **case["attrs"], _stats=stats)
        assert stats["state_saturated"] == 0
        want = case["y_ref"] / float(case["y_spec"].scale) + int(case["y_spec"].zero_point)
        inside = (want > case["attrs"]["act_min"]) & (want < case["attrs"]["act_max"])
        err = np.abs(y - want)[inside]
        bound = _scan_bound(case, y.shape[1])[np.broadcast_to(inside, y.shape)]
        assert np.all(err <= bound), (err.max(), bound.min())
        s_h = float(case["h_spec"].scale)
        assert np.abs(h * s_h - case["h_ref"]).max() <= y.shape[1] * (1e-4 * np.abs(case["h_ref"]).max() + 2 * s_h)


def test_scan_whole_sequence_equals_step_by_step():
    rng = np.random.default_rng(11)
    case = _scan_case(rng, 8, gate=True, table=True, steps=20)
    y, h_last = R.SelectiveScan(*case["ins"], None, case["gq"], **case["attrs"])
    h = None
    xq, dq, bq, cq = case["ins"]
    for t in range(y.shape[1]):
        yt, h = R.SelectiveScan(xq[:, t:t + 1], dq[:, t:t + 1], bq[:, t:t + 1], cq[:, t:t + 1], h,
                                case["gq"][:, t:t + 1], **case["attrs"])
        assert np.array_equal(yt[:, 0], y[:, t])
    assert np.array_equal(h, h_last) and h.dtype == np.int32


def test_scan_hadamard_rotation_is_undone_by_the_folded_matrix():
    from lowbit.quant.fixedpoint import quantize_multiplier
    from lowbit.quant.lower_recurrent import hadamard_matrix
    rng = np.random.default_rng(5)
    case = _scan_case(rng, 16, gate=True)
    a = case["attrs"]
    plain = R.SelectiveScan(*case["ins"], None, case["gq"], **a)[0]
    dim = plain.shape[-1]
    m, s = quantize_multiplier(a["output_multiplier"] * 2.0 ** (a["output_shift"] - 31) / math.sqrt(dim))
    rotated = R.SelectiveScan(*case["ins"], None, case["gq"], **dict(a, hadamard=1, output_multiplier=m,
                                                                       output_shift=s))[0]
    back = rotated.astype(np.float64) @ hadamard_matrix(dim)  # H is symmetric and its own inverse
    assert np.abs(back - plain).max() <= 0.5 * math.sqrt(dim) + 1


def test_scan_hard_points():
    rng = np.random.default_rng(3)
    case = _scan_case(rng, 8)
    a = case["attrs"]
    xq, dq, bq, cq = case["ins"]
    zero = [np.full_like(q, -o) for q, o in ((xq, a["x_offset"]), (bq, a["b_offset"]), (cq, a["c_offset"]))]
    y, h = R.SelectiveScan(zero[0], dq, zero[1], zero[2], **a)
    assert not h.any() and np.all(y == a["output_offset"])  # zero input, zero state -> the code of 0.0
    no_decay = dict(a, exp_multiplier=np.zeros_like(a["exp_multiplier"]))
    h0 = rng.integers(-10 ** 6, 10 ** 6, size=(xq.shape[0],) + a["exp_multiplier"].shape).astype(np.int32)
    _, h1 = R.SelectiveScan(zero[0][:, :1], dq[:, :1], zero[1][:, :1], zero[2][:, :1], h0, **no_decay)
    assert np.array_equal(h1, h0)  # A = 0: the decay is exactly 1 (2^30)
    stats = {}
    tiny = dict(a, state_bits=16, inject_multiplier=1 << 30, inject_shift=14)
    R.SelectiveScan(xq, dq, bq, cq, **tiny, _stats=stats)
    assert stats["state_saturated"] > 0
    with pytest.raises(ModelError, match="delta_table"):
        R.SelectiveScan(xq, dq.astype(np.int16), bq, cq, **dict(a, delta_table=np.zeros(256, np.int32)))


def test_softplus_delta_table_keeps_small_deltas():
    dt_spec = activation_spec(-10.0, 5.0, 8)
    table, s_d = pr.softplus_delta_table(dt_spec)
    codes = np.arange(-128, 128)
    exact = np.logaddexp(0, float(dt_spec.scale) * (codes - int(dt_spec.zero_point)))
    assert np.all(np.abs(table * s_d - exact) <= 0.5 * s_d * 1.0001)
    assert table.min() > 0  # softplus(-10) = 4.5e-5 keeps ~19 distinct steps; an int8 delta code would give 0


# --- RunningSum: the streamed mean equals the Mean kernel ------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 16])
def test_running_sum_then_requantize_equals_mean_bit_for_bit(bits):
    rng = np.random.default_rng(bits)
    in_spec = activation_spec(-3.0, 5.0, bits)
    out_spec = activation_spec(-1.0, 2.0, bits)
    info = np.iinfo(in_spec.dtype)
    x = rng.integers(info.min, info.max + 1, size=(4, 64, 32)).astype(in_spec.dtype)
    from lowbit.quant.prepare_linear import prepare_mean
    mean = Mean(x, axes=[1], keepdims=0, **prepare_mean(in_spec, out_spec))
    attrs = pr.prepare_streamed_mean(in_spec, out_spec, 64)
    from lowbit.runtime.kernels.int.quantize import Requantize
    acc = None
    for t in range(64):
        acc = R.RunningSum(acc, x[:, t:t + 1], axes=[1], input_offset=-int(in_spec.zero_point))
    assert acc.dtype == np.int32
    assert np.array_equal(Requantize(acc, **attrs), mean)


def test_state_spec_is_symmetric_with_headroom():
    s = pr.state_spec(3.0, 32)
    assert s.bits == 32 and int(s.zero_point) == 0 and float(s.scale) * (2 ** 31 - 1) == pytest.approx(6.0)
    with pytest.raises(ValueError, match="int16 or int32"):
        pr.state_spec(1.0, 8)
