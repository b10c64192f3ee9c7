"""The simulator's framework: accelerator descriptions, arena planner, placement, traffic, energy, reports,
CLI. (Array models: tests/test_npusim_ethosu.py, tests/test_npusim_systolic.py.)"""
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from lowbit.errors import ConfigError
from lowbit.targets.npusim import load_accelerator, presets, simulate, simulate_layers
from lowbit.targets.npusim.config import PRESET_DIR, parse_accelerator, tomllib
from lowbit.targets.npusim.generic import tiled_compute
from lowbit.targets.npusim.planner import Buffer, lifetimes, live_bytes, plan_arena
from lowbit.targets.npusim.report import roofline_png, trace
from lowbit.targets.npusim.workload import GemmShape, Layer
from lowbit.tools.cli import main


def _preset_data(name="hexagon-htp"):
    with open(f"{PRESET_DIR}/{name}.toml", "rb") as f:
        return tomllib.load(f)


# -- accelerator descriptions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", presets())
def test_every_preset_loads(name):
    a = load_accelerator(name)
    assert a.name == name and a.clock_hz > 0 and a.memory.sram.bytes_per_cycle > 0
    assert set(a.array.macs_per_cycle) <= set(a.energy.mac_pj)


def test_presets_cover_the_issue():
    assert {"ethos-u55-128", "ethos-u65-256", "hexagon-htp", "systolic-32x32-ws", "systolic-32x32-os",
            "neuromorphic"} <= set(presets())


def test_ethos_presets_use_velas_system_configs():
    """Ethos_U55_High_End_Embedded: 500 MHz, 64-bit AXI SRAM at 1.0 x clock, flash at 0.125 x clock;
    Ethos_U65_Client_Server: 1 GHz, 128-bit AXI SRAM at 1.0 x, DRAM at 0.75 x (vela.ini)."""
    u55, u65 = load_accelerator("ethos-u55-128"), load_accelerator("ethos-u65-256")
    assert (u55.clock_hz, u55.memory.sram.bytes_per_cycle, u55.memory.dram.bytes_per_cycle) == (500e6, 8.0, 1.0)
    assert (u65.clock_hz, u65.memory.sram.bytes_per_cycle, u65.memory.dram.bytes_per_cycle) == (1e9, 16.0, 12.0)
    assert u55.array.macs_per_cycle["w8a8"] == 128 and u65.array.macs_per_cycle["w8a8"] == 256


def _broken(mutate):
    data = _preset_data()
    mutate(data)
    return data


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["accelerator"].pop("clock_mhz"), "missing field 'accelerator.clock_mhz'"),
    (lambda d: d["memory"]["dram"].update(bandwidth_gbps=-4.0),
     "field 'memory.dram.bandwidth_gbps' must be positive, got -4.0"),
    (lambda d: d["ops"]["npu"].append("Convolution"), "field 'ops.npu' names unknown op 'Convolution'"),
    (lambda d: d["memory"].update(sram_kb=4), "unknown field 'memory.sram_kb'"),
    (lambda d: d["array"].update(kind="gpu"), "field 'array.kind' is 'gpu'; known array models:"),
    (lambda d: d["array"]["macs_per_cycle"].update(w3a8=5), "unknown key 'w3a8'"),
    (lambda d: d["energy"]["mac_pj"].pop("w16a16"), "field 'energy.mac_pj' has no value for precision 'w16a16'"),
    (lambda d: d["memory"].update(arena="hbm"), "field 'memory.arena' must be \"sram\" or \"dram\""),
    (lambda d: d["array"].pop("tile_k"), "field 'array.tile_k' must be a positive integer"),
    (lambda d: d.pop("cpu"), "missing table [cpu]"),
    (lambda d: d["cpu"].update(gmacs="fast"), "field 'cpu.gmacs' must be a number, got 'fast'"),
])
def test_bad_descriptions_name_the_field(mutate, message):
    with pytest.raises(ConfigError, match=None) as e:
        parse_accelerator(_broken(mutate), "npu.toml")
    assert message in str(e.value) and str(e.value).startswith("npu.toml: ")


