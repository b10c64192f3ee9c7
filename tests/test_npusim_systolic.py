"""The systolic array model (targets/npusim/systolic.py) against SCALE-Sim v3's committed reports, hand counts
and invariants. Fast tests read tests/data/scalesim/ (tests/data/scalesim/regenerate.py); the slow one runs
SCALE-Sim when an interpreter with it is found ($LOWBIT_SCALESIM_PYTHON or this one)."""
import glob
import math
import os
from dataclasses import replace

import numpy as np
import pytest

from lowbit.errors import ConfigError
from lowbit.targets.npusim.arrays import ARRAY_MODELS
from lowbit.targets.npusim.config import load_accelerator
from lowbit.targets.npusim.systolic import gemm_cycles, systolic_compute, validate_systolic
from lowbit.targets.npusim.workload import ConvShape, GemmShape, Layer
from lowbit.tools.bench.sim_vs_scalesim import (CYCLES, DATA_DIR, TopoRow, parts, read_report, read_topology,
                                                row_layer, topo_row)

RATES = {"w8a8": 1024, "w4a8": 2048, "w8a16": 512, "w4a16": 512, "w16a16": 256}


def accel(dataflow="ws", rows=32, cols=32, rates=RATES, **params):
    """The systolic-32x32-ws preset with the array's shape, dataflow and rates replaced."""
    preset = load_accelerator("systolic-32x32-ws")
    array = replace(preset.array, macs_per_cycle=dict(rates),
                    params={"rows": rows, "cols": cols, "dataflow": dataflow, **params})
    return replace(preset, array=array, source="test.toml")


def gemm_layer(m, n, k, batch=1, kind="fc", weight_bits=8, act_bits=8, **kw):
    return Layer(name=f"{kind}{m}x{n}x{k}", op="FullyConnected", kind=kind, act_bits=act_bits, out_bits=8,
                 weight_bits=weight_bits, gemm=GemmShape(m, n, k, batch), macs=batch * m * n * k, **kw)


def cycles(layer, a):
    return systolic_compute(layer, a).cycles


# -- committed SCALE-Sim reports -----------------------------------------------------------------------------
def committed():
    """(dataflow, file stem, row, SCALE-Sim report line) of every committed model report."""
    out = []
    for topo in sorted(glob.glob(os.path.join(DATA_DIR, "*", "*.topology.csv"))):
        if "depthwise_dp" in topo:
            continue
        df, stem = os.path.basename(os.path.dirname(topo)), os.path.basename(topo)[:-len(".topology.csv")]
        report = read_report(topo.replace(".topology.csv", ".report.csv"))
        out += [(df, stem, row, rep) for row, rep in zip(read_topology(topo), report)]
    return out


COMMITTED = committed()


def test_committed_reports_cover_the_models_and_dataflows():
    seen = {(df, stem.rsplit("_", 1)[0]) for df, stem, _, _ in COMMITTED}
    for model in ("mobilenet_digits", "vit_digits", "resnet50", "shufflenet", "alexnet"):
        for df in ("os", "ws", "is"):
            assert (df, model) in seen, f"no committed SCALE-Sim report for {model} ({df}): run regenerate.py"


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_every_committed_layer_within_5_percent(dataflow):
    a = accel(dataflow)
    rows = [(stem, row, rep) for df, stem, row, rep in COMMITTED if df == dataflow]
    assert rows
    for stem, row, rep in rows:
        ours, theirs = cycles(row_layer(row), a), rep[CYCLES]
        assert abs(ours / theirs - 1) <= 0.05, f"{stem} {row}: lowbit {ours} vs SCALE-Sim {theirs}"


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_committed_layers_match_exactly_when_stall_free(dataflow):
    """CALC bandwidth: no stalls, and then the closed form equals the tool's count, utilisation included."""
    a = accel(dataflow)
    for df, stem, row, rep in COMMITTED:
        if df != dataflow:
            continue
        assert rep["Stall Cycles"] == 0, f"{stem} {row} stalled: CALC bandwidth should be stall-free"
        c = systolic_compute(row_layer(row), a)
        assert c.cycles == rep[CYCLES], f"{stem} {row}"
        assert c.utilisation * 100 == pytest.approx(rep["Overall Util %"], rel=1e-9)


@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_depthwise_equals_scalesims_own_per_channel_split(dataflow):
    """SCALE-Sim runs a "DP" conv row of C channels as C 1-channel layers; their sum is our depthwise layer."""
    stem = os.path.join(DATA_DIR, dataflow, "depthwise_dp_conv")
    rows, names = read_topology(stem + ".topology.csv", with_names=True)
    report = read_report(stem + ".report.csv")
    assert len(report) == sum(r.dims[4] for r in rows)
    start = 0
    for row, name in zip(rows, names):
        h, w, fh, fw, c, nf, s = row.dims
        oh, ow = math.ceil((h - fh + s) / s), math.ceil((w - fw + s) / s)
        conv = ConvShape(1, h, w, c, oh, ow, c * nf, fh, fw, s, s, groups=c)
        layer = Layer(name=name, op="Conv", kind="depthwise", act_bits=8, out_bits=8, weight_bits=8, conv=conv,
                      gemm=GemmShape(oh * ow, nf, fh * fw, batch=c), macs=oh * ow * c * nf * fh * fw)
        theirs = sum(r[CYCLES] for r in report[start:start + c])
        start += c
        assert cycles(layer, accel(dataflow)) == theirs


