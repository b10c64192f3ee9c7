"""Arm Ethos-U55 / U65 array model (``[array] kind = "ethos-u"``), after Vela's performance estimator.

The formulas are those of Vela 5.2's estimator (its default C++ "Regor" core; the legacy Python
``ethosu/vela/npu_performance.py`` has the same shape), written again over lowbit's Layers. The architecture
constants are data: the ``[array]`` keys of PARAMS, defaulting to Vela's table for ``accelerator_config``.

A Layer becomes one or more NPU operations (``NpuOp``, NHWC feature maps of batch 1), as Vela lowers the
TFLite operator: grouped convolutions one per group, strides over 3 one operation per output pixel,
FULLY_CONNECTED rows folded into a near-square H x W, MEAN a depthwise sum and a rescaling MUL, BATCH_MATMUL a
MUL and a reduce-sum per output column, SOFTMAX its chain of elementwise ops, standalone activations a 1x1
pooling with the activation (ethosu_ops.py). For each operation:

1. **OFM block** (``find_block``): among the multiples of the OFM micro-block up to ``ofm_block_max``
   (H, W, C) whose double-buffered IFM block and accumulators fit the shared buffer (``shram_banks`` banks of
   1 KiB, rounded to ``shram_granules``), the one with the least (IFM fetch + weight fetch) per OFM element.
2. **MAC cycles per block**, per sub-kernel of at most 8 x 8 (ub = micro-block, #ub = micro-blocks per block):
       conv, depth-first     max(32·ub_c/8, 4·#ub_xy) · kernel_elems · #ub_c
       conv, part-kernel     max(32·ub_c/8, 4·#ub_xy) · ceil(kernel_elems/4) · #ub_c · ceil(ifm_block_c/8)
       depthwise             max(32·ub_c/8, 4·#ub_xy·ifm_bits/8) · ceil(kernel_elems/4) · #ub_c
       pooling               max(4, kernel_elems) · #ub · ifm_bits/2
   plus 2 (3 with 40-bit accumulators on 128-MAC arrays) stall cycles per kernel step when a block is one
   micro-block in X and Y; conv, vector product and reduce-sum repeat per IFM depth block; / cores.
3. **Output cycles per block** = ceil(per-element cycles · block elements), the per-element figure the larger
   of ``output_cycles[op class]`` and ``activation_cycles[activation]``; at least the scale/bias fetch,
   10 · block depth · latency / 256.
4. **Command issue** = (one IFM block read + one OFM block write, latencies included, + MAC + output) / 4.
5. **Operation** = max(MAC, cmd) · #blocks + max(output, cmd) when the MAC side is the longer (else the other
   way round: the pipeline fills once); elementwise ops: max(output, cmd) per element · OFM elements.
   A layer with weights also waits once per operation for the weight memory's read latency (the first
   weight block must arrive before the first OFM block starts; Vela charges the first weight DMA that the
   previous operation cannot hide).

Traffic (``traffic``), per memory: IFM reads = IFM block (X·Y) x whole IFM depth x sub-kernels x OFM
blocks, OFM written once, both times Vela's burst-efficiency factor (burst length / contiguous bytes per
access, NHCWB16 "brick" layout for 4-D feature maps); encoded weights = ``weight_encoding_ratio`` bytes per
8-bit weight (16-byte units) + ``scale_bytes_per_channel`` per output channel. Vela DMAs the weights into
``weight_staging`` (``stage_weights``: when re-reading them from there beats reading them in place, or the
transfer is short) and the NPU re-reads them once per OFM block in X·Y; otherwise it reads them in place that
many times. Bias/scale re-reads are charged to the weight memory, as Vela does. Access cycles = bytes /
bytes per cycle; ``Traffic.weight_bytes`` is what a DMA can fetch ahead (the staged weights).

Memory modes (Vela's vela.ini): Shared_Sram (U55) keeps the tensor arena in SRAM and reads the weights from
off-chip flash (``dram`` here); Dedicated_Sram (U65) keeps arena, weights and scratch tensors in DRAM and uses
the SRAM as a cache for feature maps and weight buffers. Feature maps are where the residency map puts them
(``memory.arena`` otherwise); ``scratch_memory`` holds compound ops' intermediates (MatMul products).

Not modelled: Vela's cascading (stripes of consecutive ops through small buffers), depth-sliced weight double
buffering and the slack bookkeeping between ops (the simulator hides weight DMA under the previous layer
itself), the exact mlw weight compression (a ratio) and the U55-32's extra stall rules.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from lowbit.targets.npusim.arrays import Compute, Traffic, register_array, residency_of
from lowbit.targets.npusim.ethosu_ops import (  # noqa: F401  (npu_ops, fuse_activations, NpuOp: public here too)
    MAX_STRIDE, NpuOp, _ceil, _round_up, fuse_activations, npu_ops)
from lowbit.targets.npusim.workload import Layer

# -- architecture parameters ([array] table) ------------------------------------------------------------------
# Vela's constants per accelerator configuration (architecture_features.py; Regor's ethos_u55.cpp/u65.cpp).
# ofm_ublock / ifm_ublock: (H, W, C) micro-blocks; shram_granules: banks for IFM8, IFM16, IFM8 elementwise,
# IFM16 elementwise, IFM32, Acc16, Acc32, Acc40; output_cycles per element for: 0 elementwise 32-bit unary,
# 1 elementwise 32-bit binary, 2 Mul with 32-bit OFM, 3 Mul / MAC op with 40-bit accumulators, 4 simple
# Add/Sub, 5 Add/Sub, 6 MaxPool, 7 other; activation_cycles: 0 LUT (sigmoid, tanh, tables), 1 ReLU, 2 none.
_U256 = dict(ofm_ublock=(2, 2, 8), ifm_ublock=(2, 2, 8), cores=1, shram_banks=48,
             shram_granules=(8, 8, 8, 8, 16, 8, 16, 20),
             output_cycles=(0.625, 1.125, 0.5, 0.375, 0.5, 0.75, 0.125, 0.25), activation_cycles=(1.0, 0.25, 0.0))
CONFIGS: dict[str, dict] = {
    "ethos-u55-32": dict(ofm_ublock=(1, 1, 4), ifm_ublock=(1, 1, 8), cores=1, shram_banks=16,
                         shram_granules=(2, 2, 2, 2, 4, 4, 4, 4),
                         output_cycles=(2.0, 3.0, 3.0, 3.0, 4.0, 6.0, 1.0, 2.0), activation_cycles=(1.0, 1.0, 0.0)),
    "ethos-u55-64": dict(ofm_ublock=(1, 1, 8), ifm_ublock=(1, 1, 8), cores=1, shram_banks=16,
                         shram_granules=(2, 2, 2, 2, 4, 4, 4, 8),
                         output_cycles=(1.0, 1.5, 1.5, 1.5, 2.0, 3.0, 0.5, 1.0), activation_cycles=(1.0, 1.0, 0.0)),
    "ethos-u55-128": dict(ofm_ublock=(1, 2, 8), ifm_ublock=(1, 2, 8), cores=1, shram_banks=24,
                          shram_granules=(4, 4, 4, 4, 8, 4, 8, 12),
                          output_cycles=(0.75, 1.25, 0.75, 0.75, 1.0, 1.5, 0.25, 0.5),
                          activation_cycles=(1.0, 0.5, 0.0)),
    "ethos-u55-256": _U256,
    "ethos-u65-256": _U256,
    "ethos-u65-512": dict(_U256, cores=2, output_cycles=(0.3125, 0.5625, 0.25, 0.1875, 0.25, 0.375, 0.0625, 0.125),
                          activation_cycles=(0.5, 0.125, 0.0)),
}
# every [array] key this model reads, with its default; the CONFIGS entry of accelerator_config overrides
# the architecture constants, explicit TOML keys override both
PARAMS = {
    "accelerator_config": "ethos-u55-128", **CONFIGS["ethos-u55-128"], "ofm_block_max": (32, 64, 128),
    "weight_encoding_ratio": 0.95,    # encoded bytes per 8-bit weight (Vela's mlw codec on random-ish weights)
    "scale_bytes_per_channel": 10,    # 40-bit bias + 32-bit scale + shift per output channel
    "weight_staging": "sram",         # DMA target of the weights ("" reads them in place)
    "scratch_memory": "sram",         # where compound ops keep intermediates (U65 Dedicated_Sram: "dram")
    "sram_burst_bytes": 32, "dram_burst_bytes": 128,             # vela.ini <Mem>_burst_length
    "sram_write_latency": None, "dram_write_latency": None,      # None: the memory's latency_cycles
}
SUBKERNEL_MAX = 8          # the MAC array walks kernels in pieces of at most 8 x 8
OFM_SPLIT_DEPTH = 16       # OFM block depths are multiples of 16 unless the block covers the whole depth
SHRAM_BANK_BYTES = 1024
SHRAM_RESERVED_OUTPUT_BANKS = 2
STARTUP_DMA_CYCLES = 1000  # Vela buffers weights whose whole transfer is shorter than this
MEMORIES = ("sram", "dram")
_TRIPLES = ("ofm_ublock", "ifm_ublock", "ofm_block_max")


@dataclass(frozen=True)
class EthosUArch:
    ofm_ublock: tuple[int, int, int]
    ifm_ublock: tuple[int, int, int]
    cores: int
    shram_banks: int
    shram_granules: tuple[int, ...]
    ofm_block_max: tuple[int, int, int]
    output_cycles: tuple[float, ...]
    activation_cycles: tuple[float, ...]
    weight_encoding_ratio: float
    scale_bytes_per_channel: int
    arena_memory: str                      # where feature maps live unless the residency map says otherwise
    weight_memory: str                     # where the encoded weights live
    weight_staging: str                    # where a DMA puts them for the NPU ("" = read in place)
    scratch_memory: str
    burst: tuple[tuple[str, int], ...]
    read_latency: tuple[tuple[str, float], ...]
    write_latency: tuple[tuple[str, float], ...]

    @property
    def macs_per_cycle(self) -> int:
        h, w, c = self.ofm_ublock
        return h * w * c * 8 * self.cores      # 8-wide dot products per micro-block element

    def latency(self, memory: str, write: bool = False) -> float:
        return dict(self.write_latency if write else self.read_latency).get(memory, 0.0)

    def burst_bytes(self, memory: str) -> int:
        return dict(self.burst).get(memory, 32)


def _params(accel) -> dict:
    """PARAMS, then CONFIGS[accelerator_config], then the description's [array] keys."""
    given = dict(getattr(accel.array, "params", None) or {})
    name = given.get("accelerator_config", PARAMS["accelerator_config"])
    if name not in CONFIGS:
        raise ValueError(f"[array] accelerator_config = {name!r}: known Ethos-U configurations are "
                         f"{', '.join(CONFIGS)}")
    return {**PARAMS, **CONFIGS[name], **given}