def test_unknown_preset_lists_the_presets():
    with pytest.raises(ConfigError, match="presets: .*hexagon-htp"):
        load_accelerator("hexagon-htx")


def test_bad_config_on_the_cli_is_one_line_exit_2(tmp_path):
    data = (open(f"{PRESET_DIR}/hexagon-htp.toml").read()
            .replace("bandwidth_gbps = 40.0", "bandwidth_gbps = -40.0"))
    cfg = tmp_path / "npu.toml"
    cfg.write_text(data)
    r = CliRunner().invoke(main, ["simulate", "whatever.onnx", "--npu", str(cfg)])
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [
        f"lowbit: error: {cfg}: field 'memory.dram.bandwidth_gbps' must be positive, got -40.0"]
    cfg.write_text("[accelerator\nname=")
    r = CliRunner().invoke(main, ["simulate", "whatever.onnx", "--npu", str(cfg)])
    assert r.exit_code == 2 and "not valid TOML" in r.output and "Traceback" not in r.output


def test_precision_falls_back_to_the_next_wider_rate():
    a = load_accelerator("neuromorphic")
    assert a.precision_key("w8a8") == "w8a8"
    assert a.precision_key("w16a8") == "w16a16"       # the LMU memory: 16-bit Ā, 8-bit input
    assert a.precision_key("a8") == "w8a8"            # activation x activation matmul
    assert load_accelerator("ethos-u55-128").precision_key("w16a16") is None


# -- arena planner -----------------------------------------------------------------------------------------------
def _layer(name, inputs, outputs, out_bytes, kind="elementwise", in_shapes=None, **kw):
    return Layer(name=name, op=kw.pop("op", "Add"), kind=kind, act_bits=8, out_bits=8, inputs=tuple(inputs),
                 outputs=tuple(outputs), ofm_bytes=out_bytes, elements=out_bytes,
                 input_shapes=tuple(in_shapes or [(1,)] * len(inputs)), **kw)


def test_chain_peak_is_two_neighbours():
    """x(100) -> a(300) -> b(200) -> c(50): at most two tensors live at once; the optimum is 500 (a + b)."""
    layers = [_layer("A", ["x"], ["a"], 300, in_shapes=[(100,)]), _layer("B", ["a"], ["b"], 200, in_shapes=[(300,)]),
              _layer("C", ["b"], ["c"], 50, in_shapes=[(200,)])]
    plan = plan_arena(lifetimes(layers, ["x"], ["c"]))
    assert plan.peak == 500 and plan.lower_bound == 500
    assert plan.peak >= max(100 + 300, 300 + 200, 200 + 50)   # never below one op's working set


def test_residual_keeps_the_skip_alive():
    """x(64) -> conv a(64) -> conv b(64) -> add(x, b) -> y(64): x lives through the block; optimum 192."""
    layers = [_layer("A", ["x"], ["a"], 64, in_shapes=[(64,)]), _layer("B", ["a"], ["b"], 64, in_shapes=[(64,)]),
              _layer("Add", ["x", "b"], ["y"], 64, in_shapes=[(64,), (64,)])]
    plan = plan_arena(lifetimes(layers, ["x"], ["y"]))
    assert plan.peak == 192 == plan.lower_bound
    offsets = {b.name: b.offset for b in plan.buffers}
    assert offsets["a"] != offsets["x"] and offsets["b"] != offsets["x"]


def test_views_alias_their_input():
    """A Reshape output shares its input's buffer, so x stays live until the reshape's consumer ends."""
    layers = [_layer("A", ["x"], ["a"], 100, in_shapes=[(100,)]),
              _layer("R", ["a"], ["r"], 100, kind="view", op="Reshape", in_shapes=[(100,)]),
              _layer("B", ["r"], ["b"], 10, in_shapes=[(100,)])]
    buffers = lifetimes(layers, ["x"], ["b"])
    by_name = {b.name: b for b in buffers}
    assert "r" not in by_name and by_name["a"].aliases == ["r"] and by_name["a"].last == 2
    plan = plan_arena(buffers)
    assert plan.peak == 200 and plan.residency["r"] == plan.residency["a"] == "sram"


