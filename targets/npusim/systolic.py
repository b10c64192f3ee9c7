"""Systolic MAC array (array kind ``systolic``): compute cycles of SCALE-Sim v3's analytical dataflows.

TOML ``[array]`` keys read here: ``rows`` and ``cols`` (the array, R x C processing elements), ``dataflow``
("os" | "ws" | "is") and, optionally, ``os_output_drain`` (bool, default false; see "OS" below).

Mapping (Samajdar et al., "A Systematic Methodology for Characterizing Scalability of DNN Accelerators using
SCALE-Sim", ISPASS 2020). A GEMM of (M x K) by (K x N) (for a convolution M = output pixels, K = window x
input channels, N = filters) becomes Sr rows and Sc columns of work, each streamed for T cycles:

    dataflow   Sr   Sc   T     stationary in the PEs
    os         M    N    K     outputs (partial sums)
    ws         K    N    M     weights
    is         K    M    N     inputs

The work is cut into folds of at most R x C, ``folds = ceil(Sr/R) * ceil(Sc/C)``, run one after the other; each
fold streams T operands through a pipeline that fills and drains diagonally (R-1 + C-1 cycles), and the
weight- and input-stationary flows first load the stationary operand, one array row per cycle (R cycles):

    cycles(GEMM) = folds * (T + F) - 1        F = R + C - 2 (os), 2R + C - 2 (ws, is)

The -1 is SCALE-Sim's: its "Total Cycles" is the 0-based index of the last busy cycle (SCALE-Sim#125 reports
the same off-by-one against a pen-and-paper count). This equals SCALE-Sim v3.0.0's "Total Cycles" column
exactly for every stall-free layer (InterfaceBandwidth = CALC; tests/test_npusim_systolic.py checks it on the
committed reports of tests/data/scalesim/). That column excludes the prefetch of the first operands from DRAM
and the write-back of the last outputs ("Total Cycles (incl. prefetch)"); lowbit's memory model prices that
traffic separately (op cycles = max(compute, memory)), so compute is compared with "Total Cycles".

OS: the paper and SCALE-Sim's maintainers give 2R + C + T - 2 per fold for OS (the finished outputs take R
more cycles to shift out of the array; scale-sim-v3#4, acknowledged as a bug), but the released code counts
R + C + T - 2. lowbit matches what the tool computes; ``os_output_drain = true`` adds the R drain cycles per
fold for users who want the corrected count.

Per kind (``GemmShape`` of targets/npusim/workload.py; ``batch`` products run one after another):

    conv        one GEMM per group: M = N·OH·OW, N = OC/g, K = KH·KW·IC/g, repeated g times
    depthwise   each channel a 1-channel conv with OC/IC filters: M = OH·OW, N = OC/IC, K = KH·KW, repeated IC
                times. SCALE-Sim has no depthwise operator; its conv topology reader splits a layer whose name
                contains "DP" into exactly these per-channel layers, so its report is the sum of IC such
                layers. (On a 32x32 array that keeps 1 of 32 columns busy: the same poor fit SCALE-Sim shows.)
    fc          M = rows, N = out features, K = in features
    matmul      ``batch`` GEMMs (activation x activation; the second operand takes the weights' place)
    recurrent   layers with a GemmShape (LMUMemory): one GEMM per time step, ``steps`` of them in sequence

Precision: SCALE-Sim moves 1-byte words, i.e. the rate of w8a8. Other precisions scale the cycles by
``macs_per_cycle["w8a8"] / macs_per_cycle[precision]`` (a preset can say int16 runs at half rate, int4 at
twice), the rate looked up by ``Accelerator.macs_per_cycle`` (activation x activation products as w<a>a<a>, a
precision the array lacks at the fastest wider one it lists). None when no listed rate covers the precision
(the simulator places such layers on the CPU).

Utilisation = MACs / (cycles x peak MACs per cycle at the layer's precision), peak = rows·cols·rate/rate_w8a8,
which is SCALE-Sim's "Overall Util %" / 100 at w8a8 and never exceeds 1.
"""
from __future__ import annotations

