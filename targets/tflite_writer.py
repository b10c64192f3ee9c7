"""Write lowbit's integer IR as an int8 / 16x8 ``.tflite`` flatbuffer (the inverse of graph/tflite/reader.py).

    from lowbit.targets.tflite_writer import export_tflite
    data = export_tflite(artifact.graph)                   # bytes; NCHW graphs are converted to NHWC first
    data = export_tflite(artifact.graph, integer_io=True)  # int8/int16 inputs and outputs (no QUANTIZE at the
                                                           # inputs, no DEQUANTIZE at the outputs)
    data = write_tflite(nhwc_graph)                        # the serializer alone

A .tflite file holds tensors with their scales and zero points, not lowbit's multipliers, shifts or tables:
LiteRT recomputes those in each kernel's Prepare. So every exporter below does two things: it writes the
builtin, and it checks that TFLite's Prepare, run on the scales it writes, gives exactly the node's integer
attributes (the same ``prepare_*`` functions the importer and lowbit's lowering use). A node whose attributes
TFLite would not reproduce is refused with the attribute named, never written approximately.

The writer works on an NHWC graph (targets/tflite_layout.py makes one) and follows the importer's conventions
in reverse: Conv weights [O, I/g, kH, kW] become CONV_2D filters [O, kH, kW, I/g] or, with group == C and one
input channel per group, DEPTHWISE_CONV_2D filters [1, kH, kW, C*m]; explicit pads other than SAME/VALID
become a PAD (the input's zero point; MaxPool: PADV2 with the lowest code) before a VALID op; a clamp no fused
activation expresses becomes MAXIMUM/MINIMUM after the op; Lut tables are matched against the tables TFLite
builds for TANH, LOGISTIC, GELU, EXP, LOG, ELU and RSQRT. INT4 weights are written as TFLite INT4 tensors
(two per byte, element 0 in the low nibble) or, with ``int4="int8"``, as int8 (the same values).

Exporters are registered per (domain, op type) with ``@exporter``, as the importer registers converters; an
exporter calls ``w.fail(reason)`` for a node it cannot express, and ``unsupported_reason(node)`` runs one
exporter dry to ask that question without writing a file (used by the tflite target's placement).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import flatbuffers
import numpy as np
import tflite

from lowbit.errors import UnsupportedOpError
from lowbit.graph.ir import Graph, Node, Value
from lowbit.quant import prepare_linear as pl
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.registry import INT_DOMAIN

BUILTIN = {k: v for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
ACTIVATION = {"NONE": 0, "RELU": 1, "RELU_N1_TO_1": 2, "RELU6": 3}
_TYPES = {np.dtype(np.float32): "FLOAT32", np.dtype(np.float16): "FLOAT16", np.dtype(np.int32): "INT32",
          np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64", np.dtype(np.bool_): "BOOL",
          np.dtype(np.int16): "INT16", np.dtype(np.int8): "INT8", np.dtype(np.float64): "FLOAT64"}
# opcode versions the TFLite converter writes for int8 / 16x8 models (tests/data/tflite); others are 1
_VERSIONS = {"ADD": 2, "AVERAGE_POOL_2D": 2, "BATCH_MATMUL": 2, "CONCATENATION": 2, "CONV_2D": 3,
             "DEPTHWISE_CONV_2D": 3, "DEQUANTIZE": 2, "EXP": 2, "FULLY_CONNECTED": 5, "GATHER": 2, "GELU": 2,
             "LEAKY_RELU": 2, "LOG": 2, "LOGISTIC": 2, "MAX_POOL_2D": 2, "MEAN": 2, "MUL": 2, "PAD": 2,
             "PADV2": 2, "QUANTIZE": 2, "RELU": 2, "RELU6": 2, "RSQRT": 2, "SLICE": 2, "SOFTMAX": 2,
             "SQUARED_DIFFERENCE": 2, "STRIDED_SLICE": 2, "SUB": 2, "TANH": 2, "TRANSPOSE": 2, "MAXIMUM": 2,
             "MINIMUM": 2, "SPLIT_V": 2, "REDUCE_MAX": 2}
_ATTR_DEFAULTS = {"rounding": "double", "accumulator": "int32", "requant": "multiplier", "input_offset": 0,
                  "output_offset": 0}


class _Unsupported(Exception):
    """Raised by an exporter (``TfliteWriter.fail``) for a node it cannot write exactly."""


@dataclass
class _Tensor:
    name: str
    shape: tuple
    type: str
    buffer: int = 0
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    quantized_dimension: int = 0


@dataclass
class _Op:
    builtin: str
    inputs: list[int]
    outputs: list[int]
    options: str | None = None  # e.g. "Conv2DOptions"
    fields: dict = field(default_factory=dict)  # {"Padding": 0, "StrideW": 2, ...} (list -> int32 vector)


Exporter = Callable[["TfliteWriter", Node], None]
EXPORTERS: dict[tuple[str, str], Exporter] = {}


def exporter(*op_types: str, domain: str = INT_DOMAIN):
    """Register ``fn(w, node)`` as the exporter of ``op_types`` in ``domain`` ("" for standard ONNX ops)."""
    def deco(fn: Exporter) -> Exporter:
        for op in op_types:
            if (domain, op) in EXPORTERS:
                raise RuntimeError(f"TFLite exporter for {domain}.{op} registered twice")
            EXPORTERS[(domain, op)] = fn
        return fn
    return deco


# --------------------------------------------------------------------------------------------------------------
# the writer: tensors, buffers, operators -> flatbuffer
# --------------------------------------------------------------------------------------------------------------
class TfliteWriter:
    """Collects tensors, constant buffers and operators, then serializes them (``finish``)."""

    def __init__(self, int4: str = "int4", grouped_conv: str = "native", softmax_cutoff: str = "refuse"):
        if int4 not in ("int4", "int8"):
            raise ValueError(f"int4 must be 'int4' or 'int8', got {int4!r}")
        if grouped_conv not in ("native", "split"):
            raise ValueError(f"grouped_conv must be 'native' or 'split', got {grouped_conv!r}")
        if softmax_cutoff not in ("refuse", "drop"):
            raise ValueError(f"softmax_cutoff must be 'refuse' or 'drop', got {softmax_cutoff!r}")
        self.int4 = int4
        self.grouped_conv = grouped_conv
        self.softmax_cutoff = softmax_cutoff
        self.tensors: list[_Tensor] = []
        self.buffers: list[bytes] = [b""]
        self.ops: list[_Op] = []
        self._of: dict[int, int] = {}
        self._names: set[str] = set()
        self.notes: list[str] = []

    # -- failures ------------------------------------------------------------------------------------------------
    @staticmethod
    def fail(reason: str):
        raise _Unsupported(reason)

    def expect(self, node: Node, expected: dict, keys=None) -> None:
        """Fail unless the node's attributes equal ``expected`` (what TFLite's Prepare computes) on ``keys``."""
        for k in (expected if keys is None else keys):
            got = node.attrs.get(k, _ATTR_DEFAULTS.get(k))
            if not _same(got, expected[k]):
                self.fail(f"TFLite computes {k} = {_short(expected[k])} from the scales written to the file, but the "
                          f"node holds {_short(got)}; the exported model would not compute what lowbit computes")

    # -- tensors -------------------------------------------------------------------------------------------------
    def _unique(self, name: str) -> str:
        out, i = name, 0
        while out in self._names:
            i += 1
            out = f"{name}_{i}"
        self._names.add(out)
        return out

    def _add(self, name, shape, type_name, data: bytes | None, quant: QuantSpec | None, qdim: int | None) -> int:
        t = _Tensor(self._unique(name), tuple(int(d) for d in shape), type_name)
        if data is not None:
            self.buffers.append(data)
            t.buffer = len(self.buffers) - 1
        if quant is not None:
            t.scale = np.asarray(quant.scale, np.float32).reshape(-1)
            t.zero_point = np.broadcast_to(np.asarray(quant.zero_point, np.int64).reshape(-1), t.scale.shape).copy()
            if t.scale.size > 1:
                t.quantized_dimension = int(quant.axis if qdim is None else qdim)
        self.tensors.append(t)
        return len(self.tensors) - 1

    def tensor(self, v: Value) -> int:
        """The tensor standing for value ``v`` (created on first use; constants get a buffer)."""
        got = self._of.get(id(v))
        if got is not None:
            return got
        if v.const is not None:
            idx = self.const(v.name, v.const, v.quant)
        else:
            if v.shape is None or not v.is_static:
                self.fail(f"value '{v.name}' has no static shape ({v.shape}); TFLite needs static shapes")
            idx = self._add(v.name, v.shape, self.type_name(v.dtype, v.quant), None, _activation_quant(v), None)
        self._of[id(v)] = idx
        return idx

    def type_name(self, dtype, quant: QuantSpec | None = None) -> str:
        if quant is not None and quant.bits == 4:
            return "INT4" if self.int4 == "int4" else "INT8"
        try:
            return _TYPES[np.dtype(dtype)]
        except (KeyError, TypeError):
            self.fail(f"TFLite has no tensor type for {dtype}")

    def const(self, name: str, array, quant: QuantSpec | None = None, qdim: int | None = None,
              dtype=None, type_name: str | None = None) -> int:
        """A constant tensor holding ``array`` (cast to ``dtype`` when given); int4 ``quant`` packs it unless
        ``type_name`` says otherwise (e.g. "INT8" for int4 values a kernel cannot read packed)."""
        a = np.asarray(array if dtype is None else np.asarray(array).astype(dtype))
        type_name = type_name or self.type_name(a.dtype, quant)
        if type_name == "INT4":
            data = _pack_int4(a)
        else:
            data = np.ascontiguousarray(a).astype(a.dtype.newbyteorder("<")).tobytes()
        return self._add(name, a.shape, type_name, data, quant, qdim)

    def new_tensor(self, name: str, shape, dtype, quant: QuantSpec | None = None) -> int:
        return self._add(name, shape, self.type_name(dtype, quant), None, quant, None)

    def int32(self, name: str, values) -> int:
        return self.const(name, np.asarray(values, np.int64).astype(np.int32))

    # -- operators -----------------------------------------------------------------------------------------------
    def op(self, builtin: str, inputs, outputs, options: str | None = None, **fields) -> None:
        if builtin not in BUILTIN:
            raise RuntimeError(f"unknown TFLite builtin {builtin}")
        self.ops.append(_Op(builtin, [int(i) for i in inputs], [int(o) for o in outputs], options, fields))

    def clamp(self, src: int, out: int, spec: QuantSpec, dtype, act_min: int, act_max: int, shape,
              have: tuple[int, int] | None = None) -> None:
        """out = min(max(src, act_min), act_max) with MAXIMUM / MINIMUM on the raw codes (same quantization);
        ``have``: the range ``src`` is already clamped to (default: the dtype's), bounds it meets are skipped."""
        info = np.iinfo(dtype)
        lo, hi = have if have is not None else (int(info.min), int(info.max))
        steps = [(s, v) for s, v, skip in (("MAXIMUM", act_min, lo), ("MINIMUM", act_max, hi)) if v != skip]
        if not steps:
            raise RuntimeError("clamp without bounds")
        for i, (builtin, bound) in enumerate(steps):
            c = self.const(f"{self.tensors[out].name}_{builtin.lower()}", np.asarray([bound], dtype), spec)
            dst = out if i == len(steps) - 1 else self.new_tensor(f"{self.tensors[out].name}_lo", shape, dtype, spec)
            self.op(builtin, [src, c], [dst])
            src = dst

    def with_activation(self, builtin: str, inputs, out: Value, act_min: int, act_max: int, options: str,
                        **fields) -> None:
        """Emit ``builtin`` writing value ``out`` clamped to [act_min, act_max] (see ``emit``)."""
        self.emit(builtin, inputs, self.tensor(out), out.quant, out.dtype, out.shape, act_min, act_max, options,
                  **fields)

    def emit(self, builtin: str, inputs, out: int, spec: QuantSpec, dtype, shape, act_min: int, act_max: int,
             options: str, **fields) -> None:
        """Emit ``builtin`` writing tensor ``out`` with the fused activation whose clamp is [act_min, act_max];
        when none is, with the tightest fused activation containing that range, then MAXIMUM / MINIMUM."""
        fused, have = fused_activation(spec, act_min, act_max), None
        if fused is None:
            fused, have = _enclosing_activation(spec, act_min, act_max)
        if have is None:
            self.op(builtin, inputs, [out], options, FusedActivationFunction=ACTIVATION[fused], **fields)
            return
        tmp = self.new_tensor(f"{self.tensors[out].name}_unclamped", shape, dtype, spec)
        self.op(builtin, inputs, [tmp], options, FusedActivationFunction=ACTIVATION[fused], **fields)
        self.clamp(tmp, out, spec, dtype, act_min, act_max, shape, have)

    # -- serialization -------------------------------------------------------------------------------------------
    def finish(self, inputs: list[int], outputs: list[int], name: str = "main",
               description: str = "lowbit") -> bytes:
        size = sum(len(b) for b in self.buffers)
        b = flatbuffers.Builder(1024 + size + 64 * len(self.buffers))
        buffers = []
        for data in self.buffers:
            vec = _byte_vector(b, data) if data else None
            tflite.BufferStart(b)
            if vec is not None:
                tflite.BufferAddData(b, vec)
            buffers.append(tflite.BufferEnd(b))
        tensors = [self._tensor_table(b, t) for t in self.tensors]
        codes: dict[tuple[str, int], int] = {}
        for op in self.ops:
            codes.setdefault((op.builtin, _VERSIONS.get(op.builtin, 1)), len(codes))
        operators = [self._operator_table(b, op, codes[(op.builtin, _VERSIONS.get(op.builtin, 1))])
                     for op in self.ops]
        opcodes = []
        for (builtin, version) in codes:
            code = BUILTIN[builtin]
            tflite.OperatorCodeStart(b)
            tflite.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
            tflite.OperatorCodeAddBuiltinCode(b, code)
            tflite.OperatorCodeAddVersion(b, version)
            opcodes.append(tflite.OperatorCodeEnd(b))
        sg_name = b.CreateString(name)
        t_vec = _offsets(b, tflite.SubGraphStartTensorsVector, tensors)
        in_vec = b.CreateNumpyVector(np.asarray(inputs, np.int32))
        out_vec = b.CreateNumpyVector(np.asarray(outputs, np.int32))
        op_vec = _offsets(b, tflite.SubGraphStartOperatorsVector, operators)
        tflite.SubGraphStart(b)
        tflite.SubGraphAddTensors(b, t_vec)
        tflite.SubGraphAddInputs(b, in_vec)
        tflite.SubGraphAddOutputs(b, out_vec)
        tflite.SubGraphAddOperators(b, op_vec)
        tflite.SubGraphAddName(b, sg_name)
        subgraph = tflite.SubGraphEnd(b)
        signature = self._signature_table(b, inputs, outputs)
        desc = b.CreateString(description)
        code_vec = _offsets(b, tflite.ModelStartOperatorCodesVector, opcodes)
        sig_vec = _offsets(b, tflite.ModelStartSignatureDefsVector, [signature])
        sg_vec = _offsets(b, tflite.ModelStartSubgraphsVector, [subgraph])
        buf_vec = _offsets(b, tflite.ModelStartBuffersVector, buffers)
        tflite.ModelStart(b)
        tflite.ModelAddVersion(b, 3)
        tflite.ModelAddOperatorCodes(b, code_vec)
        tflite.ModelAddSubgraphs(b, sg_vec)
        tflite.ModelAddDescription(b, desc)
        tflite.ModelAddBuffers(b, buf_vec)
        tflite.ModelAddSignatureDefs(b, sig_vec)
        b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
        return bytes(b.Output())

    def _signature_table(self, b, inputs: list[int], outputs: list[int]):
        """The "serving_default" signature (LiteRT's get_signature_runner), keyed by the graph's I/O names."""
        maps = []
        for indices in (inputs, outputs):
            tables = []
            for i in indices:
                name = b.CreateString(self.tensors[i].name)
                tflite.TensorMapStart(b)
                tflite.TensorMapAddName(b, name)
                tflite.TensorMapAddTensorIndex(b, i)
                tables.append(tflite.TensorMapEnd(b))
            maps.append(tables)
        ins = _offsets(b, tflite.SignatureDefStartInputsVector, maps[0])
        outs = _offsets(b, tflite.SignatureDefStartOutputsVector, maps[1])
        key = b.CreateString("serving_default")
        tflite.SignatureDefStart(b)
        tflite.SignatureDefAddInputs(b, ins)
        tflite.SignatureDefAddOutputs(b, outs)
        tflite.SignatureDefAddSignatureKey(b, key)
        tflite.SignatureDefAddSubgraphIndex(b, 0)
        return tflite.SignatureDefEnd(b)

    def _tensor_table(self, b, t: _Tensor):
        name = b.CreateString(t.name)
        shape = b.CreateNumpyVector(np.asarray(t.shape, np.int32))
        quant = None
        if t.scale is not None:
            scale = b.CreateNumpyVector(t.scale.astype(np.float32))
            zp = b.CreateNumpyVector(t.zero_point.astype(np.int64))
            tflite.QuantizationParametersStart(b)
            tflite.QuantizationParametersAddScale(b, scale)
            tflite.QuantizationParametersAddZeroPoint(b, zp)
            tflite.QuantizationParametersAddQuantizedDimension(b, t.quantized_dimension)
            quant = tflite.QuantizationParametersEnd(b)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, getattr(tflite.TensorType, t.type))
        tflite.TensorAddBuffer(b, t.buffer)
        tflite.TensorAddName(b, name)
        if quant is not None:
            tflite.TensorAddQuantization(b, quant)
        return tflite.TensorEnd(b)

    @staticmethod
    def _operator_table(b, op: _Op, opcode: int):
        options = None
        if op.options:
            vectors = {k: b.CreateNumpyVector(np.asarray(v, np.int32)) for k, v in op.fields.items()
                       if isinstance(v, (list, tuple))}
            getattr(tflite, f"{op.options}Start")(b)
            for k, v in op.fields.items():
                getattr(tflite, f"{op.options}Add{k}")(b, vectors.get(k, v))
            options = getattr(tflite, f"{op.options}End")(b)
        ins = b.CreateNumpyVector(np.asarray(op.inputs, np.int32))
        outs = b.CreateNumpyVector(np.asarray(op.outputs, np.int32))
        tflite.OperatorStart(b)
        tflite.OperatorAddOpcodeIndex(b, opcode)
        tflite.OperatorAddInputs(b, ins)
        tflite.OperatorAddOutputs(b, outs)
        if options is not None:
            tflite.OperatorAddBuiltinOptionsType(b, getattr(tflite.BuiltinOptions, op.options))
            tflite.OperatorAddBuiltinOptions(b, options)
        return tflite.OperatorEnd(b)


