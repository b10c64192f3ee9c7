"""The Ethos-U array model (targets/npusim/ethosu.py) against Arm Vela 5.2.

Fast tests need no Vela: hand-derived block and cycle counts (the figures Vela's ``--enable-debug-db``
reports for the same shapes are quoted), traffic counts, parameter validation, and the issue #7 acceptance
on the committed Vela reports (tests/data/vela_layers/, regenerate.py there). The slow test runs Vela.
"""
import dataclasses
import shutil
import types

import pytest

from lowbit.errors import ConfigError
from lowbit.targets.npusim import ethosu as E
from lowbit.targets.npusim.workload import ConvShape, GemmShape, Layer
from lowbit.tools.bench import sim_vs_vela as bench

U55, U65 = "ethos-u55-128", "ethos-u65-256"
CNNS = [m for m in bench.MODELS if m != "vit_digits"]


def _preset_array(name: str) -> dict:
    from lowbit.targets.npusim.config import load_accelerator
    return dict(load_accelerator(name).array.params)


def stand_in(name: str, preset_keys: bool = True, **array):
    """An accelerator with the attributes the model reads (Vela's U55 / U65 default system configs)."""
    sram_bpc, dram_bpc, sram_lat, dram_lat = (8.0, 1.0, 32, 64) if name == U55 else (16.0, 12.0, 32, 500)
    mem = lambda bpc, lat: types.SimpleNamespace(bytes_per_cycle=bpc, latency_cycles=lat)
    return types.SimpleNamespace(
        array=types.SimpleNamespace(params={**(_preset_array(name) if preset_keys else {}), **array},
                                    overhead_cycles=0.0),
        memory=types.SimpleNamespace(sram=mem(sram_bpc, sram_lat), dram=mem(dram_bpc, dram_lat), arena="sram",
                                     weights="dram", sram_bytes=8 << 20),
        source=f"{name}.toml")


def conv(ih, iw, ic, oc, k=1, s=1, groups=1, name="c"):
    oh, ow = (ih - k) // s + 1, (iw - k) // s + 1
    kind = "depthwise" if groups == ic > 1 else "conv"
    return Layer(name, "Conv", kind, 8, 8, 8, ((1, ic, ih, iw),), (1, oc, oh, ow),
                 conv=ConvShape(1, ih, iw, ic, oh, ow, oc, k, k, s, s, groups=groups),
                 macs=oh * ow * oc * k * k * ic // groups, inputs=("x",), outputs=(name,))


def fc(rows, k, n):
    return Layer("fc", "FullyConnected", "fc", 8, 8, 8, ((1, rows, k),), (1, rows, n), gemm=GemmShape(rows, n, k),
                 macs=rows * n * k, inputs=("x",), outputs=("y",))


def only_op(layer):
    ops = E.npu_ops(layer)
    assert len(ops) == 1
    return ops[0]


# -- OFM blocks: what Vela 5.2's debug database lists for the same operations (outside cascades, where Vela
# searches blocks for a stripe: the model matches 203/203 such U65 and 231/232 U55 operations of the
# committed models) -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("accel, layer, ofm_block, ifm_block", [
    (U55, conv(56, 56, 64, 256), (8, 8, 32), (8, 8, 32)),                       # resnet50 1x1
    (U55, conv(58, 58, 64, 64, k=3), (8, 8, 16), (10, 10, 32)),                 # resnet50 3x3
    (U55, conv(56, 56, 256, 512, s=2), (1, 28, 64), (1, 56, 32)),               # resnet50 1x1 stride 2
    (U55, conv(57, 57, 128, 128, k=3, s=2), (4, 8, 32), (9, 18, 32)),           # resnet50 3x3 stride 2
    (U55, conv(28, 28, 128, 512), (3, 14, 48), (3, 14, 32)),
    (U55, conv(18, 18, 16, 16, k=3, groups=16), (8, 10, 16), (10, 12, 16)),     # mobilenet_digits depthwise
    (U55, fc(16, 64, 192), (4, 4, 128), (4, 4, 32)),                            # vit_digits qkv, 16 rows as 4x4
    (U55, fc(1, 128, 10), (1, 2, 16), (1, 2, 32)),
    (U65, conv(16, 16, 16, 64), (4, 16, 64), (4, 16, 16)),                      # mobilenet_digits 1x1
    (U65, conv(56, 56, 64, 256), (8, 8, 64), (8, 8, 32)),
    (U65, conv(18, 18, 16, 16, k=3, groups=16), (12, 16, 16), (14, 18, 16)),
])
def test_block_search_picks_velas_block(accel, layer, ofm_block, ifm_block):
    blk = E.find_block(only_op(layer), E.arch_of(stand_in(accel)))
    assert (blk.ofm, blk.ifm) == (ofm_block, ifm_block)