def arch_of(accel) -> EthosUArch:
    """The Ethos-U constants of ``accel``; latencies and where arena and weights live come from [memory]."""
    p = _params(accel)
    mem = accel.memory
    latency = tuple((m, float(getattr(getattr(mem, m), "latency_cycles", 0.0) or 0.0)) for m in MEMORIES)
    key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in p.items() if k in PARAMS))
    return _arch_from(key, latency, getattr(mem, "arena", "sram"), getattr(mem, "weights", "dram"))


@lru_cache(maxsize=64)
def _arch_from(key: tuple, latency: tuple, arena: str, weights: str) -> EthosUArch:
    p = dict(key)
    lat = dict(latency)
    for k in _TRIPLES:
        if len(p[k]) != 3 or min(p[k]) < 1:
            raise ValueError(f"[array] {k} = {list(p[k])}: expected three positive integers (H, W, C)")
    staging = p["weight_staging"] if p["weight_staging"] != weights else ""
    write = tuple((m, lat[m] if p[f"{m}_write_latency"] is None else float(p[f"{m}_write_latency"]))
                  for m in MEMORIES)
    return EthosUArch(
        tuple(int(x) for x in p["ofm_ublock"]), tuple(int(x) for x in p["ifm_ublock"]), int(p["cores"]),
        int(p["shram_banks"]), tuple(int(x) for x in p["shram_granules"]),
        tuple(int(x) for x in p["ofm_block_max"]), tuple(float(x) for x in p["output_cycles"]),
        tuple(float(x) for x in p["activation_cycles"]), float(p["weight_encoding_ratio"]),
        int(p["scale_bytes_per_channel"]), arena, weights, staging, str(p["scratch_memory"]),
        tuple((m, int(p[f"{m}_burst_bytes"])) for m in MEMORIES), latency, write)


