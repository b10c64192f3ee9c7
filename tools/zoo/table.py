"""Print the zoo table (Markdown), re-measuring each model's float test accuracy with ONNX Runtime and with
lowbit's own float executor.

    python -m lowbit.tools.zoo.table

Parameters and MACs come from ``models/zoo.json`` (counted by the training recipes from the architecture);
both accuracy columns are measured now and checked against zoo.json.
"""
from __future__ import annotations

import sys

from . import evaluation, registry


def rows() -> list[dict]:
    manifest = registry.manifest()
    out = []
    for name in registry.names():
        entry = manifest[name]
        acc = evaluation.evaluate(name, evaluation.ort_runner(registry.path(name)))
        acc_lowbit = evaluation.evaluate(name, evaluation.lowbit_runner(registry.path(name)))
        sizes = {k: p.stat().st_size for k, p in registry.get(name).files().items()}
        out.append({"name": name, "task": entry["task"], "params": entry["params"], "macs": entry["macs"],
                    "accuracy": acc, "accuracy_lowbit": acc_lowbit, "recorded": entry["float_accuracy"], "onnx_kb": sizes["onnx"] / 1024,
                    "step_kb": sizes.get("step", 0) / 1024, "train_seconds": entry["train_seconds"]})
    return out


def markdown(table: list[dict]) -> str:
    lines = ["| model | task | params | MACs | float test accuracy (ORT) | float test accuracy (lowbit) | .onnx KiB "
             "| _step.onnx KiB | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        step = f"{r['step_kb']:.0f}" if r["step_kb"] else "-"
        lines.append(f"| `{r['name']}` | {r['task']} | {r['params']:,} | {r['macs']:,} | {100 * r['accuracy']:.2f} % "
                     f"| {100 * r['accuracy_lowbit']:.2f} % "
                     f"| {r['onnx_kb']:.0f} | {step} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    table = rows()
    print(markdown(table))
    stale = [r["name"] for r in table
             if abs(r["accuracy"] - r["recorded"]) > 1e-6 or abs(r["accuracy_lowbit"] - r["recorded"]) > 1e-6]
    if stale:
        print(f"error: accuracy differs from zoo.json for {stale}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