def test_part_kernel_traversal_for_shallow_ifm():
    """resnet50's 7x7 stride-2 conv on 3 channels walks the kernel first (Vela: PartKernel, block 8x8x16)."""
    blk = E.find_block(only_op(conv(230, 230, 3, 64, k=7, s=2)), E.arch_of(stand_in(U55)))
    assert blk.part_kernel and blk.ofm == (8, 8, 16)


# -- cycles derived by hand ------------------------------------------------------------------------------------
def test_1x1_conv_cycles_u55():
    """ethos-u55-128, 1x1 conv 56x56x64 -> 56x56x256, block 8x8x32 over 1x2x8 micro-blocks:
    32 micro-blocks in X·Y, 4 in depth: MAC = max(32, 4·32) · 1 · 4 = 512 per IFM depth block, x ceil(64/32)
    = 1024; output = 0.5 cycles/element · 8·8·32 = 1024; blocks = (56·28·32) / (8·4·4) = 392; command issue
    is below both, so 1024 · 392 + 1024 = 402432 (Vela's debug database: mac_cycles 402432; per-layer Op
    Cycles 403008). compute() adds the flash read latency (64) before the first weight block."""
    accel = stand_in(U55)
    op = only_op(conv(56, 56, 64, 256))
    arch = E.arch_of(accel)
    assert E.mac_cycles_per_block(op, arch, E.find_block(op, arch)) == 1024
    assert E.op_cycles(op, arch, E._bandwidth(accel)) == 402432
    assert E.compute(conv(56, 56, 64, 256), accel).cycles == 402432 + 64


def test_3x3_conv_cycles_u55():
    """3x3 conv 56x56x64 -> 56x56x64 (padded input 58x58), block 8x8x16: MAC = max(32, 4·32) · 9 · 2 = 2304
    per IFM depth block, x 2 = 4608; blocks = (56·28·8) / (8·4·2) = 196; the output side (0.5 · 1024 = 512)
    is below the command-issue bound (one 10x10x32 IFM block and one 8x8x16 OFM block through SRAM, 32-cycle
    latencies, + MAC + output) / 4 = 1428, so 4608 · 196 + 1428 = 904596 (Vela: mac_cycles 903680 =
    4608 · 196 + 512, command-issue 1348, Op Cycles 905108)."""
    accel = stand_in(U55)
    op = only_op(conv(58, 58, 64, 64, k=3))
    arch = E.arch_of(accel)
    blk = E.find_block(op, arch)
    assert E.mac_cycles_per_block(op, arch, blk) == 4608
    assert E._block_transfer_cycles(op, arch, blk, E._bandwidth(accel), "sram", "sram") == 592
    assert E.op_cycles(op, arch, E._bandwidth(accel)) == 4608 * 196 + (592 + 4608 + 512) // 4


def test_depthwise_cycles_u55():
    """mobilenet_digits' 3x3 depthwise on 16x16x16, block 8x10x16: 8·5 = 40 micro-blocks in X·Y, 2 in depth:
    MAC = max(32, 4·40) · ceil(9/4) · 2 = 960; output 0.5 · 8·10·16 = 640;
    blocks = (16·8·2) / (8·5·2) = 3.2; 960 · 3.2 + 640 = 3712 (Vela: mac_cycles 3712)."""
    accel = stand_in(U55)
    assert E.op_cycles(only_op(conv(18, 18, 16, 16, k=3, groups=16)), E.arch_of(accel), E._bandwidth(accel)) == 3712


