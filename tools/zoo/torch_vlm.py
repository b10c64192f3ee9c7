"""AutoNeural-style vision-language model for digit-VQA (needs torch).

Vision encoder (MobileNet-style, BatchNorm + ReLU): 3x3 stem, an inverted-residual block, two UIB blocks
(ExtraDW and IB) down to 4x4, then one Mobile-MQA block (4 query heads, one shared K/V head) over the 16
positions. A normalisation-free MLP connector maps them to 16 visual tokens. Language backbone (LFM2-style):
pre-RMSNorm layers ``short-conv, GQA, short-conv``, each followed by a SwiGLU MLP; the gated short conv is
``W_out(lowbit.ShortConv(W_in h))``; GQA has 4 query and 2 KV heads, QK RMSNorm and no positional encoding
(the short convs before it give it the order; NoPE). Final RMSNorm and an untied LM head.

``forward(image, tokens)`` is the prefill: logits of the text positions and the final states (short-conv
windows, KV caches). ``step(token, states)`` decodes one token from those states.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .torch_ops import rms_norm, short_conv
from .torch_seq import RMSNorm
from .torch_vision import InvertedResidual, conv_bn


def _conv_bn_relu(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU()) if act else nn.Sequential(*layers)


class UIB(nn.Module):
    """MobileNetV4 Universal Inverted Bottleneck: [dw k3] -> pw expand -> [dw k3, stride] -> pw project."""

    def __init__(self, cin, cout, expand, stride=1, start_dw=True, middle_dw=True):
        super().__init__()
        hidden = cin * expand
        layers = [_conv_bn_relu(cin, cin, 3, groups=cin, act=False)] if start_dw else []
        layers.append(_conv_bn_relu(cin, hidden, 1))
        if middle_dw:
            layers.append(_conv_bn_relu(hidden, hidden, 3, stride, groups=hidden))
        layers.append(_conv_bn_relu(hidden, cout, 1, act=False))
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


class MobileMQA(nn.Module):
    """Mobile multi-query attention over the positions of a feature map: BatchNorm, ``heads`` query heads,
    one shared key/value head, output projection, residual."""

    def __init__(self, dim, heads, head_dim):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm = nn.BatchNorm2d(dim)
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.kv = nn.Linear(dim, 2 * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, x):
        tokens = x.flatten(2).transpose(1, 2)                                  # [B, P, C]
        n = self.norm(x).flatten(2).transpose(1, 2)
        b, p, _ = n.shape
        q = self.q(n).reshape(b, p, self.heads, self.head_dim).transpose(1, 2)  # [B, H, P, dh]
        k, v = self.kv(n).unsqueeze(1).split(self.head_dim, -1)                 # [B, 1, P, dh] each
        att = torch.softmax(q @ k.transpose(-1, -2) * self.head_dim ** -0.5, -1)
        out = (att @ v).transpose(1, 2).reshape(b, p, self.heads * self.head_dim)
        return tokens + self.o(out)                                             # [B, P, C]


class VisionEncoder(nn.Module):
    def __init__(self, width=32):
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(1, 16, 3),                                   # 16x16
            InvertedResidual(16, 24, 2, 4),                      # 8x8
            UIB(24, width, 4, stride=2),                         # 4x4, ExtraDW
            UIB(width, width, 4, start_dw=False),                # 4x4, IB
        )
        self.mqa = MobileMQA(width, heads=4, head_dim=8)

    def forward(self, image):
        return self.mqa(self.features(image))                    # [B, 16, width]


class ShortConvBlock(nn.Module):
    """LFM2 gated short conv: ``[B; C; x] = W_in h``, ``y = W_out(C * causal_dwconv_k3(B * x))``."""

    def __init__(self, dim, k=3):
        super().__init__()
        self.w_in = nn.Linear(dim, 3 * dim, bias=False)
        self.weight = nn.Parameter(torch.randn(dim, k) * k ** -0.5)
        self.w_out = nn.Linear(dim, dim, bias=False)
        self.register_buffer("state0", torch.zeros(1, k - 1, dim), persistent=False)

    def forward(self, h, state=None):
        y, state_last = short_conv(self.w_in(h), self.weight, self.state0 if state is None else state)
        return self.w_out(y), [state_last]


class GQA(nn.Module):
    """Grouped-query causal attention, QK RMSNorm, no positional encoding; states: K and V caches
    ``[B, kv_heads, S, head_dim]`` (keys after their RMSNorm)."""

    def __init__(self, dim, heads=4, kv_heads=2, head_dim=16):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.v = nn.Linear(dim, kv_heads * head_dim, bias=False)
        self.o = nn.Linear(heads * head_dim, dim, bias=False)
        self.q_norm, self.k_norm = RMSNorm(head_dim), RMSNorm(head_dim)

    def forward(self, h, cache=None):
        b, t, _ = h.shape
        group = self.heads // self.kv_heads
        q = self.q_norm(self.q(h).reshape(b, t, self.kv_heads, group, self.head_dim)).permute(0, 2, 3, 1, 4)
        k = self.k_norm(self.k(h).reshape(b, t, self.kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v(h).reshape(b, t, self.kv_heads, self.head_dim).transpose(1, 2)   # [B, KV, T, dh]
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        # queries grouped by their KV head: [B, KV, G, T, dh] @ [B, KV, 1, dh, S] -> [B, KV, G, T, S]
        scores = q @ k.unsqueeze(2).transpose(-1, -2) * self.head_dim ** -0.5
        if cache is None:
            pos = torch.arange(t)
            scores = scores.masked_fill(pos[None, :] > pos[:, None], -1e4)
        out = torch.softmax(scores, -1) @ v.unsqueeze(2)                            # [B, KV, G, T, dh]
        out = out.permute(0, 3, 1, 2, 4).reshape(b, t, self.heads * self.head_dim)
        return self.o(out), [k, v]


class SwiGLU(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Layer(nn.Module):
    def __init__(self, kind, dim, ff):
        super().__init__()
        self.kind = kind
        self.norm1, self.norm2 = RMSNorm(dim), RMSNorm(dim)
        self.op = ShortConvBlock(dim) if kind == "conv" else GQA(dim)
        self.mlp = SwiGLU(dim, ff)

    def forward(self, h, states=None):
        if self.kind == "conv":
            y, new = self.op(self.norm1(h), None if states is None else states[0])
        else:
            y, new = self.op(self.norm1(h), states)
        h = h + y
        return h + self.mlp(self.norm2(h)), new


class AutoNeuralVQA(nn.Module):
    LAYERS = ("conv", "attn", "conv")

    def __init__(self, vocab, dim=64, ff=128, width=32):
        super().__init__()
        self.vision = VisionEncoder(width)
        self.connector = nn.Sequential(nn.Linear(width, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.embed = nn.Embedding(vocab, dim)
        self.layers = nn.ModuleList([Layer(kind, dim, ff) for kind in self.LAYERS])
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def state_names(self) -> list[str]:
        names = []
        for i, kind in enumerate(self.LAYERS):
            names += [f"{i}_conv"] if kind == "conv" else [f"{i}_k", f"{i}_v"]
        return names

    def _backbone(self, h, states=None):
        new_states, pos = [], 0
        for layer in self.layers:
            n = 1 if layer.kind == "conv" else 2
            h, new = layer(h, None if states is None else states[pos:pos + n])
            new_states += new
            pos += n
        return self.head(self.norm(h)), new_states

    def forward(self, image, tokens):
        visual = self.connector(self.vision(image))                              # [B, 16, dim]
        logits, states = self._backbone(torch.cat([visual, self.embed(tokens)], 1))
        return (logits[:, visual.shape[1]:], *states)

    def step(self, token, *states):
        logits, new_states = self._backbone(self.embed(token), list(states))
        return (logits, *new_states)

    def logits(self, image, tokens):
        return self.forward(image, tokens)[0]


class StepModule(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, token, *states):
        return self.net.step(token, *states)


def count_macs(net: AutoNeuralVQA, image_size=16, text_len=10) -> dict:
    """Multiply-accumulates of one prefill (image + ``text_len`` tokens), counted from the layer shapes:
    convs, linears, attention matmuls (QK^T and AV), the short-conv taps."""
    macs = {"vision": 0, "connector": 0, "backbone": 0}
    hooks = []

    def conv_hook(key):
        def hook(m, i, o):
            macs[key] += o.numel() // o.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        return hook

    def linear_hook(key):
        def hook(m, i, o):
            macs[key] += o.numel() // o.shape[0] // m.out_features * m.in_features * m.out_features
        return hook

    for key, mod in (("vision", net.vision), ("connector", net.connector), ("backbone", net.layers),
                     ("backbone", net.head)):
        for m in mod.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(conv_hook(key)))
            elif isinstance(m, nn.Linear):
                hooks.append(m.register_forward_hook(linear_hook(key)))
    net.eval()
    with torch.no_grad():
        net.forward(torch.zeros(1, 1, image_size, image_size), torch.zeros(1, text_len, dtype=torch.long))
    for h in hooks:
        h.remove()
    p = (image_size // 4) ** 2
    mqa = net.vision.mqa
    macs["vision"] += 2 * p * p * mqa.heads * mqa.head_dim
    s = p + text_len
    for layer in net.layers:
        if layer.kind == "attn":
            macs["backbone"] += 2 * s * s * layer.op.heads * layer.op.head_dim   # masked, computed in full
        else:
            macs["backbone"] += s * layer.op.weight.numel()
    macs["total"] = macs["vision"] + macs["connector"] + macs["backbone"]
    return macs
