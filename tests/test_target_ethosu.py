"""The ethos-u targets: Vela's reports parsed (fast, from files Vela 5.2.0 wrote: tests/data/vela/, made by
tests/data/vela/regenerate.py), lowbit's placement from Vela's documented limits, and Vela itself run on int8
fixtures (skipped when ethos-u-vela is not installed)."""
from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from lowbit.errors import LowbitError
from lowbit.graph.onnx_import import from_onnx_model
from lowbit.quant.compile import compile_graph
from lowbit.targets import TARGETS, get_target
from lowbit.targets import target_ethosu
from lowbit.targets.target_ethosu import ACCELERATORS, NpuPlacementWarning, vela_command
from lowbit.targets.vela_report import parse_per_layer_csv, parse_stdout, read_vela_output
from lowbit.tools import zoo

HERE = os.path.dirname(__file__)
VELA_DATA = os.path.join(HERE, "data", "vela")
TFLITE = os.path.join(HERE, "data", "tflite")
needs_vela = pytest.mark.skipif(vela_command() is None, reason="ethos-u-vela is not installed")


def _report(accel: str, net: str):
    d = os.path.join(VELA_DATA, accel)
    with open(os.path.join(d, f"{net}_vela_stdout.txt"), encoding="utf-8") as f:
        return read_vela_output(d, net, f.read(), accel)


# -- parsing Vela's real output files ----------------------------------------------------------------------------
def test_summary_and_layers_of_a_fully_placed_cnn():
    r = _report("ethos-u55-128", "small_cnn_int8")
    s = r.summary
    assert (s.accelerator, s.system_config, s.memory_mode) == ("Ethos_U55_128", "Ethos_U55_High_End_Embedded",
                                                               "Shared_Sram")
    assert (r.cpu_ops, r.npu_ops, r.npu_fraction, r.nothing_on_npu) == (0, 8, 1.0, False)
    assert (s.cycles_total, s.cycles_npu, s.nn_macs) == (4691, 3409, 51760)
    assert s.core_clock_hz == 500e6 and s.inference_time_s == pytest.approx(4691 / 500e6, rel=1e-3)
    assert s.memories["sram"].access_cycles == 1158 and s.memories["off_chip_flash"].access_cycles == 2592
    assert s.memories["sram"].total == 9652 and s.memories["dram"].total == 0
    assert [layer.nng_op for layer in r.layers] == ["Conv2D", "Relu", "MaxPool", "Conv2D", "Relu",
                                                    "DepthwiseConv2D", "Mul", "FullyConnected"]
    assert {layer.target for layer in r.layers} == {"NPU"}
    # the two files agree: the per-layer cycles add up to the summary's total, the MACs to nn_macs
    assert sum(layer.op_cycles for layer in r.layers) == s.cycles_total
    assert sum(layer.macs for layer in r.layers) == s.nn_macs


def test_u65_summary_uses_dram_and_its_own_system_config():
    r = _report("ethos-u65-256", "small_cnn_int8")
    s = r.summary
    assert (s.accelerator, s.system_config, s.memory_mode) == ("Ethos_U65_256", "Ethos_U65_Client_Server",
                                                               "Dedicated_Sram_384KB")
    assert s.core_clock_hz == 1e9 and s.cycles_total == 3964 and s.memories["dram"].total == 9648
    assert r.npu_ops == 8 and sum(layer.op_cycles for layer in r.layers) == s.cycles_total


def test_cpu_only_operator_shows_its_fallback_and_reason():
    r = _report("ethos-u55-128", "unsupported_cumsum")
    assert (r.cpu_ops, r.npu_ops) == (5, 2)
    by_op = {fb.op: fb for fb in r.cpu_fallback}
    assert by_op["CUMSUM"].name == "functional_1/lambda_1/Cumsum" and by_op["CUMSUM"].reason == "Unsupported opType"
    assert "unsupported DataType Float32" in by_op["QUANTIZE"].reason
    cpu_layers = [layer.original_op for layer in r.layers if layer.target == "CPU"]
    assert "Cumsum" in cpu_layers and all(layer.op_cycles == 0 for layer in r.layers if layer.target == "CPU")
    assert any(w.startswith("CPU fallback: CUMSUM") for w in r.warnings())
    assert not r.nothing_on_npu