def test_int16_activations_halve_the_conv_rate():
    """16-bit IFMs: 16-deep IFM blocks (twice the depth passes) and 40-bit accumulators."""
    accel = stand_in(U55)
    layer = conv(56, 56, 64, 256)
    wide = dataclasses.replace(layer, act_bits=16)
    ratio = E.compute(wide, accel).cycles / E.compute(layer, accel).cycles
    assert E.find_block(only_op(wide), E.arch_of(accel)).acc40
    assert 1.9 < ratio < 2.1


def test_stride_over_3_runs_one_operation_per_output_pixel():
    """vit_digits' 4x4 stride-4 patch embedding: Vela runs 16 CONV_2D operations, one per output pixel."""
    layer = conv(16, 16, 1, 64, k=4, s=4)
    ops = E.npu_ops(layer)
    assert len(ops) == 16 and ops[0].ofm == (1, 1, 64) and ops[0].ifm == (4, 4, 1)


@pytest.mark.parametrize("kind, op", [("norm", "LayerNorm"), ("recurrent", "LMUMemory"), ("copy", "Transpose"),
                                      ("convert", "Quantize"), ("neuron", "LIF"), ("view", "Reshape")])
def test_kinds_the_npu_does_not_run_return_none(kind, op):
    layer = Layer("x", op, kind, 8, 8, input_shapes=((1, 16, 64),), output_shape=(1, 16, 64), elements=1024,
                  inputs=("a",), outputs=("b",))
    assert E.compute(layer, stand_in(U55)) is None and E.traffic(layer, stand_in(U55), {}) is None


def test_spike_input_layers_are_not_priced():
    layer = dataclasses.replace(conv(8, 8, 16, 16), op="SpikeConv", spike_input=True)
    assert E.compute(layer, stand_in(U55)) is None


# -- traffic ----------------------------------------------------------------------------------------------------
def test_1x1_conv_traffic_u55():
    """IFM: 8x8 IFM block x 64 channels per OFM block, 7·7·8 = 392 blocks -> 1605632 bytes; OFM 802816 once
    (Vela: SramFeatureMap_read 1605632, write 802816). Weights: encoded 16384 · 0.95 -> 15568 bytes, DMA'd from
    flash into SRAM once and re-read per OFM block in X·Y (49); bias/scale 10 bytes · 256 channels re-read
    49 times from flash = 125440 bytes (Vela: OffChipFlashScales_read 125440)."""
    accel = stand_in(U55)
    t = E.traffic(conv(56, 56, 64, 256), accel, {})
    assert t.detail["ifm_read"] == 1605632 and t.detail["ofm_write"] == 802816
    assert t.detail["staged"] == 1 and t.weight_bytes == 15568 + 2560
    assert t.bytes["dram"] == 15568 + 125440
    assert t.bytes["sram"] == 1605632 + 802816 + 15568 * (1 + 49)
    assert t.cycles["dram"] == t.bytes["dram"] / 1.0 and t.cycles["sram"] == t.bytes["sram"] / 8.0


def test_weights_read_in_place_when_buffering_does_not_pay():
    """A 1x1 conv on a 4x4 OFM reads its weights once: Vela leaves them in flash (no DMA ahead)."""
    t = E.traffic(conv(4, 4, 96, 32), stand_in(U55), {})
    assert t.detail["staged"] == 0 and t.weight_bytes == 0
    assert t.bytes["dram"] == E._round_up(int(96 * 32 * 0.95) + 1, 16) + 320


def test_residency_moves_feature_map_traffic():
    layer = conv(56, 56, 64, 256)
    t = E.traffic(layer, stand_in(U65), {"x": "dram", "c": "sram", "weights": "dram"})
    assert t.bytes["dram"] > t.detail["ifm_read"] and t.bytes["sram"] >= t.detail["ofm_write"]


