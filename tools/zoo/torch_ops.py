"""Torch versions of the ``lowbit`` ops (needs torch; imported only by the training code).

Each public function computes the op in torch for training (with autograd), and, while
``torch.onnx.export`` traces the model (legacy TorchScript exporter, ``dynamo=False``), emits exactly one
``lowbit::<Op>`` node through an ``autograd.Function.symbolic``; ``onnx_ops.attach_functions`` then adds the
function bodies. Semantics are those of the NumPy kernels in ``runtime/kernels/float/lowbit_*.py``.
"""
from __future__ import annotations

import torch

# ------------------------------------------------------------------------------------------ references


def _lmu_loop(u, abar, bbar, m0):
    m = m0.expand(u.shape[0], abar.shape[0])
    outs = []
    for t in range(u.shape[1]):
        m = m @ abar.T + u[:, t] @ bbar.T
        outs.append(m)
    return torch.stack(outs, 1), m


class SpikeFn(torch.autograd.Function):
    """Heaviside forward (x >= 0), sigmoid surrogate gradient backward (spikingjelly ``Sigmoid``, alpha 4)."""

    @staticmethod
    def forward(ctx, x, alpha=4.0):
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(ctx.alpha * x)
        return grad * ctx.alpha * s * (1 - s), None


def _lif_loop(x, v0, tau, v_threshold, v_reset, surrogate=True):
    v = v0.expand((x.shape[0],) + tuple(x.shape[2:]))
    spikes = []
    for t in range(x.shape[1]):
        h = v + (x[:, t] - (v - v_reset)) / tau
        s = SpikeFn.apply(h - v_threshold) if surrogate else (h >= v_threshold).to(h.dtype)
        reset = s.detach()   # detach_reset=True, as in LMUFormer's spiking blocks
        v = h * (1 - reset) + v_reset * reset
        spikes.append(s)
    return torch.stack(spikes, 1), v


def _ssm_loop(x, delta, a, b, c, d, h0):
    h = h0.expand(x.shape[0], a.shape[0], a.shape[1])
    ys = []
    for t in range(x.shape[1]):
        decay = torch.exp(delta[:, t, :, None] * a)
        h = decay * h + (delta[:, t] * x[:, t])[:, :, None] * b[:, t, None, :]
        ys.append((h * c[:, t, None, :]).sum(-1) + d * x[:, t])
    return torch.stack(ys, 1), h


def _short_conv_ref(bcx, weight, state0):
    c = bcx.shape[-1] // 3
    k = weight.shape[1]
    gate_b, gate_c, xin = bcx[..., :c], bcx[..., c:2 * c], bcx[..., 2 * c:]
    v = gate_b * xin
    window = torch.cat([state0.expand(bcx.shape[0], k - 1, c), v], 1)
    steps = bcx.shape[1]
    # no sum() starting at 0: the exporter's peephole pass drops "+ 0" and then fails inside the traced block
    conv = window[:, 0:steps] * weight[:, 0]
    for j in range(1, k):
        conv = conv + window[:, j:j + steps] * weight[:, j]
    return gate_c * conv, window[:, steps:]


# ------------------------------------------------------------------------------- export-only functions


class _LMUMemory(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, abar, bbar, m0):
        return _lmu_loop(u, abar, bbar, m0)

    @staticmethod
    def symbolic(g, u, abar, bbar, m0):
        return g.op("lowbit::LMUMemory", u, abar, bbar, m0, outputs=2)


class _LIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, v0, tau, v_threshold, v_reset):
        return _lif_loop(x, v0, tau, v_threshold, v_reset, surrogate=False)

    @staticmethod
    def symbolic(g, x, v0, tau, v_threshold, v_reset):
        return g.op("lowbit::LIF", x, v0, tau_f=tau, v_threshold_f=v_threshold, v_reset_f=v_reset, outputs=2)


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, delta, a, b, c, d, h0):
        return _ssm_loop(x, delta, a, b, c, d, h0)

    @staticmethod
    def symbolic(g, x, delta, a, b, c, d, h0):
        return g.op("lowbit::SelectiveScan", x, delta, a, b, c, d, h0, outputs=2)


class _ShortConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, bcx, weight, state0):
        return _short_conv_ref(bcx, weight, state0)

    @staticmethod
    def symbolic(g, bcx, weight, state0):
        return g.op("lowbit::ShortConv", bcx, weight, state0, outputs=2)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, epsilon):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon) * scale

    @staticmethod
    def symbolic(g, x, scale, epsilon):
        return g.op("lowbit::RMSNorm", x, scale, epsilon_f=epsilon)


def _exporting() -> bool:
    return torch.onnx.is_in_onnx_export()


# ------------------------------------------------------------------------------------------ public API


# Initial states are tensors (a zero buffer ``[1, ...]`` of the calling layer in whole-sequence mode, which
# the export turns into a broadcast initializer; a state input in step mode).


def lmu_memory(u, abar, bbar, m0, impulse=None):
    """``m [B,T,d], m_last [B,d]``. Given ``impulse [T, d, du]`` (and m0 == 0), training computes the memory as
    a convolution with the impulse response instead of the recurrence (the export still emits LMUMemory)."""
    if _exporting():
        return _LMUMemory.apply(u, abar, bbar, m0)
    if impulse is not None:
        steps = u.shape[1]
        # m_t = sum_s H[t-s] u_s as one contraction with the block-Toeplitz matrix of H (T is small here)
        idx = torch.arange(steps)
        lag = (idx[:, None] - idx[None, :]).clamp(min=0)
        toeplitz = impulse[:steps][lag] * (idx[:, None] >= idx[None, :])[..., None, None]  # [T, T, d, du]
        m = torch.einsum("tsdk,bsk->btd", toeplitz, u)
        return m, m[:, -1]
    return _lmu_loop(u, abar, bbar, m0)


def lif(x, v0, tau=2.0, v_threshold=1.0, v_reset=0.0):
    """``spikes [B,T,*F], v_last``; the backward pass uses the sigmoid surrogate gradient."""
    if _exporting():
        return _LIF.apply(x, v0, float(tau), float(v_threshold), float(v_reset))
    return _lif_loop(x, v0, tau, v_threshold, v_reset)


def selective_scan(x, delta, a, b, c, d, h0):
    """``y [B,T,D], h_last [B,D,N]`` (Mamba's selective scan, see the kernel docstring)."""
    if _exporting():
        return _SelectiveScan.apply(x, delta, a, b, c, d, h0)
    return _ssm_loop(x, delta, a, b, c, d, h0)


def short_conv(bcx, weight, state0):
    """``y [B,T,C], state_last [B,K-1,C]`` (LFM2's gated causal depthwise conv core)."""
    if _exporting():
        return _ShortConv.apply(bcx, weight, state0)
    return _short_conv_ref(bcx, weight, state0)


def rms_norm(x, scale, epsilon=1e-6):
    if _exporting():
        return _RMSNorm.apply(x, scale, float(epsilon))
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + epsilon) * scale
