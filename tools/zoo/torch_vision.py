"""Image classifiers of the zoo: a MobileNetV2-style CNN and a small ViT (needs torch)."""
from __future__ import annotations

import math

import torch
from torch import nn


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand (BN, ReLU6) -> 3x3 depthwise (BN, ReLU6) -> 1x1 project (BN), residual
    when the shape is kept."""

    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, act=False)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


# (expand ratio, output channels, stride) per block, after a 3x3 stem at 16 channels; input 16x16
MOBILENET_BLOCKS = ((1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 32, 2), (4, 32, 1), (4, 64, 2))


class MobileNetDigits(nn.Module):
    def __init__(self, blocks=MOBILENET_BLOCKS, stem=16, head=128, classes=10):
        super().__init__()
        layers = [conv_bn(1, stem, 3)]
        cin = stem
        for expand, cout, stride in blocks:
            layers.append(InvertedResidual(cin, cout, stride, expand))
            cin = cout
        layers.append(conv_bn(cin, head, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        x = self.features(x)
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def mobilenet_macs(size=16, blocks=MOBILENET_BLOCKS, stem=16, head=128, classes=10) -> int:
    """Multiply-accumulates of one image through MobileNetDigits (convs and the linear layer)."""
    hw = size * size
    macs = hw * 9 * 1 * stem
    cin = stem
    for expand, cout, stride in blocks:
        hidden = cin * expand
        if expand != 1:
            macs += hw * cin * hidden
        hw_out = math.ceil(math.sqrt(hw) / stride) ** 2
        macs += hw_out * 9 * hidden + hw_out * hidden * cout
        hw, cin = hw_out, cout
    return macs + hw * cin * head + head * classes


class Attention(nn.Module):
    """Multi-head softmax self-attention written with MatMul/Softmax (no fused SDPA), as exported."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-2, -1) * (self.head_dim ** -0.5), dim=-1)
        return self.proj((att @ v).transpose(1, 2).reshape(b, t, d))


class ViTBlock(nn.Module):
    def __init__(self, dim, heads, mlp):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTDigits(nn.Module):
    """Conv patch embedding (4x4 patches of a 16x16 image -> 16 tokens), learned positions, pre-norm blocks,
    mean pooling, LayerNorm, linear head."""

    def __init__(self, size=16, patch=4, dim=64, depth=3, heads=4, mlp=128, classes=10):
        super().__init__()
        self.embed = nn.Conv2d(1, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (size // patch) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[ViTBlock(dim, heads, mlp) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x).flatten(2).transpose(1, 2) + self.pos
        x = self.blocks(x)
        return self.head(self.norm(x).mean(1))


def vit_macs(size=16, patch=4, dim=64, depth=3, heads=4, mlp=128, classes=10) -> int:
    t = (size // patch) ** 2
    macs = t * patch * patch * dim
    per_block = t * dim * 3 * dim + 2 * t * t * dim + t * dim * dim + 2 * t * dim * mlp
    return macs + depth * per_block + dim * classes