def test_nothing_on_the_npu_is_flagged_loudly():
    for accel in ("ethos-u55-128", "ethos-u65-256"):
        r = _report(accel, "unsupported_float")
        assert r.nothing_on_npu and (r.cpu_ops, r.npu_ops) == (1, 0)
        assert r.warnings()[0].startswith(f"WARNING: Vela placed no operator on the {accel} NPU")
        assert "WARNING" in r.text() and r.to_dict()["nothing_on_npu"] is True


def test_transformer_block_leaves_the_float_neg_on_the_cpu():
    r = _report("ethos-u65-256", "transformer_block_int8")
    assert (r.cpu_ops, r.npu_ops) == (3, 57)
    assert {fb.op for fb in r.cpu_fallback} == {"QUANTIZE", "NEG", "DEQUANTIZE"}
    assert r.summary.cycles_total == 37332


def test_stdout_parser_on_a_synthetic_warning_block():
    text = ("Warning (supported operators) operator: TRANSPOSE, ofm: 'attn/t'\nReason: The following shape/"
            "permutations are supported\n  When ifm rank is 2\n\n"
            "CPU operators = 1 (50.0%)\nNPU operators = 1 (50.0%)\n")
    cpu, npu, fbs = parse_stdout(text)
    assert (cpu, npu) == (1, 1) and fbs[0].op == "TRANSPOSE" and fbs[0].name == "attn/t"
    assert fbs[0].reason == "The following shape/permutations are supported When ifm rank is 2"
    assert parse_per_layer_csv("Original Operator,NNG Operator,Target,Name\n") == []


# -- targets and lowbit's own placement ---------------------------------------------------------------------------
def test_six_accelerators_with_their_default_system_configs():
    assert set(ACCELERATORS) <= set(TARGETS)
    for name in ACCELERATORS:
        t = get_target(name)
        assert t.name == name
        expected = ("Ethos_U55_High_End_Embedded", "Shared_Sram") if "u55" in name else \
            ("Ethos_U65_Client_Server", "Dedicated_Sram_384KB")
        assert (t.system_config, t.memory_mode) == expected
        args = t.vela_args("m.tflite", "out")
        assert args[args.index("--accelerator-config") + 1] == name
        assert {"--verbose-performance", "--verbose-cycle-estimate"} <= set(args)


@pytest.fixture(scope="module")
def mobilenet():
    def g():
        return from_onnx_model(onnx.load(str(zoo.path("mobilenet_digits"))))
    calib = {k: v[:8] for k, v in zoo.load_calib("mobilenet_digits").items()}
    return g, calib


def test_place_int8_model_on_the_npu_but_its_float_boundary(mobilenet):
    g, calib = mobilenet
    art, _ = compile_graph(g(), calib, "w8a8")
    p = get_target("ethos-u55-128").place(art.graph)
    assert sorted(n.op for n in p.fallback) == ["lowbit.int.Dequantize", "lowbit.int.Quantize"]
    quantize = next(n for n in p.fallback if n.op == "lowbit.int.Quantize")
    assert "Tensors must be of type: int16, int32, int8 or uint8" in quantize.reasons
    assert len(p.on_target) == len(p.nodes) - 2


def test_place_takes_4bit_weights_and_rejects_16bit_with_vela_message(mobilenet):
    g, calib = mobilenet
    t = get_target("ethos-u65-256")
    art, _ = compile_graph(g(), calib, "w4a8")  # exported as int8 tensors holding the 4-bit values
    assert all(n.on_target for n in t.place(art.graph).nodes if n.op == "lowbit.int.Conv")
    art, _ = compile_graph(g(), calib, "w16a16")
    p = t.place(art.graph)
    convs = [n for n in p.nodes if n.op == "lowbit.int.Conv"]
    assert convs and all("Weight tensor must be 8-bit" in n.reasons for n in convs)


def test_place_int16_batch_matmul_falls_back():
    g = from_onnx_model(onnx.load(str(zoo.path("vit_digits"))))
    art, _ = compile_graph(g, {k: v[:4] for k, v in zoo.load_calib("vit_digits").items()}, "w8a16")
    p = get_target("ethos-u55-128").place(art.graph)
    bmm = [n for n in p.nodes if n.op == "lowbit.int.BatchMatMul"]
    assert bmm and all(not n.on_target and "16-bit BATCH_MATMUL" in n.reasons[0] for n in bmm)