# -- hand-computed cases -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataflow, expected", [
    ("os", 32 + 32 + 32 - 2 - 1),        # one fold: T=K=32, F = R+C-2
    ("ws", 32 + 2 * 32 + 32 - 2 - 1),    # one fold: T=M=32, F = 2R+C-2 (R cycles to load the weights)
    ("is", 32 + 2 * 32 + 32 - 2 - 1),
])
def test_gemm_of_exactly_one_fold(dataflow, expected):
    c = systolic_compute(gemm_layer(32, 32, 32), accel(dataflow))
    assert c.cycles == expected
    assert c.utilisation == pytest.approx(32 ** 3 / (expected * 1024))


@pytest.mark.parametrize("dataflow, expected", [
    ("os", 2 * 2 * (100 + 62) - 1),      # Sr=M=64 -> 2 folds, Sc=N=40 -> 2 (the second 8 of 32 wide), T=K=100
    ("ws", 4 * 2 * (64 + 94) - 1),       # Sr=K=100 -> 4 folds, Sc=N=40 -> 2, T=M=64
    ("is", 4 * 2 * (40 + 94) - 1),       # Sr=K=100 -> 4 folds, Sc=M=64 -> 2, T=N=40
])
def test_gemm_with_partial_folds(dataflow, expected):
    assert cycles(gemm_layer(64, 40, 100), accel(dataflow)) == expected


def test_os_output_drain_adds_r_cycles_per_fold():
    """scale-sim-v3#4: OS should take 2R+C+T-2 per fold; off by default to match what SCALE-Sim computes."""
    base = cycles(gemm_layer(64, 40, 100), accel("os"))
    assert cycles(gemm_layer(64, 40, 100), accel("os", os_output_drain=True)) == base + 4 * 32
    assert cycles(gemm_layer(64, 40, 100), accel("ws", os_output_drain=True)) == \
        cycles(gemm_layer(64, 40, 100), accel("ws"))


def test_non_square_array_uses_rows_and_cols_where_due():
    # ws on 16 rows x 64 cols: Sr=K=100 -> 7 folds of 16, Sc=N=40 -> 1 fold of 64, F = 2·16 + 64 - 2
    assert cycles(gemm_layer(64, 40, 100), accel("ws", rows=16, cols=64)) == 7 * (64 + 94) - 1


def test_batched_grouped_depthwise_and_recurrent_layers_repeat_the_gemm():
    a = accel("ws")
    one = cycles(gemm_layer(64, 40, 100), a)
    assert cycles(gemm_layer(64, 40, 100, batch=3, kind="matmul", weight_bits=None), a) == 3 * one
    assert cycles(gemm_layer(64, 40, 100, batch=2, kind="conv"), a) == 2 * one
    assert cycles(gemm_layer(64, 1, 9, batch=96, kind="depthwise"), a) == 96 * gemm_cycles(64, 1, 9, 32, 32, "ws")
    lmu = gemm_layer(1, 64, 80, batch=50, kind="recurrent", steps=50)
    assert cycles(lmu, a) == 50 * gemm_cycles(1, 64, 80, 32, 32, "ws")


def test_precision_scales_cycles_by_rate():
    a = accel("os")
    base = systolic_compute(gemm_layer(64, 40, 100), a)
    a16 = systolic_compute(gemm_layer(64, 40, 100, act_bits=16), a)      # w8a16 at 512 MACs/cycle
    w4 = systolic_compute(gemm_layer(64, 40, 100, weight_bits=4), a)     # w4a8 at 2048
    assert a16.cycles == 2 * base.cycles and w4.cycles == base.cycles / 2
    assert a16.utilisation == pytest.approx(base.utilisation) == pytest.approx(w4.utilisation)
    mm16 = gemm_layer(64, 40, 100, kind="matmul", weight_bits=None, act_bits=16)   # activation x activation
    assert cycles(mm16, a) == 4 * base.cycles                                       # w16a16 at 256
    no16 = accel("os", rates={"w8a8": 1024, "w8a16": 512})
    assert cycles(gemm_layer(64, 40, 100, weight_bits=4), no16) == base.cycles     # w4a8 runs as w8a8
    assert systolic_compute(gemm_layer(64, 40, 100, weight_bits=16, act_bits=16), no16) is None   # nothing wider


def test_non_mac_layers_are_not_priced():
    a = accel()
    for kind in ("elementwise", "pool", "softmax", "norm", "copy"):
        assert systolic_compute(Layer(name=kind, op="Add", kind=kind, act_bits=8, out_bits=8, elements=100), a) is None
    assert systolic_compute(Layer(name="scan", op="SelectiveScan", kind="recurrent", act_bits=8, out_bits=8,
                                  steps=16), a) is None


