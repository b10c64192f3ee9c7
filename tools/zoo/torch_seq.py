"""Streaming sequence classifiers of the zoo: LMU, LMUFormer, spiking LMUFormer, Mamba (needs torch).

Layout ``[B, T, C]``. Every stateful layer takes an optional ``Stream``: without one it runs the whole
sequence from zero state (the whole-sequence graph); with one it reads its initial state from the stream and
writes its final state back (the step graph, T = 1). The same code therefore defines both ONNX forms, and the
state order is the order in which layers run.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import lmu as lmu_np
from . import torch_ops


class Stream:
    """Recurrent states of one step call: ``take`` the next initial state, ``put`` the matching final state."""

    def __init__(self, states=()):
        self.inputs, self.outputs = list(states), []

    def take(self):
        return self.inputs[len(self.outputs)]

    def put(self, state):
        self.outputs.append(state)


class CausalConv1d(nn.Module):
    """Causal Conv1d over time on ``[B, T, Cin]`` (+ optional BatchNorm); state = the last K-1 inputs
    ``[B, Cin, K-1]``. Whole sequence: Conv with K-1 zeros of padding on both sides, the last K-1 outputs
    dropped; step: Conv over concat(state, x) without padding."""

    def __init__(self, cin, cout, k, groups=1, bias=True, bn=False):
        super().__init__()
        self.k, self.cin = k, cin
        self.conv = nn.Conv1d(cin, cout, k, groups=groups, bias=bias)
        self.bn = nn.BatchNorm1d(cout) if bn else None

    def state_specs(self):
        return [("conv", (self.cin, self.k - 1))]

    def forward(self, x, stream=None):
        x = x.transpose(1, 2)
        w, b, g = self.conv.weight, self.conv.bias, self.conv.groups
        if stream is None:
            y = F.conv1d(x, w, b, padding=self.k - 1, groups=g)[:, :, :-(self.k - 1)]
        else:
            window = torch.cat([stream.take(), x], 2)
            stream.put(window[:, :, -(self.k - 1):])
            y = F.conv1d(window, w, b, groups=g)
        if self.bn is not None:
            y = self.bn(y)
        return y.transpose(1, 2)

    def macs(self, steps):
        return steps * self.conv.out_channels * (self.cin // self.conv.groups) * self.k


class BNLIF(nn.Module):
    """BatchNorm over channels (of ``[B, T, C]``) followed by LIF neurons (tau 2, threshold 1, hard reset 0)."""

    def __init__(self, channels, tau=2.0, v_threshold=1.0, v_reset=0.0):
        super().__init__()
        self.channels = channels
        self.bn = nn.BatchNorm1d(channels)
        self.tau, self.v_threshold, self.v_reset = tau, v_threshold, v_reset
        self.register_buffer("v0", torch.zeros(1, channels), persistent=False)

    def state_specs(self):
        return [("lif_v", (self.channels,))]

    def forward(self, x, stream=None):
        x = self.bn(x.transpose(1, 2)).transpose(1, 2)
        s, v = torch_ops.lif(x, self.v0 if stream is None else stream.take(), self.tau, self.v_threshold,
                             self.v_reset)
        if stream is not None:
            stream.put(v)
        return s


class Act(nn.Module):
    """ReLU, stateless (the non-spiking counterpart of BNLIF)."""

    def state_specs(self):
        return []

    def forward(self, x, stream=None):
        return F.relu(x)


def _seq(modules, x, stream):
    for m in modules:
        x = m(x, stream) if isinstance(m, (CausalConv1d, BNLIF, Act, LMUMemoryLayer)) else m(x)
    return x


class LMUMemoryLayer(nn.Module):
    """The LMU memory ``m_t = Abar m_{t-1} + Bbar u_t`` (fixed Abar, Bbar from ZOH, theta = sequence length);
    returns all memories ``[B, T, order]``; state ``[B, order]``."""

    def __init__(self, order, theta, steps):
        super().__init__()
        self.order = order
        abar, bbar = lmu_np.lmu_matrices(order, theta)
        self.register_buffer("abar", torch.from_numpy(abar))
        self.register_buffer("bbar", torch.from_numpy(bbar))
        self.register_buffer("impulse", torch.from_numpy(lmu_np.impulse_response(abar, bbar, steps)))
        self.register_buffer("m0", torch.zeros(1, order), persistent=False)

    def state_specs(self):
        return [("lmu_m", (self.order,))]

    def forward(self, u, stream=None):
        if stream is None:
            m, _ = torch_ops.lmu_memory(u, self.abar, self.bbar, self.m0, impulse=self.impulse)
            return m
        m, m_last = torch_ops.lmu_memory(u, self.abar, self.bbar, stream.take())
        stream.put(m_last)
        return m

    def macs(self, steps):
        return steps * (self.order * self.order + self.order * self.bbar.shape[1])


def _state_specs(module):
    """``(kind, shape)`` of every state of ``module``'s stateful layers, in the order they run (registration)."""
    specs = []
    for m in module.children():
        specs += m.state_specs() if hasattr(m, "state_specs") else _state_specs(m)
    return specs


