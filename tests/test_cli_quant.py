"""CLI: compile, run on an artifact (float and --raw), compare; every bad input is one line and exit code 2
with no output file."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from lowbit.tools import zoo
from lowbit.tools.cli import main

MODEL = str(zoo.path("mobilenet_digits"))


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _user_error(r, *fragments):
    assert r.exit_code == 2, (r.exit_code, r.output, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    calib = zoo.load_calib("mobilenet_digits")
    ev = zoo.load_eval("mobilenet_digits")
    np.savez(d / "calib.npz", image=calib["image"][:16])
    np.savez(d / "eval.npz", image=ev["image"][:24], labels=ev["labels"][:24])
    np.savez(d / "one.npz", image=ev["image"][:1])
    return d


def test_compile_run_and_raw(data):
    art = data / "m.onnx"
    r = _invoke("compile", MODEL, "--calib", data / "calib.npz", "--precision", "w8a8", "-o", art)
    assert r.exit_code == 0, r.stderr
    assert "integer" in r.output and art.exists()
    r = _invoke("run", art, "--inputs", data / "one.npz", "--outputs", data / "out.npz")
    assert r.exit_code == 0, r.stderr
    out = np.load(data / "out.npz")["logits"]
    assert out.dtype == np.float32 and out.shape == (1, 10)
    r = _invoke("run", art, "--inputs", data / "one.npz", "--outputs", data / "raw.npz", "--raw")
    assert r.exit_code == 0
    raw = np.load(data / "raw.npz")["logits"]
    assert raw.dtype == np.int8 and raw.shape == (1, 10)
    assert np.argmax(raw) == np.argmax(out)


def test_compare_prints_columns_and_writes_json(data):
    js, png = data / "report.json", data / "sqnr.png"
    r = _invoke("compare", MODEL, "--calib", data / "calib.npz", "--eval", data / "eval.npz",
                "--precision", "w8a8,w4a16", "--json", js, "--plot", png)
    assert r.exit_code == 0, r.stderr
    assert "w8a8" in r.output and "w4a16" in r.output and "accuracy" in r.output
    rep = json.loads(js.read_text())
    assert rep["precisions"] == ["w8a8", "w4a16"] and rep["samples"] == 24
    assert rep["end_to_end"]["w8a8"]["accuracy"] >= 0.9
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10000
    first = rep["layers"][0]
    assert {"sqnr_db", "cosine", "max_abs_error", "saturations"} <= set(first["w8a8"])


@pytest.mark.parametrize("case,frag", [
    ("missing", "lacks graph input"), ("nan", "NaN/Inf"), ("empty", "N >= 1"), ("precision", "unknown precision"),
    ("plan", "matches no node"), ("nocalib", "--calib"),
])
def test_compile_bad_inputs(data, tmp_path, case, frag):
    calib = tmp_path / "c.npz"
    x = zoo.load_calib("mobilenet_digits")["image"][:4]
    args = []
    if case == "missing":
        np.savez(calib, other=x)
    elif case == "nan":
        x = x.copy()
        x[1, 0, 3, 3] = np.nan
        np.savez(calib, image=x)
    elif case == "empty":
        np.savez(calib, image=x[:0])
    else:
        np.savez(calib, image=x)
    if case == "precision":
        args = ["--precision", "int3"]
    if case == "plan":
        plan = tmp_path / "p.toml"
        plan.write_text('[[override]]\nname = "no_such_node"\nprecision = "w8a16"\n')
        args = ["--plan", plan]
    out = tmp_path / "a.onnx"
    cmd = ["compile", MODEL] + ([] if case == "nocalib" else ["--calib", calib]) + args + ["-o", out]
    r = _invoke(*cmd)
    if case == "nocalib":
        assert r.exit_code == 2 and frag in r.stderr
    else:
        _user_error(r, frag)
    assert not out.exists()


def test_run_refuses_tampered_artifact(data, tmp_path):
    art = tmp_path / "m.onnx"
    assert _invoke("compile", MODEL, "--calib", data / "calib.npz", "-o", art).exit_code == 0
    b = bytearray(art.read_bytes())
    b[len(b) // 2] ^= 0x55
    art.write_bytes(bytes(b))
    out = tmp_path / "o.npz"
    _user_error(_invoke("run", art, "--inputs", data / "one.npz", "--outputs", out), "m.onnx")
    assert not out.exists()


def test_run_tflite_and_its_bad_inputs(tmp_path):
    import os
    data = os.path.join(os.path.dirname(__file__), "data", "tflite")
    model = os.path.join(data, "small_cnn_int8.tflite")
    from lowbit.graph.tflite import load_tflite
    g = load_tflite(model)
    v = g.inputs[0]
    np.savez(tmp_path / "in.npz", **{v.name: np.zeros(v.shape, v.dtype)})
    out = tmp_path / "o.npz"
    r = _invoke("run", model, "--inputs", tmp_path / "in.npz", "--outputs", out)
    assert r.exit_code == 0, r.stderr
    assert out.exists()
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(open(model, "rb").read()[:700])
    _user_error(_invoke("run", cut, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "o2.npz"), "cut.tflite")
    _user_error(_invoke("run", os.path.join(data, "unsupported_cumsum.tflite"), "--inputs", tmp_path / "in.npz",
                        "--outputs", tmp_path / "o3.npz"), "CUMSUM")
    assert not (tmp_path / "o2.npz").exists() and not (tmp_path / "o3.npz").exists()


def test_compile_for_tflite_target_and_export_qdq(data, tmp_path):
    art = tmp_path / "m.onnx"
    r = _invoke("compile", MODEL, "--calib", data / "calib.npz", "--target", "tflite", "-o", art)
    assert r.exit_code == 0, r.stderr
    assert "ops (100.0 %)" in r.output and (tmp_path / "m.tflite").exists()
    r = _invoke("export", art, "--format", "onnx-qdq", "-o", tmp_path / "m.qdq.onnx")
    assert r.exit_code == 0, r.stderr
    import onnx
    onnx.checker.check_model(onnx.load(str(tmp_path / "m.qdq.onnx")))
    r = _invoke("compile", MODEL, "--calib", data / "calib.npz", "--target", "nope", "-o", tmp_path / "x.onnx")
    _user_error(r, "unknown target")


def test_inspect_artifact_and_tflite(data, tmp_path):
    import os
    art = tmp_path / "m.onnx"
    assert _invoke("compile", MODEL, "--calib", data / "calib.npz", "-o", art).exit_code == 0
    r = _invoke("inspect", art, "--json")
    assert r.exit_code == 0, r.stderr
    rep = json.loads(r.output)
    assert rep["unsupported"] == {} and rep["totals"]["macs"] == 1383680
    assert rep["op_histogram"]["lowbit.int.Conv"] == 19
    tfl = os.path.join(os.path.dirname(__file__), "data", "tflite", "small_cnn_int8.tflite")
    r = _invoke("inspect", tfl)
    assert r.exit_code == 0 and "lowbit can run every op" in r.output


def test_compile_for_a_target_that_refuses_writes_nothing(tmp_path):
    lmu = str(zoo.path("lmu_seqdigits"))
    calib = str(zoo.path("lmu_seqdigits", "calib"))
    out = tmp_path / "v.onnx"
    _user_error(_invoke("compile", lmu, "--calib", calib, "--target", "tflite", "-o", out), "LMUMemory")
    assert not out.exists() and not (tmp_path / "v.tflite").exists()


def test_compare_scores_the_vqa_model_by_greedy_decoding(tmp_path):
    name = "autoneural_vqa"
    ev = zoo.load_eval(name)
    np.savez(tmp_path / "ev.npz", **{k: v[:12] for k, v in ev.items()})
    np.savez(tmp_path / "ca.npz", **{k: v[:8] for k, v in zoo.load_calib(name).items()})
    js = tmp_path / "r.json"
    r = _invoke("compare", zoo.path(name), "--calib", tmp_path / "ca.npz", "--eval", tmp_path / "ev.npz",
                "--precision", "w8a16", "--json", js)
    assert r.exit_code == 0, r.stderr
    rep = json.loads(js.read_text())
    assert rep["float_accuracy"] == 1.0 and rep["end_to_end"]["w8a16"]["accuracy"] >= 0.9
