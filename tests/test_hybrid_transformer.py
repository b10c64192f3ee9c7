"""Transformer layers and the VLM in integers: MaskedSoftmax against lowbit.int Softmax (itself bit-exact with
LiteRT), the lowered structure of vit_digits and autoneural_vqa (no float islands), task accuracy, streaming
decoding of the VLM bit-exact with the whole-sequence integer run on the eval data, compare's accuracy_fn hook,
the artifact round trip and the family plan files."""
import copy
from pathlib import Path

import numpy as np
import pytest

from lowbit.errors import InputError
from lowbit.quant.compile import compile_graph
from lowbit.quant.pinned import PinnedRunner, lower_pinned, pinned_specs
from lowbit.quant.plan import make_plan
from lowbit.quant.prepare_elementwise import prepare_softmax
from lowbit.quant.spec import QuantSpec
from lowbit.runtime.int_executor import run as run_int
from lowbit.runtime.kernels.int.masked_softmax import MaskedSoftmax
from lowbit.runtime.kernels.int.softmax import Softmax
from lowbit.tools import zoo
from lowbit.tools.api import load
from lowbit.tools.zoo import evaluation

VLM = "autoneural_vqa"
PLANS = Path(zoo.registry.__file__).parent / "plans"
SOFTMAX_OUT = {8: QuantSpec(8, 1 / 256, -128), 16: QuantSpec(16, 1 / 32768, 0)}


# -- MaskedSoftmax ------------------------------------------------------------------------------------------------
def _softmax_case(bits, seed, n=23):
    rng = np.random.default_rng(seed)
    scale = float(np.float32(rng.uniform(0.01, 0.2) if bits == 8 else rng.uniform(1e-4, 1e-3)))
    spec = QuantSpec(bits, scale, int(rng.integers(-20, 20)) if bits == 8 else 0)
    info = np.iinfo(spec.dtype)
    x = rng.integers(info.min, info.max + 1, (3, 2, n, n)).astype(spec.dtype)
    return x, prepare_softmax(spec, SOFTMAX_OUT[bits])


@pytest.mark.parametrize("bits,cutoff", [(8, 0), (16, 0), (16, 1)])
def test_masked_softmax_without_mask_is_softmax(bits, cutoff):
    for seed in range(4):
        x, attrs = _softmax_case(bits, seed)
        if cutoff:
            attrs["exp_cutoff"] = 1
        assert np.array_equal(MaskedSoftmax(x, np.zeros(x.shape[-2:], bool), **attrs), Softmax(x, **attrs))


@pytest.mark.parametrize("bits", [8, 16])
def test_causal_row_equals_the_shorter_row(bits):
    """Row r under a causal mask == Softmax of its first r + 1 entries; masked entries are exact zeros."""
    x, attrs = _softmax_case(bits, 10 + bits)
    n = x.shape[-1]
    causal = np.triu(np.ones((n, n), bool), 1)
    y = MaskedSoftmax(x, causal, **attrs)
    zero = SOFTMAX_OUT[bits].zero_point
    for r in range(n):
        assert np.array_equal(y[..., r, :r + 1], Softmax(x[..., r, :r + 1], **attrs))
        assert np.all(y[..., r, r + 1:] == zero)


@pytest.mark.parametrize("bits", [8, 16])
def test_fully_masked_rows_are_zero(bits):
    x, attrs = _softmax_case(bits, 3, n=5)
    mask = np.zeros(x.shape, bool)
    mask[0, 1, 2] = True
    y = MaskedSoftmax(x, mask, **attrs)
    assert np.all(y[0, 1, 2] == SOFTMAX_OUT[bits].zero_point)
    assert np.array_equal(y[1], Softmax(x[1], **attrs))


# -- the models -----------------------------------------------------------------------------------------------------
def _compile(name, precision="w8a8"):
    graph = load(str(zoo.path(name)), optimize=False)
    unbound = copy.deepcopy(graph)
    plan = make_plan(precision)
    art, low = compile_graph(graph, zoo.load_calib(name), plan)
    return unbound, graph, art, low, plan


def test_vit_lowers_to_integers_and_keeps_its_accuracy():
    unbound, graph, art, low, plan = _compile("vit_digits")
    assert low.float_islands == []
    hist = art.graph.op_histogram()
    assert hist["lowbit.int.LayerNorm"] == 7 and "LayerNormalization" not in hist
    run = PinnedRunner(unbound, pinned_specs(low), plan.resolve(graph), plan.default)
    acc = zoo.evaluate("vit_digits", run)
    assert acc >= zoo.manifest()["vit_digits"]["float_accuracy"] - 0.01


@pytest.fixture(scope="module")
def vlm():
    return _compile(VLM)