def _linear_macs(module, steps):
    return sum(steps * m.in_features * m.out_features for m in module.modules() if isinstance(m, nn.Linear))


class LMUNet(nn.Module):
    """LMU (Voelker et al.): u_t = relu(W_u x_t), m_t = Abar m_{t-1} + Bbar u_t, h_t = relu(W_h [m_t; x_t]),
    logits = W_o h_T. Only the last step's h is computed in the whole-sequence form."""

    def __init__(self, steps=64, order=64, hidden=128, classes=10):
        super().__init__()
        self.steps = steps
        self.w_u = nn.Linear(1, 1)
        self.memory = LMUMemoryLayer(order, float(steps), steps)
        self.w_h = nn.Linear(order + 1, hidden)
        self.head = nn.Linear(hidden, classes)

    def state_specs(self):
        return self.memory.state_specs()

    def forward(self, x, stream=None):
        m = self.memory(F.relu(self.w_u(x)), stream)
        h = F.relu(self.w_h(torch.cat([m[:, -1], x[:, -1]], -1)))
        return self.head(h)

    def macs(self):
        return self.steps * 1 + self.memory.macs(self.steps) + _linear_macs(self.w_h, 1) + _linear_macs(self.head, 1)


class LMUFormerNet(nn.Module):
    """LMUFormer block (Liu et al. 2024), causal: conv patch embedding (2 causal k3 Conv1d + BN + act),
    residual LMU (u = act(W_u x), memory, [act(BN(m)) when spiking], h = act(W_h [m; x])), residual channel
    mixer (1x1 convs written as Linear: dim -> mlp -> dim), mean over time, linear head.
    ``spiking``: BatchNorm + LIF (BNLIF) after both embedding convs, on u, on m, on h and after both mixer
    layers. Otherwise ReLU: embedding conv + BN + ReLU, u and h with ReLU, mixer Linear-BN-ReLU-Linear-BN.
    Streaming keeps the running sum of the pooled features as a state (``pool_sum``) and divides it by the
    sequence length, so the logits after the last step equal the whole-sequence ones."""

    def __init__(self, steps=64, dim=32, order=64, mlp=64, classes=10, spiking=False):
        super().__init__()
        self.steps, self.spiking = steps, spiking

        def act(c):
            return BNLIF(c) if spiking else Act()

        # when spiking, the BatchNorm of each conv is the one inside the following BNLIF
        self.embed = nn.ModuleList([CausalConv1d(1, dim, 3, bn=not spiking), act(dim),
                                    CausalConv1d(dim, dim, 3, bn=not spiking), act(dim)])
        self.w_u = nn.Linear(dim, 1)
        self.act_u = act(1)
        self.memory = LMUMemoryLayer(order, float(steps), steps)
        self.act_m = act(order) if spiking else None
        self.w_h = nn.Linear(order + dim, dim)
        self.act_h = act(dim)
        self.mix1, self.act_1 = nn.Linear(dim, mlp), act(mlp)
        self.mix2, self.act_2 = nn.Linear(mlp, dim), act(dim)
        if not spiking:
            self.bn_1, self.bn_2 = nn.BatchNorm1d(mlp), nn.BatchNorm1d(dim)
        self.head = nn.Linear(dim, classes)

    def state_specs(self):
        return _state_specs(self) + [("pool_sum", (self.head.in_features,))]

    @staticmethod
    def _bn(bn, x):
        return bn(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x, stream=None):
        x = _seq(self.embed, x, stream)
        m = self.memory(self.act_u(self.w_u(x), stream), stream)
        if self.act_m is not None:
            m = self.act_m(m, stream)
        x = x + self.act_h(self.w_h(torch.cat([m, x], -1)), stream)
        y = self.mix1(x)
        y = self.act_1(y if self.spiking else self._bn(self.bn_1, y), stream)
        y = self.mix2(y)
        y = self.act_2(y, stream) if self.spiking else self._bn(self.bn_2, y)
        x = x + y
        if stream is None:
            return self.head(x.mean(1))
        total = stream.take() + x.sum(1)
        stream.put(total)
        return self.head(total * (1.0 / self.steps))

    def macs(self):
        t = self.steps
        convs = sum(m.macs(t) for m in self.embed if isinstance(m, CausalConv1d))
        return convs + self.memory.macs(t) + _linear_macs(self, t) - _linear_macs(self.head, t - 1)