import math

from lowbit.errors import ConfigError
from lowbit.targets.npusim.arrays import Compute, register_array
from lowbit.targets.npusim.workload import GemmShape, Layer

DATAFLOWS = ("os", "ws", "is")
BASE_PRECISION = "w8a8"   # SCALE-Sim's 1-byte words


def spatio_temporal(m: int, n: int, k: int, dataflow: str) -> tuple[int, int, int]:
    """(Sr, Sc, T) of one M x N x K GEMM under ``dataflow`` (the table in the module docstring)."""
    if dataflow == "os":
        return m, n, k
    if dataflow == "ws":
        return k, n, m
    if dataflow == "is":
        return k, m, n
    raise ValueError(f"systolic dataflow {dataflow!r} is not one of {', '.join(DATAFLOWS)}")


def fill_drain_cycles(rows: int, cols: int, dataflow: str, os_output_drain: bool = False) -> int:
    """F per fold: R + C - 2 (os; + R with ``os_output_drain``), 2R + C - 2 (ws, is)."""
    if dataflow == "os":
        return rows + cols - 2 + (rows if os_output_drain else 0)
    return 2 * rows + cols - 2


def gemm_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str,
                os_output_drain: bool = False) -> int:
    """cycles(GEMM) = ceil(Sr/R)·ceil(Sc/C)·(T + F) - 1, never below the MAC bound ceil(M·N·K / (R·C))."""
    sr, sc, t = spatio_temporal(m, n, k, dataflow)
    folds = math.ceil(sr / rows) * math.ceil(sc / cols)
    cycles = folds * (t + fill_drain_cycles(rows, cols, dataflow, os_output_drain)) - 1
    return max(cycles, math.ceil(m * n * k / (rows * cols)))


def array_gemm(layer: Layer) -> GemmShape | None:
    """The GEMMs the array runs for ``layer`` (``batch`` of them in sequence), None for non-MAC layers."""
    if layer.gemm is None:
        return None
    if layer.mac_kind or layer.kind == "recurrent":
        return layer.gemm
    return None


def systolic_compute(layer: Layer, accel) -> Compute | None:
    """SCALE-Sim v3 compute cycles: batch x (ceil(Sr/R)·ceil(Sc/C)·(T + F) - 1) x rate_w8a8 / rate_precision."""
    g = array_gemm(layer)
    if g is None:
        return None
    # activation x activation: the second operand is as wide as the first (not "any weight width", which would
    # let an a8 matmul borrow a faster w4a8 rate)
    rate = accel.macs_per_cycle(layer.precision if layer.weight_bits else f"w{layer.act_bits}a{layer.act_bits}")
    if rate is None:
        return None
    p = accel.array.params
    rows, cols = int(p["rows"]), int(p["cols"])
    base = g.batch * gemm_cycles(g.m, g.n, g.k, rows, cols, p["dataflow"], bool(p.get("os_output_drain", False)))
    if base == 0:
        return Compute(0.0, "array", None)
    speed = rate / accel.array.macs_per_cycle.get(BASE_PRECISION, rows * cols)
    cycles = base / speed
    return Compute(cycles, "array", g.macs / (cycles * rows * cols * speed))


def validate_systolic(accel) -> None:
    """array.rows and array.cols are positive integers, array.dataflow one of os | ws | is."""
    p = accel.array.params
    for key in ("rows", "cols"):
        v = p.get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ConfigError(f"{accel.source}: field 'array.{key}' must be a positive integer "
                              f"(array.kind = \"systolic\"), got {v!r}")
    if p.get("dataflow") not in DATAFLOWS:
        raise ConfigError(f"{accel.source}: field 'array.dataflow' must be one of {', '.join(DATAFLOWS)} "
                          f"(array.kind = \"systolic\"), got {p.get('dataflow')!r}")
    if not isinstance(p.get("os_output_drain", False), bool):
        raise ConfigError(f"{accel.source}: field 'array.os_output_drain' must be true or false, "
                          f"got {p['os_output_drain']!r}")


register_array("systolic", systolic_compute, validate=validate_systolic)
