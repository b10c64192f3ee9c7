"""Prepare (float -> integer parameters) for the recurrent and spiking integer ops: LMUMemory, SelectiveScan,
LIF, and the streamed mean pooling (RunningSum + Requantize).

Each ``prepare_*`` returns the attribute dict (and, where the op takes integer constants, those arrays) of the
matching kernel in runtime/kernels/int/recurrent.py or spiking.py, whose docstrings define the arithmetic.
All float work happens here, once; the kernels only see integers.
"""
from __future__ import annotations

import math

import numpy as np

from lowbit.quant.fixedpoint import quantize_multiplier, quantize_multipliers
from lowbit.quant.prepare_elementwise import PrepareError
from lowbit.quant.spec import QuantSpec


def _f32(x) -> np.ndarray:
    return np.asarray(x, np.float32).astype(np.float64)


def _scale(spec: QuantSpec, what: str) -> float:
    if spec.per_channel:
        raise PrepareError(f"{what} must be quantized per tensor, got {spec.describe()}")
    return float(_f32(spec.scale).reshape(-1)[0])


def round_away(x) -> np.ndarray:
    """Round half away from zero (TFLite's TfLiteRound), as float64."""
    x = np.asarray(x, np.float64)
    return np.trunc(x + np.copysign(0.5, x))


def _offset_range(spec: QuantSpec) -> tuple[int, int]:
    """(min, max) of q - z over the codes of ``spec``."""
    z = int(spec.zero_point)
    info = np.iinfo(spec.dtype)
    return int(info.min) - z, int(info.max) - z


def _abs_code(spec: QuantSpec) -> int:
    lo, hi = _offset_range(spec)
    return max(abs(lo), abs(hi))


def state_spec(absmax: float, bits: int, headroom: float = 2.0) -> QuantSpec:
    """Symmetric state spec (zero point 0, int``bits``) covering ``headroom`` * ``absmax``."""
    if bits not in (16, 32):
        raise PrepareError(f"recurrent state must be int16 or int32, not int{bits}")
    m = float(absmax) * headroom
    return QuantSpec(bits, _f32(m / ((1 << (bits - 1)) - 1)) if m > 0 else 1.0, 0)


def _output_attrs(out_spec: QuantSpec) -> dict:
    info = np.iinfo(out_spec.dtype)
    if out_spec.bits not in (8, 16):
        raise PrepareError(f"the output must be int8 or int16, got {out_spec.describe()}")
    return {"output_offset": int(out_spec.zero_point), "act_min": int(info.min), "act_max": int(info.max),
            "to": out_spec.dtype.name}


# --- LMUMemory ----------------------------------------------------------------------------------------------------
ABAR_BITS = 16


def prepare_lmu_memory(abar: np.ndarray, bbar: np.ndarray, u_spec: QuantSpec, m_spec: QuantSpec,
                       out_spec: QuantSpec, abar_bits: int | None = None):
    """(abar_q int16 [d, d], bbar_q int64 [d, du], attrs) of the integer LMUMemory.

    Abar is quantized per row with a power-of-two scale, abar_q[i] = round(Abar[i] * 2^a_i), a_i the largest
    shift keeping |abar_q| <= 2^(abar_bits-1) - 1, so that the state update's rescale is the exact rounding
    shift by a_i. Bbar is folded into the same accumulator: bbar_q[i] = round(Bbar[i] * s_u * 2^a_i / s_m).
    The output multiplier is s_m / s_y. Abar is the LMU's fixed Legendre matrix (not a trained weight): the
    memory compounds its error over every step, so it is 16-bit whatever the plan (8-bit rows cost the
    lmu_seqdigits memory 46 dB of SQNR over 64 steps: docs/hybrid_ops.md).
    """
    abar_bits = ABAR_BITS if abar_bits is None else abar_bits
    abar = np.asarray(abar, np.float64)
    bbar = np.asarray(bbar, np.float64)
    qmax = (1 << (abar_bits - 1)) - 1
    rowmax = np.max(np.abs(abar), axis=1)
    with np.errstate(divide="ignore"):
        shifts = np.where(rowmax > 0, np.floor(np.log2(qmax / np.where(rowmax > 0, rowmax, 1.0))), 0)
    shifts = np.minimum(shifts, 62).astype(np.int64)
    if np.any(shifts < 0):
        raise PrepareError(f"LMUMemory: |Abar| up to {rowmax.max():g} does not fit int{abar_bits} rows")
    abar_q = np.clip(round_away(abar * np.exp2(shifts)[:, None]), -qmax, qmax).astype(np.int16)  # any bits <= 16
    s_u, s_m = _scale(u_spec, "the LMU input"), _scale(m_spec, "the LMU state")
    bbar_q = round_away(bbar * s_u * np.exp2(shifts)[:, None] / s_m)
    if np.max(np.abs(bbar_q).sum(axis=1), initial=0.0) * _abs_code(u_spec) >= 2.0 ** 61:
        raise PrepareError("LMUMemory: Bbar u at the state's accumulator scale can exceed 2^61")
    m, s = quantize_multiplier(s_m / _scale(out_spec, "the LMU output"))
    attrs = {"abar_shift": shifts.astype(np.int32), "input_offset": -int(u_spec.zero_point),
             "state_bits": m_spec.bits, "output_multiplier": m, "output_shift": s, **_output_attrs(out_spec)}
    return abar_q, bbar_q.astype(np.int64), attrs


