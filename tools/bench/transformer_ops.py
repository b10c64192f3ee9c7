"""Measurements behind docs/hybrid_ops.md, "Transformer layers and the VLM" (issue 5).

    python -m lowbit.tools.bench.transformer_ops accuracy [--model M] [--plan FILE]   # 4 precisions (or the plan)
    python -m lowbit.tools.bench.transformer_ops attention                 # own error of QK^T, softmax, .V
    python -m lowbit.tools.bench.transformer_ops luts                      # GELU / sigmoid: tables vs I-BERT
    python -m lowbit.tools.bench.transformer_ops layernorm                 # fused integer LN vs as-ops vs I-BERT
    python -m lowbit.tools.bench.transformer_ops streaming                 # VLM prefill + steps vs whole sequence

Every number is over the zoo's committed eval / calibration files (tools/zoo/models).
"""
from __future__ import annotations

import argparse
import copy
import math

import numpy as np

from lowbit.quant.compile import compile_graph
from lowbit.quant.spec import activation_spec
from lowbit.tools import zoo
from lowbit.tools.api import load

PRECISIONS = ["w8a8", "w8a16", "w4a8", "w4a16"]
VLM = "autoneural_vqa"


def _sqnr(ref, x) -> float:
    return float(10 * np.log10(np.sum(ref ** 2) / np.sum((ref - x) ** 2)))


def _deq(v, codes):
    return (codes.astype(np.float64) - v.quant.zero_point) * v.quant.scale


# -- accuracy and output SQNR through quant.compare --------------------------------------------------------------
def accuracy(plan: str | None, models=("vit_digits", VLM)) -> None:
    from lowbit.quant.compare import compare
    print("| model | plan | float | " + " | ".join(PRECISIONS) + " |")
    for name in models:
        fn = (lambda run, n=name: zoo.evaluate(n, run)) if name == VLM else None
        precs = PRECISIONS if plan is None else PRECISIONS[:1]  # a plan's [default] precision wins
        rep = compare(load(str(zoo.path(name)), optimize=False), zoo.load_calib(name), zoo.load_eval(name), precs,
                      plan, accuracy_fn=fn)
        cells = []
        for p in rep["precisions"]:  # with a plan: its own [default] precision
            e = rep["end_to_end"][p]
            cells.append(f"{100 * e['accuracy']:.2f} % / {e['outputs']['logits']['sqnr_db']:.1f} dB"
                         + (f" ({len(e['float_islands'])} float islands)" if e["float_islands"] else ""))
        print(f"| {name} | {plan or 'uniform'} | {100 * rep['float_accuracy']:.2f} % | " + " | ".join(cells) + " |")


# -- attention: each op's own error on the integers it receives ----------------------------------------------------
def _softmax(x, mask=None):
    if mask is not None:
        x = np.where(mask, -np.inf, x)
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def attention(samples: int = 64) -> None:
    """SQNR of each integer BatchMatMul / Softmax / MaskedSoftmax output against the float op evaluated on the
    dequantized integer inputs it received: the op's own error, upstream error excluded."""
    from lowbit.runtime.int_executor import run as run_int
    print("| model | node | " + " | ".join(PRECISIONS[:2]) + " |")
    for name in ("vit_digits", VLM):
        res = {}
        for prec in PRECISIONS[:2]:
            art, _ = compile_graph(load(str(zoo.path(name)), optimize=False), zoo.load_calib(name), prec)
            ev = zoo.load_eval(name)
            nodes = [n for n in art.graph.nodes if n.op_type in ("BatchMatMul", "Softmax", "MaskedSoftmax")]
            acc = {}
            for i in range(samples):
                env = {}
                feeds = {v.name: ev[v.name][i:i + 1] for v in art.graph.inputs}
                run_int(art.graph, feeds, observe=lambda node, outs: env.update(
                    {v.name: o for v, o in zip(node.outputs, outs)}))
                for n in nodes:
                    ins = [v.const if v.const is not None else env[v.name] for v in n.inputs]
                    out = _deq(n.outputs[0], env[n.outputs[0].name])
                    if n.op_type == "BatchMatMul":
                        a, b = _deq(n.inputs[0], ins[0]), _deq(n.inputs[1], ins[1])
                        a = np.swapaxes(a, -1, -2) if n.attrs.get("adj_x") else a
                        b = np.swapaxes(b, -1, -2) if n.attrs.get("adj_y") else b
                        ref = a @ b
                    else:
                        mask = np.broadcast_to(ins[1], ins[0].shape) if n.op_type == "MaskedSoftmax" else None
                        ref = _softmax(_deq(n.inputs[0], ins[0]), mask)
                    s, e = acc.get(n.name, (0.0, 0.0))
                    acc[n.name] = (s + np.sum(ref ** 2), e + np.sum((ref - out) ** 2))
            res[prec] = {k: 10 * math.log10(s / e) for k, (s, e) in acc.items()}
        for k in res[PRECISIONS[0]]:
            print(f"| {name} | {k} | " + " | ".join(f"{res[p][k]:.1f}" for p in res) + " |")


