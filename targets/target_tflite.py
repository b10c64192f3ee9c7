"""The ``tflite`` target: int8 and 16x8 ``.tflite`` flatbuffers for LiteRT (and, through Vela, Ethos-U).

    lowbit compile model.onnx --calib calib.npz --precision w8a16 --target tflite -o model.lowbit.onnx
    lowbit export model.lowbit.onnx --format tflite -o model.tflite

``export`` converts the graph to NHWC (targets/tflite_layout.py) and writes it with targets/tflite_writer.py;
``run`` runs the file with LiteRT's reference kernels (``OpResolverType.BUILTIN_REF``), the kernels lowbit's
integer executor matches bit for bit. Compiling for this target (``lowering_options``) lowers
FullyConnected with ``requant="float64"``, the double-precision rescale of LiteRT's reference FULLY_CONNECTED
(docs/integer_ir.md), and model-output Softmax with TFLite's own int16 arithmetic (``output_softmax="tflite"``,
no exact-zero tail), and LayerNormalization as the ops TensorFlow's converter writes for it (``layer_norm="ops"``:
MEAN, SUB, MUL, MEAN, ADD, RSQRT, MUL, MUL, ADD, each calibrated on its own; graph/passes/decompose.py), since
TFLite has no integer LayerNorm builtin. An artifact compiled otherwise shows those nodes in ``place`` with the
reason, and ``export`` refuses it unless told to accept the difference (``convert_fc``, ``convert_softmax``).
"""
from __future__ import annotations

import numpy as np

from lowbit.errors import LowbitError, UnsupportedOpError
from lowbit.graph.ir import Node
from lowbit.targets.base import Constraint, Target, register_target


def _in_bits(node: Node) -> int | None:
    q = node.inputs[0].quant if node.inputs and node.inputs[0] is not None else None
    return None if q is None else q.bits


def _lut_is_builtin(node: Node) -> bool:
    from lowbit.targets.tflite_writer_ops import lut_builtin
    return lut_builtin(node) is not None


def _avg_pool_padding_ok(node: Node) -> bool:
    from lowbit.targets.tflite_writer_ops import _nhwc, pool_geometry
    x = node.inputs[0]
    if x.shape is None or len(x.shape) != 4 or "kernel_shape" not in node.attrs:
        return True  # the writer names the problem
    return pool_geometry(node, _nhwc(node, x.shape))[3] is not None


# Each constraint's message is what the user reads next to the node that fails it (lowbit compile/export).
NO_BUILTIN_OPS = {
    "LayerNormalization": "TFLite has no LayerNormalization builtin (its converter decomposes LayerNorm into "
                          "MEAN/SQUARED_DIFFERENCE/RSQRT and leaves a float island in int8, refuses it in 16x8)",
    "LayerNorm": "TFLite has no integer LayerNormalization builtin",
    "RMSNorm": "TFLite has no integer RMSNorm builtin",
    "BatchNormalization": "TFLite has no BatchNormalization builtin (lowbit could not fold it into a convolution)",
    "InstanceNormalization": "TFLite has no InstanceNormalization builtin",
    "LMUMemory": "TFLite has no Legendre Memory Unit builtin (a lowbit op)",
    "LIF": "TFLite has no spiking (LIF neuron) builtin (a lowbit op)",
    "SelectiveScan": "TFLite has no selective-scan (SSM) builtin (a lowbit op)",
    "ShortConv": "TFLite has no gated short-convolution builtin (a lowbit op)",
    "SpikeConv": "TFLite has no spiking convolution builtin (a lowbit op)",
    "SpikeFullyConnected": "TFLite has no spiking fully-connected builtin (a lowbit op)",
    "MaskedSoftmax": "TFLite's SOFTMAX takes no mask (lowbit's masked softmax)",
}

CONSTRAINTS: tuple[Constraint, ...] = (
    *(Constraint(f"no_{op.lower()}", msg, lambda n: False, (op,)) for op, msg in NO_BUILTIN_OPS.items()),
    Constraint("lut_is_builtin",
               "TFLite has no custom lookup tables: this table is not the one TFLite builds for TANH, LOGISTIC, "
               "GELU, EXP, LOG, ELU or RSQRT on these scales (a generic element-wise function)",
               _lut_is_builtin, ("Lut",)),
    Constraint("avg_pool_same_or_valid",
               "TFLite's AVERAGE_POOL_2D pads only SAME or VALID; these explicit pads (averaging only the cells "
               "inside the image) have no exact TFLite form", _avg_pool_padding_ok, ("AvgPool",)),
    Constraint("double_rounding", "TFLite's kernels rescale with double rounding; this node was prepared with "
               "single rounding (TFLITE_SINGLE_ROUNDING builds only)",
               lambda n: n.attrs.get("rounding", "double") != "single"),
    Constraint("fc_float64_requant", "LiteRT's reference FULLY_CONNECTED rescales in float64, this node with an "
               "integer multiplier (lowbit's default lowering): recompile with '--target tflite' (lowering option "
               "fc_requant=float64), or export with convert_fc=True to accept up to one step of difference",
               lambda n: n.attrs.get("requant", "multiplier") == "float64", ("FullyConnected",)),
    Constraint("softmax_tflite_tail", "TFLite's SOFTMAX clamps exp below a difference of -10 instead of cutting it "
               "to zero (lowbit's exp_cutoff for model-output softmax); recompile with '--target tflite' "
               "(lowering option output_softmax=tflite), or export with convert_softmax=True",
               lambda n: not n.attrs.get("exp_cutoff"), ("Softmax",)),
    Constraint("squared_difference_int8", "TFLite's SQUARED_DIFFERENCE has an int8 kernel only",
               lambda n: _in_bits(n) in (8, None), ("SquaredDifference",)),
    Constraint("hard_swish_int8", "TFLite's HARD_SWISH has an int8 kernel only",
               lambda n: _in_bits(n) in (8, None), ("HardSwish",)),
    Constraint("weights_8_or_4_bit", "TFLite has no kernel for 16-bit weights (16x16 convolution or "
               "fully-connected)",
               lambda n: n.inputs[1].quant is None or n.inputs[1].quant.bits in (4, 8), ("Conv", "FullyConnected")),
    Constraint("output_width_is_input_width", "TFLite's CONV_2D and FULLY_CONNECTED write the input's width; "
               "this node widens int8 to int16 (lowbit's LIF input current)",
               lambda n: n.attrs.get("to") is None or n.outputs[0].dtype is None
               or n.inputs[0].dtype is None or n.outputs[0].dtype == n.inputs[0].dtype, ("Conv", "FullyConnected")),
)


