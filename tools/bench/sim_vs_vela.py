"""lowbit's simulated Ethos-U55-128 / U65-256 against Arm Vela 5.2, layer by layer (issue #7 acceptance).

    python -m lowbit.tools.bench.sim_vs_vela                          # the committed reports, no Vela needed
    python -m lowbit.tools.bench.sim_vs_vela --live --models resnet50 # compile, export and run Vela now
    python -m lowbit.tools.bench.sim_vs_vela --all-rows               # every matched layer, not only misses

For each model and accelerator: the w8a8 artifact's Layers (``extract_layers``) go through ``simulate_layers``
with the lowbit preset (array kind ``ethos-u``, arena planner, weight-DMA overlap with the previous layer);
a layer's lowbit cycles are its NPU time without the CPU -> NPU hand-off (lowbit quantizes the float input on
the CPU, the exported model takes int8 input). Each row of Vela's per-layer CSV (default "Regor" core) is matched to the lowbit node
that produced its OFM: the exporter names TFLite tensors after lowbit values and Vela appends ``_nhwc``,
``_pre``, ``_intermediate``, ``_padded``, ``_group<i>``, ``_softmax_<i>`` to the tensors it creates, so
stripping those finds the node. A MAC row named after something else (an activation or requantize Vela fused
into the op, a concatenation it writes into) goes to the MAC layer upstream with the row's MAC count, and the
lowbit side then counts the fused activation/requantize layers too. Rows of 0 cycles are ignored.

Acceptance: for conv, depthwise and fully-connected rows (TFLite CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED),
lowbit within +-25 % of Vela's "Op Cycles" for at least 80 % of them, and the network total (every layer
lowbit runs on the NPU against Vela's ``cycles_total``) within +-25 %; the summary also gives the total
without data-layout ops (TRANSPOSE / PAD: the exporter wraps CPU-side float ops and the NCHW input in them,
and Vela splits 5-D transposes into many), and the pooled fraction per accelerator.

Models: the zoo's int8 CNN ``mobilenet_digits``; the ONNX light models that export to int8 TFLite (squeezenet,
resnet50, inception_v1/v2 in the committed set; densenet121 runs with ``--live``; shufflenet's padded
AveragePool has no TFLite form; alexnet and the VGGs are left out for size), with seeded random weights; and
``vit_digits`` (its LayerNorms as TFLite's MEAN / SUB / MUL / ADD / RSQRT ops, the tflite target's
``layer_norm="ops"``). tests/data/vela_layers/ holds each model's Layers (JSON lines) and Vela's
reports; tests/data/vela_layers/regenerate.py rewrites them with ``--live``'s pipeline.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import tempfile
from dataclasses import dataclass, field

import numpy as np

MODELS = ["mobilenet_digits", "vit_digits", "squeezenet", "resnet50", "inception_v1", "inception_v2"]
ACCELERATORS = ["ethos-u55-128", "ethos-u65-256"]
DATA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests",
                        "data", "vela_layers")
TOLERANCE = 0.25
def accelerator(name: str):
    """The lowbit preset ``name``, as shipped (targets/npusim/presets/NAME.toml)."""
    from lowbit.targets.npusim.config import load_accelerator
    return load_accelerator(name)


MAC_OPS = {"Conv2D": "conv", "DepthwiseConv2D": "depthwise", "FullyConnected": "fc"}
SUFFIX = re.compile(r"(_nhwc|_pre|_intermediate|_padded|_group\d+|_softmax_\d+(_broadcasted)?|"
                    r"_propagated_reshape.*|/Transpose)$")


# -- building the int8 model and running Vela ----------------------------------------------------------------
def int8_artifact(name: str, calib_n: int = 2):
    """The w8a8 artifact of a zoo model or an ONNX light model, compiled with the tflite target's lowering."""
    from lowbit.quant.compile import compile_graph
    from lowbit.targets import get_target
    from lowbit.tools import zoo
    if name in zoo.names():
        from lowbit.tools.api import load
        graph = load(str(zoo.path(name)), optimize=False)  # LayerNorms: as TFLite ops (tflite lowering options)
        calib = {k: v[:calib_n] for k, v in zoo.load_calib(name).items()}
    else:
        from lowbit.graph.onnx_import import from_onnx_model
        from lowbit.tools.light_models import realize
        graph = from_onnx_model(realize(name))
        shape = tuple(d if isinstance(d, int) else 1 for d in graph.inputs[0].shape)
        rng = np.random.default_rng(0)
        calib = {graph.inputs[0].name: rng.standard_normal((calib_n,) + shape).astype(np.float32)}
    art, _ = compile_graph(graph, calib, "w8a8", options=dict(get_target("tflite").lowering_options))
    return art


