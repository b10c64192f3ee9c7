"""The top-level Python API: lowbit.load / run / compile / compare / Artifact."""
import numpy as np

import lowbit
from lowbit.tools import zoo


def test_python_api_end_to_end(tmp_path):
    model, calib, ev = (str(zoo.path("mobilenet_digits", k)) for k in ("onnx", "calib", "eval"))
    x = {"image": np.load(ev)["image"][:2]}
    g = lowbit.load(model, shapes={"image": (2, 1, 16, 16)})
    ref = lowbit.run(g, x)["logits"]
    art = lowbit.compile(model, calib, precision="w8a16")
    art.save(str(tmp_path / "m.onnx"))
    out = lowbit.Artifact.load(str(tmp_path / "m.onnx")).run({"image": x["image"][:1]})["logits"]
    assert np.argmax(out) == np.argmax(ref[0])
    rep = lowbit.compare(model, calib, ev, ["w8a8"])
    assert rep["end_to_end"]["w8a8"]["accuracy"] > 0.98