def validate_ethosu(accel) -> None:
    """Each Ethos-U [array] key is known and well formed (a ConfigError names the field)."""
    from lowbit.errors import ConfigError
    src = getattr(accel, "source", "accelerator description")
    unknown = sorted(set(accel.array.params) - set(PARAMS))
    if unknown:
        raise ConfigError(f"{src}: field 'array.{unknown[0]}' is not an Ethos-U parameter; known: "
                          f"{', '.join(PARAMS)}")
    try:
        p = _params(accel)
    except ValueError as e:
        raise ConfigError(f"{src}: field 'array.accelerator_config': {e}") from None
    lengths = {"shram_granules": 8, "output_cycles": 8, "activation_cycles": 3, **{k: 3 for k in _TRIPLES}}
    for k, n in lengths.items():
        v = p[k]
        if not isinstance(v, (list, tuple)) or len(v) != n or \
                not all(isinstance(x, (int, float)) and not isinstance(x, bool) and x >= 0 for x in v):
            raise ConfigError(f"{src}: field 'array.{k}' must be a list of {n} non-negative numbers, got {v!r}")
    for k in ("cores", "shram_banks", "scale_bytes_per_channel", "sram_burst_bytes", "dram_burst_bytes"):
        if not isinstance(p[k], int) or isinstance(p[k], bool) or p[k] <= 0:
            raise ConfigError(f"{src}: field 'array.{k}' must be a positive integer, got {p[k]!r}")
    if not isinstance(p["weight_encoding_ratio"], (int, float)) or p["weight_encoding_ratio"] <= 0:
        raise ConfigError(f"{src}: field 'array.weight_encoding_ratio' must be a positive number, "
                          f"got {p['weight_encoding_ratio']!r}")
    for k, allowed in (("weight_staging", ("", "sram", "dram")), ("scratch_memory", ("sram", "dram"))):
        if p[k] not in allowed:
            raise ConfigError(f"{src}: field 'array.{k}' must be one of {', '.join(map(repr, allowed))}, "
                              f"got {p[k]!r}")
    for k in ("sram_write_latency", "dram_write_latency"):
        if p[k] is not None and (not isinstance(p[k], (int, float)) or p[k] < 0):
            raise ConfigError(f"{src}: field 'array.{k}' must be a non-negative number, got {p[k]!r}")