def run_vela(artifact, name: str, accelerator: str, output_dir: str):
    """Export ``artifact`` to int8 TFLite (integer I/O) and compile it with Vela into ``output_dir``."""
    from lowbit.targets import get_target
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{name}.tflite")
        get_target("tflite").export(artifact, path, convert_fc=True, int4="int8", integer_io=True)
        return get_target(accelerator).compile_tflite(path, output_dir)


# -- Layers as JSON lines ------------------------------------------------------------------------------------
def layers_to_json(layers, graph_inputs, graph_outputs) -> str:
    lines = [json.dumps({"graph_inputs": list(graph_inputs), "graph_outputs": list(graph_outputs)})]
    for layer in layers:
        d = dataclasses.asdict(layer)
        d.pop("extra", None)
        lines.append(json.dumps({k: v for k, v in d.items() if v not in (None, 0, (), [], False) or k == "kind"}))
    return "\n".join(lines) + "\n"


def layers_from_json(text: str):
    """(layers, graph input names, graph output names) from ``layers_to_json``'s text."""
    from lowbit.targets.npusim.workload import ConvShape, GemmShape, Layer
    rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    head, layers = rows[0], []
    for d in rows[1:]:
        d["conv"] = ConvShape(**d["conv"]) if "conv" in d else None
        d["gemm"] = GemmShape(**d["gemm"]) if "gemm" in d else None
        for k in ("input_shapes",):
            d[k] = tuple(tuple(s) for s in d.get(k, ()))
        for k in ("output_shape", "inputs", "outputs"):
            d[k] = tuple(d.get(k, ()))
        d.setdefault("act_bits", 8)
        d.setdefault("out_bits", 8)
        layers.append(Layer(**d))
    return layers, head["graph_inputs"], head["graph_outputs"]


# -- matching Vela's rows to lowbit layers -------------------------------------------------------------------
@dataclass
class Match:
    layer: object                       # the lowbit MAC Layer
    kind: str                           # conv | depthwise | fc
    vela_cycles: int = 0
    vela_rows: int = 0
    fused: list = field(default_factory=list)   # lowbit layers Vela fused into the row (activations)
    lowbit_cycles: float = 0.0

    @property
    def ratio(self) -> float:
        return self.lowbit_cycles / self.vela_cycles if self.vela_cycles else float("inf")

    @property
    def within(self) -> bool:
        return abs(self.ratio - 1.0) <= TOLERANCE


def _find(name: str, by_output: dict):
    for _ in range(8):
        if name in by_output:
            return by_output[name]
        m = SUFFIX.search(name)
        if not m:
            return None
        name = name[:m.start()]
    return None


def _upstream_mac_layers(layer, by_output, path=()):
    """MAC layers feeding ``layer`` through non-MAC layers, each with the layers on the way."""
    if layer.mac_kind:
        return [(layer, list(path))]
    found = []
    for name in layer.inputs:
        src = by_output.get(name)
        if src is not None and len(path) < 4:
            found += _upstream_mac_layers(src, by_output, path + (layer,))
    return found


FUSABLE = ("activation",)          # a MAC row also covers these lowbit layers when Vela names it after them


def match_rows(layers, vela_layers) -> tuple[list[Match], int]:
    """(matches of Vela's conv / depthwise / FC rows to lowbit MAC layers, rows that found no layer).

    A row names its OFM tensor; when that is not a MAC layer's output (a fused activation, a requantize the
    MAC op absorbed, a concatenation it writes into), the MAC layers upstream are the candidates, and the
    one whose MAC count equals the row's (the first not yet matched among equals) takes the row; a layer Vela
    splits into several operations (groups, strides over 3) collects all their rows."""
    by_output = {o: l for l in layers for o in l.outputs}
    matches: dict[str, Match] = {}
    unmatched = 0
    for row in vela_layers:
        kind = MAC_OPS.get(row.original_op)
        if kind is None or row.target != "NPU" or row.op_cycles == 0:
            continue
        named = _find(row.name, by_output)
        candidates = _upstream_mac_layers(named, by_output) if named is not None else []
        if not candidates:
            unmatched += 1
            continue
        fresh = [c for c in candidates if c[0].name not in matches]
        exact = [c for c in candidates if c[0].macs == row.macs]
        layer, path = ([c for c in exact if c in fresh] or exact or fresh or candidates)[0]
        fused = [l for l in path if l.kind in FUSABLE or l.op == "Requantize"]
        m = matches.setdefault(layer.name, Match(layer, kind))
        m.vela_cycles += row.op_cycles
        m.vela_rows += 1
        m.fused = m.fused or fused
    return list(matches.values()), unmatched


