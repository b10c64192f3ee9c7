"""lowbit's systolic array model vs SCALE-Sim v3, layer by layer (issue #7: compute cycles within ±5 %).

    python -m lowbit.tools.bench.sim_vs_scalesim [--models resnet50,alexnet] [--dataflows ws,os,is]
                                                 [--committed] [--scalesim-python PY]

For each model (the zoo's mobilenet_digits and vit_digits; ResNet50, ShuffleNet and AlexNet from
tools/light_models.py, which has no MobileNetV2: ShuffleNet brings the ImageNet-size depthwise and grouped
convolutions, mobilenet_digits MobileNetV2's inverted residuals) its integer graph (``lowbit.compile``, w8a8)
is cut into Layers (``extract_layers``); each conv, depthwise, fully-connected and matmul layer becomes one
SCALE-Sim topology row run ``repeats`` times:

    conv (batch 1)   conv row   IFMAP (OH-1)·S+KH x (OW-1)·S+KW, filter KH x KW, IC/g channels, OC/g filters,
                                stride S = SH; repeated g (groups) times
    depthwise        conv row   as conv with 1 channel and OC/IC filters, repeated IC times (what SCALE-Sim's own
                                "DP" layers expand to)
    fc, matmul       GEMM row   M, N, K; a matmul repeated ``batch`` times

A row that would stream more than MAX_LINES cycles through SCALE-Sim is run as several GEMM rows that split its
folds ("runs" column; see ``parts``): only AlexNet's fc6 (1 x 4096 x 9216; 3.5 M cycles under ws, 1.2 M under
os and is) and fc7 under ws, for which SCALE-Sim's fold-by-fold concatenation of per-cycle demands would need
tens of GB of copying. The parts add up to the layer's count less one cycle per extra run.

SCALE-Sim's conv rows take no padding and one stride, so the IFMAP written is the padded extent that gives
lowbit's output size; its cycles depend only on (output pixels, window, filters), which this keeps. The table
gives, per layer and dataflow, lowbit's compute cycles (``systolic_compute`` on the systolic-32x32 presets; "is"
is the ws preset with dataflow = "is"), SCALE-Sim's "Total Cycles" x repeats, their ratio, and the fraction within
±5 % (conv + fc + matmul, the acceptance set; depthwise apart). SCALE-Sim runs with 32x32 PEs, 64 KiB per
SRAM and InterfaceBandwidth = CALC (stall-free), one 1-byte word per operand.

"Total Cycles" (not "Total Cycles (incl. prefetch)") is compared: it is the array's busy time once the SRAMs
hold the first operands (ARM-software/SCALE-Sim#15). The other column runs from the first DRAM read to the last
DRAM write, so it adds the initial fill and the final write-back, priced at the placeholder bandwidths of
SCALE-Sim's CALC mode (10 words/cycle for ifmap and filter, one array width for ofmap); lowbit prices that
traffic in its memory model from the preset's own bandwidths and takes max(compute, memory) per op.

SCALE-Sim runs when it can be imported (by this interpreter or --scalesim-python / $LOWBIT_SCALESIM_PYTHON;
it is not a lowbit dependency); otherwise, or with --committed, the reports committed in tests/data/scalesim/
(written by tests/data/scalesim/regenerate.py) are read. scalesim 3.0.0 fails under NumPy >= 2.4 (it calls int()
on one-element arrays), so run it from a virtual environment with ``pip install scalesim "numpy<2.4"``.
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, replace

MODELS = ("mobilenet_digits", "vit_digits", "resnet50", "shufflenet", "alexnet")
DATAFLOWS = ("ws", "os", "is")
ROWS = COLS = 32
TOLERANCE = 0.05
MAX_LINES = 1_000_000    # cycles one SCALE-Sim run may stream (see parts())
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "tests", "data", "scalesim")
COMPARED_KINDS = ("conv", "fc", "matmul")          # the acceptance set; depthwise is reported on its own
CONV_HEADER = "Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"
GEMM_HEADER = "Layer, M, N, K,"
CYCLES = "Total Cycles"
CYCLES_WITH_PREFETCH = "Total Cycles (incl. prefetch)"


# -- lowbit layers -> SCALE-Sim topology rows ----------------------------------------------------------------
@dataclass(frozen=True)
class TopoRow:
    """One SCALE-Sim topology row: ``conv`` dims (H, W, FH, FW, C, NF, S) or ``gemm`` dims (M, N, K)."""
    kind: str
    dims: tuple[int, ...]

    @property
    def gemm(self) -> tuple[int, int, int]:
        """(M, N, K) as SCALE-Sim maps the row: M = output pixels ceil((H-FH+S)/S)·ceil((W-FW+S)/S)."""
        if self.kind == "gemm":
            return self.dims
        h, w, fh, fw, c, nf, s = self.dims
        return math.ceil((h - fh + s) / s) * math.ceil((w - fw + s) / s), nf, fh * fw * c


def topo_row(layer) -> tuple[TopoRow, int] | None:
    """(row, repeats) of a conv / depthwise / fc / matmul Layer, None for other layers."""
    g = layer.gemm
    if g is None or layer.kind not in ("conv", "depthwise", "fc", "matmul"):
        return None
    c = layer.conv
    if layer.kind in ("conv", "depthwise") and c is not None and c.n == 1:
        channels = 1 if layer.kind == "depthwise" else c.ic // c.groups
        dims = ((c.oh - 1) * c.sh + c.kh, (c.ow - 1) * c.sh + c.kw, c.kh, c.kw, channels, g.n, c.sh)
        return TopoRow("conv", dims), g.batch
    return TopoRow("gemm", (g.m, g.n, g.k)), g.batch


def row_layer(row: TopoRow, name: str = "row"):
    """A w8a8 Layer with the GEMM SCALE-Sim runs for ``row`` (for pricing committed rows without a graph)."""
    from lowbit.targets.npusim.workload import GemmShape, Layer
    m, n, k = row.gemm
    kind, op = ("conv", "Conv") if row.kind == "conv" else ("fc", "FullyConnected")
    return Layer(name=name, op=op, kind=kind, act_bits=8, out_bits=8, weight_bits=8,
                 gemm=GemmShape(m, n, k), macs=m * n * k)


def parts(row: TopoRow, dataflow: str, max_lines: int = MAX_LINES) -> list[TopoRow]:
    """``row`` as the SCALE-Sim runs that price it: itself, or, when it would stream more than ``max_lines``
    cycles (SCALE-Sim keeps every cycle's demands in memory and concatenates them fold by fold, which grows
    quadratically), GEMM rows that split its folds along the array columns' operand (Sc; Sr when Sc is one fold)
    at multiples of the array size. Each part keeps T, so the parts' cycles add up to the row's, less one
    cycle per extra part (SCALE-Sim's -1 per run)."""
    from lowbit.targets.npusim.systolic import fill_drain_cycles, spatio_temporal
    m, n, k = row.gemm
    sr, sc, t = spatio_temporal(m, n, k, dataflow)
    row_folds, col_folds = math.ceil(sr / ROWS), math.ceil(sc / COLS)
    lines_per_fold = t + fill_drain_cycles(ROWS, COLS, dataflow)
    if row_folds * col_folds * lines_per_fold <= max_lines:
        return [row]
    on_cols = col_folds > 1
    width, other_folds = (COLS, row_folds) if on_cols else (ROWS, col_folds)
    step = width * max(1, max_lines // (other_folds * lines_per_fold))
    total = sc if on_cols else sr
    out = []
    for start in range(0, total, step):
        size = min(step, total - start)
        sub = {("os", True): (m, size, k), ("os", False): (size, n, k), ("ws", True): (m, size, k),
               ("ws", False): (m, n, size), ("is", True): (size, n, k), ("is", False): (m, n, size)}
        out.append(TopoRow("gemm", sub[dataflow, on_cols]))
    return out


def scalesim_rows(mapped, dataflow: str) -> dict[str, list[TopoRow]]:
    """Distinct SCALE-Sim rows per kind in order of first use (SCALE-Sim is deterministic per row)."""
    out: dict[str, list[TopoRow]] = {"conv": [], "gemm": []}
    for _, row, _ in mapped:
        for part in parts(row, dataflow):
            if part not in out[part.kind]:
                out[part.kind].append(part)
    return out


# -- SCALE-Sim files -----------------------------------------------------------------------------------------
def run_name(dataflow: str) -> str:
    return f"lowbit_{ROWS}x{COLS}_{dataflow}"


def config_text(dataflow: str) -> str:
    """SCALE-Sim's scale.cfg with the dataflow set: 32x32, 64 KiB SRAMs, CALC (stall-free) bandwidth."""
    return f"""[general]
run_name = {run_name(dataflow)}

[architecture_presets]
ArrayHeight:    {ROWS}
ArrayWidth:     {COLS}
IfmapSramSzkB:   64
FilterSramSzkB:  64
OfmapSramSzkB:   64
IfmapOffset:    0
FilterOffset:   10000000
OfmapOffset:    20000000
Bandwidth : 10
Dataflow : {dataflow}
MemoryBanks:   1
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport : false
SparseRep : ellpack_block
OptimizedMapping : false
BlockSize : 8
RandomNumberGeneratorSeed : 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""


def topology_text(rows: list[TopoRow], kind: str, names: list[str] | None = None) -> str:
    """A SCALE-Sim topology CSV; row i is named c<i> / g<i> unless ``names`` are given (SCALE-Sim splits a conv
    row whose name contains "DP" into one 1-channel layer per channel)."""
    names = names or [f"{kind[0]}{i}" for i in range(len(rows))]
    lines = [CONV_HEADER if kind == "conv" else GEMM_HEADER]
    lines += [f"{name}, " + ", ".join(str(d) for d in r.dims) + "," for name, r in zip(names, rows)]
    return "\n".join(lines) + "\n"


def read_topology(path: str, with_names: bool = False):
    """The rows of a topology CSV (and their names with ``with_names``)."""
    with open(path) as f:
        header, *body = [l for l in f.read().splitlines() if l.strip()]
    kind = "gemm" if header.strip() == GEMM_HEADER else "conv"
    rows = [TopoRow(kind, tuple(int(x) for x in l.split(",")[1:] if x.strip())) for l in body]
    return (rows, [l.split(",")[0].strip() for l in body]) if with_names else rows


def read_report(path: str) -> list[dict[str, float]]:
    """COMPUTE_REPORT.csv as one dict per layer (column names stripped)."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        return [{h: float(v) for h, v in zip(header, row) if h and v.strip()} for row in reader if row]


_PROBE = ("import scalesim, numpy; "
          "raise SystemExit(tuple(int(x) for x in numpy.__version__.split('.')[:2]) >= (2, 4))")


def scalesim_python(explicit: str | None = None) -> str | None:
    """An interpreter with scalesim and a NumPy older than 2.4 (scalesim 3.0.0 calls int() on one-element
    arrays, an error since NumPy 2.4): --scalesim-python, $LOWBIT_SCALESIM_PYTHON, or this one."""
    for py in (explicit, os.environ.get("LOWBIT_SCALESIM_PYTHON"), sys.executable):
        if py and subprocess.run([py, "-c", _PROBE], check=False, capture_output=True).returncode == 0:
            return py
    return None


def run_scalesim(rows: list[TopoRow], kind: str, dataflow: str, python: str, keep_dir: str | None = None,
                 stem: str = "layers", names: list[str] | None = None) -> list[dict[str, float]]:
    """Run ``python -m scalesim.scale`` on ``rows`` and return its compute report (one dict per row). With
    ``keep_dir``, the config goes to keep_dir/<df>.cfg, the topology to keep_dir/<df>/<stem>_<kind>.topology.csv
    and SCALE-Sim's COMPUTE_REPORT.csv to keep_dir/<df>/<stem>_<kind>.report.csv."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg, topo, layout = (os.path.join(tmp, f) for f in ("scale.cfg", "topology.csv", "layout.csv"))
        for path, text in ((cfg, config_text(dataflow)), (topo, topology_text(rows, kind, names)),
                           (layout, "Layer name,\n")):   # a layout file is required even with custom layouts off
            with open(path, "w") as f:
                f.write(text)
        cmd = [python, "-m", "scalesim.scale", "-c", cfg, "-t", topo, "-l", layout, "-p", os.path.join(tmp, "out"),
               "-i", kind, "-s", "N"]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=tmp)
        report = os.path.join(tmp, "out", run_name(dataflow), "COMPUTE_REPORT.csv")
        if proc.returncode != 0 or not os.path.exists(report):
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"SCALE-Sim failed on {stem} ({kind}, {dataflow}): {' | '.join(tail)}"
                               f" (scalesim 3.0.0 needs numpy<2.4)")
        result = read_report(report)
        expected = sum(r.dims[4] if "DP" in name else 1 for r, name in zip(rows, names)) if names else len(rows)
        if keep_dir:
            os.makedirs(os.path.join(keep_dir, dataflow), exist_ok=True)
            shutil.copy(cfg, os.path.join(keep_dir, f"{dataflow}.cfg"))
            shutil.copy(topo, os.path.join(keep_dir, dataflow, f"{stem}_{kind}.topology.csv"))
            shutil.copy(report, os.path.join(keep_dir, dataflow, f"{stem}_{kind}.report.csv"))
    if len(result) != expected:
        raise RuntimeError(f"SCALE-Sim reported {len(result)} layers for {expected} ({stem}, {kind}, {dataflow})")
    return result


def committed_reports(model: str, dataflow: str, data_dir: str = DATA_DIR) -> dict[TopoRow, dict[str, float]]:
    """The committed report rows of ``model`` keyed by topology row."""
    out = {}
    for kind in ("conv", "gemm"):
        stem = os.path.join(data_dir, dataflow, f"{model}_{kind}")
        if os.path.exists(stem + ".topology.csv"):
            out.update(zip(read_topology(stem + ".topology.csv"), read_report(stem + ".report.csv")))
    return out


def scalesim_reports(mapped, dataflow: str, python: str | None, model: str,
                     keep_dir: str | None = None) -> dict[TopoRow, dict[str, float]]:
    """Reports of every row ``mapped`` needs: SCALE-Sim run by ``python``, or the committed ones when None."""
    if python is None:
        return committed_reports(model, dataflow)
    reports = {}
    for kind, rows in scalesim_rows(mapped, dataflow).items():
        if rows:
            reports.update(zip(rows, run_scalesim(rows, kind, dataflow, python, keep_dir, stem=model)))
    return reports


# -- lowbit side ---------------------------------------------------------------------------------------------
def model_layers(name: str) -> list:
    """Layers of ``name``'s w8a8 integer graph (light models on two seeded random calibration images)."""
    import lowbit
    from lowbit.targets.npusim.workload import extract_layers
    from lowbit.tools import zoo
    from lowbit.tools.light_models import LIGHT_MODELS, realize
    if name not in LIGHT_MODELS:
        return extract_layers(lowbit.compile(str(zoo.path(name)), calib=str(zoo.path(name, "calib"))).graph)
    import numpy as np
    import onnx
    model = realize(name)
    inp = next(i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer})
    shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
    calib = {inp.name: np.random.default_rng(3).standard_normal((2, *shape)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.onnx")
        onnx.save(model, path)
        return extract_layers(lowbit.compile(path, calib=calib).graph)


def mapped_layers(layers) -> list:
    """(layer, row, repeats) for every layer SCALE-Sim can run."""
    return [(l, *m) for l in layers if (m := topo_row(l)) is not None]


def accelerator(dataflow: str):
    """The systolic-32x32 preset of ``dataflow`` (is: the ws preset with dataflow = "is")."""
    from lowbit.targets.npusim import systolic  # noqa: F401  (registers the array kind)
    from lowbit.targets.npusim.config import load_accelerator
    accel = load_accelerator(f"systolic-{ROWS}x{COLS}-{'ws' if dataflow == 'is' else dataflow}")
    return replace(accel, array=replace(accel.array, params={**accel.array.params, "dataflow": dataflow}))


# -- the table -----------------------------------------------------------------------------------------------
def compare(mapped, reports: dict[TopoRow, dict[str, float]], accel) -> list[dict]:
    from lowbit.targets.npusim.systolic import systolic_compute
    rows = []
    df = accel.array.params["dataflow"]
    for layer, row, reps in mapped:
        pieces = parts(row, df)
        missing = [p for p in pieces if p not in reports]
        if missing:
            raise KeyError(f"no SCALE-Sim report for layer {layer.name} ({missing[0].kind} {missing[0].dims}, "
                           f"{df}); rerun tests/data/scalesim/regenerate.py")
        theirs = reps * sum(reports[p][CYCLES] for p in pieces)
        ours = systolic_compute(layer, accel).cycles
        rows.append({"layer": layer.name, "kind": layer.kind, "gemm": row.gemm, "reps": reps, "parts": len(pieces),
                     "lowbit": ours, "scalesim": theirs,
                     "stalls": reps * sum(reports[p].get("Stall Cycles", 0) for p in pieces),
                     "with_prefetch": reps * sum(reports[p][CYCLES_WITH_PREFETCH] for p in pieces),
                     "ratio": ours / theirs if theirs else math.inf})
    return rows


def within(r: dict) -> bool:
    return abs(r["ratio"] - 1) <= TOLERANCE


def print_table(model: str, dataflow: str, rows: list[dict]) -> None:
    print(f"\n{model} — {dataflow}, {ROWS}x{COLS} (SCALE-Sim column: {CYCLES!r})")
    print(f"{'layer':<34} {'kind':<9} {'M x N x K':>18} {'reps':>5} {'runs':>4} {'lowbit':>11} {'SCALE-Sim':>11} "
          f"{'ratio':>7}")
    for r in rows:
        m, n, k = r["gemm"]
        print(f"{r['layer'][-34:]:<34} {r['kind']:<9} {f'{m}x{n}x{k}':>18} {r['reps']:>5} {r['parts']:>4} "
              f"{r['lowbit']:>11.0f} {r['scalesim']:>11.0f} {r['ratio']:>7.4f}{'' if within(r) else '  *'}")
    for label, kinds in (("conv+fc+matmul", COMPARED_KINDS), ("depthwise", ("depthwise",))):
        sel = [r for r in rows if r["kind"] in kinds]
        if sel:
            ours, theirs = sum(r["lowbit"] for r in sel), sum(r["scalesim"] for r in sel)
            prefetch = sum(r["with_prefetch"] for r in sel)
            print(f"  {label}: {sum(map(within, sel))}/{len(sel)} layers within ±{TOLERANCE:.0%}, "
                  f"total {ours:.0f} vs {theirs:.0f} (ratio {ours / theirs:.4f}); "
                  f"SCALE-Sim's {CYCLES_WITH_PREFETCH!r}: {prefetch:.0f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dataflows", default=",".join(DATAFLOWS))
    ap.add_argument("--committed", action="store_true", help="read the committed reports even if SCALE-Sim runs")
    ap.add_argument("--scalesim-python", help="an interpreter with scalesim (and numpy<2.4) installed")
    args = ap.parse_args(argv)
    python = None if args.committed else scalesim_python(args.scalesim_python)
    print(f"SCALE-Sim: run by {python}" if python else f"SCALE-Sim: committed reports in {DATA_DIR} (no interpreter "
          f"with scalesim and numpy<2.4; see --scalesim-python)")
    summary = []
    for model in args.models.split(","):
        mapped = mapped_layers(model_layers(model))
        for df in args.dataflows.split(","):
            rows = compare(mapped, scalesim_reports(mapped, df, python, model), accelerator(df))
            print_table(model, df, rows)
            summary += [(model, df, r) for r in rows]
    print("\nAll models:")
    for df in args.dataflows.split(","):
        for label, kinds in (("conv+fc+matmul", COMPARED_KINDS), ("depthwise", ("depthwise",))):
            sel = [r for m, d, r in summary if d == df and r["kind"] in kinds]
            if sel:
                worst = max(abs(r["ratio"] - 1) for r in sel)
                print(f"  {df} {label:<15} {sum(map(within, sel))}/{len(sel)} within ±{TOLERANCE:.0%}, "
                      f"worst |ratio-1| = {worst:.2e}, stall cycles {sum(r['stalls'] for r in sel):.0f}")


if __name__ == "__main__":
    main()
