"""Regenerate SCALE-Sim v3's reports used by tests/test_npusim_systolic.py (fast tests read these, no SCALE-Sim).

    python -m venv /tmp/scalesim-venv && /tmp/scalesim-venv/bin/pip install scalesim "numpy<2.4"
    python tests/data/scalesim/regenerate.py --scalesim-python /tmp/scalesim-venv/bin/python
                                             [--models resnet50,alexnet] [--dataflows ws,os,is]

(scalesim 3.0.0 fails under NumPy >= 2.4, hence its own environment; it is not a lowbit dependency.) For each
model of tools/bench/sim_vs_scalesim.py and each dataflow this writes

    <df>.cfg                          SCALE-Sim's scale.cfg: 32x32, 64 KiB SRAMs, Dataflow <df>, CALC bandwidth
    <df>/<model>_conv.topology.csv    the distinct conv rows of the model's conv / depthwise layers
    <df>/<model>_gemm.topology.csv    the distinct GEMM rows of its fully-connected and matmul layers
    <df>/<model>_<kind>.report.csv    SCALE-Sim's COMPUTE_REPORT.csv for that topology, as the tool wrote it

by running ``python -m scalesim.scale -c <df>.cfg -t <topology> -i conv|gemm -s N``, and

    <df>/depthwise_dp_conv.{topology,report}.csv

two depthwise layers in SCALE-Sim's own form (a conv row named "DP..." with Channels = IC, Num Filter = 1, which
SCALE-Sim runs as IC 1-channel layers, one report line each). The full set takes about half an hour on one
core (ResNet50 and AlexNet dominate).
"""
import argparse
import os
import sys
import time

from lowbit.tools.bench.sim_vs_scalesim import (DATAFLOWS, MODELS, TopoRow, mapped_layers, model_layers,
                                                run_scalesim, scalesim_python, scalesim_reports)

HERE = os.path.dirname(os.path.abspath(__file__))
# (name, row): 3x3 depthwise, 16 channels at stride 1 (16x16 out) and 32 channels at stride 2 (4x4 out)
DEPTHWISE_DP = [("DP_s1", TopoRow("conv", (18, 18, 3, 3, 16, 1, 1))),
                ("DP_s2", TopoRow("conv", (9, 9, 3, 3, 32, 1, 2)))]

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--dataflows", default=",".join(DATAFLOWS))
    ap.add_argument("--scalesim-python")
    ap.add_argument("--skip-depthwise-dp", action="store_true")
    args = ap.parse_args()
    python = scalesim_python(args.scalesim_python)
    if python is None:
        sys.exit("scalesim is not importable: pass --scalesim-python (a venv with scalesim and numpy<2.4)")
    for df in ([] if args.skip_depthwise_dp else args.dataflows.split(",")):
        run_scalesim([r for _, r in DEPTHWISE_DP], "conv", df, python, HERE, stem="depthwise_dp",
                     names=[n for n, _ in DEPTHWISE_DP])
    for model in args.models.split(","):
        mapped = mapped_layers(model_layers(model))
        for df in args.dataflows.split(","):
            t = time.time()
            reports = scalesim_reports(mapped, df, python, model, keep_dir=HERE)
            print(f"{model} {df}: {len(reports)} SCALE-Sim layers in {time.time() - t:.0f} s", flush=True)