# -- one model on one accelerator ----------------------------------------------------------------------------
@dataclass
class Comparison:
    model: str
    accelerator: str
    matches: list[Match]
    unmatched: int
    lowbit_total: float
    vela_total: int
    lowbit_npu_layers: int
    vela_npu_ops: int
    lowbit_layout: float = 0.0          # of lowbit_total: data-layout layers (Transpose, Pad)
    vela_layout: int = 0                # of vela_total: Transpose / Pad rows (many inserted by the exporter)

    @property
    def fraction(self) -> float:
        return sum(m.within for m in self.matches) / len(self.matches) if self.matches else 0.0

    @property
    def total_ratio(self) -> float:
        return self.lowbit_total / self.vela_total if self.vela_total else float("inf")

    @property
    def compute_ratio(self) -> float:
        """Network total without data-layout operations: the exporter wraps CPU-side float ops and the NCHW
        input in TRANSPOSEs and PADs that have no lowbit node, and Vela splits 5-D transposes into many."""
        vela = self.vela_total - self.vela_layout
        return (self.lowbit_total - self.lowbit_layout) / vela if vela else float("inf")

    @property
    def mac_ratio(self) -> float:
        vela = sum(m.vela_cycles for m in self.matches)
        return sum(m.lowbit_cycles for m in self.matches) / vela if vela else float("inf")

    @property
    def passed(self) -> bool:
        return self.fraction >= 0.8 and abs(self.compute_ratio - 1.0) <= TOLERANCE


LAYOUT_OPS = ("Transpose", "Pad")


def compare(model: str, accelerator: str, layers, graph_inputs, graph_outputs, vela_layers, vela_total: int,
            vela_npu_ops: int = 0) -> Comparison:
    from lowbit.targets.npusim.simulate import simulate_layers
    report = simulate_layers(layers, globals()["accelerator"](accelerator), graph_inputs, graph_outputs,
                             model=model)
    # NPU time of each layer; lowbit's float graph input is quantized on the CPU while the exported model
    # takes int8 input, so the CPU -> NPU hand-off of the first layer is left out on both sides
    cycles = {r.name: r.cycles - r.transfer_cycles for r in report.layers}
    matches, unmatched = match_rows(layers, vela_layers)
    for m in matches:
        m.lowbit_cycles = cycles.get(m.layer.name, 0.0) + sum(cycles.get(f.name, 0.0) for f in m.fused)
    npu = [r for r in report.layers if r.unit == "npu"]
    return Comparison(model, accelerator, matches, unmatched, sum(cycles[r.name] for r in npu), vela_total, len(npu),
                      vela_npu_ops, sum(cycles[r.name] for r in npu if r.op in LAYOUT_OPS),
                      sum(r.op_cycles for r in vela_layers if r.target == "NPU" and r.original_op in LAYOUT_OPS))


def load_committed(model: str, accelerator: str, data_dir: str = DATA_DIR):
    """(layers, graph inputs, graph outputs, Vela per-layer rows, Vela cycles_total, NPU ops) from the data."""
    from lowbit.targets.vela_report import (
        parse_per_layer_csv,
        parse_summary_csv,
        report_files,
    )
    with open(os.path.join(data_dir, f"{model}.layers.jsonl"), encoding="utf-8") as f:
        layers, gin, gout = layers_from_json(f.read())
    summary, per_layer, _ = report_files(os.path.join(data_dir, accelerator), model)
    if summary is None or per_layer is None:
        raise FileNotFoundError(f"no Vela reports for {model} on {accelerator} in {data_dir} "
                                f"(run tests/data/vela_layers/regenerate.py)")
    with open(per_layer, encoding="utf-8") as f:
        rows = parse_per_layer_csv(f.read())
    with open(summary, encoding="utf-8") as f:
        s = parse_summary_csv(f.read())
    npu_ops = sum(r.target == "NPU" and r.op_cycles > 0 for r in rows)
    return layers, gin, gout, rows, s.cycles_total, npu_ops


