"""Precision plans: which bit widths each node's weights and activations get.

A precision string is ``w{4,8,16}a{8,16}``: ``w8a8`` (TFLite int8), ``w8a16`` (TFLite 16x8), ``w4a8``,
``w4a16``, ``w16a16``. A plan file (TOML) sets a default and overrides by node name, name pattern (glob),
op type or position:

    [default]
    precision = "w8a8"
    observer = "minmax"          # minmax | percentile | entropy | mse
    per_channel = true
    weight_clip = "maxabs"       # or "mse": clip each weight channel at its MSE-optimal range
    bias_correction = true       # subtract the weights' rounding bias (W_q - W) E[x] from each bias

    [[override]]
    position = "first"           # or "last": the first / last node with weights
    precision = "w8a16"

    [[override]]
    name = "blocks.*.attn*"      # glob over node names
    op = "Softmax"               # op type (optional; both must match when both are given)
    precision = "w8a16"

Later overrides win. A name or pattern that matches no node is an error (a typo must not pass silently).
"""
from __future__ import annotations

import fnmatch
import os
import re
import sys
from dataclasses import dataclass, field, replace

from lowbit.errors import InputError
from lowbit.graph.ir import Graph, Node
from lowbit.quant.calibrate import OBSERVERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

_PRECISION = re.compile(r"^w(4|8|16)a(8|16)$")
PRECISIONS = ("w8a8", "w4a8", "w8a16", "w4a16", "w16a16")
WEIGHTED_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}


@dataclass(frozen=True)
class NodePrecision:
    weight_bits: int
    act_bits: int
    observer: str = "minmax"
    per_channel: bool = True
    weight_clip: str = "maxabs"  # or "mse": per-channel clip minimising the weight's squared error
    bias_correction: bool = True  # lower_ops.bias_correction: bias -= (W_q - W) E[x], E[x] from calibration

    @property
    def name(self) -> str:
        return f"w{self.weight_bits}a{self.act_bits}"


def parse_precision(text: str) -> NodePrecision:
    m = _PRECISION.match(text.strip().lower())
    if not m:
        raise InputError(f"unknown precision '{text}'; use one of {', '.join(PRECISIONS)} "
                         f"(w = weight bits 4/8/16, a = activation bits 8/16)")
    return NodePrecision(int(m.group(1)), int(m.group(2)))


@dataclass
class Override:
    settings: dict
    name: str | None = None
    op: str | None = None
    position: str | None = None

    def matches(self, node: Node, first: Node | None, last: Node | None) -> bool:
        if self.position == "first" and node is not first:
            return False
        if self.position == "last" and node is not last:
            return False
        if self.op is not None and node.op_type != self.op:
            return False
        if self.name is not None and not fnmatch.fnmatchcase(node.name, self.name):
            return False
        return True


@dataclass
class Plan:
    default: NodePrecision
    overrides: list[Override] = field(default_factory=list)
    source: str = ""

    def resolve(self, graph: Graph) -> dict[str, NodePrecision]:
        """The precision of every node, checking that each override matches at least one node."""
        weighted = [n for n in graph.nodes if n.op_type in WEIGHTED_OPS and n.domain == ""]
        first, last = (weighted[0], weighted[-1]) if weighted else (None, None)
        out = {n.name: self.default for n in graph.nodes}
        for i, ov in enumerate(self.overrides):
            hits = [n for n in graph.nodes if ov.matches(n, first, last)]
            if not hits:
                what = " and ".join(f"{k} '{v}'" for k, v in (("name", ov.name), ("op", ov.op),
                                                             ("position", ov.position)) if v)
                raise InputError(f"{self.source or 'plan'}: override #{i + 1} ({what}) matches no node of "
                                 f"graph '{graph.name}'")
            for n in hits:
                out[n.name] = _apply(out[n.name], ov.settings, f"{self.source} override #{i + 1}")
        return out

    def describe(self) -> str:
        return self.default.name + (f" + {len(self.overrides)} override(s) from {self.source}" if self.overrides else "")


def _apply(base: NodePrecision, settings: dict, where: str) -> NodePrecision:
    p = base
    if "precision" in settings:
        q = parse_precision(str(settings["precision"]))
        p = replace(p, weight_bits=q.weight_bits, act_bits=q.act_bits)
    if "observer" in settings:
        obs = str(settings["observer"])
        if obs not in OBSERVERS:
            raise InputError(f"{where}: unknown observer '{obs}'; choose one of {', '.join(OBSERVERS)}")
        p = replace(p, observer=obs)
    if "per_channel" in settings:
        p = replace(p, per_channel=bool(settings["per_channel"]))
    if "weight_clip" in settings:
        clip = str(settings["weight_clip"])
        if clip not in ("maxabs", "mse"):
            raise InputError(f"{where}: weight_clip must be 'maxabs' or 'mse', got '{clip}'")
        p = replace(p, weight_clip=clip)
    if "bias_correction" in settings:
        if not isinstance(settings["bias_correction"], bool):
            raise InputError(f"{where}: bias_correction must be true or false, got {settings['bias_correction']!r}")
        p = replace(p, bias_correction=settings["bias_correction"])
    unknown = set(settings) - {"precision", "observer", "per_channel", "weight_clip", "bias_correction"}
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}; "
                         f"use precision, observer, per_channel, weight_clip, bias_correction")
    return p


def make_plan(precision: str, plan_file: str | None = None, observer: str | None = None) -> Plan:
    """A plan from a precision string, optionally refined by a TOML plan file (whose [default] wins)."""
    plan = Plan(parse_precision(precision))
    if observer is not None:
        plan.default = _apply(plan.default, {"observer": observer}, "--observer")
    if plan_file is None:
        return plan
    if not os.path.isfile(plan_file):
        raise InputError(f"{plan_file}: no such plan file")
    try:
        with open(plan_file, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{plan_file}: not valid TOML ({e})") from None
    plan.source = plan_file
    unknown = set(data) - {"default", "override"}
    if unknown:
        raise InputError(f"{plan_file}: unknown section(s) {', '.join(sorted(unknown))}; use [default] and [[override]]")
    plan.default = _apply(plan.default, dict(data.get("default", {})), f"{plan_file} [default]")
    for i, entry in enumerate(data.get("override", [])):
        entry = dict(entry)
        sel = {k: entry.pop(k) for k in ("name", "op", "position") if k in entry}
        if not sel:
            raise InputError(f"{plan_file}: override #{i + 1} selects nothing; give name, op or position")
        if sel.get("position") not in (None, "first", "last"):
            raise InputError(f"{plan_file}: override #{i + 1}: position must be 'first' or 'last'")
        _apply(plan.default, entry, f"{plan_file} override #{i + 1}")  # validate now
        plan.overrides.append(Override(entry, **sel))
    return plan