# -- element-wise tables vs I-BERT's polynomials -------------------------------------------------------------------
_SQ2 = math.sqrt(2.0)


def _gelu(x):
    from lowbit.runtime.kernels.float.elementwise import erf64
    return 0.5 * x * (1 + erf64(x / _SQ2))


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _gelu_poly(x):
    """I-BERT's i-GELU polynomial in exact arithmetic: x/2 (1 + sgn(u) (a (min(|u|, -b) + b)^2 + 1)), u = x/sqrt2."""
    a, b = -0.2888, -1.769
    u = x / _SQ2
    return x / 2 * (1 + np.sign(u) * (a * (np.minimum(np.abs(u), -b) + b) ** 2 + 1))


def _exp_poly(x):
    """I-BERT's i-exp in exact arithmetic (x <= 0): 2^-z (0.3585 (p + 1.353)^2 + 0.344), x = p - z ln2."""
    x = np.maximum(x, -30 * math.log(2))
    z = np.floor(-x / math.log(2))
    p = x + z * math.log(2)
    return (0.35815147 * (p + 1.353) ** 2 + 0.344) / 2.0 ** z


def _sigmoid_poly(x):
    pos = 1 / (1 + _exp_poly(-np.abs(x)))
    return np.where(x >= 0, pos, 1 - pos)


def _ibert_gelu_integer(q, s):
    """I-BERT's IntGELU as published (HF ibert/quant_modules.py: floor constants, >> 14), on codes q at scale s."""
    a, b = -0.2888, -1.769
    s_erf = s / _SQ2
    b_int, c_int = math.floor(b / s_erf), math.floor(1.0 / (a * s_erf ** 2))
    absq = np.minimum(np.abs(q), -b_int)
    y = np.floor_divide(np.sign(q) * ((absq + b_int) ** 2 + c_int), 1 << 14)
    scale = a * s_erf ** 2 * (1 << 14)
    return (q * (y + math.floor(1 / scale))).astype(np.float64) * (s * scale / 2)