# -- invariants ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
@pytest.mark.parametrize("precision", [(8, 8), (8, 16), (4, 8), (16, 16)])
def test_cycles_never_below_the_mac_bound_and_utilisation_at_most_one(dataflow, precision):
    rng = np.random.default_rng(7)
    wb, ab = precision
    rates = {**RATES, "w16a16": 256}
    for _ in range(300):
        rows, cols = (int(x) for x in rng.choice([1, 2, 4, 8, 16, 32, 128], size=2))
        m, n, k = (int(x) for x in rng.integers(1, 3000, size=3))
        batch = int(rng.integers(1, 4))
        a = accel(dataflow, rows, cols, rates, os_output_drain=bool(rng.integers(2)))
        layer = gemm_layer(m, n, k, batch, weight_bits=wb, act_bits=ab)
        c = systolic_compute(layer, a)
        peak = rows * cols * rates[f"w{wb}a{ab}"] / rates["w8a8"]
        assert c.cycles >= layer.macs / peak * (1 - 1e-12), (dataflow, rows, cols, m, n, k)
        assert 0 < c.utilisation <= 1 + 1e-12


def test_split_rows_add_up_to_the_whole_less_one_cycle_per_extra_run():
    row = TopoRow("gemm", (1, 4096, 9216))                # AlexNet fc6 (WS: 288 x 128 folds of 95 cycles)
    pieces = parts(row, "ws")
    assert len(pieces) > 1 and all(p.kind == "gemm" for p in pieces)
    whole = gemm_cycles(*row.gemm, 32, 32, "ws")
    assert sum(gemm_cycles(*p.gemm, 32, 32, "ws") for p in pieces) == whole - (len(pieces) - 1)
    assert parts(TopoRow("gemm", (64, 40, 100)), "ws") == [TopoRow("gemm", (64, 40, 100))]


# -- the bench's layer -> topology row mapping ---------------------------------------------------------------
def test_topology_row_keeps_the_gemm_of_a_padded_strided_conv():
    """SCALE-Sim takes no padding: the IFMAP written is (OH-1)·S+KH so that its output size is lowbit's."""
    conv = ConvShape(1, 224, 224, 3, 112, 112, 64, 7, 7, 2, 2)
    layer = Layer(name="conv1", op="Conv", kind="conv", act_bits=8, out_bits=8, weight_bits=8, conv=conv,
                  gemm=GemmShape(112 * 112, 64, 147), macs=112 * 112 * 64 * 147)
    row, reps = topo_row(layer)
    assert row == TopoRow("conv", (229, 229, 7, 7, 3, 64, 2)) and reps == 1
    assert row.gemm == (layer.gemm.m, layer.gemm.n, layer.gemm.k)
    grouped = ConvShape(1, 26, 26, 96, 26, 26, 256, 5, 5, groups=2)    # AlexNet conv2
    row, reps = topo_row(Layer(name="conv2", op="Conv", kind="conv", act_bits=8, out_bits=8, weight_bits=8,
                               conv=grouped, gemm=GemmShape(676, 128, 1200, 2)))
    assert row == TopoRow("conv", (30, 30, 5, 5, 48, 128, 1)) and reps == 2 and row.gemm == (676, 128, 1200)


# -- configuration -------------------------------------------------------------------------------------------
def test_registered_with_a_validator():
    assert ARRAY_MODELS["systolic"].compute is systolic_compute
    validate_systolic(accel())


@pytest.mark.parametrize("params, field", [({"rows": 0}, "array.rows"), ({"cols": "32"}, "array.cols"),
                                           ({"dataflow": "rs"}, "array.dataflow"),
                                           ({"os_output_drain": 1}, "array.os_output_drain")])
def test_bad_parameters_name_the_field(params, field):
    a = accel()
    a.array.params.update(params)
    with pytest.raises(ConfigError, match=field):
        validate_systolic(a)


@pytest.mark.parametrize("dataflow", ["ws", "os"])
def test_presets_are_scalesims_32x32_config(dataflow):
    preset = load_accelerator(f"systolic-32x32-{dataflow}")
    assert preset.array.kind == "systolic" and preset.array.macs_per_cycle["w8a8"] == 32 * 32
    assert {k: preset.array.params[k] for k in ("rows", "cols", "dataflow")} == \
        {"rows": 32, "cols": 32, "dataflow": dataflow}


# -- the real tool -------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("dataflow", ["os", "ws", "is"])
def test_scalesim_itself_on_ragged_shapes(dataflow):
    from lowbit.tools.bench.sim_vs_scalesim import run_scalesim, scalesim_python
    python = scalesim_python()
    if python is None:
        pytest.skip("scalesim is not importable (set LOWBIT_SCALESIM_PYTHON to a venv with scalesim, numpy<2.4)")
    rows = [TopoRow("gemm", (33, 65, 31)), TopoRow("gemm", (1, 10, 784)), TopoRow("gemm", (100, 7, 3))]
    for row, rep in zip(rows, run_scalesim(rows, "gemm", dataflow, python)):
        assert cycles(row_layer(row), accel(dataflow)) == rep[CYCLES]
