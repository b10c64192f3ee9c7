"""QuantSpec arithmetic and precision plans (strings and TOML files)."""
import numpy as np
import pytest

from lowbit.errors import InputError
from lowbit.graph.ir import Graph
from lowbit.quant.plan import make_plan, parse_precision
from lowbit.quant.spec import QuantSpec, activation_spec, weight_spec


def test_quantize_rounds_half_away_from_zero_and_saturates():
    s = QuantSpec(8, 0.5, 3)
    x = np.array([0.25, -0.25, 0.75, -0.75, 100.0, -100.0])
    # x / 0.5 = 0.5, -0.5, 1.5, -1.5 -> 1, -1, 2, -2 (away from zero), then + 3, then clamp
    assert s.quantize(x).tolist() == [4, 2, 5, 1, 127, -128]
    np.testing.assert_allclose(s.dequantize(s.quantize(x[:4])), [0.5, -0.5, 1.0, -1.0])


def test_weight_spec_is_symmetric_narrow_per_channel_and_int4_range():
    w = np.array([[1.0, -2.0], [0.5, 0.25]], np.float32)
    s8 = weight_spec(w, 8, axis=0)
    assert s8.per_channel and s8.qmin == -127 and s8.qmax == 127
    assert s8.quantize(w).tolist() == [[64, -127], [127, 64]]
    s4 = weight_spec(w, 4, axis=0, mse_clip=False)
    assert (s4.qmin, s4.qmax) == (-7, 7)
    assert s4.quantize(w).tolist() == [[3, -7], [7, 3]]  # 3.4999998 after the float32 scale, not a tie
    assert np.all(s4.scale.astype(np.float32).astype(np.float64) == s4.scale)  # float32-exact scales


def test_int4_weights_clip_each_channel_at_its_mse_optimum():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 256))
    w[:, 0] = 12.0  # one outlier per channel stretches a max-|w| step over the whole channel
    def err(spec):
        return float(np.sum((spec.dequantize(spec.quantize(w)) - w) ** 2))
    clipped, plain = weight_spec(w, 4, axis=0, mse_clip=True), weight_spec(w, 4, axis=0)
    assert err(clipped) < 0.8 * err(plain)
    assert np.all(clipped.scale <= plain.scale)


def test_activation_specs():
    a8 = activation_spec(-1.0, 3.0, 8)
    assert a8.bits == 8 and a8.qmin == -128 and -128 <= int(a8.zero_point) <= 127
    assert a8.quantize(np.array([0.0]))[0] == a8.zero_point  # zero is exact
    a16 = activation_spec(-1.0, 3.0, 16)
    assert int(a16.zero_point) == 0 and abs(float(a16.scale) - 3.0 / 32767) < 1e-9
    with pytest.raises(ValueError):
        QuantSpec(8, 0.0, 0)


@pytest.mark.parametrize("text,bits", [("w8a8", (8, 8)), ("W4A16", (4, 16)), ("w16a16", (16, 16))])
def test_parse_precision(text, bits):
    p = parse_precision(text)
    assert (p.weight_bits, p.act_bits) == bits


@pytest.mark.parametrize("bad", ["w8", "int8", "w3a8", "w8a4", ""])
def test_unknown_precision_is_a_clear_error(bad):
    with pytest.raises(InputError, match="unknown precision"):
        parse_precision(bad)


def _graph():
    g = Graph("g")
    x = g.new_value("x", (1, 4), np.float32)
    g.inputs.append(x)
    prev = x
    for i, op in enumerate(["MatMul", "Relu", "MatMul", "Softmax"]):
        out = g.new_value(f"v{i}")
        ins = [prev, g.add_const(f"w{i}", np.eye(4, dtype=np.float32))] if op == "MatMul" else [prev]
        g.add_node(op, ins, [out], name=f"blocks.{i}.{op.lower()}")
        prev = out
    g.outputs.append(prev)
    return g


def test_plan_file_overrides_by_position_name_and_op(tmp_path):
    f = tmp_path / "plan.toml"
    f.write_text('[default]\nprecision = "w4a8"\nobserver = "percentile"\nweight_clip = "mse"\n'
                 '[[override]]\nposition = "first"\nprecision = "w8a16"\n'
                 '[[override]]\nname = "blocks.2.*"\nprecision = "w8a8"\n'
                 '[[override]]\nop = "Softmax"\nprecision = "w8a16"\nobserver = "minmax"\n')
    res = make_plan("w8a8", str(f)).resolve(_graph())
    assert res["blocks.0.matmul"].name == "w8a16" and res["blocks.0.matmul"].observer == "percentile"
    assert res["blocks.0.matmul"].weight_clip == "mse"
    assert res["blocks.1.relu"].name == "w4a8"
    assert res["blocks.2.matmul"].name == "w8a8"
    assert res["blocks.3.softmax"].name == "w8a16" and res["blocks.3.softmax"].observer == "minmax"


@pytest.mark.parametrize("text,match", [
    ('[[override]]\nname = "nope*"\nprecision = "w8a16"\n', "matches no node"),
    ('[[override]]\nprecision = "w8a16"\n', "selects nothing"),
    ('[[override]]\nop = "Relu"\nprecision = "w9a8"\n', "unknown precision"),
    ('[default]\nobserver = "magic"\n', "unknown observer"),
    ('[defaults]\n', "unknown section"),
    ('[[override]]\nop = "Relu"\nbits = 4\n', "unknown setting"),
    ('not = [toml', "not valid TOML"),
])
def test_bad_plan_files(tmp_path, text, match):
    f = tmp_path / "plan.toml"
    f.write_text(text)
    with pytest.raises(InputError, match=match):
        make_plan("w8a8", str(f)).resolve(_graph())


def test_missing_plan_file(tmp_path):
    with pytest.raises(InputError, match="no such plan file"):
        make_plan("w8a8", str(tmp_path / "none.toml"))