# -- parameters -------------------------------------------------------------------------------------------------
def test_accelerator_config_supplies_the_constants():
    arch = E.arch_of(stand_in(U65, preset_keys=False, accelerator_config="ethos-u65-512"))
    assert arch.macs_per_cycle == 512 and arch.output_cycles[7] == 0.125 and arch.cores == 2
    explicit = E.arch_of(stand_in(U65, preset_keys=False, accelerator_config="ethos-u65-512", cores=1))
    assert explicit.macs_per_cycle == 256


@pytest.mark.parametrize("key, value, field", [
    ("bogus", 1, "array.bogus"), ("output_cycles", [0.5, 0.5], "array.output_cycles"),
    ("accelerator_config", "ethos-u99", "array.accelerator_config"), ("cores", 0, "array.cores"),
    ("weight_staging", "flash", "array.weight_staging"), ("scratch_memory", "l2", "array.scratch_memory"),
])
def test_validate_names_the_bad_field(key, value, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        E.validate_ethosu(stand_in(U55, **{key: value}))


def test_presets_load_with_the_ethos_u_model():
    for name in (U55, U65):
        accel = bench.accelerator(name)
        E.validate_ethosu(accel)
        assert E.arch_of(accel).macs_per_cycle == accel.array.macs_per_cycle["w8a8"]


# -- acceptance on the committed Vela reports (issue #7) ----------------------------------------------------------
@pytest.fixture(scope="module")
def comparisons():
    return {(m, a): bench.compare_committed(m, a) for m in bench.MODELS for a in bench.ACCELERATORS}


@pytest.mark.parametrize("accel", bench.ACCELERATORS)
def test_80_percent_of_conv_dw_fc_layers_within_25_percent(comparisons, accel):
    matches = [m for (model, a), c in comparisons.items() if a == accel for m in c.matches]
    assert len(matches) > 200
    assert bench.pooled_fraction(matches) >= 0.8


@pytest.mark.parametrize("model", CNNS)
@pytest.mark.parametrize("accel", bench.ACCELERATORS)
def test_each_cnn(comparisons, model, accel):
    """Per CNN: conv/dw/FC layers within +-25 % (mobilenet_digits on U65 is at 75 %: Vela hides some small
    layers' weight-DMA latency under the previous op), network total within +-25 % without data-layout ops."""
    c = comparisons[(model, accel)]
    assert c.unmatched == 0
    assert c.fraction >= (0.75 if model == "mobilenet_digits" else 0.8)
    assert abs(c.compute_ratio - 1) <= 0.25


def test_vit_fully_connected_layers_and_total(comparisons):
    """vit_digits (LayerNorms as TFLite ops): 12 FC layers + the patch conv match Vela's rows (the GELU LUTs
    fused into their FCs, as Vela does). U55 misses the stride-4 patch embedding and the head FC. U65 misses the
    three q/k/v FCs: Vela costs them 5,126 NPU cycles when their input comes from an elementwise op (the
    LayerNorm's last ADD) and 3,179 when it came from a TRANSPOSE (before the exporter dropped that one);
    lowbit's FC model gives 2,548 either way (11/14)."""
    for accel in bench.ACCELERATORS:
        c = comparisons[("vit_digits", accel)]
        assert len(c.matches) == 14 and c.unmatched == 0
        assert c.fraction >= (11 / 14 if accel == "ethos-u65-256" else 0.8)
        assert abs(c.compute_ratio - 1) <= 0.25


def test_activation_fuses_into_its_only_producer():
    """A LUT after an FC whose output nothing else reads becomes part of the FC (one NPU operation whose
    output unit runs the LUT); a ReLU after a conv read twice stays a layer of its own."""
    f = dataclasses.replace(fc(16, 64, 64), name="f", outputs=("f",))
    lut = Layer("gelu", "Lut", "activation", 8, 8, inputs=("f",), outputs=("g",), output_shape=(16, 64))
    c = conv(8, 8, 16, 16, name="c")
    relu = Layer("relu", "Relu", "activation", 8, 8, inputs=("c",), outputs=("r",), output_shape=(1, 16, 8, 8))
    other = Layer("add", "Add", "elementwise", 8, 8, inputs=("c", "r"), outputs=("y",), output_shape=(1, 16, 8, 8))
    fused = E.fuse_activations([f, lut, c, relu, other])
    assert fused[0].extra["activation"] == "lut" and fused[1].kind == "view"
    assert fused[1].extra["fused_into"] == "f"
    assert fused[3].kind == "activation" and "activation" not in fused[2].extra
    assert {op.activation for op in E.npu_ops(fused[0])} == {"lut"}
    accel = stand_in(U55)
    assert E.compute(fused[0], accel).cycles >= E.compute(f, accel).cycles


def test_layers_json_round_trip():
    layers = [conv(8, 8, 16, 32), fc(4, 16, 8)]
    back, gin, gout = bench.layers_from_json(bench.layers_to_json(layers, ["x"], ["y"]))
    assert back == layers and gin == ["x"] and gout == ["y"]


def test_rows_named_after_fused_activation_or_concat_find_the_mac_layer():
    from lowbit.targets.vela_report import LayerEstimate
    a = conv(8, 8, 16, 32, name="a")
    b = dataclasses.replace(conv(8, 8, 16, 32, name="b"), macs=123)
    act = Layer("relu", "Lut", "activation", 8, 8, inputs=("a",), outputs=("a_act",))
    cat = Layer("cat", "Concat", "copy", 8, 8, inputs=("a_act", "b"), outputs=("cat",))
    row = lambda name, macs: LayerEstimate("Conv2D", "Conv2D", "NPU", 0, 100, 0, 100, 0, 0, 0, 0, macs, 0, name)
    matches, unmatched = bench.match_rows([a, act, b, cat], [row("cat_nhwc", 123), row("a_act", a.macs)])
    by = {m.layer.name: m for m in matches}
    assert unmatched == 0 and set(by) == {"a", "b"}
    assert [f.name for f in by["a"].fused] == ["relu"] and by["b"].fused == []


# -- with Vela ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(shutil.which("vela") is None, reason="Vela is not installed (pip install ethos-u-vela)")
def test_live_vela_mobilenet_digits():
    art = bench.int8_artifact("mobilenet_digits")
    for accel in bench.ACCELERATORS:
        c = bench.compare_live("mobilenet_digits", accel, art)
        assert c.unmatched == 0 and c.fraction >= 0.75 and abs(c.compute_ratio - 1) <= 0.25


def test_int4_weights_cost_as_int8_and_mean_ones_weights_as_one_bit():
    """Ethos-U weights are 8-bit: a layer with INT4 weights (exported as int8 tensors) moves as many weight
    bytes as its int8 twin; MEAN's all-ones depthwise weights encode to about one bit each."""
    arch = E.arch_of(stand_in(U55))
    c8 = conv(8, 8, 64, 64, k=3)
    c4 = dataclasses.replace(c8, weight_bits=4)
    assert E.encoded_weight_bytes(only_op(c4), arch) == E.encoded_weight_bytes(only_op(c8), arch)
    mean = Layer("m", "Mean", "reduce", 8, 8, input_shapes=((1, 64, 8, 8),), output_shape=(1, 64, 1, 1),
                 elements=64, inputs=("x",), outputs=("y",))
    dw = E.npu_ops(mean)[0]
    ones, _ = E.encoded_weight_bytes(dw, arch)
    assert dw.hw == "depthwise" and ones <= -(-(8 * 8 * 64 * 0.95 / 8) // 16) * 16


def test_squared_difference_is_velas_eight_operations():
    """Vela lowers int8 SQUARED_DIFFERENCE into two int32 casts, two scaling Muls, Sub, square, Add and the
    output rescale (tflite_graph_optimiser.convert_squared_difference)."""
    l = Layer("sd", "SquaredDifference", "elementwise", 8, 8, input_shapes=((1, 16, 32), (1, 16, 1)),
              output_shape=(1, 16, 32), elements=512, inputs=("x", "m"), outputs=("y",))
    ops = E.npu_ops(l)
    assert [op.hw for op in ops] == ["pool", "elementwise"] * 2 + ["elementwise"] * 4
    assert ops[0].ofm_bits == 32 and ops[-1].ofm_bits == 8 and ops[4].ifm2 == (1, 16, 1)