def compare_committed(model: str, accelerator: str, data_dir: str = DATA_DIR) -> Comparison:
    return compare(model, accelerator, *load_committed(model, accelerator, data_dir))


def compare_live(model: str, accelerator: str, artifact=None) -> Comparison:
    from lowbit.targets.npusim.workload import extract_layers
    art = artifact if artifact is not None else int8_artifact(model)
    with tempfile.TemporaryDirectory() as out:
        report = run_vela(art, model, accelerator, out)
    layers = extract_layers(art.graph)
    npu_ops = sum(r.target == "NPU" and r.op_cycles > 0 for r in report.layers)
    return compare(model, accelerator, layers, [v.name for v in art.graph.inputs],
                   [v.name for v in art.graph.outputs], report.layers, report.cycles_total, npu_ops)


# -- printing ------------------------------------------------------------------------------------------------
def _short(name: str, width: int = 44) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]


def table(c: Comparison, all_rows: bool = True) -> str:
    lines = [f"### {c.model} on {c.accelerator}", "",
             "| layer | kind | lowbit cycles | Vela cycles | ratio | within +-25 % |", "|---|---|---:|---:|---:|---|"]
    for m in c.matches if all_rows else [m for m in c.matches if not m.within]:
        kind = m.kind + "".join(f"+{f.op}" for f in m.fused)
        lines.append(f"| {_short(m.layer.name)} | {kind} | {m.lowbit_cycles:,.0f} | {m.vela_cycles:,} | "
                     f"{m.ratio:.2f} | {'yes' if m.within else 'NO'} |")
    lines += ["", (f"{sum(m.within for m in c.matches)}/{len(c.matches)} conv/depthwise/FC layers within +-25 % "
                   f"({100 * c.fraction:.0f} %); their cycles {c.mac_ratio:.2f} x Vela; network total "
                   f"{c.lowbit_total:,.0f} vs Vela {c.vela_total:,} cycles ({c.total_ratio:.2f} x), without "
                   f"data-layout ops {c.lowbit_total - c.lowbit_layout:,.0f} vs {c.vela_total - c.vela_layout:,} "
                   f"({c.compute_ratio:.2f} x); {c.unmatched} Vela rows unmatched")]
    return "\n".join(lines)


def summary(results: list[Comparison]) -> str:
    lines = [("| model | accelerator | conv/dw/FC layers within +-25 % | their cycles ratio | network total ratio "
              "| without layout ops | pass |"), "|---|---|---:|---:|---:|---:|---|"]
    for c in results:
        lines.append(f"| {c.model} | {c.accelerator} | {sum(m.within for m in c.matches)}/{len(c.matches)} "
                     f"({100 * c.fraction:.0f} %) | {c.mac_ratio:.2f} | {c.total_ratio:.2f} | {c.compute_ratio:.2f} | "
                     f"{'yes' if c.passed else 'NO'} |")
    for accel in dict.fromkeys(c.accelerator for c in results):
        ms = [m for c in results if c.accelerator == accel for m in c.matches]
        if ms:
            f = pooled_fraction(ms)
            lines.append(f"| all models | {accel} | {sum(m.within for m in ms)}/{len(ms)} ({100 * f:.0f} %) | "
                         f"| | | {'yes' if f >= 0.8 else 'NO'} |")
    return "\n".join(lines)


def pooled_fraction(matches) -> float:
    return sum(m.within for m in matches) / len(matches) if matches else 0.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--accelerators", nargs="+", default=ACCELERATORS)
    ap.add_argument("--live", action="store_true", help="compile, export and run Vela now (else committed data)")
    ap.add_argument("--data", default=DATA_DIR, help="directory of the committed reports")
    ap.add_argument("--all-rows", action="store_true", help="print every matched layer (default: misses only)")
    args = ap.parse_args(argv)
    results = []
    for model in args.models:
        art = int8_artifact(model) if args.live else None
        for accel in args.accelerators:
            c = compare_live(model, accel, art) if args.live else compare_committed(model, accel, args.data)
            results.append(c)
            print(table(c, args.all_rows), end="\n\n", flush=True)
    print(summary(results))


if __name__ == "__main__":
    main()