def test_vlm_lowers_to_integers(vlm):
    unbound, graph, art, low, plan = vlm
    assert low.float_islands == []
    hist = art.graph.op_histogram()
    assert hist["lowbit.int.RMSNorm"] == 9 and hist["lowbit.int.ShortConv"] == 2
    assert hist["lowbit.int.MaskedSoftmax"] == 1 and "Where" not in hist
    for n in art.graph.nodes:
        if n.op_type == "ShortConv":
            assert n.outputs[1].quant.bits == 16 and n.inputs[2].dtype == np.int16  # int16 state at w8a8
        if n.op_type == "MaskedSoftmax":
            # the scores keep their calibrated range: the -1e4 fill never stretches the scale
            assert float(n.inputs[0].quant.scale) < 0.1 and n.inputs[1].dtype == np.bool_


def test_vlm_artifact_round_trip(vlm, tmp_path):
    from lowbit.runtime.artifact import Artifact
    unbound, graph, art, low, plan = vlm
    path = str(tmp_path / "vlm.onnx")
    art.save(path)
    ev = zoo.load_eval(VLM)
    feeds = {"image": ev["image"][:1], "tokens": ev["tokens"][:1]}
    a, b = run_int(art.graph, feeds), Artifact.load(path).run(feeds)
    assert all(np.array_equal(a[k], b[k]) for k in a)


def _streaming_vs_whole(precision, n):
    unbound, graph, art, low, plan = _compile(VLM, precision)
    step_graph = load(str(zoo.path(VLM, "step")), optimize=False)
    specs, precs = pinned_specs(low), plan.resolve(graph)
    whole = PinnedRunner(unbound, specs, precs, plan.default)
    prefill = PinnedRunner(unbound, specs, precs, plan.default, integer_states=True)
    step = PinnedRunner(step_graph, specs, precs, plan.default, integer_states=True, reference=graph)
    ev = zoo.load_eval(VLM)
    image, question = ev["image"][:n], ev["tokens"][:n]
    tokens_whole = evaluation.greedy_answers(whole, image, question)
    tokens_stream = evaluation.greedy_answers_streaming(prefill, step, image, question)
    assert np.array_equal(tokens_whole, tokens_stream)
    # deeper than tokens: after one decoding step, logits and every state (as integer codes) are identical
    out = prefill({"image": image, "tokens": question})
    assert all(out[k].dtype.kind == "i" for k in out if k.startswith("state_out_"))
    token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    states = {k.replace("state_out_", "state_in_"): v for k, v in out.items() if k.startswith("state_out_")}
    stepped = step({"token": token, **states})
    longer = prefill({"image": image, "tokens": np.concatenate([question, token], 1)})
    assert np.array_equal(stepped["logits"][:, 0], longer["logits"][:, -1])
    for k in stepped:
        if k.startswith("state_out_"):
            assert stepped[k].dtype == longer[k].dtype and np.array_equal(stepped[k], longer[k]), k
    acc = evaluation.exact_match(tokens_stream, ev["labels"][:n]).mean()
    assert all(p[1].float_islands == [] for p in step.programs.values())
    return acc


def test_vlm_streaming_is_bit_exact_with_the_whole_sequence_run():
    """w8a8, all 360 eval samples: same tokens, and after a step the same logits and integer states."""
    acc = _streaming_vs_whole("w8a8", 360)
    assert acc >= zoo.manifest()[VLM]["float_accuracy"] - 0.02


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["w8a16", "w4a8", "w4a16"])
def test_vlm_streaming_is_bit_exact_at_other_precisions(precision):
    _streaming_vs_whole(precision, 360)


def test_pinned_lowering_refuses_unknown_values(vlm):
    unbound, graph, art, low, plan = vlm
    specs = {k: v for k, v in pinned_specs(low).items() if not k.startswith("/layers.2/")}
    with pytest.raises(InputError, match="no counterpart"):
        lower_pinned(copy.deepcopy(graph), specs, plan.resolve(graph), plan.default)


def test_compare_accuracy_fn_hook():
    """compare(..., accuracy_fn=...) reports greedy-decoding accuracy for the VLM (labels are answer tokens)."""
    from lowbit.quant.compare import compare
    ev = {k: v[:16] for k, v in zoo.load_eval(VLM).items()}
    graph = load(str(zoo.path(VLM)), optimize=False)
    seen = []

    def accuracy(run):
        seen.append(run)
        return zoo.evaluate(VLM, run, ev)
    rep = compare(graph, zoo.load_calib(VLM), ev, ["w8a8"], accuracy_fn=accuracy)
    assert len(seen) == 2 and seen[0].specs is None and seen[1].specs is not None
    assert rep["float_accuracy"] == 1.0 and rep["end_to_end"]["w8a8"]["accuracy"] == 1.0
    assert rep["end_to_end"]["w8a8"]["float_islands"] == []


@pytest.mark.parametrize("name,family", [("vit_digits", "vit"), (VLM, "autoneural")])
def test_family_plans_resolve(name, family):
    plan = make_plan("w8a8", str(PLANS / f"{family}.toml"))
    graph = load(str(zoo.path(name)))
    precisions = plan.resolve(graph)
    assert set(precisions) == {n.name for n in graph.nodes}