def _byte_vector(b, data: bytes, alignment: int = 16):
    """A ubyte vector whose payload starts on an ``alignment``-byte boundary (as the TFLite converter does)."""
    b.StartVector(1, len(data), alignment)
    b.head = b.head - len(data)
    b.Bytes[b.head:b.head + len(data)] = data
    return b.EndVector()


def _offsets(b, start_vector, items):
    start_vector(b, len(items))
    for off in reversed(items):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _pack_int4(a: np.ndarray) -> bytes:
    """Two int4 values per byte, element 0 in the low nibble (TFLite INT4 and ONNX INT4)."""
    flat = np.asarray(a, np.int64).reshape(-1)
    if flat.size and (flat.min() < -8 or flat.max() > 7):
        raise ValueError(f"int4 tensor holds values outside [-8, 7]: [{flat.min()}, {flat.max()}]")
    nib = (flat & 0x0F).astype(np.uint8)
    if nib.size % 2:
        nib = np.append(nib, np.uint8(0))
    return (nib[0::2] | (nib[1::2] << 4)).astype(np.uint8).tobytes()


def _activation_quant(v: Value) -> QuantSpec | None:
    q = v.quant
    if q is None or v.dtype is None or np.dtype(v.dtype).kind == "f":
        return None
    return q


def _same(a, b) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    if a is None or b is None:
        return a is b
    a, b = np.asarray(a).reshape(-1), np.asarray(b).reshape(-1)
    if a.size != b.size:
        if a.size == 1:
            a = np.broadcast_to(a, b.shape)
        elif b.size == 1:
            b = np.broadcast_to(b, a.shape)
        else:
            return False
    if a.dtype.kind == "f" or b.dtype.kind == "f":
        return bool(np.array_equal(a.astype(np.float64), b.astype(np.float64)))
    return bool(np.array_equal(a.astype(np.int64), b.astype(np.int64)))