def luts() -> None:
    """Max / mean error in output steps, over every input code, of lowbit's kernel for each GELU / Sigmoid of the
    two models and of I-BERT's polynomials rounded once to the same output spec."""
    from lowbit.runtime.int_executor import kernel_for
    print("| model | precision | node | op (kernel) | kernel max | kernel max off the saturating segment | "
          "kernel mean | I-BERT polynomial max | its mean | I-BERT integer code max |")
    for name in ("vit_digits", VLM):
        for prec in PRECISIONS[:2]:
            g = load(str(zoo.path(name)), optimize=False)
            art, _ = compile_graph(g, zoo.load_calib(name), prec)
            ops = {n.name: n.op_type for n in g.nodes}
            for n in art.graph.nodes:
                op = ops.get(n.name)
                if n.op_type not in ("Lut", "Logistic") or op not in ("Gelu", "Sigmoid"):
                    continue
                si, so = n.inputs[0].quant, n.outputs[0].quant
                info = np.iinfo(si.dtype)
                codes = np.arange(info.min, info.max + 1).astype(si.dtype)
                d = codes.astype(np.int64) - int(si.zero_point)
                x = d * float(si.scale)
                fn, poly = (_gelu, _gelu_poly) if op == "Gelu" else (_sigmoid, _sigmoid_poly)
                exact = fn(x) / float(so.scale) + int(so.zero_point)
                inside = (exact >= so.qmin - 0.5) & (exact <= so.qmax + 0.5)
                seg = d // (1 if si.bits == 8 else 128)  # int16 tables: 128 codes per interpolated segment
                saturating = np.isin(seg, seg[(exact > so.qmax) | (exact < so.qmin)])
                err = np.abs(kernel_for(n)(codes, **n.attrs) - exact)
                p_err = np.abs(_requantize(poly(x), so) - exact)
                i_err = None if op != "Gelu" else np.abs(_requantize(_ibert_gelu_integer(d, float(si.scale)), so)
                                                         - exact)
                print(f"| {name} | {prec} | {n.name} | {op} ({n.op_type}, int{si.bits}) | {err[inside].max():.2f} | "
                      f"{err[inside & ~saturating].max():.2f} | {err[inside].mean():.2f} | {p_err[inside].max():.2f} | "
                      f"{p_err[inside].mean():.2f} | " + ("-" if i_err is None else f"{i_err[inside].max():.1f}")
                      + " |")


def _requantize(y, spec):
    """Real values rounded once to ``spec``'s codes (clamped)."""
    return np.clip(np.round(y / float(spec.scale)) + int(spec.zero_point), spec.qmin, spec.qmax)


# -- LayerNorm: fused integer vs as-ops vs I-BERT --------------------------------------------------------------------
def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b


def _ln_inputs(data):
    from lowbit.quant.compile import bind_to_samples
    from lowbit.runtime.float_executor import run as run_float
    g = load(str(zoo.path("vit_digits")), optimize=False)
    feeds = {"image": data["image"]}
    bind_to_samples(g, {"image": data["image"][None]}, "data")
    lns = [n for n in g.nodes if n.op_type == "LayerNormalization"]
    seen = {}
    run_float(g, feeds, observe=lambda node, outs: seen.update(
        {n.name: outs[node.outputs.index(n.inputs[0])] for n in lns if node is n.inputs[0].producer}))
    return lns, seen


