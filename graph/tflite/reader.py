"""Read a quantized ``.tflite`` flatbuffer into a lowbit Graph of ``lowbit.int`` nodes (docs/integer_ir.md).

The reader walks the main subgraph's operators in order (TFLite stores them topologically) and hands each to
the converter registered for its builtin name. Converters live in ``graph/tflite/ops_*.py`` (every such
module is imported by the package) and follow one small API:

    from lowbit.graph.tflite.reader import ImportContext, tflite_op

    @tflite_op("CONV_2D")                      # one or more builtin names (tflite.BuiltinOperator spelling)
    def conv_2d(ctx: ImportContext) -> None:
        ctx.require_quantized()                # float activations -> reported as unsupported
        x, y = ctx.input(0), ctx.output(0)     # Values by operator position (input(i) is None if omitted)
        w = ctx.const(1)                       # constant payload, TFLite layout, or None if not constant
        wq = ctx.input_quant(1)                # QuantSpec (per-channel: axis = TFLite quantized_dimension)
        opts = ctx.options                     # builtin options as a dict, snake_case keys as in schema.fbs:
                                               #   {"padding": "SAME", "stride_w": 2, "stride_h": 2,
                                               #    "fused_activation_function": "RELU6", ...}
        act_min, act_max = ctx.activation_range()   # fused activation -> clamp bounds on output 0
        wv = ctx.add_const("w", w_onnx, quant=...)  # new constant Value (e.g. weights in ONNX order)
        ctx.add_node("Conv", [x, wv, b], [y], {...})           # domain defaults to "lowbit.int"
        ctx.add_node("Reshape", [x, shape], [y], domain="")    # standard ONNX data-movement op

ImportContext members (all a converter needs; anything else is private):
- ``graph``, ``path``, ``index`` (operator index), ``op_name`` (builtin name), ``version`` (opcode version),
  ``options`` (dict), ``num_inputs``, ``num_outputs``.
- ``input(i)`` / ``output(i)``: the Value of the i-th operator input / output. Values are created on first use
  with the tensor's name, shape, NumPy dtype and ``quant``; a constant tensor becomes a constant Value (its
  payload in TFLite layout, int4 unpacked to int8). ``input(i)`` is None for an omitted optional input (-1).
- ``const(i)``: input i's constant payload (np.ndarray, TFLite layout) or None.
- ``input_quant(i)`` / ``output_quant(i)``: QuantSpec from the tensor's quantization params, or None when the
  tensor carries none (float tensors, int32 shape tensors). One scale = per tensor (axis None); several =
  per channel along ``quantized_dimension`` of the TFLite tensor.
- ``input_shape(i)`` / ``output_shape(i)``, ``input_dtype(i)`` / ``output_dtype(i)``.
- ``input_name(i)`` / ``output_name(i)``: the TFLite tensor names.
- ``require_quantized(inputs=(0,), outputs=(0,))``: raise the unsupported-op signal unless those operator
  positions hold integer tensors with quantization params (float operators are reported, not imported).
- ``activation_range(spec=None, activation=None)``: (act_min, act_max) for the fused activation (default: the
  ``fused_activation_function`` option) on ``spec`` (default: output 0's spec), as TFLite's
  CalculateActivationRangeQuantized computes it (``quant.prepare_linear.activation_range``).
- ``add_node(op_type, inputs, outputs, attrs=None, domain="lowbit.int", name=None) -> Node``; node names
  default to the first output's name.
- ``add_const(hint, array, quant=None) -> Value``; ``new_value(hint, shape, dtype, quant=None) -> Value`` for
  intermediate tensors a converter introduces.
- ``set_output(i, value)``: make output i *be* an existing Value (an op that converts to nothing, e.g. a
  RESHAPE that keeps the value). Only before ``output(i)`` was asked for.
- ``unsupported(reason)``: raise the signal that this operator cannot be imported (the reader collects every
  such operator and raises one UnsupportedOpError at the end).

A converter must define every output of its operator (through ``add_node`` on ``output(i)`` or ``set_output``).
Builtins without a converter, converters that call ``unsupported`` and models with float operators all end in
one ``lowbit.errors.UnsupportedOpError`` naming every offending operator (index, builtin, output tensor).
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import NoReturn

import numpy as np

from lowbit.errors import ModelError, UnsupportedOpError
from lowbit.graph.ir import Graph, Node, Value, set_const
from lowbit.quant.prepare_linear import activation_range
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.registry import INT_DOMAIN

Converter = Callable[["ImportContext"], None]
CONVERTERS: dict[str, Converter] = {}


def tflite_op(*names: str) -> Callable[[Converter], Converter]:
    """Register ``fn`` as the converter of the TFLite builtins ``names`` (e.g. "CONV_2D")."""
    def deco(fn: Converter) -> Converter:
        for name in names:
            if name in CONVERTERS:
                raise RuntimeError(f"TFLite converter for {name} registered twice")
            CONVERTERS[name] = fn
        return fn
    return deco


class _Unsupported(Exception):
    """Raised by a converter (through ``ImportContext.unsupported``) for an operator it cannot import."""


# TensorType -> (NumPy dtype, quantized bits, signed)
_TENSOR_TYPES = {
    0: (np.float32, None, True), 1: (np.float16, None, True), 2: (np.int32, 32, True), 3: (np.uint8, 8, False),
    4: (np.int64, 64, True), 6: (np.bool_, None, True), 7: (np.int16, 16, True), 9: (np.int8, 8, True),
    10: (np.float64, None, True), 12: (np.uint64, None, False), 15: (np.uint32, None, False),
    16: (np.uint16, None, False), 17: (np.int8, 4, True),
}
_ACTIVATIONS = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
_PADDINGS = {0: "SAME", 1: "VALID"}


def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()  # DilationHFactor -> dilation_h_factor


def _options_dict(table) -> dict:
    """Every field of a flatbuffer options table as {snake_case name: value}; enums named where known."""
    cls = type(table)
    methods = {k for k, v in vars(cls).items() if callable(v)}
    out = {}
    for name in sorted(methods):
        if name == "Init" or name.startswith("GetRootAs") or name.endswith(
                ("BufferHasIdentifier", "Length", "IsNone", "AsNumpy")):
            continue
        if name + "AsNumpy" in methods:
            value = getattr(table, name + "AsNumpy")()
            value = [] if isinstance(value, int) else np.asarray(value).tolist()
        else:
            try:
                value = getattr(table, name)()
            except TypeError:  # a vector of tables or strings: not used by any builtin lowbit imports
                continue
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        key = _snake(name)
        if key == "padding":
            value = _PADDINGS.get(value, value)
        elif key == "fused_activation_function":
            value = _ACTIVATIONS.get(value, value)
        out[key] = value
    return out


class _Tensor:
    """One decoded TFLite tensor."""
    __slots__ = ("index", "name", "shape", "dtype", "bits", "signed", "quant", "data", "type_name")


class _Operator:
    """One decoded TFLite operator."""
    __slots__ = ("index", "name", "version", "inputs", "outputs", "options")


class _Model:
    """The main subgraph of a .tflite flatbuffer, decoded eagerly (so that a corrupt file fails here, with a
    ModelError, and never inside a converter)."""

    def __init__(self, path: str, data: bytes):
        import tflite

        self.path = path
        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelError(f"{path}: not a TFLite model (no 'TFL3' flatbuffer identifier); "
                             f"expected a .tflite file written by the TFLite converter")
        self._tflite = tflite
        self._data = data
        model = tflite.Model.GetRootAs(data, 0)
        self._model = model
        if model.SubgraphsLength() < 1:
            raise ModelError(f"{path}: the TFLite model has no subgraph")
        sub = model.Subgraphs(0)
        self.tensors = [self._tensor(sub, t) for t in range(sub.TensorsLength())]
        builtin_names = _enum_names(tflite.BuiltinOperator)
        opcodes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
            name = builtin_names.get(builtin, f"BUILTIN_{builtin}")
            if name == "CUSTOM":
                custom = code.CustomCode()
                name = f"CUSTOM:{custom.decode('utf-8', 'replace') if custom else '?'}"
            opcodes.append((name, int(code.Version())))
        self.operators = []
        for i in range(sub.OperatorsLength()):
            op = sub.Operators(i)
            o = _Operator()
            o.index = i
            if not 0 <= op.OpcodeIndex() < len(opcodes):
                raise ModelError(f"{path}: operator #{i} uses opcode {op.OpcodeIndex()}, but the model has "
                                 f"{len(opcodes)} opcodes")
            o.name, o.version = opcodes[op.OpcodeIndex()]
            o.inputs = self._indices(op.InputsAsNumpy() if op.InputsLength() else [], f"operator #{i}", True)
            o.outputs = self._indices(op.OutputsAsNumpy() if op.OutputsLength() else [], f"operator #{i}")
            o.options = self._options(op)
            self.operators.append(o)
        self.inputs = self._indices(sub.InputsAsNumpy() if sub.InputsLength() else [], "subgraph inputs")
        self.outputs = self._indices(sub.OutputsAsNumpy() if sub.OutputsLength() else [], "subgraph outputs")

    def _indices(self, arr, where: str, optional: bool = False) -> list[int]:
        out = [int(t) for t in arr]
        for t in out:
            if not (0 <= t < len(self.tensors) or (optional and t == -1)):
                raise ModelError(f"{self.path}: {where} refers to tensor {t}, but the subgraph has "
                                 f"{len(self.tensors)} tensors")
        return out

    def _tensor(self, sub, t: int) -> _Tensor:
        tensor = sub.Tensors(t)
        x = _Tensor()
        x.index = t
        name = tensor.Name()
        x.name = name.decode("utf-8", "replace") if name else f"tensor_{t}"
        x.shape = tuple(int(d) for d in tensor.ShapeAsNumpy()) if tensor.ShapeLength() else ()
        code = tensor.Type()
        x.type_name = _enum_names(self._tflite.TensorType).get(code, str(code))
        dtype, x.bits, x.signed = _TENSOR_TYPES.get(code, (None, None, True))
        x.dtype = None if dtype is None else np.dtype(dtype)
        x.quant = self._quant(tensor, x)
        x.data = self._data_of(tensor, x)
        return x

    def _quant(self, tensor, x: _Tensor) -> QuantSpec | None:
        q = tensor.Quantization()
        if x.bits is None or q is None or q.ScaleLength() == 0:
            return None
        scale = np.asarray(q.ScaleAsNumpy(), np.float64)
        zp = np.asarray(q.ZeroPointAsNumpy(), np.int64) if q.ZeroPointLength() else np.zeros_like(scale, np.int64)
        if zp.size == 1 and scale.size > 1:
            zp = np.full(scale.shape, int(zp[0]), np.int64)
        try:
            if scale.size == 1:
                return QuantSpec(x.bits, float(scale[0]), int(zp[0]), None, signed=x.signed)
            return QuantSpec(x.bits, scale, zp, int(q.QuantizedDimension()), signed=x.signed)
        except ValueError as e:
            raise ModelError(f"{self.path}: tensor '{x.name}' has invalid quantization parameters: {e}") from None

    def _data_of(self, tensor, x: _Tensor) -> np.ndarray | None:
        model = self._model
        b = tensor.Buffer()
        if b <= 0 or b >= model.BuffersLength():
            return None
        buf = model.Buffers(b)
        if buf.Offset() > 1:  # models over 2 GB keep their buffers after the flatbuffer
            raw = self._data[buf.Offset(): buf.Offset() + buf.Size()]
            if len(raw) != buf.Size():
                raise ModelError(f"{self.path}: the data of tensor '{x.name}' lies past the end of the file "
                                 f"(truncated?)")
        elif buf.DataLength() == 0:
            return None
        else:
            raw = buf.DataAsNumpy().tobytes()
        if x.dtype is None:
            return None  # a type lowbit has no NumPy dtype for; the operator using it is reported unsupported
        count = int(np.prod(x.shape, dtype=np.int64))
        if x.bits == 4:
            packed = np.frombuffer(raw, np.uint8)
            nib = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(-1)[:count].astype(np.int8)
            arr = np.where(nib > 7, nib - 16, nib).astype(np.int8)
        else:
            arr = np.frombuffer(raw, x.dtype)
        if arr.size != count:
            raise ModelError(f"{self.path}: tensor '{x.name}' {list(x.shape)} holds {arr.size} elements "
                             f"instead of {count} (corrupt or truncated file)")
        return arr.reshape(x.shape).copy()

    def _options(self, op) -> dict:
        t = self._tflite
        out: dict = {}
        for kind, getter, enum in ((op.BuiltinOptionsType(), op.BuiltinOptions, t.BuiltinOptions),
                                   (op.BuiltinOptions2Type(), op.BuiltinOptions2, t.BuiltinOptions2)):
            if kind == 0:
                continue
            table = getter()
            cls = getattr(t, _enum_names(enum).get(kind, ""), None)
            if table is None or cls is None:
                continue
            opt = cls()
            opt.Init(table.Bytes, table.Pos)
            out.update(_options_dict(opt))
        return out


class ImportContext:
    """What a converter sees of one TFLite operator; see the module docstring for the API."""

    def __init__(self, reader: "_Reader", op: _Operator):
        self._reader = reader
        self._tensors = reader.model.tensors
        self.graph: Graph = reader.graph
        self.path: str = reader.model.path
        self.index: int = op.index
        self.op_name: str = op.name
        self.version: int = op.version
        self.options: dict = dict(op.options)
        self._inputs = op.inputs
        self._outputs = op.outputs

    # -- tensors by position ---------------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def _in(self, i: int) -> _Tensor | None:
        t = self._inputs[i] if i < len(self._inputs) else -1
        return None if t < 0 else self._tensors[t]

    def input(self, i: int) -> Value | None:
        t = self._in(i)
        return None if t is None else self._reader.value(t.index)

    def output(self, i: int) -> Value:
        return self._reader.value(self._outputs[i])

    def const(self, i: int) -> np.ndarray | None:
        t = self._in(i)
        return None if t is None or t.data is None else t.data.copy()

    def input_quant(self, i: int) -> QuantSpec | None:
        t = self._in(i)
        return None if t is None else t.quant

    def output_quant(self, i: int) -> QuantSpec | None:
        return self._tensors[self._outputs[i]].quant

    def input_shape(self, i: int) -> tuple[int, ...] | None:
        t = self._in(i)
        return None if t is None else t.shape

    def output_shape(self, i: int) -> tuple[int, ...]:
        return self._tensors[self._outputs[i]].shape

    def input_dtype(self, i: int) -> np.dtype | None:
        t = self._in(i)
        return None if t is None else self._reader.dtype(t)

    def output_dtype(self, i: int) -> np.dtype:
        return self._reader.dtype(self._tensors[self._outputs[i]])

    def input_name(self, i: int) -> str | None:
        t = self._in(i)
        return None if t is None else t.name

    def output_name(self, i: int) -> str:
        return self._tensors[self._outputs[i]].name

    # -- checks ------------------------------------------------------------------------------------------------
    def unsupported(self, reason: str) -> NoReturn:
        raise _Unsupported(reason)

    def require_quantized(self, inputs=(0,), outputs=(0,)) -> None:
        """Signal 'unsupported' unless the given inputs/outputs are quantized integer tensors."""
        for kind, positions, dtype_of, quant_of in (("input", inputs, self.input_dtype, self.input_quant),
                                                    ("output", outputs, self.output_dtype, self.output_quant)):
            for i in positions:
                dt = dtype_of(i)
                if dt is None:
                    continue
                if dt.kind == "f":
                    self.unsupported(f"{kind} {i} is {dt.name} (a float operator; lowbit imports only "
                                     f"quantized operators)")
                if quant_of(i) is None:
                    self.unsupported(f"{kind} {i} ({dt.name}) has no quantization parameters")

    def activation_range(self, spec: QuantSpec | None = None, activation: str | None = None) -> tuple[int, int]:
        """(act_min, act_max) of the fused activation on ``spec`` (TFLite CalculateActivationRangeQuantized)."""
        spec = spec if spec is not None else self.output_quant(0)
        if activation is None:
            activation = self.options.get("fused_activation_function", "NONE")
        try:
            return activation_range(spec, activation)
        except ValueError as e:
            self.unsupported(str(e))

    # -- building ----------------------------------------------------------------------------------------------
    def add_node(self, op_type: str, inputs, outputs, attrs=None, domain: str = INT_DOMAIN,
                 name: str | None = None) -> Node:
        outputs = list(outputs)
        hint = name or (outputs[0].name if outputs else f"{self.op_name.lower()}_{self.index}")
        node = self.graph.add_node(op_type, inputs, outputs, attrs, name=self.graph.unique_node_name(hint),
                                   domain=domain)
        self._reader.added.append(node)
        return node

    def add_const(self, hint: str, array, quant: QuantSpec | None = None) -> Value:
        v = self.graph.add_const(hint, np.asarray(array))
        v.quant = quant
        return v

    def new_value(self, hint: str, shape=None, dtype=None, quant: QuantSpec | None = None) -> Value:
        v = self.graph.new_value(hint, None if shape is None else tuple(shape), dtype)
        v.quant = quant
        return v

    def set_output(self, i: int, value: Value) -> None:
        t = self._outputs[i]
        if t in self._reader.values:
            raise RuntimeError(f"{self.op_name} #{self.index}: output {i} was created before set_output")
        self._reader.values[t] = value


class _Reader:
    def __init__(self, model: _Model):
        self.model = model
        name = os.path.splitext(os.path.basename(model.path))[0] or "tflite"
        self.graph = Graph(name, {"": 21, INT_DOMAIN: 1})
        self.values: dict[int, Value] = {}
        self.added: list[Node] = []

    @staticmethod
    def dtype(t: _Tensor) -> np.dtype:
        if t.dtype is None:
            raise _Unsupported(f"tensor '{t.name}' has type {t.type_name}")
        return t.dtype

    def value(self, index: int) -> Value:
        v = self.values.get(index)
        if v is not None:
            return v
        t = self.model.tensors[index]
        v = self.graph.new_value(t.name)
        if t.data is not None:
            set_const(v, t.data)
        else:
            v.shape, v.dtype = t.shape, self.dtype(t)
        v.quant = t.quant
        self.values[index] = v
        return v

    def run(self) -> Graph:
        m, g = self.model, self.graph
        problems: list[tuple[str, str]] = []
        for t in m.inputs:
            v = self.value(t)
            if v.is_const:
                raise ModelError(f"{m.path}: graph input '{v.name}' is a constant tensor")
            g.inputs.append(v)
        for op in m.operators:
            where = f"#{op.index} {op.name}"
            if op.outputs:
                where += f" (output '{m.tensors[op.outputs[0]].name}')"
            converter = CONVERTERS.get(op.name)
            if converter is None:
                problems.append((op.name, f"{where}: no converter"))
                continue
            self.added = []
            try:
                converter(ImportContext(self, op))
            except _Unsupported as e:
                for node in self.added:
                    if node in g.nodes:
                        g.remove_node(node)
                problems.append((op.name, f"{where}: {e}"))
                continue
            for t in op.outputs:
                v = self.values.get(t)
                if v is None or (v.producer is None and not v.is_const and v not in g.inputs):
                    raise RuntimeError(f"TFLite converter for {op.name} left output '{m.tensors[t].name}' of "
                                       f"operator #{op.index} undefined")
        if problems:
            kinds = sorted({k for k, _ in problems})
            listed = "; ".join(p for _, p in problems[:20])
            more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""
            raise UnsupportedOpError(
                f"{m.path}: lowbit cannot import {len(problems)} TFLite operator(s) of type "
                f"{', '.join(kinds)}: {listed}{more}. lowbit imports int8 and 16x8 quantized models with the "
                f"builtins {', '.join(sorted(CONVERTERS))}")
        g.outputs = [self.value(t) for t in m.outputs]
        g.prune_values()
        return g


def load_tflite(path) -> Graph:
    """Read the quantized TFLite model at ``path`` into an integer-IR Graph (domain ``lowbit.int``).

    Raises ModelError for a file that is missing, truncated or not a TFLite flatbuffer, and one
    UnsupportedOpError naming every operator that cannot be imported (float operators included).
    """
    import lowbit.graph.tflite  # noqa: F401  (registers every converter module)

    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"{path}: cannot read the TFLite model ({e.strerror or e})") from None
    try:
        model = _Model(path, data)
    except ModelError:
        raise
    except Exception as e:  # the flatbuffer accessors fail in many ways on a truncated or corrupt file
        raise ModelError(f"{path}: not a valid TFLite flatbuffer (truncated or corrupt): "
                         f"{type(e).__name__}: {e}") from None
    graph = _Reader(model).run()
    graph.metadata["source"] = "tflite"
    return graph


__all__ = ["CONVERTERS", "ImportContext", "load_tflite", "tflite_op"]