# --- SelectiveScan -------------------------------------------------------------------------------------------------
EXP_TABLE_BITS = 10   # 1025-entry table of 2^(-i/1024)
EXP_FRAC_BITS = 20    # at most 20 fraction bits for -delta*A/ln2


def exp2_table(lbits: int = EXP_TABLE_BITS) -> np.ndarray:
    """round(2^30 * 2^(-i / 2^lbits)) for i = 0 .. 2^lbits (int32, Q30)."""
    i = np.arange((1 << lbits) + 1, dtype=np.float64)
    return round_away(np.exp2(30.0 - i / (1 << lbits))).astype(np.int32)


DELTA_TABLE_BITS = 20  # softplus(dt) tabulated over the int8 dt codes, < 2^20 at scale max / (2^20 - 1)


def softplus_delta_table(dt_spec: QuantSpec) -> tuple[np.ndarray, float]:
    """(table int32 [256], s_delta): table[i] = round(softplus(s_dt (i - 128 - z_dt)) / s_delta) for the int8 dt
    codes, s_delta = max softplus / (2^20 - 1) (float32). Mamba's delta is softplus(dt) with most values near 0
    and a long tail: an int8 delta code rounds the small ones to 0 (the scan's output falls to 16 dB SQNR on
    mamba_seqdigits), the table keeps them to 2^-20 of the largest."""
    if dt_spec.bits != 8 or dt_spec.per_channel:
        raise PrepareError(f"SelectiveScan: a delta table needs per-tensor int8 dt codes, got {dt_spec.describe()}")
    codes = np.arange(-128, 128, dtype=np.float64)
    sp = np.logaddexp(0.0, _scale(dt_spec, "dt") * (codes - int(dt_spec.zero_point)))
    s_delta = float(_f32(max(float(sp.max()), 1e-30) / ((1 << DELTA_TABLE_BITS) - 1)))
    return round_away(sp / s_delta).astype(np.int32), s_delta


