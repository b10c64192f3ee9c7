"""The CLI contract: inspect and run work; every bad input gives one line on stderr, exit code 2, no
traceback and no output file."""
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from lowbit.tools.cli import main
from nodecheck import run_ort


def _save(tmp_path, nodes, inputs, outputs, inits=(), name="m.onnx", opset=17):
    g = helper.make_graph(nodes, "m", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    path = tmp_path / name
    onnx.save(m, str(path))
    return str(path), m


@pytest.fixture
def conv_model(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    return _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                            helper.make_node("Relu", ["c"], ["y"])],
                 [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 8, 8])],
                 [numpy_helper.from_array(w, "w")])


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _user_error(result, *fragments):
    assert result.exit_code == 2, (result.exit_code, result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lowbit: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def test_run_matches_ort_and_binds_dynamic_batch(tmp_path, conv_model):
    path, model = conv_model
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    r = _invoke("run", path, "--inputs", tmp_path / "in.npz", "--outputs", tmp_path / "out.npz")
    assert r.exit_code == 0, r.stderr
    got = np.load(tmp_path / "out.npz")["y"]
    np.testing.assert_allclose(got, run_ort(model, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_inspect_text_and_json(conv_model):
    path, _ = conv_model
    r = _invoke("inspect", path, "--shape", "x=1x3x8x8")
    assert r.exit_code == 0, r.stderr
    assert "Conv" in r.output and "108 parameters" in r.output and "6.91k MACs" in r.output
    r = _invoke("inspect", path, "--json")
    data = json.loads(r.output)
    assert data["totals"] == {"nodes": 2, "params": 108, "macs": 6912}
    assert data["unsupported"] == {} and any("taken as 1" in n for n in data["notes"])


def test_inspect_lists_every_unsupported_op_and_run_refuses(tmp_path):
    path, _ = _save(tmp_path, [helper.make_node("FancyOp", ["x"], ["a"], domain="acme", name="f1"),
                               helper.make_node("Relu", ["a"], ["b"]),
                               helper.make_node("OtherOp", ["b"], ["y"], domain="acme", name="o1")],
                    [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    r = _invoke("inspect", path)
    assert r.exit_code == 0 and "acme.FancyOp (1 node: f1)" in r.output and "acme.OtherOp" in r.output
    np.savez(tmp_path / "in.npz", x=np.zeros(2, np.float32))
    out = tmp_path / "out.npz"
    r = _invoke("run", path, "--inputs", tmp_path / "in.npz", "--outputs", out)
    _user_error(r, "acme.FancyOp", "acme.OtherOp", "'f1'", "'o1'")
    assert not out.exists()


@pytest.mark.parametrize("case", ["missing", "shape", "dtype", "not_npz", "no_file"])
def test_run_bad_inputs(tmp_path, conv_model, case):
    path, _ = conv_model
    inp = tmp_path / "in.npz"
    if case == "missing":
        np.savez(inp, other=np.zeros((1, 3, 8, 8), np.float32))
        frag = "'x'"
    elif case == "shape":
        np.savez(inp, x=np.zeros((1, 3, 9, 8), np.float32))
        frag = "(1, 3, 9, 8)"
    elif case == "dtype":
        np.savez(inp, x=np.zeros((1, 3, 8, 8), np.float64))
        frag = "float64"
    elif case == "not_npz":
        inp.write_bytes(b"garbage" * 100)
        frag = "in.npz"
    else:
        inp = tmp_path / "absent.npz"
        frag = "absent.npz"
    out = tmp_path / "out.npz"
    _user_error(_invoke("run", path, "--inputs", inp, "--outputs", out), frag)
    assert not out.exists()


@pytest.mark.parametrize("case", ["truncated", "not_onnx", "cycle", "undefined"])
def test_bad_models(tmp_path, conv_model, case):
    path, model = conv_model
    vi = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])], \
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]
    if case == "truncated":
        data = open(path, "rb").read()
        open(path, "wb").write(data[: len(data) * 2 // 3])
        frag = "m.onnx"
    elif case == "not_onnx":
        open(path, "wb").write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
        frag = "m.onnx"
    elif case == "cycle":
        path, _ = _save(tmp_path, [helper.make_node("Add", ["x", "y"], ["a"]), helper.make_node("Relu", ["a"], ["y"])],
                        *vi, name="cyc.onnx")
        frag = "cycle"
    else:
        path, _ = _save(tmp_path, [helper.make_node("Add", ["x", "ghost"], ["y"])], *vi, name="undef.onnx")
        frag = "ghost"
    np.savez(tmp_path / "in.npz", x=np.zeros((1, 3, 8, 8), np.float32))
    out = tmp_path / "out.npz"
    _user_error(_invoke("run", path, "--inputs", tmp_path / "in.npz", "--outputs", out), frag)
    assert not out.exists()
    _user_error(_invoke("inspect", path), frag)


def test_bad_shape_flag_is_a_usage_error(conv_model):
    path, _ = conv_model
    r = _invoke("inspect", path, "--shape", "x=1xAx8")
    assert r.exit_code == 2 and "--shape" in r.stderr


def test_real_process_exit_code_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    p = subprocess.run([sys.executable, "-m", "lowbit.tools.cli", "inspect", str(bad)], capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and p.stderr.count("\n") == 1


def test_zoo_list_and_path():
    r = _invoke("zoo", "list", "--json")
    assert r.exit_code == 0
    rows = json.loads(r.output)
    assert {row["name"] for row in rows} >= {"mobilenet_digits", "lmu_seqdigits", "autoneural_vqa"}
    assert all(row["float_accuracy"] > 0.9 for row in rows)
    r = _invoke("zoo", "path", "lmu_seqdigits", "--kind", "step")
    assert r.exit_code == 0 and r.output.strip().endswith("lmu_seqdigits_step.onnx")
    _user_error(_invoke("zoo", "path", "nope"), "nope")
