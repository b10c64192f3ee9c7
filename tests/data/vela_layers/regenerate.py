"""Regenerate the Vela reports and lowbit Layers that tests/test_npusim_ethosu.py and
``python -m lowbit.tools.bench.sim_vs_vela`` compare (fast tests read these files, no Vela needed).

    python tests/data/vela_layers/regenerate.py [--models mobilenet_digits ...]     # ethos-u-vela 5.2.0

For each model (tools/bench/sim_vs_vela.py MODELS): compile the w8a8 artifact with the tflite target's lowering
(``sim_vs_vela.int8_artifact``: 2 calibration samples; seeded random weights for the ONNX light models),
write its Layers (``extract_layers``) as MODEL.layers.jsonl, export the int8 .tflite with integer I/O, and run
Vela through lowbit's ethos-u target for ACCEL in ethos-u55-128 (Ethos_U55_High_End_Embedded, Shared_Sram) and
ethos-u65-256 (Ethos_U65_Client_Server, Dedicated_Sram_384KB):
    vela MODEL.tflite --accelerator-config ACCEL --config Arm/vela.ini --system-config SYS --memory-mode MEM
         --output-dir ACCEL --verbose-performance --verbose-cycle-estimate --show-cpu-operations
keeping ACCEL/MODEL_summary_SYS.csv and ACCEL/MODEL_per-layer.csv, the latter cut to the columns the comparison
reads (KEEP_COLUMNS; the optimised .tflite and Vela's stdout are dropped).
"""
import argparse
import csv
import os

from lowbit.targets.npusim.workload import extract_layers
from lowbit.tools.bench import sim_vs_vela as bench

HERE = os.path.dirname(os.path.abspath(__file__))
KEEP_COLUMNS = ["Original Operator", "NNG Operator", "Target", "Op Cycles", "NPU", "SRAM AC", "DRAM AC",
                "OffFlash AC", "MAC Count", "Name"]


def trim_per_layer_csv(path: str) -> None:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, KEEP_COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def regenerate(model: str, accelerators=bench.ACCELERATORS) -> None:
    art = bench.int8_artifact(model)
    layers = extract_layers(art.graph)
    with open(os.path.join(HERE, f"{model}.layers.jsonl"), "w", encoding="utf-8") as f:
        f.write(bench.layers_to_json(layers, [v.name for v in art.graph.inputs], [v.name for v in art.graph.outputs]))
    for accel in accelerators:
        out = os.path.join(HERE, accel)
        bench.run_vela(art, model, accel, out)
        trim_per_layer_csv(os.path.join(out, f"{model}_per-layer.csv"))
        for suffix in ("_vela.tflite", "_vela_stdout.txt"):
            path = os.path.join(out, model + suffix)
            if os.path.exists(path):
                os.remove(path)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=bench.MODELS)
    args = ap.parse_args()
    for m in args.models:
        regenerate(m)
        print(f"{m}: done", flush=True)
