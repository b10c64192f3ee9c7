"""lowbit's float executor on ONNX's own node conformance cases (onnx.backend.test.case.node).

Every case whose ops all have a lowbit float kernel runs through lowbit's importer and executor and must
match the expected outputs ONNX ships, at the case's own tolerance. Cases lowbit knowingly does not pass are
listed in KNOWN_GAPS with the reason; a case listed there that starts passing fails the run (strict xfail),
so the list stays true.
"""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

from lowbit.graph.onnx_import import from_onnx_model
from lowbit.runtime.float_executor import run as run_float
from lowbit.runtime.registry import FLOAT_KERNELS

# name -> why lowbit does not match it (yet)
_RANDOM = "training-mode Dropout draws a random mask; lowbit runs inference only"
KNOWN_GAPS: dict[str, str] = {
    "test_training_dropout_default": _RANDOM,
    "test_training_dropout_default_mask": _RANDOM,
    "test_training_dropout": _RANDOM,
    "test_training_dropout_mask": _RANDOM,
    # ONNX's expected values divide by the fractional output width (scale * in - 1 = 1.4); the spec and
    # ONNX Runtime use the integer output length, and lowbit follows them (ORT and lowbit: [1, 4])
    "test_resize_downsample_scales_linear_align_corners": "reference divides by a fractional output length",
    "test_resize_downsample_scales_cubic_align_corners": "reference divides by a fractional output length",
}

_NUMERIC = set("biuf")


def _dtype_ok(arr) -> bool:
    a = np.asarray(arr)
    return a.dtype.kind in _NUMERIC and a.dtype.names is None and type(a.dtype).__module__ == "numpy.dtypes" \
        and a.dtype.name in {"bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                             "float16", "float32", "float64"}


def _cases():
    params = []
    for case in collect_testcases(None):
        nodes = case.model.graph.node
        if any(a.type in (5, 10) for n in nodes for a in n.attribute):  # GRAPH / GRAPHS attributes
            continue
        if not all(FLOAT_KERNELS.supports(n.op_type, n.domain) for n in nodes):
            continue
        if case.model.functions:
            continue
        marks = []
        if case.name in KNOWN_GAPS:
            marks.append(pytest.mark.xfail(reason=KNOWN_GAPS[case.name], strict=True))
        params.append(pytest.param(case, id=case.name, marks=marks))
    return params


def _array(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else np.asarray(x)


@pytest.mark.parametrize("case", _cases())
def test_node_case(case):
    for inputs, outputs in case.data_sets:
        inputs, outputs = [_array(a) for a in inputs], [_array(a) for a in outputs]
        if not all(_dtype_ok(a) for a in list(inputs) + list(outputs)):
            pytest.skip("a tensor of this case has a dtype lowbit does not run (bfloat16/float8/int4/string)")
        graph = from_onnx_model(case.model)
        feeds = {v.name: np.asarray(a) for v, a in zip(graph.inputs, inputs)}
        got = run_float(graph, feeds)
        for v, expected in zip(graph.outputs, outputs):
            g, e = got[v.name], np.asarray(expected)
            assert g.shape == e.shape, f"{v.name}: shape {g.shape} != {e.shape}"
            assert g.dtype == e.dtype, f"{v.name}: dtype {g.dtype} != {e.dtype}"
            if e.dtype.kind == "f":
                np.testing.assert_allclose(g, e, rtol=case.rtol, atol=case.atol)
            else:
                np.testing.assert_array_equal(g, e)