def test_greedy_by_size_within_bound_on_interleaved_lifetimes():
    """Four buffers whose hand-computed optimum is 6: A[0,1]=4, B[1,2]=2, C[2,3]=4, D[0,3]=... (see asserts)."""
    bufs = [Buffer("A", 4, 0, 1), Buffer("B", 2, 1, 2), Buffer("C", 4, 2, 3), Buffer("D", 2, 0, 3)]
    plan = plan_arena(bufs)
    # live: t0 A+D=6, t1 A+B+D=8, t2 B+C+D=8, t3 C+D=6 -> optimum 8 (A and C can share one slot)
    assert plan.lower_bound == 8 and plan.peak == 8
    assert [b.offset for b in bufs if b.name in "AC"] == [bufs[0].offset, bufs[0].offset]


def test_capacity_spills_what_does_not_fit():
    bufs = [Buffer("big", 1000, 0, 2), Buffer("a", 300, 0, 1), Buffer("b", 300, 1, 2)]
    plan = plan_arena(bufs, capacity=700)
    assert plan.residency == {"big": "dram", "a": "sram", "b": "sram"} and plan.spilled_bytes == 1000
    assert plan.peak == 600


def test_planner_never_overlaps_live_buffers_on_a_random_graph():
    rng = np.random.default_rng(0)
    bufs = []
    for i in range(300):
        s = int(rng.integers(0, 200))
        bufs.append(Buffer(f"t{i}", int(rng.integers(1, 5000)), s, s + int(rng.integers(0, 20))))
    plan = plan_arena(bufs)
    for i, a in enumerate(bufs):
        for b in bufs[i + 1:]:
            if a.first <= b.last and b.first <= a.last:
                assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset
    assert plan.peak >= plan.lower_bound == live_bytes(bufs, 220).max()


# -- cost model --------------------------------------------------------------------------------------------------
def test_tiled_array_pads_ragged_gemms():
    """hexagon-htp: 32x32x32 blocks at 8192 MACs/cycle = 4 cycles a block. M=33, N=32, K=32 needs 2 blocks."""
    a = load_accelerator("hexagon-htp")
    l = Layer("fc", "FullyConnected", "fc", 8, 8, 8, gemm=GemmShape(33, 32, 32), macs=33 * 32 * 32)
    c = tiled_compute(l, a)
    assert c.cycles == 8 and c.utilisation == pytest.approx(33 / 64)
    l16 = Layer("fc", "FullyConnected", "fc", 16, 16, 8, gemm=GemmShape(32, 32, 32), macs=32 ** 3)
    assert tiled_compute(l16, a).cycles == 8      # w8a16 runs at half rate


def _fc(name, inp, out, macs=4096, weight_bytes=4096, op="FullyConnected", **kw):
    return Layer(name, op, "fc", 8, 8, 8, input_shapes=((1, 64),), output_shape=(1, 64),
                 gemm=GemmShape(1, 64, 64), macs=macs, elements=64, ifm_bytes=64, ofm_bytes=64,
                 weight_bytes=weight_bytes, inputs=(inp,), outputs=(out,), **kw)


def test_memory_bound_layer_and_energy_formula():
    """One FC on hexagon-htp: 4096 weight bytes from LPDDR at 40 GB/s / 1.4 GHz + 300 cycles latency."""
    a = load_accelerator("hexagon-htp")
    r = simulate_layers([_fc("fc", "x", "y")], a, ["x"], ["y"])
    l = r.layers[0]
    dram = 4096 / (40e9 / 1.4e9) + 300
    assert l.bound == "dram" and l.memory_cycles["dram"] == pytest.approx(dram)
    assert l.cycles == pytest.approx(dram + a.array.overhead_cycles)
    expected = 4096 * 0.08 + (64 + 64) * 0.3 + 4096 * 40.0
    assert l.energy_pj == pytest.approx(expected)
    assert r.totals["latency_ms"] == pytest.approx(l.cycles / 1.4e9 * 1e3)