def layernorm() -> None:
    """SQNR (dB) of each vit_digits LayerNorm output vs float (inputs: the float model on the 360 test images;
    ranges from the 64 calibration images) for the fused integer kernel, TFLite-style LayerNorm-as-ops with every
    intermediate fake-quantized at its calibrated range (optimistic: the ops' own fixed-point errors are left out),
    I-BERT's integer-variance isqrt, and the two floors (output rounding only, input rounding only)."""
    from lowbit.quant.prepare_norm import prepare_norm
    from lowbit.runtime.kernels.int.norm import LayerNorm
    lns, cal = _ln_inputs(zoo.load_calib("vit_digits"))
    _, ev = _ln_inputs(zoo.load_eval("vit_digits"))
    print("| LayerNorm | bits | fused integer (lowbit) | as ops | I-BERT isqrt | output rounding only | "
          "input rounding only |")
    for bits in (8, 16):
        def fq(v, ref, bits=bits):
            """``v`` fake-quantized at the spec calibrated on ``ref``."""
            s = activation_spec(ref.min(), ref.max(), bits)
            return s.dequantize(s.quantize(v)).astype(np.float64)
        for n in lns:
            g, b = n.const_input(1).astype(np.float64), n.const_input(2).astype(np.float64)
            eps = float(n.attrs.get("epsilon", 1e-5))
            xc, xe = cal[n.name].astype(np.float64), ev[n.name].astype(np.float64)
            si, yc = activation_spec(xc.min(), xc.max(), bits), _ln(xc, g, b, eps)
            so = activation_spec(yc.min(), yc.max(), bits)
            xq = si.quantize(xe)
            xd = (xq.astype(np.float64) - int(si.zero_point)) * float(si.scale)
            ref = _ln(xe, g, b, eps)
            fused = so.dequantize(LayerNorm(xq, **prepare_norm(si, so, g, b, eps))).astype(np.float64)
            mc = xc.mean(-1, keepdims=True)
            dc = xc - mc
            vc = (dc * dc).mean(-1, keepdims=True) + eps
            m = fq(xd.mean(-1, keepdims=True), mc)
            d = fq(xd - m, dc)
            v = fq(fq(d * d, dc * dc).mean(-1, keepdims=True) + eps, vc)
            r = fq(1 / np.sqrt(np.maximum(v, 1e-12)), 1 / np.sqrt(vc))
            nn = fq(d * r, dc / np.sqrt(vc))
            ops = fq(fq(nn * g, dc / np.sqrt(vc) * g) + b, yc)
            q = xq.astype(np.int64) - int(si.zero_point)
            y = q - np.round(q.mean(-1, keepdims=True)).astype(np.int64)
            std = np.maximum(np.vectorize(math.isqrt)((y ** 2).sum(-1, keepdims=True) // q.shape[-1]), 1)
            ib = fq((y * np.floor_divide(1 << 31, std)) // 2 / 2.0 ** 30 * g + b, yc)
            floor = so.dequantize(so.quantize(ref)).astype(np.float64)
            print(f"| {n.name} | {bits} | " + " | ".join(f"{_sqnr(ref, t):.1f}" for t in
                                                          (fused, ops, ib, floor, _ln(xd, g, b, eps))) + " |")


# -- VLM streaming ----------------------------------------------------------------------------------------------------
def streaming() -> None:
    """Greedy decoding on the 360 eval samples: whole-sequence integer runs (re-run per token) vs one prefill +
    integer step calls carrying integer state; and the state memory per token."""
    import time
    from lowbit.quant.pinned import PinnedRunner, pinned_specs
    from lowbit.quant.plan import make_plan
    from lowbit.tools.zoo import evaluation
    ev = zoo.load_eval(VLM)
    unbound = load(str(zoo.path(VLM)), optimize=False)
    step_graph = load(str(zoo.path(VLM, "step")), optimize=False)
    print("| precision | same tokens | exact answers | whole-sequence s | streaming s | KV cache B/token | "
          "short-conv state B (fixed) |")
    for prec in PRECISIONS:
        plan = make_plan(prec)
        graph = copy.deepcopy(unbound)
        _, low = compile_graph(graph, zoo.load_calib(VLM), plan)
        specs, precs = pinned_specs(low), plan.resolve(graph)
        whole = PinnedRunner(unbound, specs, precs, plan.default)
        prefill = PinnedRunner(unbound, specs, precs, plan.default, integer_states=True)
        step = PinnedRunner(step_graph, specs, precs, plan.default, integer_states=True, reference=graph)
        t0 = time.perf_counter()
        a = evaluation.greedy_answers(whole, ev["image"], ev["tokens"])
        t1 = time.perf_counter()
        b = evaluation.greedy_answers_streaming(prefill, step, ev["image"], ev["tokens"])
        t2 = time.perf_counter()
        out = prefill({"image": ev["image"][:1], "tokens": ev["tokens"][:1]})
        length = out["state_out_1_k"].shape[2]
        kv = sum(v.nbytes for k, v in out.items() if k[-2:] in ("_k", "_v")) // length
        conv = sum(v.nbytes for k, v in out.items() if k.endswith("_conv"))
        print(f"| {prec} | {np.array_equal(a, b)} | {100 * evaluation.exact_match(b, ev['labels']).mean():.2f} % | "
              f"{t1 - t0:.1f} | {t2 - t1:.1f} | {kv} | {conv} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["accuracy", "attention", "luts", "layernorm", "streaming"])
    ap.add_argument("--plan", default=None)
    ap.add_argument("--model", choices=["vit_digits", VLM], default=None)
    args = ap.parse_args(argv)
    if args.what == "accuracy":
        accuracy(args.plan, (args.model,) if args.model else ("vit_digits", VLM))
    else:
        {"attention": attention, "luts": luts, "layernorm": layernorm, "streaming": streaming}[args.what]()


if __name__ == "__main__":
    main()