class MambaBlock(nn.Module):
    """Mamba mixer: in_proj -> (x, z); x = silu(causal depthwise conv k4 (x)); (dt, B, C) = x_proj(x);
    delta = softplus(dt_proj(dt)); y = SelectiveScan(x, delta, -exp(A_log), B, C, D); out_proj(y * silu(z))."""

    def __init__(self, dim, inner, state, conv_k=4, dt_rank=4):
        super().__init__()
        self.inner, self.state, self.dt_rank = inner, state, dt_rank
        self.in_proj = nn.Linear(dim, 2 * inner, bias=False)
        self.conv = CausalConv1d(inner, inner, conv_k, groups=inner, bias=True)
        self.x_proj = nn.Linear(inner, dt_rank + 2 * state, bias=False)
        self.dt_proj = nn.Linear(dt_rank, inner)
        dt = torch.exp(torch.rand(inner) * (np.log(0.1) - np.log(1e-3)) + np.log(1e-3))
        with torch.no_grad():
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))   # softplus^-1(dt)
        self.a_log = nn.Parameter(torch.log(torch.arange(1, state + 1, dtype=torch.float32)).repeat(inner, 1))
        self.d = nn.Parameter(torch.ones(inner))
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.register_buffer("h0", torch.zeros(1, inner, state), persistent=False)

    def state_specs(self):
        return self.conv.state_specs() + [("ssm_h", (self.inner, self.state))]

    def forward(self, x, stream=None):
        xz = self.in_proj(x)
        xs, z = xz[..., :self.inner], xz[..., self.inner:]
        xs = F.silu(self.conv(xs, stream))
        dbc = self.x_proj(xs)
        dt, b, c = dbc[..., :self.dt_rank], dbc[..., self.dt_rank:self.dt_rank + self.state], \
            dbc[..., self.dt_rank + self.state:]
        delta = F.softplus(self.dt_proj(dt))
        h0 = self.h0 if stream is None else stream.take()
        y, h = torch_ops.selective_scan(xs, delta, -torch.exp(self.a_log), b, c, self.d, h0)
        if stream is not None:
            stream.put(h)
        return self.out_proj(y * F.silu(z))

    def macs(self, steps):
        scan = steps * self.inner * self.state * 2    # h update (B*x injection) and C readout per state element
        return _linear_macs(self, steps) + self.conv.macs(steps) + scan


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x):
        return torch_ops.rms_norm(x, self.weight, self.eps)


class MambaNet(nn.Module):
    """Linear embedding of the pixel, pre-RMSNorm residual Mamba blocks, final RMSNorm, head on the last step
    (the last step has seen the whole sequence; the model is causal)."""

    def __init__(self, steps=64, dim=32, inner=64, state=8, depth=2, classes=10):
        super().__init__()
        self.steps = steps
        self.embed = nn.Linear(1, dim)
        self.norms = nn.ModuleList([RMSNorm(dim) for _ in range(depth)])
        self.blocks = nn.ModuleList([MambaBlock(dim, inner, state) for _ in range(depth)])
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, classes)

    def state_specs(self):
        return [s for b in self.blocks for s in b.state_specs()]

    def forward(self, x, stream=None):
        x = self.embed(x)
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x), stream)
        return self.head(self.norm(x[:, -1]))

    def macs(self):
        t = self.steps
        return t * self.embed.out_features + sum(b.macs(t) for b in self.blocks) + _linear_macs(self.head, 1)


class StepModule(nn.Module):
    """``forward(x [B, 1, 1], *state_in) -> (logits, *state_out)``: one time step of a streaming model."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x, *states):
        stream = Stream(states)
        logits = self.net(x, stream)
        assert len(stream.outputs) == len(states), "every state taken must be put back"
        return (logits, *stream.outputs)