def test_double_buffering_hides_weights_behind_the_previous_op():
    a = load_accelerator("hexagon-htp")
    # a long vector op first, then an FC whose weight fetch overlaps it
    first = Layer("soft", "Softmax", "softmax", 8, 8, input_shapes=((1, 100000),), output_shape=(1, 100000),
                  elements=100000, ifm_bytes=100000, ofm_bytes=100000, inputs=("x",), outputs=("s",))
    fc = _fc("fc", "s", "y")
    r = simulate_layers([first, fc], a, ["x"], ["y"])
    assert r.layers[1].hidden_dma_cycles > 0
    assert r.layers[1].memory_cycles["dram"] < 4096 / (40e9 / 1.4e9) + 300


def test_unsupported_op_falls_back_with_reason_and_transfers():
    a = load_accelerator("hexagon-htp")
    scan = Layer("scan", "SelectiveScan", "recurrent", 8, 8, input_shapes=((1, 64),), output_shape=(1, 64),
                 macs=10000, elements=64, ifm_bytes=64, ofm_bytes=64, inputs=("h",), outputs=("s",), steps=16)
    r = simulate_layers([_fc("fc1", "x", "h"), scan, _fc("fc2", "s", "y")], a, ["x"], ["y"])
    cpu = r.layers[1]
    assert cpu.unit == "cpu" and cpu.reason == "SelectiveScan is not in ops.npu"
    hand_off = (64 / 20e9 + 50e-6) * 1.4e9          # fc1's 64-byte output to the CPU
    assert cpu.transfer_cycles == pytest.approx(hand_off)
    assert r.layers[2].transfer_cycles == pytest.approx(hand_off)   # and its output back to the NPU
    own = (10000 / 50e9 + 64 / 8e9 + 5e-6) * 1.4e9
    assert cpu.cycles == pytest.approx(own + hand_off)
    assert r.totals["npu_ops"] == 2 and r.totals["cpu_ops"] == 1


def test_precision_the_array_lacks_goes_to_the_cpu():
    a = load_accelerator("ethos-u55-128")
    l = _fc("fc", "x", "y")
    l16 = Layer(**{**l.__dict__, "act_bits": 16, "weight_bits": 16})
    r = simulate_layers([l16], a, ["x"], ["y"])
    assert r.layers[0].unit == "cpu" and "precision w16a16 is not in array.macs_per_cycle" in r.layers[0].reason


# -- whole models --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mobilenet():
    import lowbit
    from lowbit.tools import zoo
    return lowbit.compile(str(zoo.path("mobilenet_digits")), str(zoo.path("mobilenet_digits", "calib")))


def test_mobilenet_on_every_preset(mobilenet):
    for name in presets():
        r = simulate(mobilenet, load_accelerator(name))
        t = r.totals
        assert t["macs"] == 1383680 and t["cycles"] > 0 and t["energy_uj"] > 0
        assert t["peak_sram_bytes"] >= t["arena_lower_bound_bytes"] > 0
        conv_cycles = [l.compute_cycles for l in r.layers if l.kind in ("conv", "fc") and l.unit == "npu"]
        peak = max(r.accelerator.array.macs_per_cycle.values())
        assert all(c >= m / peak for c, m in zip(conv_cycles, [l.macs for l in r.layers
                                                               if l.kind in ("conv", "fc") and l.unit == "npu"]))
        json.dumps(r.to_dict())   # serialisable


def test_spiking_layers_are_priced_by_measured_accumulates():
    import lowbit
    from lowbit.tools import zoo
    from lowbit.tools.files import load_npz
    name = "spiking_lmuformer_seqdigits"
    art = lowbit.compile(str(zoo.path(name)), str(zoo.path(name, "calib")))
    calib = load_npz(str(zoo.path(name, "calib")))
    samples = [{k: v[i:i + 1] for k, v in calib.items() if k in [x.name for x in art.graph.inputs]} for i in range(3)]
    a = load_accelerator("neuromorphic")
    measured = simulate(art, a, samples=samples)
    dense = simulate(art, a)
    spikes = [l for l in measured.layers if l.op in ("SpikeConv", "SpikeFullyConnected")]
    assert spikes and all(0 < l.acs < l.macs for l in spikes)        # sparse: fewer accumulates than MACs
    for l in spikes:
        assert l.compute_cycles == math.ceil(l.acs / a.array.acs_per_cycle)
        assert 0 < l.firing_rate < 1
    assert measured.activity_measured and not dense.activity_measured and "100 % firing" in dense.notes[0]
    assert measured.totals["energy_uj"] < dense.totals["energy_uj"]
    # a dense NPU does every MAC whatever the spikes
    u = simulate(art, load_accelerator("hexagon-htp"), samples=samples)
    assert all(l.compute_cycles >= l.macs / 8192 for l in u.layers if l.op == "SpikeFullyConnected")