def test_missing_vela_gives_a_one_line_install_hint(monkeypatch, tmp_path):
    monkeypatch.setattr(target_ethosu, "vela_command", lambda: None)
    with pytest.raises(LowbitError, match=r"^Vela is not installed: pip install ethos-u-vela") as e:
        get_target("ethos-u55-128").compile_tflite(os.path.join(TFLITE, "small_cnn_int8.tflite"), str(tmp_path))
    assert "\n" not in str(e.value)


def test_run_explains_where_the_binary_runs():
    with pytest.raises(LowbitError, match="FVP"):
        get_target("ethos-u65-512").run("m_vela.tflite", {})


# -- Vela itself ----------------------------------------------------------------------------------------------------
@needs_vela
@pytest.mark.parametrize("accel", ["ethos-u55-128", "ethos-u65-256"])
def test_vela_places_and_estimates_an_int8_cnn(tmp_path, accel):
    r = get_target(accel).compile_tflite(os.path.join(TFLITE, "small_cnn_int8.tflite"), str(tmp_path))
    assert (r.cpu_ops, r.npu_ops) == (0, 8)
    assert r.summary.cycles_total > 0 and r.summary.cycles_npu > 0 and r.summary.nn_macs == 51760
    assert sum(layer.op_cycles for layer in r.layers) == r.summary.cycles_total
    assert os.path.isfile(r.optimised_model)
    assert r.summary.cycles_total == _report(accel, "small_cnn_int8").summary.cycles_total  # the committed data


@needs_vela
def test_vela_cpu_only_op_and_zero_npu_warning(tmp_path):
    t = get_target("ethos-u55-128")
    r = t.compile_tflite(os.path.join(TFLITE, "unsupported_cumsum.tflite"), str(tmp_path))
    assert "CUMSUM" in {fb.op for fb in r.cpu_fallback} and r.npu_ops == 2
    with pytest.warns(NpuPlacementWarning, match="placed no operator"):
        r = t.compile_tflite(os.path.join(TFLITE, "unsupported_float.tflite"), str(tmp_path))
    assert r.nothing_on_npu


@needs_vela
def test_export_through_the_tflite_target(tmp_path, mobilenet):
    g, calib = mobilenet
    art, _ = compile_graph(g(), calib, "w8a8")
    t = get_target("ethos-u55-128")
    if "tflite" not in TARGETS:
        with pytest.raises(LowbitError, match="needs the tflite exporter"):
            t.export(art, str(tmp_path / "m_vela.tflite"))
        pytest.skip("the tflite target has not landed yet")
    r = t.export(art, str(tmp_path / "m_vela.tflite"))
    assert os.path.isfile(tmp_path / "m_vela.tflite") and r.npu_ops > 0 and r.summary.cycles_total > 0
    assert np.isfinite(r.summary.inference_time_s)


def _strided_conv(pads: int):
    from graphs import float_graph
    from onnx import helper
    rng = np.random.default_rng(0)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[4, 4], pads=[pads] * 4)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)
    g = float_graph([node], [("x", [1, 1, 16, 16])], ["y"], [("w", w)])
    art, _ = compile_graph(g, {"x": rng.standard_normal((4, 1, 1, 16, 16)).astype(np.float32)}, "w8a8",
                           options=dict(get_target("ethos-u55-128").lowering_options))
    return art


def test_place_predicts_vela_on_stride_4_convolutions():
    """Vela 5.2 splits an unpadded stride-4 Conv2D into NPU operations and fails on a padded one."""
    t = get_target("ethos-u55-128")
    conv = [n for n in t.place(_strided_conv(0).graph).nodes if n.op == "lowbit.int.Conv"]
    assert conv and all(n.on_target for n in conv)
    conv = [n for n in t.place(_strided_conv(1).graph).nodes if n.op == "lowbit.int.Conv"]
    assert conv and not conv[0].on_target and "unpadded" in conv[0].reasons[0]


@needs_vela
@pytest.mark.parametrize("pads", [0, 1])
def test_vela_agrees_on_stride_4_convolutions(tmp_path, pads):
    t = get_target("ethos-u55-128")
    art = _strided_conv(pads)
    if pads:
        with pytest.raises(LowbitError, match="Vela failed.*could not run on NPU"):
            t.export(art, str(tmp_path / "m_vela.tflite"), integer_io=True)
    else:
        r = t.export(art, str(tmp_path / "m_vela.tflite"), integer_io=True)
        assert r.cpu_ops == 0 and r.npu_ops > 1