def prepare_selective_scan(A: np.ndarray, D: np.ndarray, x_spec: QuantSpec, delta_spec: QuantSpec,
                           b_spec: QuantSpec, c_spec: QuantSpec, h_spec: QuantSpec, out_spec: QuantSpec,
                           delta_is_dt: bool = False, gate_spec: QuantSpec | None = None,
                           hadamard: bool = False) -> dict:
    """Attributes of the integer SelectiveScan (runtime/kernels/int/recurrent.py).

    - delta: its codes (``delta_spec``), or with ``delta_is_dt`` the int8 codes of dt = the softplus input,
      turned into delta by ``softplus_delta_table``;
    - decay: e = -delta A / ln2 in Q``F`` from the delta value, exp_multiplier[d, n] = s_delta (-A[d, n]) 2^F / ln2,
      with F <= 20 the largest keeping e < 2^29 over every delta value (so the int32 rescale cannot overflow);
    - injection: s_delta s_x s_b / s_h (the 16-bit-multiplier int64 rescale; its shift must stay <= 14);
    - readout: d_skip = round(D s_x / (s_h s_c)); a rounding pre-shift r brings the int64 accumulator into int32
      (and, gated, r * gate (* D rotated) below 2^47); the output multiplier is s_h s_c 2^r (s_gate)
      (/ sqrt(D) rotated) / s_y.
    """
    A = np.asarray(A, np.float64)
    D = np.asarray(D, np.float64).reshape(-1)
    if np.any(A > 0):
        raise PrepareError("SelectiveScan: A must be <= 0 (a decaying state); got positive entries")
    if A.ndim != 2 or D.size != A.shape[0]:
        raise PrepareError(f"SelectiveScan: A {list(A.shape)} must be [D, N] and D [D], got D of {D.size}")
    dim, n = A.shape
    if hadamard and dim & (dim - 1):
        raise PrepareError(f"SelectiveScan: a Hadamard rotation needs a power-of-two width, got {dim}")
    s_x, s_b, s_c = _scale(x_spec, "the scan input x"), _scale(b_spec, "B"), _scale(c_spec, "C")
    s_h, s_y = _scale(h_spec, "the scan state"), _scale(out_spec, "the scan output")
    if h_spec.bits not in (16, 32) or int(h_spec.zero_point) != 0:
        raise PrepareError(f"SelectiveScan: the state must be symmetric int16/int32, got {h_spec.describe()}")
    attrs: dict = {}
    if delta_is_dt:
        table, s_d = softplus_delta_table(delta_spec)
        dq_max = int(table.max())
        attrs["delta_table"] = table
    else:
        s_d = _scale(delta_spec, "delta")
        dq_max = _offset_range(delta_spec)[1]
        attrs["delta_offset"] = -int(delta_spec.zero_point)
    xmax, bmax, cmax = _abs_code(x_spec), _abs_code(b_spec), _abs_code(c_spec)
    if dq_max * xmax * bmax >= (1 << 47):
        raise PrepareError("SelectiveScan: the injection product delta * x * B can exceed 2^47")
    extent = s_d * dq_max * float(np.max(-A, initial=0.0)) / math.log(2.0)
    frac_bits = EXP_FRAC_BITS if extent == 0 else min(EXP_FRAC_BITS, int(math.floor(math.log2((1 << 29) / extent))))
    if frac_bits < 8:
        raise PrepareError(f"SelectiveScan: delta * A reaches {extent * math.log(2.0):g}; its exponent code needs "
                           f"fewer than 8 fraction bits")
    em, es = quantize_multipliers(s_d * (-A) * (2.0 ** frac_bits) / math.log(2.0))
    im, ish = quantize_multiplier(s_d * s_x * s_b / s_h)
    if ish > 14:
        raise PrepareError(f"SelectiveScan: injection multiplier {s_d * s_x * s_b / s_h:g} is too large for the "
                           f"int64 rescale (the state scale is finer than the input product's)")
    d_skip = round_away(D * s_x / (s_h * s_c))
    bound = (1 << (h_spec.bits - 1)) * cmax * n + int(np.max(np.abs(d_skip), initial=0)) * xmax
    pre = max(0, int(bound).bit_length() - 31)
    if gate_spec is None:
        while True:
            om, osh = quantize_multiplier(s_h * s_c * (2.0 ** pre) / s_y)
            if osh <= 0 or ((bound >> pre) << osh) < (1 << 31):
                break
            pre += 1
    else:
        widen = _abs_code(gate_spec) * (dim if hadamard else 1)
        while ((bound >> pre) + 1) * widen >= (1 << 47):
            pre += 1
        real = s_h * s_c * (2.0 ** pre) * _scale(gate_spec, "the gate") / s_y / (math.sqrt(dim) if hadamard else 1.0)
        om, osh = quantize_multiplier(real)
        if osh > 14:
            raise PrepareError(f"SelectiveScan: gated output multiplier {real:g} is too large for the int64 rescale")
        attrs.update(gate_offset=-int(gate_spec.zero_point), hadamard=int(hadamard))
    attrs.update({"x_offset": -int(x_spec.zero_point), "b_offset": -int(b_spec.zero_point),
                  "c_offset": -int(c_spec.zero_point), "exp_multiplier": em.reshape(A.shape),
                  "exp_shift": es.reshape(A.shape), "exp_frac_bits": frac_bits, "exp_table": exp2_table(),
                  "inject_multiplier": im, "inject_shift": ish, "d_skip": d_skip.astype(np.int64),
                  "state_bits": h_spec.bits, "output_pre_shift": pre, "output_multiplier": om, "output_shift": osh,
                  **_output_attrs(out_spec)})
    return attrs


