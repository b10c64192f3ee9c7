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


def test_weight_noise_perturbs_each_forward_and_restores_the_clean_weights():
    import torch
    from lowbit.tools.zoo import torch_train
    gen = torch_train.seed_everything(0)
    net = torch.nn.Linear(4, 3)
    clean = net.weight.detach().clone()
    seen = []
    net.register_forward_pre_hook(lambda m, _: seen.append(m.weight.detach().clone()))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    torch_train.fit(net, x, y, epochs=2, lr=0.0, batch_size=4, gen=gen, log_every=0, weight_noise=0.05)
    assert torch.equal(net.weight, clean)                     # lr 0: only the noise could have moved them
    rel = torch.stack([(w - clean) / clean for w in seen])
    assert len(seen) == 4 and 0.02 < float(rel.std()) < 0.1   # ~5 % relative noise, a fresh draw each batch
    assert not torch.equal(seen[0], seen[1])