def _short(v) -> str:
    a = np.asarray(v)
    if a.size <= 4:
        return str(a.tolist())
    return f"[{', '.join(str(x) for x in a.reshape(-1)[:3].tolist())}, ... ({a.size} values)]"


def _enclosing_activation(spec: QuantSpec, act_min: int, act_max: int) -> tuple[str, tuple[int, int]]:
    """The fused activation whose clamp contains [act_min, act_max] and leaves the fewest bounds to add."""
    best = None
    for name in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        lo, hi = pl.activation_range(spec, name)
        if lo <= act_min and act_max <= hi:
            extra = (lo != act_min) + (hi != act_max)
            if best is None or extra < best[0]:
                best = (extra, name, (lo, hi))
    return best[1], best[2]


def fused_activation(spec: QuantSpec, act_min: int, act_max: int) -> str | None:
    """The TFLite fused activation whose clamp on ``spec`` is exactly [act_min, act_max], or None."""
    for name in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        if pl.activation_range(spec, name) == (int(act_min), int(act_max)):
            return name
    return None


# --------------------------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------------------------
def _key(node: Node) -> tuple[str, str]:
    return ("" if node.domain in ("", "ai.onnx") else node.domain), node.op_type


def unsupported_reason(node: Node, **options) -> str | None:
    """Why ``node`` cannot be written as TFLite builtins (None: it can), by running its exporter dry;
    ``options`` as for ``write_tflite``."""
    fn = EXPORTERS.get(_key(node))
    if fn is None:
        return no_builtin_message(node)
    try:
        fn(TfliteWriter(**options), node)
    except _Unsupported as e:
        return str(e)
    return None


