"""The CPU target: lowbit's own NumPy integer executor runs every node (the golden model)."""
from __future__ import annotations

from lowbit.targets.base import Target, register_target


@register_target("cpu")
class CpuTarget(Target):
    name = "cpu"
    description = "lowbit's NumPy integer executor (runs everything; the bit-exact reference)"
    file_suffix = ".onnx"

    def export(self, artifact, path: str) -> None:
        artifact.save(path)

    def run(self, path: str, inputs):
        from lowbit.runtime.artifact import Artifact
        return Artifact.load(path).run(inputs)