# --- LIF -----------------------------------------------------------------------------------------------------------
def membrane_spec(in_spec: QuantSpec, scale: np.ndarray, bias: np.ndarray, v_threshold: float, v_reset: float,
                  bits: int = 16) -> QuantSpec:
    """The membrane's fixed-point spec: scale 2^-F, F the largest keeping every reachable potential in int``bits``.

    The membrane stays within [min(v0, min y), max(threshold, ...)] where y = scale * x + bias is the (BN-folded)
    input current, and y is bounded exactly by the input's code range, so |V| <= Y = max(|y|, |threshold|,
    |v_reset|) and F = floor(log2((2^(bits-1) - 2) / Y)) cannot saturate (one step of headroom for rounding)."""
    s_x = _scale(in_spec, "the LIF input")
    lo, hi = _offset_range(in_spec)
    scale = np.asarray(scale, np.float64).reshape(-1)
    bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), scale.shape)
    ymax = float(np.max(np.maximum(np.abs(scale * s_x * lo + bias), np.abs(scale * s_x * hi + bias))))
    y = max(ymax, abs(float(v_threshold)), abs(float(v_reset)), 1e-12)
    f = int(math.floor(math.log2(((1 << (bits - 1)) - 2) / y)))
    return QuantSpec(bits, 2.0 ** -f, 0)


def prepare_lif(in_spec: QuantSpec, v_spec: QuantSpec, scale: np.ndarray, bias: np.ndarray, tau: float,
                v_threshold: float, v_reset: float | None) -> dict:
    """Attributes of the integer LIF (runtime/kernels/int/spiking.py) for input current y = scale[c] x + bias[c]
    (a BatchNorm before the LIF folded in; scale 1, bias 0 without one), membrane spec ``v_spec``.

    input_multiplier[c], input_shift[c] = quantize_multiplier(scale[c] s_x / s_v) (negative scales allowed),
    input_bias[c] = round(bias[c] / s_v), threshold = round(v_threshold / s_v), v_reset = round(v_reset / s_v)
    (``v_reset`` None: soft reset, subtract the threshold). The leak 1/tau is a rounding right shift by k when
    tau = 2^k (leak_multiplier 0), else a fixed-point multiplier (leak_multiplier, leak_shift)."""
    s_x, s_v = _scale(in_spec, "the LIF input"), _scale(v_spec, "the membrane")
    scale = np.asarray(scale, np.float64).reshape(-1)
    bias = np.broadcast_to(np.asarray(bias, np.float64).reshape(-1), scale.shape)
    im, ish = quantize_multipliers(scale * s_x / s_v)
    if tau <= 1.0:
        raise PrepareError(f"LIF: tau must be > 1, got {tau}")
    k = math.log2(tau)
    if k == int(k):
        lm, lsh = 0, int(k)
    else:
        lm, lsh = quantize_multiplier(1.0 / tau)
    return {"input_offset": -int(in_spec.zero_point), "input_multiplier": im, "input_shift": ish,
            "input_bias": round_away(bias / s_v).astype(np.int32),
            "threshold": int(round_away(v_threshold / s_v)),
            "v_reset": 0 if v_reset is None else int(round_away(v_reset / s_v)),
            "reset": "soft" if v_reset is None else "hard", "leak_multiplier": lm, "leak_shift": lsh,
            "state_bits": v_spec.bits}


# --- streamed mean pooling -------------------------------------------------------------------------------------------
def prepare_streamed_mean(in_spec: QuantSpec, out_spec: QuantSpec, n: int, rounding: str = "double") -> dict:
    """Requantize attributes turning a RunningSum (int32, scale s_in) into the mean over ``n`` elements with the
    very integers of the Mean kernel: multiplier' = (multiplier << k) // n, shift' = shift - k, k = min(floor(
    log2 n), 32, 31 + shift), where (multiplier, shift) encode s_in / s_out (prepare_mean)."""
    from lowbit.quant.prepare_linear import prepare_mean
    base = prepare_mean(in_spec, out_spec, rounding)
    k = min(int(n).bit_length() - 1, 32, 31 + int(base["shift"]))
    info = np.iinfo(out_spec.dtype)
    return {"input_offset": 0, "output_offset": int(out_spec.zero_point),
            "multiplier": (int(base["multiplier"]) << k) // int(n), "shift": int(base["shift"]) - k,
            "qmin": int(info.min), "qmax": int(info.max), "to": out_spec.dtype.name, "rounding": rounding}
