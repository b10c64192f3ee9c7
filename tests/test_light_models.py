"""The nine light models of the onnx package, realised with seeded He-initialised weights: lowbit's float
executor matches ONNX Runtime (CPU, graph optimisations off) to 1e-4 x max|y| before passes, after passes,
and ONNX Runtime on lowbit's exported graph matches too."""
import numpy as np
import pytest

from lowbit.graph.onnx_export import to_onnx_model
from lowbit.graph.onnx_import import from_onnx_model
from lowbit.graph.passes import optimize
from lowbit.runtime.float_executor import run as run_float
from lowbit.tools.light_models import LIGHT_MODELS, realize
from nodecheck import run_ort

SLOW = {"vgg19"}  # 548 MB of weights: the default run stays fast


def _close(got, ref, what, rel=1e-4):
    tol = rel * float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(got - ref)))
    assert err <= tol, f"{what}: max|diff| {err:.3g} > {tol:.3g}"


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow) if m in SLOW else m
                                  for m in LIGHT_MODELS])
def test_light_model_matches_ort(name):
    model = realize(name)
    graph = from_onnx_model(model)
    rng = np.random.default_rng(7)
    feeds = {v.name: rng.standard_normal(v.shape).astype(np.float32) for v in graph.inputs}
    (ref,) = run_ort(model, feeds)
    before = run_float(graph, feeds)
    _close(next(iter(before.values())), ref, "before passes")
    # import -> export with no passes: the file is re-spelled in opset 21, so ORT runs newer kernel versions
    # (Softmax-13, BatchNormalization-15, ...); their results agree to float32 rounding
    (roundtrip,) = run_ort(to_onnx_model(graph), feeds)
    _close(roundtrip, ref, "import -> export -> ORT, no passes", rel=1e-5)
    bn_before = sum(n.op_type == "BatchNormalization" for n in graph.nodes)
    optimize(graph)
    graph.verify()
    ops = {n.op_type for n in graph.nodes}
    assert not ops & {"Dropout", "Identity", "Constant", "ConstantOfShape"}, ops
    if bn_before:  # every BN that follows a Conv is folded; DenseNet's pre-activation BNs follow a Concat
        assert sum(n.op_type == "BatchNormalization" for n in graph.nodes) < bn_before
    after = run_float(graph, feeds)
    _close(next(iter(after.values())), ref, "after passes")
    (exported,) = run_ort(to_onnx_model(graph), feeds)
    _close(exported, ref, "import -> export -> ORT")
