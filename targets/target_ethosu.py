"""Arm Ethos-U55 / U65 through Vela: the int8 .tflite (written by the ``tflite`` target) compiled by Arm's Vela
(``pip install ethos-u-vela``), whose placement and performance estimates lowbit parses (targets/vela_report.py).

    t = get_target("ethos-u55-128")
    t.place(artifact.graph)                   # lowbit's prediction from Vela's documented int8 limits
    report = t.export(artifact, "out/model_vela.tflite")    # runs Vela; report.text(), report.cycles_total
    report = t.compile_tflite("model_int8.tflite", "out")   # Vela on an existing int8 .tflite

Vela runs as a subprocess with the default system configuration of each family (measured.md):
Ethos_U55_High_End_Embedded + Shared_Sram for U55, Ethos_U65_Client_Server + Dedicated_Sram_384KB for U65.
Vela exits 0 even when no operator lands on the NPU: lowbit then warns (a ``NpuPlacementWarning`` line) and
sets ``report.nothing_on_npu``. The binary runs only on the device or an FVP; ``run`` says so.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from lowbit.errors import LowbitError
from lowbit.graph.ir import Node
from lowbit.runtime.registry import INT_DOMAIN
from lowbit.targets.base import TARGETS, Constraint, Target, register_target
from lowbit.targets.vela_report import VelaReport, read_vela_output

ACCELERATORS = ("ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256", "ethos-u65-512")
SYSTEM_CONFIG = {"ethos-u55": ("Ethos_U55_High_End_Embedded", "Shared_Sram"),
                 "ethos-u65": ("Ethos_U65_Client_Server", "Dedicated_Sram_384KB")}
INSTALL_HINT = "Vela is not installed: pip install ethos-u-vela (or pip install 'lowbit[ethosu]')"


class NpuPlacementWarning(UserWarning):
    """Vela compiled the model but placed no operator on the NPU."""


# -- Vela's documented int8 limits (tflite_supported_operators.py), as data over lowbit's integer IR ------------
# lowbit.int ops that Vela maps to an NPU operator (TFLite builtin in brackets in the comments)
NPU_OPS = {"Conv", "FullyConnected", "BatchMatMul", "Add", "Sub", "Mul", "SquaredDifference", "MaxPool", "AvgPool",
           "Mean", "Softmax", "Lut", "Tanh", "Logistic", "Relu", "Relu6", "LeakyRelu", "HardSwish", "Rsqrt",
           "Requantize"}
# standard ONNX data-movement ops on integer tensors (Vela's memory-only and concat/split/pad ops)
MEMORY_OPS = {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat", "Split", "Slice", "Pad",
              "Identity"}
_SPATIAL = ("Conv", "MaxPool", "AvgPool")


def _npu_op(n: Node) -> bool:
    """Quantize (float in) and Dequantize run on the CPU; other ops need an NPU operator."""
    if n.domain == INT_DOMAIN:
        return n.op_type in NPU_OPS
    return n.domain == "" and n.op_type in MEMORY_OPS


def _integer_tensors(n: Node) -> bool:
    return all(v is None or v.const is not None or v.dtype is None or np.dtype(v.dtype).kind in "iu"
               for v in list(n.inputs) + list(n.outputs))


def _weights_8bit(n: Node) -> bool:
    """int4 weights pass: the export writes them as int8 tensors holding the same values."""
    w = n.input(1)
    return w is None or w.quant is None or w.quant.bits <= 8


def _weights_sum(n: Node) -> bool:
    w = n.input(1)
    if w is None or w.const is None:
        return True
    per_out = np.abs(w.const.astype(np.int64)).reshape(w.const.shape[0], -1).sum(axis=1)
    return int(per_out.max(initial=0)) <= 127 * 65536


def _bias_40bit(n: Node) -> bool:
    b = n.input(2)
    return b is None or b.const is None or int(np.abs(b.const.astype(np.int64)).max(initial=0)) < 2 ** 39


def _stride(n: Node) -> bool:
    return all(1 <= s <= 3 for s in n.attrs.get("strides", [1, 1]))


def _conv_stride(n: Node) -> bool:
    """Vela 5.2 runs a Conv2D with a stride above 3 on the NPU when it has no padding (it splits it into NPU
    operations: the ViT's 4x4 patch embedding, k3/k5/k7 with stride 4, k4 with stride 6, measured), and fails
    on a padded one ("Non-passthrough operation (Conv2D) could not run on NPU")."""
    return _stride(n) or (all(s >= 1 for s in n.attrs.get("strides", [1, 1]))
                          and not any(n.attrs.get("pads", [0, 0, 0, 0])))


def _kernel_hw(n: Node) -> tuple[int, int]:
    if n.op_type == "Conv":
        kh, kw = n.inputs[1].const.shape[2:]
    else:
        kh, kw = n.attrs["kernel_shape"]
    return int(kh), int(kw)


def _dilated_height(n: Node) -> bool:
    kh, _ = _kernel_hw(n)
    return (kh - 1) * n.attrs.get("dilations", [1, 1])[0] + 1 <= 64


def _dilated_product(n: Node) -> bool:
    kh, kw = _kernel_hw(n)
    d = n.attrs.get("dilations", [1, 1])
    return ((kh - 1) * d[0] + 1) * ((kw - 1) * d[1] + 1) <= 64 * 64


def _pool_filter(n: Node) -> bool:
    kh, kw = _kernel_hw(n)
    if n.op_type == "AvgPool" and any(n.attrs.get("pads", [0, 0, 0, 0])):
        return 1 <= kh <= 8 and 1 <= kw <= 8
    return kh <= 256 and kh * kw <= 256 * 256


def _batch_one(n: Node) -> bool:
    s = n.inputs[0].shape
    return s is None or not isinstance(s[0], int) or s[0] == 1


def _dims(n: Node) -> bool:
    for v in list(n.inputs[:1]) + list(n.outputs):
        shape = () if v is None or v.shape is None else v.shape
        if not all(not isinstance(d, int) or 1 <= d <= 65535 for d in shape):
            return False
    return True


def _mean_product(n: Node) -> bool:
    s = n.inputs[0].shape
    if s is None:
        return True
    prod = int(np.prod([s[a] for a in n.attrs.get("axes", [])]))
    return prod <= (2 ** 16 if n.inputs[0].quant is not None and n.inputs[0].quant.bits == 16 else 2 ** 24)


def _rsqrt_int8(n: Node) -> bool:
    return n.inputs[0].dtype == np.int8


def _not_int16(n: Node) -> bool:
    return all(v.quant is None or v.quant.bits != 16 for v in n.inputs[:1] if v is not None)


def _softmax_hw(n: Node) -> bool:
    s = n.inputs[0].shape
    return s is None or len(s) < 3 or int(np.prod(s[-3:-1])) <= 65535


CONSTRAINTS = (
    Constraint("npu_op", "operator is not supported on the NPU (Vela places it on the CPU)", _npu_op),
    Constraint("tens_dtype", "Tensors must be of type: int16, int32, int8 or uint8", _integer_tensors),
    Constraint("tens_dimension", "Tensor dimensions must be in the range [1, 65535]", _dims),
    Constraint("weights_type", "Weight tensor must be 8-bit", _weights_8bit, ("Conv", "FullyConnected")),
    Constraint("weights_limit", "The sum of the weights cannot exceed 8323072", _weights_sum,
               ("Conv", "FullyConnected")),
    Constraint("bias_40bit", "Optional Bias tensor values must fit within 40-bits", _bias_40bit,
               ("Conv", "FullyConnected")),
    Constraint("batch_size", "IFM Tensor batch size must be 1", _batch_one, _SPATIAL),
    Constraint("stride_range", "Stride values for both width and height must be in the range [1, 3]", _stride,
               ("MaxPool", "AvgPool")),
    Constraint("conv_stride", "Stride values above 3 need an unpadded convolution (Vela 5.2 splits one into NPU "
               "operations and fails on a padded one)", _conv_stride, ("Conv",)),
    Constraint("dilated_height_range", "Dilated kernel height must be in the range [1, 64]", _dilated_height,
               ("Conv",)),
    Constraint("dilated_product_range", "Product of dilated kernel width and height must be in the range [1, 4096]",
               _dilated_product, ("Conv",)),
    Constraint("filter_range", "Kernel filter values for both width and height must be in the range [1, 8] "
               "(padded average pool); else height in [1, 256] and width x height in [1, 65536]", _pool_filter,
               ("MaxPool", "AvgPool")),
    Constraint("mean_product", "Product of reduced axes must be no greater than: 16777216 for signed 8-bit inputs, "
               "65536 for signed 16-bit inputs", _mean_product, ("Mean",)),
    Constraint("rsqrt_input_int8", "IFM must be int8", _rsqrt_int8, ("Rsqrt",)),
    Constraint("batch_matmul_int16", "16-bit BATCH_MATMUL stays on the CPU (measured with Vela 5.2)", _not_int16,
               ("BatchMatMul",)),
    Constraint("lut_int16", "16-bit table lookups (GELU, EXP, LOG) stay on the CPU (measured with Vela 5.2)",
               _not_int16, ("Lut",)),
    Constraint("softmax", "The product of IFM width and height must be in the range [1, 65535]", _softmax_hw,
               ("Softmax",)),
)


def vela_command() -> list[str] | None:
    """How to start Vela here: the ``vela`` script, else ``python -m ethosu.vela``; None when absent."""
    exe = shutil.which("vela")
    if exe:
        return [exe]
    if importlib.util.find_spec("ethosu") is not None and importlib.util.find_spec("ethosu.vela") is not None:
        return [sys.executable, "-m", "ethosu.vela"]
    return None


def vela_version() -> str:
    cmd = vela_command()
    if cmd is None:
        raise LowbitError(INSTALL_HINT)
    return subprocess.run(cmd + ["--version"], capture_output=True, text=True, check=True).stdout.strip()


class EthosUTarget(Target):
    description = "Arm Ethos-U NPU via Vela (int8 .tflite in, Vela-optimised .tflite and estimates out)"
    constraints = CONSTRAINTS
    file_suffix = ".tflite"
    # the .tflite Vela reads must hold exactly lowbit's integers: TFLite's own model-output softmax, and
    # LayerNormalization as the ops TFLite has (targets/target_tflite.py); FullyConnected keeps the integer
    # multiplier the NPU uses (export converts it, see export())
    lowering_options = {"output_softmax": "tflite", "layer_norm": "ops"}

    def __init__(self, name: str, system_config: str | None = None, memory_mode: str | None = None):
        self.name = name
        family = name.rsplit("-", 1)[0]
        default_sys, default_mem = SYSTEM_CONFIG[family]
        self.system_config = system_config or default_sys
        self.memory_mode = memory_mode or default_mem

    def vela_args(self, tflite: str, output_dir: str) -> list[str]:
        return [tflite, "--accelerator-config", self.name, "--config", "Arm/vela.ini",
                "--system-config", self.system_config, "--memory-mode", self.memory_mode,
                "--output-dir", output_dir, "--verbose-performance", "--verbose-cycle-estimate",
                "--show-cpu-operations"]

    def compile_tflite(self, tflite: str, output_dir: str, timeout: float = 600) -> VelaReport:
        """Run Vela on an int8 ``tflite`` into ``output_dir`` and parse what it reports (its stdout is kept as
        ``<net>_vela_stdout.txt`` there)."""
        cmd = vela_command()
        if cmd is None:
            raise LowbitError(INSTALL_HINT)
        if not os.path.isfile(tflite):
            raise LowbitError(f"{tflite}: no such file")
        os.makedirs(output_dir, exist_ok=True)
        proc = subprocess.run(cmd + self.vela_args(tflite, output_dir), capture_output=True, text=True,
                              timeout=timeout)
        network = os.path.splitext(os.path.basename(tflite))[0]
        with open(os.path.join(output_dir, f"{network}_vela_stdout.txt"), "w", encoding="utf-8") as f:
            f.write(proc.stdout)
        if proc.returncode != 0:
            last = (proc.stderr.strip() or proc.stdout.strip() or "no output").splitlines()[-1]
            raise LowbitError(f"Vela failed on {tflite} for {self.name} (exit {proc.returncode}): {last}")
        report = read_vela_output(output_dir, network, proc.stdout, self.name)
        if report.nothing_on_npu:
            warnings.warn(report.warnings()[0], NpuPlacementWarning, stacklevel=2)
        return report

    def export(self, artifact, path: str, integer_io: bool = False) -> VelaReport:
        """The int8 .tflite of ``artifact`` (the tflite target's exporter), compiled by Vela; the optimised
        model lands at ``path`` and Vela's reports beside it.

        The .tflite holds scales, not multipliers: the NPU rescales FullyConnected with an integer multiplier
        as lowbit's default lowering does, so artifacts lowered for LiteRT's float64 reference FC are not
        needed (``convert_fc``). INT4 weights are written as int8 tensors of the same values (Vela takes 8-bit
        weights only). ``integer_io``: int8/int16 model inputs and outputs, so that no QUANTIZE / DEQUANTIZE is
        left for the CPU at the boundary."""
        if "tflite" not in TARGETS:
            raise LowbitError(f"target '{self.name}' needs the tflite exporter (target 'tflite'), which this "
                              f"build lacks; run Vela on an int8 .tflite with compile_tflite() instead")
        from lowbit.targets.base import get_target
        output_dir = os.path.dirname(os.path.abspath(path))
        stem = os.path.splitext(os.path.basename(path))[0].removesuffix("_vela")
        with tempfile.TemporaryDirectory() as tmp:
            tflite = os.path.join(tmp, f"{stem}.tflite")
            get_target("tflite").export(artifact, tflite, convert_fc=True, int4="int8",
                                       integer_io=integer_io)
            report = self.compile_tflite(tflite, output_dir)
        if report.optimised_model and os.path.abspath(report.optimised_model) != os.path.abspath(path):
            os.replace(report.optimised_model, path)
            report.optimised_model = path
        return report

    def run(self, path: str, inputs):
        raise LowbitError(f"a Vela-compiled model runs on an {self.name} device or an Arm FVP (Corstone-300/310), "
                          f"not here; run the int8 model with the 'tflite' target (LiteRT) instead")


@register_target(*ACCELERATORS)
def _ethos_u(name: str) -> EthosUTarget:
    return EthosUTarget(name)