# -- OFM block search -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    ofm: tuple[int, int, int]
    ifm: tuple[int, int, int]
    acc40: bool = False                      # 40-bit accumulators (16-bit IFM)
    part_kernel: bool = False                # kernel-first traversal


def _part_kernel(op: NpuOp) -> bool:
    """Vela walks the kernel first when that fills the 8-deep dot products better than walking the depth."""
    if op.hw != "conv":
        return False
    depth = op.ifm[2]
    if depth <= 8:
        return True
    elems = op.kernel[0] * op.kernel[1]
    depth_first = depth / _round_up(depth, 32 if op.ifm_bits == 8 else 16)
    part = depth / _round_up(depth, 8) * elems / _round_up(elems, 4 if op.ifm_bits == 8 else 2)
    return part >= depth_first


def _block_grid(op: NpuOp, arch: EthosUArch):
    """Candidate OFM blocks (H, W, D arrays) in Vela's search order: depth, then height, then width."""
    uh, uw, uc = arch.ofm_ublock
    oh, ow, oc = op.ofm
    mh, mw, mc = arch.ofm_block_max
    space_c = _round_up(min(oc, mc), uc)
    depths = []
    d = max(uc, min(space_c, OFM_SPLIT_DEPTH))
    d = _round_up(d, OFM_SPLIT_DEPTH) if d < oc else d
    while d <= space_c:
        depths.append(d)
        d += uc
        d = _round_up(d, OFM_SPLIT_DEPTH) if d < oc else d
    hs = np.arange(uh, _round_up(min(oh, mh), uh) + 1, uh)
    ws = np.arange(uw, _round_up(min(ow, mw), uw) + 1, uw)
    grid = np.meshgrid(np.asarray(depths), hs, ws, indexing="ij")
    return tuple(a.ravel() for a in grid[1:] + grid[:1])


def _ifm_block_hw(op: NpuOp, arch: EthosUArch, h, w):
    """IFM rows and columns an OFM block needs for one sub-kernel, rounded to the micro-block."""
    uh, uw, _ = arch.ofm_ublock
    kh = min((op.kernel[0] - 1) * op.dilation[0] + 1, SUBKERNEL_MAX)
    kw = min((op.kernel[1] - 1) * op.dilation[1] + 1, SUBKERNEL_MAX)
    return _round_up((h - 1) * op.stride[0] + kh, uh), _round_up((w - 1) * op.stride[1] + kw, uw)


