"""Train, export and measure zoo models.

    python -m lowbit.tools.zoo.train [NAME ...] [--out DIR] [--quick]

Needs the ``train`` extra (torch, scikit-learn). For each model: train with fixed seeds on one thread, export
``<name>.onnx`` (and ``<name>_step.onnx``), write ``<name>_eval.npz`` / ``<name>_calib.npz``, measure the float
test accuracy with ONNX Runtime and record it in ``zoo.json`` next to the files. ``--quick`` trains for a few
steps only (a smoke test of the pipeline; accuracy is then meaningless).
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from . import evaluation, registry

# model name -> module holding its recipe ``train(name, out_dir, quick) -> dict``
RECIPES = {
    "mobilenet_digits": "train_vision",
    "vit_digits": "train_vision",
    "lmu_seqdigits": "train_seq",
    "lmuformer_seqdigits": "train_seq",
    "spiking_lmuformer_seqdigits": "train_seq",
    "mamba_seqdigits": "train_seq",
    "autoneural_vqa": "train_vlm",
}
CALIB_SAMPLES = 64
CALIB_SEED = 1234


def write_eval_calib(name: str, out_dir: Path, eval_feeds: dict, labels: np.ndarray, train_feeds: dict) -> None:
    """``<name>_eval.npz`` (feeds + labels) and ``<name>_calib.npz`` (64 fixed training samples)."""
    np.savez_compressed(out_dir / f"{name}_eval.npz", **eval_feeds, labels=labels)
    n = len(next(iter(train_feeds.values())))
    pick = np.sort(np.random.default_rng(CALIB_SEED).choice(n, CALIB_SAMPLES, replace=False))
    np.savez_compressed(out_dir / f"{name}_calib.npz", **{k: v[pick] for k, v in train_feeds.items()})


def run(name: str, out_dir: Path, quick: bool = False) -> dict:
    """Train and export one model, measure it with ONNX Runtime, update ``zoo.json`` in ``out_dir``."""
    import torch

    torch.set_num_threads(1)
    module = importlib.import_module(f".{RECIPES[name]}", __package__)
    start = time.time()
    info = module.train(name, out_dir, quick=quick)
    seconds = time.time() - start
    files = {k: p for k, p in registry.get(name).files(out_dir).items() if k != "plan"}  # plans are not trained
    ev = np.load(files["eval"])
    accuracy = evaluation.evaluate(name, evaluation.ort_runner(files["onnx"]), {k: ev[k] for k in ev.files})
    entry = {
        "task": registry.get(name).task,
        "params": int(info["params"]),
        "macs": int(info["macs"]),
        "float_accuracy": round(accuracy, 6),
        "eval_samples": int(ev["labels"].shape[0]),
        "train_seconds": round(seconds, 1),
        "files": {k: p.name for k, p in files.items()},
        "file_bytes": {p.name: p.stat().st_size for p in files.values()},
        **{k: v for k, v in info.items() if k not in ("params", "macs")},
    }
    manifest_path = out_dir / "zoo.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    manifest[name] = entry
    manifest = {k: manifest[k] for k in registry.names() if k in manifest}
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"[{name}] ORT float accuracy {accuracy:.4f}, params {entry['params']}, MACs {entry['macs']}, "
          f"{seconds:.0f} s", flush=True)
    return entry


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lowbit.tools.zoo.train", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", help=f"models to train (default: all): {', '.join(RECIPES)}")
    parser.add_argument("--out", type=Path, default=registry.MODELS_DIR, help="output folder")
    parser.add_argument("--quick", action="store_true", help="train a few steps only (pipeline smoke test)")
    args = parser.parse_args(argv)
    names = args.names or list(RECIPES)
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        print(f"error: unknown model(s) {unknown}; choose from {list(RECIPES)}", file=sys.stderr)
        return 2
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        run(name, args.out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