def no_builtin_message(node: Node) -> str:
    op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
    float_op = node.domain == "" and any(v is not None and v.dtype is not None and v.dtype.kind == "f"
                                         for v in node.inputs[:1])
    if float_op:
        return f"TFLite has no float builtin lowbit can write for {op} (a float island)"
    return f"TFLite has no builtin for {op}"


def write_tflite(graph: Graph, *, int4: str = "int4", grouped_conv: str = "native", softmax_cutoff: str = "refuse",
                 description: str = "lowbit", notes: list[str] | None = None) -> bytes:
    """Serialize an NHWC integer-IR graph (see targets/tflite_layout.py) as a .tflite flatbuffer.

    ``int4``: "int4" writes 4-bit weights as TFLite INT4 tensors, "int8" as int8 (the same values).
    ``grouped_conv``: "native" writes a grouped Conv as one CONV_2D (LiteRT's kernels run it), "split" as SPLIT,
    one CONV_2D per group and CONCATENATION (for runtimes and compilers without grouped CONV_2D).
    ``softmax_cutoff``: "refuse" a Softmax with lowbit's exact-zero tail (``exp_cutoff``), or "drop" it (the
    file then has TFLite's SOFTMAX, whose int16 exp clamps instead: outputs differ where the tail matters).
    ``notes`` (a list) receives what a user should know about the file (int4 weights written as int8, float
    islands, a dropped softmax tail). Raises one UnsupportedOpError naming every node that cannot be written
    exactly, with the reason.
    """
    w = TfliteWriter(int4, grouped_conv, softmax_cutoff)
    problems = []
    try:
        inputs = [w.tensor(v) for v in graph.inputs]
    except _Unsupported as e:
        raise UnsupportedOpError(f"graph '{graph.name}': {e}") from None
    for node in graph.nodes:
        if node.domain == INT_DOMAIN and node.op_type in ("Conv", "MaxPool", "AvgPool") \
                and node.attrs.get("layout", "NCHW") != "NHWC" and len(node.inputs[0].shape or ()) == 4:
            problems.append(f"{node.describe()}: layout {node.attrs.get('layout', 'NCHW')}; run "
                            f"targets.tflite_layout.to_nhwc first")
            continue
        fn = EXPORTERS.get(_key(node))
        if fn is None:
            problems.append(f"{node.describe()}: {no_builtin_message(node)}")
            continue
        mark = (len(w.tensors), len(w.buffers), len(w.ops), dict(w._of))
        try:
            fn(w, node)
        except _Unsupported as e:
            problems.append(f"{node.describe()}: {e}")
            del w.tensors[mark[0]:], w.buffers[mark[1]:], w.ops[mark[2]:]
            w._of = mark[3]
    if problems:
        listed = "; ".join(problems[:20]) + (f"; and {len(problems) - 20} more" if len(problems) > 20 else "")
        raise UnsupportedOpError(f"cannot write graph '{graph.name}' as TFLite: {listed}")
    outputs = [w.tensor(v) for v in graph.outputs]
    if notes is not None:
        notes.extend(w.notes)
    return w.finish(inputs, outputs, name=graph.name or "main", description=description)