def test_trace_and_roofline(mobilenet):
    r = simulate(mobilenet, load_accelerator("hexagon-htp"))
    t = trace(r)
    xs = [e for e in t["traceEvents"] if e["ph"] == "X" and e["cat"] != "dma"]
    assert len(xs) == sum(1 for l in r.layers if l.unit != "-" and l.cycles > 0)
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in xs)
    ends = max(e["ts"] + e["dur"] for e in xs)
    assert ends == pytest.approx(r.totals["latency_ms"] * 1e3)
    pytest.importorskip("matplotlib")
    assert roofline_png(r)[:8] == b"\x89PNG\r\n\x1a\n"


# -- CLI -----------------------------------------------------------------------------------------------------------
def test_cli_simulate_artifact_with_outputs(tmp_path, mobilenet):
    art = tmp_path / "m.lowbit.onnx"
    mobilenet.save(str(art))
    out = {k: tmp_path / f"o.{k}" for k in ("json", "trace", "png")}
    r = CliRunner().invoke(main, ["simulate", str(art), "--npu", "hexagon-htp", "--json", str(out["json"]),
                                  "--trace", str(out["trace"]), "--plot", str(out["png"])])
    assert r.exit_code == 0, r.output
    assert "latency" in r.output and "NPU placement" in r.output
    d = json.loads(out["json"].read_text())
    assert d["accelerator"] == "hexagon-htp" and len(d["layers"]) == len(mobilenet.graph.nodes)
    assert json.loads(out["trace"].read_text())["traceEvents"]
    r = CliRunner().invoke(main, ["simulate", str(art), "--npu", "hexagon-htp", "--precision", "w4a8"])
    assert r.exit_code == 2 and "already compiled" in r.output


def test_cli_sweep_presets_by_precisions(tmp_path):
    from lowbit.tools import zoo
    r = CliRunner().invoke(main, ["simulate", str(zoo.path("mobilenet_digits")), "--calib",
                                  str(zoo.path("mobilenet_digits", "calib")), "--npu", "hexagon-htp,neuromorphic",
                                  "--precision", "w8a8,w4a16", "--json", str(tmp_path / "s.json")])
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [(x["preset"], x["precision"]) for x in rows] == [
        ("hexagon-htp", "w8a8"), ("neuromorphic", "w8a8"), ("hexagon-htp", "w4a16"), ("neuromorphic", "w4a16")]
    assert "fastest:" in r.output


def test_cli_float_model_needs_calib():
    from lowbit.tools import zoo
    r = CliRunner().invoke(main, ["simulate", str(zoo.path("mobilenet_digits")), "--npu", "hexagon-htp"])
    assert r.exit_code == 2 and "pass --calib" in r.output


def test_cli_inputs_missing_a_graph_input_is_one_line(tmp_path, mobilenet):
    art = tmp_path / "m.lowbit.onnx"
    mobilenet.save(str(art))
    np.savez(tmp_path / "s.npz", wrong=np.zeros((2, 1, 16, 16), np.float32))
    r = CliRunner().invoke(main, ["simulate", str(art), "--npu", "neuromorphic", "--inputs", str(tmp_path / "s.npz")])
    assert r.exit_code == 2
    assert r.output.strip() == (f"lowbit: error: {tmp_path / 's.npz'} has no array for graph input 'image' "
                                f"(it holds wrong)")