@register_target("tflite")
class TfliteTarget(Target):
    name = "tflite"
    description = "TFLite flatbuffer (int8 or 16x8), run by LiteRT's reference kernels; the input to Vela"
    file_suffix = ".tflite"
    constraints = CONSTRAINTS
    lowering_options = {"fc_requant": "float64", "output_softmax": "tflite", "layer_norm": "ops"}

    def check(self, node: Node, lifted: frozenset[str] = frozenset(), **writer_options) -> list[str]:
        """The failed constraints' messages (except those named in ``lifted``); when none fails, the reason the
        writer gives (if any) with ``writer_options``."""
        failed = [c.message for c in self.constraints
                  if c.name not in lifted and (not c.ops or node.op_type in c.ops) and not c.check(node)]
        if not failed:
            from lowbit.targets.tflite_writer import unsupported_reason
            reason = unsupported_reason(node, **writer_options)
            if reason:
                failed.append(reason)
        return failed

    def export(self, artifact, path: str, *, integer_io: bool = False, convert_fc: bool = False,
               convert_softmax: bool = False, int4: str = "int4", grouped_conv: str = "native") -> list[str]:
        """Write ``artifact`` as a .tflite file at ``path`` (atomically) and return the export notes (e.g. int4
        weights written as int8, float islands); refuse, naming every node and the constraint it fails, when a
        node has no exact TFLite form.

        ``integer_io``: the file takes and returns the integer codes instead of float tensors.
        ``convert_fc``: accept FullyConnected nodes that rescale with the integer multiplier (lowbit's default
        lowering): LiteRT's reference kernel rescales in float64, so the file then differs from the artifact by
        up to one step on those layers (an NPU, e.g. through Vela, uses a multiplier anyway).
        ``convert_softmax``: accept model-output Softmax nodes with lowbit's exact-zero tail (written as TFLite's
        SOFTMAX, which clamps exp at a difference of -10 instead).
        ``int4``: "int4" (TFLite INT4 weight tensors) or "int8" (the same values in int8 tensors).
        ``grouped_conv``: "native" (one grouped CONV_2D) or "split" (SPLIT, a CONV_2D per group, CONCATENATION).
        """
        from lowbit.targets.tflite_writer import export_tflite
        from lowbit.tools.files import atomic_write_bytes
        graph = artifact.graph
        options = {"int4": int4, "grouped_conv": grouped_conv,
                   "softmax_cutoff": "drop" if convert_softmax else "refuse"}
        lifted = frozenset(name for name, on in (("fc_float64_requant", convert_fc),
                                                 ("softmax_tflite_tail", convert_softmax)) if on)
        problems = [(n, reasons) for n in graph.nodes if (reasons := self.check(n, lifted, **options))]
        if problems:
            listed = "; ".join(f"{n.describe()}: {'; '.join(r)}" for n, r in problems[:10])
            more = f"; and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise UnsupportedOpError(f"cannot export to TFLite: {len(problems)} node(s) have no exact TFLite "
                                     f"form: {listed}{more}")
        notes: list[str] = []
        atomic_write_bytes(path, export_tflite(graph, integer_io=integer_io, notes=notes, **options))
        return notes

    def run(self, path: str, inputs) -> dict[str, np.ndarray]:
        """Run the .tflite file at ``path`` with LiteRT's reference kernels; ``inputs`` keyed by input name
        (or given in the model's input order as a list); returns {output name: array}."""
        try:
            from ai_edge_litert.interpreter import Interpreter, OpResolverType
        except ImportError:
            raise LowbitError("running .tflite files needs LiteRT: pip install ai-edge-litert "
                              "(or pip install 'lowbit[litert]')") from None
        try:
            interp = Interpreter(model_path=str(path), num_threads=1,
                                 experimental_op_resolver_type=OpResolverType.BUILTIN_REF)
            interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise LowbitError(f"{path}: LiteRT cannot load the model: {e}") from None
        details = interp.get_input_details()
        if not isinstance(inputs, dict):
            inputs = {d["name"]: x for d, x in zip(details, inputs)}
        for d in details:
            if d["name"] not in inputs:
                raise LowbitError(f"inputs lack '{d['name']}'; they hold {', '.join(map(repr, inputs)) or 'nothing'}")
            x = np.asarray(inputs[d["name"]])
            if tuple(x.shape) != tuple(d["shape"]):
                raise LowbitError(f"input '{d['name']}' has shape {list(x.shape)}, the model expects "
                                  f"{list(d['shape'])}")
            want = np.dtype(d["dtype"])
            if x.dtype != want and not (x.dtype.kind == want.kind == "f"):
                raise LowbitError(f"input '{d['name']}' is {x.dtype}, the model expects {want.name}")
            interp.set_tensor(d["index"], x.astype(want, copy=False))
        interp.invoke()
        return {d["name"]: interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()}