def to_integer_io(graph: Graph) -> bool:
    """Drop the Quantize reading each float graph input and the Dequantize producing each graph output, so that
    the graph takes and returns the integer codes (in place; the values keep the graph's I/O names)."""
    changed = False
    for i, v in enumerate(list(graph.inputs)):
        if len(v.consumers) != 1 or v.consumers[0].op_type != "Quantize" or v.consumers[0].domain != INT_DOMAIN:
            continue
        q_node = v.consumers[0]
        q = q_node.outputs[0]
        graph.remove_node(q_node)
        graph.values.pop(v.name, None)
        graph.values.pop(q.name, None)
        q.name = v.name
        graph.values[q.name] = q
        graph.inputs[i] = q
        changed = True
    for i, v in enumerate(list(graph.outputs)):
        p = v.producer
        if p is None or p.op_type != "Dequantize" or p.domain != INT_DOMAIN or p.inputs[0] in graph.inputs \
                or p.inputs[0] in graph.outputs or v in graph.outputs[:i] + graph.outputs[i + 1:]:
            continue
        q, name = p.inputs[0], v.name
        graph.values.pop(name, None)
        graph.values.pop(q.name, None)
        if v.consumers:  # the float value is read inside the graph too: it keeps its node, under a new name
            v.name = _fresh_name(graph, f"{name}_float")
            graph.values[v.name] = v
        else:
            graph.remove_node(p)
        q.name = name
        graph.values[name] = q
        graph.outputs[i] = q
        changed = True
    if changed:
        from lowbit.graph.passes import remove_dead_nodes
        remove_dead_nodes(graph)
    return changed


def _fresh_name(graph: Graph, hint: str) -> str:
    name, i = hint, 0
    while name in graph.values:
        i += 1
        name = f"{hint}_{i}"
    return name


def export_tflite(graph: Graph, *, integer_io: bool = False, int4: str = "int4", grouped_conv: str = "native",
                  softmax_cutoff: str = "refuse", description: str = "lowbit", notes: list[str] | None = None) -> bytes:
    """The .tflite bytes of an integer-IR graph (NCHW or NHWC; the graph itself is not modified); options as
    for ``write_tflite``, and ``integer_io`` (``to_integer_io``)."""
    from lowbit.targets.tflite_layout import clone_graph, to_nhwc
    g = clone_graph(graph)
    if integer_io:
        to_integer_io(g)
    to_nhwc(g)
    return write_tflite(g, int4=int4, grouped_conv=grouped_conv, softmax_cutoff=softmax_cutoff,
                        description=description, notes=notes)


from lowbit.targets import tflite_writer_movement, tflite_writer_ops  # noqa: E402,F401  (registers the exporters)