def _shram_fits(op: NpuOp, arch: EthosUArch, H, W, D, ih, iw, idepth, acc40: bool):
    """Which candidates' double-buffered IFM and accumulator blocks fit the shared buffer's banks."""
    g = arch.shram_granules
    elementwise = op.hw == "elementwise"
    ifm_granule = {8: g[2 if elementwise else 0], 16: g[3 if elementwise else 1]}.get(op.ifm_bits, g[4])
    lut_banks = max(2 if op.activation == "lut" else 0, 2 if arch.shram_banks > 16 else 0)
    lut_start = arch.shram_banks - lut_banks
    ifm_banks = _round_up(_ceil_arr(ih * iw * _round_up(idepth * max(op.ifm_bits // 8, 1), 8),
                                    SHRAM_BANK_BYTES) * 2, ifm_granule)
    ifm_end = SHRAM_RESERVED_OUTPUT_BANKS + ifm_banks
    if elementwise:
        scalar = op.ifm2 is not None and math.prod(op.ifm2) == 1 and op.ifm_bits <= 16
        return ifm_end + (0 if scalar else ifm_banks) <= lut_start
    acc_granule, acc_bits = (g[7], 40) if acc40 else (g[6], 32)
    oh = op.ofm[0]
    acc_h = np.minimum(H, oh) if (oh == 1 and op.kernel[0] == 1 and arch.ofm_ublock[0] == 2) else H
    acc_banks = _round_up(_ceil_arr(acc_h * W * _round_up(D, 8) * acc_bits // 8, SHRAM_BANK_BYTES) * 2,
                          acc_granule)
    return ifm_end <= lut_start - acc_banks


def _ceil_arr(a, b):
    return -(-a // b)


def _fetch_cost(op: NpuOp, ifm_shape, H, W, D, ih, iw, idepth, equal_depth: bool):
    """(IFM fetch + weight fetch) per OFM element, halved when both IFM buffers hold the whole IFM."""
    oh, ow, oc = op.ofm
    f32 = np.float32
    Hf, Wf, Df = (a.astype(f32) for a in (H, W, D))
    if op.hw == "elementwise":
        cost = f32(oh * ow * oc) / (Hf * Wf * Df)
    else:
        repeats = _ceil((op.kernel[1] - 1) * op.dilation[1] + 1, SUBKERNEL_MAX) * \
            _ceil((op.kernel[0] - 1) * op.dilation[0] + 1, SUBKERNEL_MAX)
        weight_wh = op.kernel[0] * op.kernel[1] if op.hw in ("conv", "depthwise") else 0
        weight_fetch = f32(weight_wh * ifm_shape[2]) * (_ceil_arr(ow, W) * _ceil_arr(oh, H)).astype(f32)
        if op.hw != "depthwise":
            weight_fetch = weight_fetch * (f32(oc) / Df) * Df
        ifm_fetch = (ih * iw * ifm_shape[2] * repeats).astype(f32) * (f32(ow) / Wf) * (f32(oh) / Hf)
        if not equal_depth:
            ifm_fetch = ifm_fetch * _ceil_arr(oc, D).astype(f32)
        cost = (ifm_fetch + weight_fetch) / f32(oh * ow * oc)
    return np.where(ih * iw * idepth * 2 > math.prod(ifm_shape), cost / f32(2), cost).astype(f32)


def _dependency_fit(shape: tuple[int, int, int], limit: tuple[int, int, int]) -> tuple[int, int, int]:
    """Vela sizes a MatMul's blocks for a third (else half) of its rows or columns, at least 4, so that
    consecutive blocks do not wait on each other."""
    axis = 0 if shape[0] > limit[0] else 1
    if shape[axis] <= limit[axis]:
        for divider in (3, 2):
            if shape[axis] >= 4 * divider:
                return tuple(_ceil(v, divider) if i == axis else v for i, v in enumerate(shape))
    return shape


@lru_cache(maxsize=4096)
def find_block(op: NpuOp, arch: EthosUArch) -> Block:
    """The OFM block (and IFM block) Vela's search picks for ``op`` (module docstring, step 1): the least
    fetch cost; among equal costs the first, or a later one of at most 4 x 4 covering at least as much IFM."""
    if op.dependency_fit:
        fit = _dependency_fit(op.ofm, arch.ofm_block_max)
        op = replace(op, ofm=fit, ifm=fit if op.ifm == op.ofm else op.ifm, dependency_fit=False)
    pooling = op.hw in ("pool", "reduce_sum")
    equal_depth = op.hw in ("depthwise", "pool", "elementwise")
    part = _part_kernel(op)
    acc40 = op.ifm_bits == 16 and (not pooling or op.hw == "reduce_sum")
    ifm_shape = op.ifm if op.ifm2 is None or math.prod(op.ifm) >= math.prod(op.ifm2) else op.ifm2
    if op.ifm_bits == 16:
        ifm_depth = _round_up(min(ifm_shape[2], 16), 4)
    else:
        ifm_depth = _round_up(min(ifm_shape[2], 16 if part else 32), arch.ifm_ublock[2])
    H, W, D = _block_grid(op, arch)
    ih, iw = _ifm_block_hw(op, arch, H, W)
    idepth = D if equal_depth else np.full_like(D, ifm_depth)
    fits = _shram_fits(op, arch, H, W, D, ih, iw, idepth, acc40)
    if not fits.any():
        uh, uw, uc = arch.ofm_ublock
        return Block(tuple(min(a, b) for a, b in zip((uh, uw, uc), op.ofm)), (uh, uw, ifm_depth), acc40, part)
    cost = np.where(fits, _fetch_cost(op, ifm_shape, H, W, D, ih, iw, idepth, equal_depth), np.float32(np.inf))
    ties = np.flatnonzero(cost == cost.min())
    pick, coverage = ties[0], math.inf
    for i in ties[1:]:
        if H[i] <= 4 and W[i] <= 4:
            cov = ifm_shape[0] * ifm_shape[1] / max(min(ifm_shape[0], ih[i]) * min(ifm_shape[1], iw[i]), 1)
            if cov <= coverage:
                pick, coverage = i, cov
    return Block((int(H[pick]), int(W[pick]), int(D[pick])), (int(ih[pick]), int(iw[pick]), int(idepth[pick])),
                 acc40, part)


# -- cycles ---------------------------------------------------------------------------------------------------
def _clip(a, b) -> tuple[int, ...]:
    return tuple(min(x, y) for x, y in zip(a, b))


def _ofm_ublock(op: NpuOp, arch: EthosUArch) -> tuple[int, int, int]:
    """A 1-row OFM of even width under a 1-high kernel runs 1 x 4 micro-blocks on 2 x 2 arrays."""
    uh, _, uc = arch.ofm_ublock
    if uh == 2 and op.hw in ("conv", "vector") and op.ofm[0] == 1 and op.ofm[1] % 2 == 0 and op.kernel[0] == 1:
        return (1, 4, uc)
    return arch.ofm_ublock


def mac_cycles_per_block(op: NpuOp, arch: EthosUArch, blk: Block) -> int:
    """MAC cycles of one OFM block (module docstring, step 2)."""
    ofm_blk, ifm_blk = _clip(op.ofm, blk.ofm), _clip(op.ifm, blk.ifm)
    ub = _ofm_ublock(op, arch)
    nh, nw, nc = (_ceil(a, b) for a, b in zip(ofm_blk, ub))
    n_xy = nh * nw
    writeback = 32 * ub[2] // 8
    limit = 1 if op.hw == "vector" else SUBKERNEL_MAX
    delay = 3 if (blk.acc40 and arch.macs_per_cycle // arch.cores <= 128) else 2
    depth_passes = _ceil(ifm_blk[2], 8) if blk.part_kernel else 1
    kh, kw = op.kernel
    total = 0
    for x in range(0, kw, limit):
        for y in range(0, kh, limit):
            elems = min(kh - y, limit) * min(kw - x, limit)
            if op.hw == "pool":
                steps, cycles = 1, max(4, elems) * n_xy * nc * (op.ifm_bits // 2)
            elif op.hw == "depthwise":
                steps = _ceil(elems, 4)
                cycles = max(writeback, 4 * n_xy * (op.ifm_bits // 8)) * steps * nc
            elif blk.part_kernel:
                steps = _ceil(elems, 2 if op.ifm_bits == 16 else 4)
                cycles = max(writeback, 4 * n_xy) * steps * nc * depth_passes
            else:
                steps = elems
                cycles = max(writeback, 4 * n_xy) * steps * nc
            stall = 0
            if n_xy == 1:
                stall = delay * steps if nc == 1 else (delay * (steps - 1) * nc if steps > 1 else 0)
            total += cycles + stall * depth_passes
    if op.hw in ("conv", "vector", "reduce_sum"):
        total *= _ceil(op.ifm[2], ifm_blk[2])
    return total // arch.cores


def output_cycles_per_element(op: NpuOp, arch: EthosUArch, blk: Block) -> float:
    """Output-unit cycles per OFM element: the op class's figure or the activation's, the larger."""
    if op.hw == "elementwise" and op.ifm_bits == 32:
        index = 1 if op.ifm2 is not None else 0
    elif op.op_class == "mul32" or (op.op_class == "mul" and op.ofm_bits == 32):
        index = 2
    elif op.op_class == "mul" or (op.hw != "elementwise" and blk.acc40):
        index = 3
    else:
        index = {"add": 5, "maxpool": 6}.get(op.op_class, 7)
    activation = {"lut": 0, "relu": 1}.get(op.activation, 2)
    return max(arch.output_cycles[index], arch.activation_cycles[activation])


def burst_bytes(arch: EthosUArch, memory: str, read: bool, brick: bool, bits: int, block, shape,
                nbytes: float) -> float:
    """Bytes ``memory`` moves for ``nbytes`` of payload: x (burst length / contiguous bytes per access of
    the layout), Vela's burst efficiency. NHCWB16 reads run 16 channels x block width; NHWC reads the block
    depth unless the tensor is exactly one block deep."""
    longest = arch.burst_bytes(memory)
    _, bw, bc = block
    if brick:
        if shape[1] * bits * 16 // 8 == bc:
            bits_per_burst = bits * bw * bc
        else:
            bits_per_burst = 16 * bits * bw * (1 if read else arch.cores)
    else:
        whole_rows = shape[2] * bits // 8 == bc
        if read:
            bits_per_burst = bits * bw * bc if whole_rows else bits * bc
        elif bc <= 16 and whole_rows:
            bits_per_burst = bits * bw * bc
        else:
            bits_per_burst = min(64 * 8, 16 * bits * arch.cores, bc * bits)
    return nbytes * longest // max(min(longest, bits_per_burst // 8), 1)


def _block_transfer_cycles(op: NpuOp, arch: EthosUArch, blk: Block, bandwidth: Mapping[str, float],
                           ifm_mem: str, ofm_mem: str) -> float:
    """Cycles to read one IFM block (the larger of the two inputs) and write one OFM block, latencies in."""
    def read(shape):
        nbytes = math.prod(_clip(shape, blk.ifm)) * op.ifm_bits // 8
        moved = burst_bytes(arch, ifm_mem, True, op.ifm_brick, op.ifm_bits, blk.ifm, shape, nbytes)
        return arch.latency(ifm_mem) + int(moved / bandwidth[ifm_mem])
    cycles_in = max(read(op.ifm), read(op.ifm2) if op.ifm2 is not None else 0)
    nbytes = math.prod(_clip(op.ofm, blk.ofm)) * op.ofm_bits // 8
    moved = burst_bytes(arch, ofm_mem, False, op.brick, op.ofm_bits, blk.ofm, op.ofm, nbytes)
    return cycles_in + arch.latency(ofm_mem, write=True) + int(moved / bandwidth[ofm_mem])


def _bricked(shape, brick: bool):
    return (shape[0], shape[1], _round_up(shape[2], 16)) if brick else shape


def op_cycles(op: NpuOp, arch: EthosUArch, bandwidth: Mapping[str, float], ifm_mem: str = "sram",
              ofm_mem: str = "sram", weight_mem: str = "sram") -> float:
    """NPU cycles of one operation (module docstring, steps 2-5); ``weight_mem`` is where the NPU reads
    weights and scales from (its latency bounds the per-block scale fetch)."""
    blk = find_block(op, arch)
    per_elem = output_cycles_per_element(op, arch, blk)
    ifm_mem = arch.scratch_memory if op.scratch == "ifm" else ifm_mem
    ofm_mem = arch.scratch_memory if op.scratch == "ofm" else ofm_mem
    transfer = _block_transfer_cycles(op, arch, blk, bandwidth, ifm_mem, ofm_mem)
    if op.hw == "elementwise":
        elems = math.prod(_bricked(op.ofm, op.brick))
        cmd_per_elem = (transfer / math.prod(blk.ofm) + per_elem) / 4
        return max(math.ceil(cmd_per_elem * elems), math.ceil(per_elem * elems))
    ofm_blk = _clip(op.ofm, blk.ofm)
    ub = _ofm_ublock(op, arch)
    blocks = math.prod(_ceil(a, b) for a, b in zip(op.ofm, ub)) / math.prod(_ceil(a, b) for a, b in zip(ofm_blk, ub))
    out = float(math.ceil(per_elem * math.prod(ofm_blk)))
    if op.has_weights:
        out = max(out, 10 * ofm_blk[2] * arch.latency(weight_mem) / 256)
    mac = float(mac_cycles_per_block(op, arch, blk))
    cmd = (transfer + mac + out) / 4
    mac, out = max(mac, cmd), max(out, cmd)
    return math.floor(max(mac, out) * blocks + min(mac, out))


def _bandwidth(accel) -> dict[str, float]:
    return {m: float(getattr(accel.memory, m).bytes_per_cycle) for m in MEMORIES}


def compute(layer: Layer, accel) -> Compute | None:
    """Ethos-U NPU cycles of ``layer``: per NPU operation, Vela's block estimate (OFM blocks x max(MAC,
    output, command-issue cycles per block)) plus the weight memory's read latency before the first weight
    block; feature maps taken to be in ``memory.arena`` for the per-block latencies. None for kinds the NPU
    does not run."""
    ops = npu_ops(layer)
    if not ops:
        return None
    arch = arch_of(accel)
    bw = _bandwidth(accel)
    reads_weights_from = arch.weight_staging or arch.weight_memory
    cycles = float(sum(op_cycles(op, arch, bw, arch.arena_memory, arch.arena_memory, reads_weights_from)
                       for op in ops))
    cycles += sum(arch.latency(arch.weight_memory) for op in ops if op.has_weights)
    unit = "array" if layer.mac_kind or layer.kind in ("pool", "reduce") else "vector"
    util = layer.macs / (cycles * arch.macs_per_cycle) if layer.macs and cycles else None
    return Compute(cycles, unit, util)


# -- traffic --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """Feature-map elements one operation reads and writes, and how often it re-reads its weights."""
    ifm: int = 0
    ifm2: int = 0
    ofm: int = 0
    refetch: int = 0          # OFM blocks in X x Y


def element_access(op: NpuOp, arch: EthosUArch) -> Access:
    """Vela's element counts: the IFM block (X·Y) times the whole IFM depth per sub-kernel and OFM block
    (depthwise and pooling blocks span the depth); elementwise ops read and write each OFM element once."""
    ofm = math.prod(_bricked(op.ofm, op.brick))
    if op.hw == "elementwise":
        n = math.prod(_bricked(op.ofm, op.ifm_brick))
        ifm = n if math.prod(op.ifm) > 1 or op.ifm_bits > 8 else 0
        ifm2 = 0 if op.ifm2 is None else (n if math.prod(op.ifm2) > 1 else int(op.ifm_bits > 8))
        return Access(ifm, ifm2, ofm)
    blk = find_block(op, arch)
    ofm_blk, ifm_blk = _clip(op.ofm, blk.ofm), _clip(op.ifm, blk.ifm)
    bh, bw, bc = (_ceil(a, b) for a, b in zip(op.ofm, ofm_blk))
    if op.hw in ("depthwise", "pool"):
        bc = 1
    limit = 1 if op.hw == "vector" else SUBKERNEL_MAX
    subkernels = _ceil(op.kernel[1], limit) * _ceil(op.kernel[0], limit)
    ifm_depth = _round_up(op.ifm[2], 16) if op.ifm_brick else op.ifm[2]
    return Access(ifm_blk[0] * ifm_blk[1] * ifm_depth * subkernels * bh * bw * bc, 0, ofm,
                  bh * bw if op.has_weights else 0)


def encoded_weight_bytes(op: NpuOp, arch: EthosUArch) -> tuple[int, int]:
    """(weight bytes, bias/scale bytes) as encoded: ``weight_encoding_ratio`` bytes per 8-bit weight (fewer
    encoded bits in proportion: MEAN's all-ones weights) in 16-byte units, ``scale_bytes_per_channel`` per
    output channel."""
    if not op.has_weights:
        return 0, 0
    weights = math.ceil(op.weights * arch.weight_encoding_ratio * min(op.weight_bits, 8) / 8)
    return _round_up(weights, 16), op.ofm[2] * arch.scale_bytes_per_channel


def stage_weights(arch: EthosUArch, accel, nbytes: int, refetch: int, weight_mem: str, staging: str) -> bool:
    """Whether Vela DMAs the encoded weights into the staging memory rather than reading them in place:
    when one transfer plus ``refetch`` reads from the buffer beats ``refetch`` reads in place, or when the
    transfer is short (its ProposeWeightBuffering, without the slack left by the previous operation)."""
    bw = _bandwidth(accel)
    transfer = nbytes / bw[weight_mem] + arch.latency(weight_mem)
    buffered = (nbytes / bw[staging] + arch.latency(staging)) * refetch + transfer
    return buffered < transfer * refetch or transfer < STARTUP_DMA_CYCLES


def _add(totals: dict, memory: str, nbytes: float) -> None:
    totals[memory] = totals.get(memory, 0) + nbytes


def traffic(layer: Layer, accel, residency: Mapping[str, str]) -> Traffic | None:
    """Bytes each memory moves for ``layer`` and their access cycles (module docstring, Traffic): feature maps
    where ``residency`` puts them (``memory.arena`` by default), weights in ``residency["weights"]``."""
    ops = npu_ops(layer)
    if not ops:
        return None
    arch = arch_of(accel)
    arena = arch.arena_memory
    inputs = [residency_of(name, residency, arena) for name in layer.inputs[:2]] or [arena]
    output = residency_of(layer.outputs[0], residency, arena) if layer.outputs else arena
    weight_mem = residency.get("weights", arch.weight_memory)
    staging = arch.weight_staging if arch.weight_staging != weight_mem else ""
    moved: dict[str, float] = {}
    detail = {"ifm_read": 0, "ofm_write": 0, "weights": 0, "weight_reread": 0, "scales": 0, "staged": 0}
    ahead = 0
    for op in ops:
        ifm_mem = arch.scratch_memory if op.scratch == "ifm" else inputs[0]
        ifm2_mem = inputs[-1]
        ofm_mem = arch.scratch_memory if op.scratch == "ofm" else output
        # Vela counts a MatMul's 32-bit scratch products in elements
        ifm_bits = 8 if op.scratch == "ifm" else op.ifm_bits
        ofm_bits = 8 if op.scratch == "ofm" else op.ofm_bits
        blk = find_block(op, arch)
        a = element_access(op, arch)
        ifm_b = burst_bytes(arch, ifm_mem, True, op.ifm_brick, ifm_bits, blk.ifm, op.ifm, a.ifm * ifm_bits // 8)
        _add(moved, ifm_mem, ifm_b)
        if a.ifm2:
            ifm2_b = burst_bytes(arch, ifm2_mem, True, op.ifm_brick, ifm_bits, blk.ifm, op.ifm2,
                                 a.ifm2 * ifm_bits // 8)
            _add(moved, ifm2_mem, ifm2_b)
            ifm_b += ifm2_b
        ofm_b = burst_bytes(arch, ofm_mem, False, op.brick, ofm_bits, blk.ofm, op.ofm, a.ofm * ofm_bits // 8)
        _add(moved, ofm_mem, ofm_b)
        detail["ifm_read"] += int(ifm_b)
        detail["ofm_write"] += int(ofm_b)
        w, s = encoded_weight_bytes(op, arch)
        if not w:
            continue
        if staging and stage_weights(arch, accel, w + s, a.refetch, weight_mem, staging):
            _add(moved, weight_mem, w)                   # one DMA into the staging buffer (can run ahead)
            _add(moved, staging, w + w * a.refetch)      # written once, read once per OFM block in X·Y
            ahead += w + s
            detail["staged"] += 1
        else:
            _add(moved, weight_mem, w * a.refetch)       # read in place once per OFM block in X·Y
        _add(moved, weight_mem, s * a.refetch)          # Vela charges bias/scale re-reads to the weight memory
        detail["weights"] += w
        detail["weight_reread"] += w * a.refetch
        detail["scales"] += s * a.refetch
    bw = _bandwidth(accel)
    return Traffic({m: int(b) for m, b in moved.items()}, {m: b / bw[m] for m, b in moved.items()}, ahead, detail)


register_array("ethos-u", compute, traffic, validate=validate_ethosu, prepare=fuse_activations)
