"""Retrain zoo models from scratch for a few steps and export them (needs torch; slow)."""
import numpy as np
import onnx
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")
ort = pytest.importorskip("onnxruntime")

from lowbit.tools.zoo import evaluation, registry, train  # noqa: E402


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lmu_seqdigits", "autoneural_vqa"])
def test_quick_retrain_exports_models_that_ort_runs(name, tmp_path):
    entry = train.run(name, tmp_path, quick=True)
    files = registry.get(name).files(tmp_path)
    assert all(p.exists() for p in files.values())
    assert 0.0 <= entry["float_accuracy"] <= 1.0
    assert entry["params"] == registry.manifest()[name]["params"]   # same architecture as the committed one
    for kind in ("onnx", "step"):
        onnx.checker.check_model(onnx.load(str(files[kind])))
    calib = dict(np.load(files["calib"]))
    outputs = evaluation.ort_runner(files["onnx"])(calib)
    assert np.isfinite(outputs["logits"]).all()
    assert (tmp_path / "zoo.json").exists()
