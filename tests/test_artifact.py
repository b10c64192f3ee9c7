"""The compiled artifact: save -> load -> run reproduces the outputs bit for bit, INT4 weights are packed,
and a tampered, truncated or foreign file is refused with a clear error."""
import os

import numpy as np
import onnx
import pytest

from lowbit.errors import ModelError
from lowbit.graph.onnx_import import from_onnx_model
from lowbit.quant.compile import compile_graph
from lowbit.runtime.artifact import Artifact
from lowbit.tools import zoo
from lowbit.tools.light_models import realize


@pytest.fixture(scope="module")
def mobilenet():
    g = from_onnx_model(onnx.load(str(zoo.path("mobilenet_digits"))))
    calib = {k: v[:8] for k, v in zoo.load_calib("mobilenet_digits").items()}
    ev = zoo.load_eval("mobilenet_digits")
    return g, calib, {"image": ev["image"][:1]}


@pytest.mark.parametrize("precision", ["w8a8", "w4a16"])
def test_save_load_run_is_bit_exact(tmp_path, mobilenet, precision):
    g, calib, x = mobilenet
    art, _ = compile_graph(g, calib, precision, source="mobilenet_digits.onnx")
    path = str(tmp_path / "m.lowbit.onnx")
    art.save(path)
    loaded = Artifact.load(path)
    assert loaded.plan["precision"] == precision and loaded.source == "mobilenet_digits.onnx"
    a, b = art.run(x, raw=True), loaded.run(x, raw=True)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k])
        assert a[k].dtype.kind == "i"
    fa, fb = art.run(x), loaded.run(x)
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    # the integer codes fed directly give the same result as float inputs quantized by the artifact
    q_in = next(n for n in loaded.graph.nodes if n.op_type == "Quantize").outputs[0].quant
    raw_in = {"image": q_in.quantize(x["image"])}
    assert all(np.array_equal(loaded.run(raw_in, raw=True)[k], b[k]) for k in b)


def test_artifact_is_plain_onnx_with_int4_weights_packed(tmp_path):
    model = realize("resnet50")
    float_path = tmp_path / "resnet50.onnx"
    onnx.save(model, str(float_path))
    g = from_onnx_model(model)
    rng = np.random.default_rng(0)
    calib = {g.inputs[0].name: rng.standard_normal((1, *g.inputs[0].shape)).astype(np.float32)}
    art, _ = compile_graph(g, calib, "w4a8")
    path = tmp_path / "r4.onnx"
    art.save(str(path))
    ratio = os.path.getsize(path) / os.path.getsize(float_path)
    assert ratio <= 0.14, ratio
    m = onnx.load(str(path))
    assert any(i.data_type == onnx.TensorProto.INT4 for i in m.graph.initializer)
    assert {o.domain for o in m.opset_import} >= {"", "lowbit.int"}
    loaded = Artifact.load(str(path))  # bias specs are derived on load, not stored
    conv = next(n for n in loaded.graph.nodes if n.op_type == "Conv")
    assert conv.inputs[2].quant is not None and conv.inputs[2].quant.bits == 32


def test_tampered_truncated_and_foreign_files_are_refused(tmp_path, mobilenet):
    g, calib, x = mobilenet
    art, _ = compile_graph(g, calib, "w8a8")
    path = tmp_path / "a.onnx"
    art.save(str(path))
    data = bytearray(path.read_bytes())
    # flip one byte inside the largest weight tensor: still parses, but the hash no longer matches
    m = onnx.load(str(path))
    big = max(m.graph.initializer, key=lambda t: len(t.raw_data))
    pos = bytes(data).find(big.raw_data[:32]) + 16
    data[pos] ^= 0xFF
    (tmp_path / "tampered.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="integrity check failed"):
        Artifact.load(str(tmp_path / "tampered.onnx"))
    (tmp_path / "cut.onnx").write_bytes(path.read_bytes()[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated|integrity|not a lowbit artifact"):
        Artifact.load(str(tmp_path / "cut.onnx"))
    with pytest.raises(ModelError, match="not a lowbit artifact"):
        Artifact.load(str(zoo.path("mobilenet_digits")))