def test_python_api_simulate(mobilenet):
    import lowbit
    r = lowbit.simulate(mobilenet, npu="systolic-32x32-ws")
    assert r.accelerator.name == "systolic-32x32-ws" and "latency" in r.table()
    with pytest.raises(ConfigError):
        lowbit.simulate(mobilenet, npu="nope")


def _npu_cycles_over_vela(name: str, accel: str):
    """(report, lowbit's NPU cycles / Vela's cycles_total) for the converter-made tests/data/tflite/NAME.tflite,
    which tests/data/vela/ holds Vela's report of."""
    import csv
    import glob
    import os
    import lowbit
    here = os.path.dirname(__file__)
    r = lowbit.simulate(os.path.join(here, "data", "tflite", f"{name}.tflite"), npu=accel)
    summary = glob.glob(os.path.join(here, "data", "vela", accel, f"{name}_summary_*.csv"))[0]
    with open(summary, newline="") as f:
        vela = float(next(csv.DictReader(f))["cycles_total"])
    return r, sum(l.cycles - l.transfer_cycles for l in r.layers if l.unit == "npu") / vela


@pytest.mark.parametrize("accel", ["ethos-u55-128", "ethos-u65-256"])
def test_converter_made_transformer_block_total_no_further_than_0_55x_of_vela(accel):
    """Like for like on the converter-made LayerNorm-as-ops transformer block: 0.70x (U55) and 0.61x (U65) of
    Vela's cycles_total since the softmax is priced as Vela's 28 operations with its per-row tensors' layout
    (0.47x and 0.52x before); what is still missing is in docs/simulator.md."""
    _, ratio = _npu_cycles_over_vela("transformer_block_int8", accel)
    assert 0.55 <= ratio <= 1.25


@pytest.mark.parametrize("accel", ["ethos-u55-128", "ethos-u65-256"])
def test_converter_made_tflite_total_within_25_percent_of_vela(accel):
    """Like for like: lowbit simulates the very .tflite Vela compiled (tests/data/vela/, converter-made small
    CNN); its NPU cycles are within +-25 % of Vela's cycles_total (measured 0.80x on U55, 0.96x on U65)."""
    r, ratio = _npu_cycles_over_vela("small_cnn_int8", accel)
    assert r.totals["cpu_ops"] == 0 and 0.75 <= ratio <= 1.25


def _softmax_vela_shapes():
    import os
    with open(os.path.join(os.path.dirname(__file__), "data", "vela", "softmax_shapes.json"), encoding="utf-8") as f:
        return json.load(f)


@pytest.mark.parametrize("accel, low", [("ethos-u65-256", 0.75), ("ethos-u55-128", 0.5)])
def test_ethosu_softmax_cycles_follow_vela_across_shapes(accel, low):
    """lowbit's Ethos-U SOFTMAX (Vela's 28 operations) against Vela 5.2's cycles on ten shapes of 8 to 64 rows
    (tests/data/vela/regenerate_softmax.py). On U55 the row-to-full broadcast Add, which Vela costs at 8 cycles
    an element there (1.1 on U65), is priced like any 32-bit Add: the gap below 1."""
    from lowbit.targets.npusim import ethosu
    from lowbit.targets.npusim.ethosu_ops import npu_ops
    a = load_accelerator(accel)
    arch, bw = ethosu.arch_of(a), ethosu._bandwidth(a)
    ratios = []
    for key, rows in _softmax_vela_shapes().items():
        name, shape = key.split("|")
        if name != accel:
            continue
        shape = tuple(json.loads(shape))
        layer = Layer(name="s", op="Softmax", kind="softmax", act_bits=8, out_bits=8, input_shapes=(shape,),
                      output_shape=shape)
        ops = npu_ops(layer)
        assert len(ops) == sum(1 for op, _ in rows if op != "LUT")  # Vela's operations, one for one
        ours = sum(ethosu.op_cycles(op, arch, bw, arch.arena_memory, arch.arena_memory) for op in ops)
        ratios.append(ours / sum(c for _, c in rows))
    assert len(ratios) == 10 and all(low <= r <= 1.25 for r in ratios), ratios
