"""The ``lowbit`` command line: a thin layer over the Python API.

Exit codes: 0 success; 2 a user error (one line on stderr, no traceback); 1 an internal error.
Set LOWBIT_DEBUG=1 to see the traceback of an internal error.
"""
from __future__ import annotations

import json
import os
import sys

import click

from lowbit.errors import LowbitError


def _parse_shapes(specs: tuple[str, ...]) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.rpartition("=")
        try:
            if not sep or not name:
                raise ValueError
            shapes[name] = tuple(int(d) for d in dims.lower().split("x"))
            if any(d <= 0 for d in shapes[name]):
                raise ValueError
        except ValueError:
            raise click.BadParameter(f"'{spec}' is not NAME=DxDxD (e.g. input=1x3x224x224)",
                                     param_hint="--shape") from None
    return shapes


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LowbitError as e:
            click.echo(f"lowbit: error: {e}", err=True)
            ctx.exit(2)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except MemoryError:
            click.echo("lowbit: error: out of memory", err=True)
            ctx.exit(1)
        except Exception as e:  # a bug in lowbit
            if os.environ.get("LOWBIT_DEBUG"):
                raise
            click.echo(f"lowbit: internal error: {type(e).__name__}: {e} "
                       f"(set LOWBIT_DEBUG=1 for the traceback and please report it)", err=True)
            ctx.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lowbit")
def main():
    """lowbit: integer inference compiler and runtime for edge NPUs."""


_shape_option = click.option("--shape", "shapes", multiple=True, metavar="NAME=DxD...",
                             help="Bind a dynamic input shape, e.g. --shape input=1x3x224x224 (repeatable).")


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@_shape_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--no-passes", is_flag=True, help="Show the graph as imported, before lowbit's passes.")
def inspect(model, shapes, as_json, no_passes):
    """Per-node ops, shapes, parameters and MACs, totals, and the ops lowbit cannot run yet."""
    from lowbit.tools.api import is_artifact, load
    from lowbit.tools.report import inspect_data, inspect_text
    if model.lower().endswith(".onnx") and is_artifact(model):
        from lowbit.runtime.artifact import Artifact
        graph = Artifact.load(model).graph  # the integer program, with its specs, hash-checked
    else:
        graph = load(model, _parse_shapes(shapes), optimize=not no_passes, bind_unknown=True)
    data = inspect_data(graph, model)
    data["notes"] = graph.notes
    click.echo(json.dumps(data, indent=1) if as_json else inspect_text(data))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--inputs", "inputs_path", required=True, type=click.Path(dir_okay=False),
              help=".npz keyed by graph input names, one sample per input in its own shape.")
@click.option("--outputs", "outputs_path", required=True, type=click.Path(dir_okay=False),
              help=".npz to write, keyed by graph output names.")
@click.option("--raw", is_flag=True, help="Integer programs: write the raw integer outputs, not dequantized floats.")
@_shape_option
def run(model, inputs_path, outputs_path, raw, shapes):
    """Run MODEL (float .onnx, compiled artifact, or quantized .tflite) on --inputs; write --outputs.

    A float .onnx runs on the float executor; an artifact or .tflite runs on the integer executor, taking
    float inputs (quantized with each input's spec) or integer inputs (raw codes)."""
    from lowbit.runtime.artifact import Artifact
    from lowbit.runtime.float_executor import check_feeds
    from lowbit.tools.api import load_program, run as run_graph
    from lowbit.tools.files import load_npz, save_npz
    feeds = load_npz(inputs_path)
    program = load_program(model, _parse_shapes(shapes) or None)
    if isinstance(program, Artifact):
        outs = program.run(feeds, raw=raw)
    else:
        from lowbit.graph.onnx_import import bind_input_shapes
        from lowbit.graph.passes import optimize
        graph = program
        check_feeds(graph, feeds, what=inputs_path)
        bind_input_shapes(graph, {v.name: feeds[v.name].shape for v in graph.inputs if not v.is_static})
        optimize(graph)
        outs = run_graph(graph, feeds)
    save_npz(outputs_path, outs)
    click.echo(f"wrote {len(outs)} output(s) to {outputs_path}: "
               + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in outs.items()))


_precision_help = "w8a8 (int8), w8a16 (TFLite 16x8), w4a8, w4a16, w16a16"


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", "calib_path", type=click.Path(dir_okay=False),
              help=".npz with N samples per input stacked on a leading axis ([N, *input_shape]).")
@click.option("--precision", default="w8a8", show_default=True, help=_precision_help)
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Per-layer plan file (TOML).")
@click.option("--observer", type=click.Choice(["minmax", "percentile", "entropy", "mse"]), default=None,
              help="Range observer for activations (default minmax, or the plan's).")
@click.option("--target", "target_name", default="cpu", show_default=True,
              help="Deployment target: cpu, tflite, onnxruntime, ethos-u55-128, ... (see docs/targets.md). "
                   "Writes the deployable file next to the artifact and prints the placement.")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False),
              help="Artifact file to write (.onnx container of the integer program).")
def compile(model, calib_path, precision, plan_path, observer, target_name, output_path):
    """Calibrate and lower MODEL to an integer program; write it as an artifact (and the target's file)."""
    from lowbit.quant.compile import compile_graph
    from lowbit.quant.calibrate import stderr_progress
    from lowbit.quant.plan import make_plan
    from lowbit.runtime.artifact import Artifact
    from lowbit.tools.api import load
    from lowbit.tools.files import load_npz
    from lowbit.targets import get_target
    target = get_target(target_name)
    plan = make_plan(precision, plan_path, observer)
    if model.lower().endswith(".tflite"):
        from lowbit.graph.tflite import load_tflite
        artifact = Artifact(load_tflite(model), {"precision": "from .tflite"}, model)
    else:
        if not calib_path:
            raise click.UsageError("--calib is required to compile a float model")
        calib = load_npz(calib_path)
        graph = load(model, optimize=False)
        artifact, lowered = compile_graph(graph, calib, plan, model, calib_path, stderr_progress(),
                                          options=getattr(target, "lowering_options", None))
        if lowered.float_islands:
            click.echo(f"note: {len(lowered.float_islands)} node(s) stay float (no integer lowering yet): "
                       + ", ".join(lowered.float_islands[:10]) + (" ..." if len(lowered.float_islands) > 10 else ""),
                       err=True)
    ints = sum(1 for n in artifact.graph.nodes if n.domain == "lowbit.int")
    report = None
    if target_name != "cpu":  # the target's file first: if the target refuses, nothing is written at all
        click.echo(target.place(artifact.graph).summary())
        deploy = os.path.splitext(output_path)[0] + target.file_suffix
        if os.path.abspath(deploy) == os.path.abspath(output_path):
            deploy = os.path.splitext(output_path)[0] + "." + target_name + target.file_suffix
        report = target.export(artifact, deploy)
    try:
        artifact.save(output_path)
    except BaseException:
        if target_name != "cpu" and os.path.exists(deploy):
            os.unlink(deploy)
        raise
    click.echo(f"wrote {output_path}: {len(artifact.graph.nodes)} nodes ({ints} integer), "
               f"precision {artifact.plan.get('precision')}")
    if target_name != "cpu":
        click.echo(f"wrote {deploy} for target {target_name}")
        if hasattr(report, "text"):
            click.echo(report.text())


def _zoo_accuracy_fn(model: str, evalset):
    """For a bundled zoo model whose task is not argmax-vs-label (the VQA model: greedy decoding of answer
    tokens), the zoo's own evaluation; None otherwise (compare then scores argmax against ``labels``)."""
    from lowbit.tools import zoo
    for name in zoo.names():
        path = zoo.path(name)
        if path.exists() and os.path.exists(model) and os.path.samefile(model, path):
            return zoo.task_accuracy_fn(name, evalset)
    return None


_FORMATS = {"tflite": "tflite", "onnx-qdq": "onnxruntime"}


@main.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", required=True, type=click.Choice(sorted(_FORMATS)),
              help="tflite (int8 / 16x8 flatbuffer for LiteRT and NPU delegates) or onnx-qdq (ONNX Runtime QDQ).")
@click.option("-o", "--output", "output_path", required=True, type=click.Path(dir_okay=False))
def export(artifact, fmt, output_path):
    """Write a compiled ARTIFACT in a deployment format, and print which ops the target runs."""
    from lowbit.runtime.artifact import Artifact
    from lowbit.targets import get_target
    art = Artifact.load(artifact)
    target = get_target(_FORMATS[fmt])
    click.echo(target.place(art.graph).summary())
    report = target.export(art, output_path)
    click.echo(f"wrote {output_path}")
    if hasattr(report, "text"):
        click.echo(report.text())


@main.command()
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--calib", "calib_path", required=True, type=click.Path(dir_okay=False),
              help="Calibration .npz ([N, *input_shape] per input).")
@click.option("--eval", "eval_path", required=True, type=click.Path(dir_okay=False),
              help="Evaluation .npz ([N, *input_shape] per input, optional 'labels' [N]).")
@click.option("--precision", "precisions", default="w8a8,w4a8,w8a16,w4a16", show_default=True,
              help="Comma-separated precisions to compare: " + _precision_help)
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Per-layer plan file (TOML).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the full report as JSON.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a per-layer SQNR plot (PNG).")
@click.option("--target", "target_name", default="cpu", show_default=True,
              help="Measure the integers this deployment target's lowering gives (e.g. tflite: LayerNorm as "
                   "TFLite ops, TFLite's output softmax).")
def compare(model, calib_path, eval_path, precisions, plan_path, json_path, plot_path, target_name):
    """Per-layer SQNR, cosine, max error and saturations, one column per precision, and end-to-end accuracy."""
    from lowbit.quant.calibrate import stderr_progress
    from lowbit.quant.compare import compare as run_compare, report_text
    from lowbit.quant.plan import parse_precision
    from lowbit.tools.api import load
    from lowbit.tools.files import atomic_write_bytes, load_npz
    precs = [p.strip() for p in precisions.split(",") if p.strip()]
    for p in precs:
        parse_precision(p)
    calib, evalset = load_npz(calib_path), load_npz(eval_path)
    graph = load(model, optimize=False)
    from lowbit.targets import get_target
    options = dict(getattr(get_target(target_name), "lowering_options", None) or {}) or None
    report = run_compare(graph, calib, evalset, precs, plan_path, stderr_progress(),
                         calib_source=calib_path, eval_source=eval_path,
                         accuracy_fn=_zoo_accuracy_fn(model, evalset), options=options)
    if json_path:
        atomic_write_bytes(json_path, json.dumps(report, indent=1).encode())
    if plot_path:
        from lowbit.tools.plot import sqnr_plot_png
        atomic_write_bytes(plot_path, sqnr_plot_png(report))
    click.echo(report_text(report))


@main.command()
@click.argument("model", type=click.Path(dir_okay=False), required=False)
@click.option("--npu", "npus", metavar="PRESET|CONFIG.toml[,...]",
              help="Accelerator preset(s) or description file(s); several (comma-separated) make a sweep.")
@click.option("--precision", "precisions", default=None,
              help="For a float .onnx MODEL: precision(s) to compile, comma-separated (default w8a8). "
                   + _precision_help)
@click.option("--calib", "calib_path", type=click.Path(dir_okay=False),
              help="Calibration .npz, needed to compile a float .onnx MODEL.")
@click.option("--plan", "plan_path", type=click.Path(dir_okay=False), help="Per-layer plan file (TOML).")
@click.option("--inputs", "inputs_path", type=click.Path(dir_okay=False),
              help="Samples .npz ([N, *input_shape]) on which spiking layers' firing rates are measured "
                   "(default for a float MODEL: its --calib samples).")
@click.option("--samples", default=8, show_default=True, help="How many samples measure spiking activity.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), help="Write the report (or sweep) as JSON.")
@click.option("--trace", "trace_path", type=click.Path(dir_okay=False),
              help="Write a timeline for Perfetto / chrome://tracing (Chrome trace-event JSON).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write a roofline plot (PNG).")
@click.option("--list-presets", is_flag=True, help="List the bundled accelerator presets and exit.")
def simulate(model, npus, precisions, calib_path, plan_path, inputs_path, samples, json_path, trace_path,
             plot_path, list_presets):
    """Estimate how MODEL runs on a simulated NPU: per-layer cycles, bound, SRAM/DRAM traffic, energy, CPU
    fallback; totals; arena peak. MODEL is a compiled artifact, an int8 / 16x8 .tflite, or a float .onnx
    (compiled here with --calib). Several presets or precisions give one sweep table."""
    from lowbit.targets.npusim import load_accelerator, presets, simulate as run_simulation, sweep
    from lowbit.targets.npusim.report import roofline_png, sweep_table, trace_json
    from lowbit.targets.npusim.sweep import activity_samples
    from lowbit.tools.api import load_program
    from lowbit.tools.files import atomic_write_bytes, load_npz
    from lowbit.runtime.artifact import Artifact
    if list_presets:
        for name in presets():
            a = load_accelerator(name)
            click.echo(f"{name:<22}{a.description}")
        return
    if not model or not npus:
        raise click.UsageError("MODEL and --npu are required (or --list-presets)")
    names = [n.strip() for n in npus.split(",") if n.strip()]
    precs = [p.strip() for p in (precisions or "w8a8").split(",") if p.strip()]
    accels = [load_accelerator(n) for n in names]   # a bad description fails before any work
    program = load_program(model)
    if not isinstance(program, Artifact):
        if not calib_path:
            raise click.UsageError(f"{model} is a float model: pass --calib to compile it (and --precision), "
                                   f"or simulate a compiled artifact")
        calib = load_npz(calib_path)
        if len(names) > 1 or len(precs) > 1:
            if trace_path or plot_path:
                raise click.UsageError("--trace and --plot describe one run: give one --npu and one --precision")
            from lowbit.quant.calibrate import stderr_progress
            rows = sweep(model, names, precs, calib, plan_path, samples, calib_path, stderr_progress("simulating"))
            if json_path:
                atomic_write_bytes(json_path, json.dumps([{**r, "totals": rep.totals} for _, _, rep, r in rows],
                                                         indent=1).encode())
            click.echo(sweep_table([r for *_, r in rows]))
            return
        import lowbit
        program = lowbit.compile(model, calib, precision=precs[0], plan=plan_path)
        acts = activity_samples(calib, program.graph, samples, calib_path)
    else:
        if precisions or calib_path:
            raise click.UsageError(f"{model} is already compiled ({program.plan.get('precision')}): "
                                   f"--precision and --calib apply to float models")
        acts = None
    if inputs_path:
        acts = activity_samples(load_npz(inputs_path), program.graph, samples, inputs_path)
    if len(accels) > 1 and (trace_path or plot_path):
        raise click.UsageError("--trace and --plot describe one run: give one --npu")
    reports = [run_simulation(program, a, samples=acts) for a in accels]
    if len(reports) > 1:
        from lowbit.targets.npusim.report import sweep_row
        rows = [sweep_row(a.name, str(program.plan.get("precision")), r) for a, r in zip(accels, reports)]
        if json_path:
            atomic_write_bytes(json_path, json.dumps([r.to_dict() for r in reports], indent=1).encode())
        click.echo(sweep_table(rows))
        return
    report = reports[0]
    report.model = os.path.basename(model)
    if json_path:
        atomic_write_bytes(json_path, json.dumps(report.to_dict(), indent=1).encode())
    if trace_path:
        atomic_write_bytes(trace_path, trace_json(report))
    if plot_path:
        atomic_write_bytes(plot_path, roofline_png(report))
    click.echo(report.table())


@main.group()
def zoo():
    """The bundled example models (trained, with evaluation data)."""


@zoo.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def zoo_list(as_json):
    """Name, task, parameters, MACs and float test accuracy of every bundled model."""
    from lowbit.tools import zoo as z
    manifest = z.manifest()
    rows = []
    for name in z.names():
        e = manifest.get(name, {})
        rows.append({"name": name, "task": z.get(name).task, "params": e.get("params"), "macs": e.get("macs"),
                     "float_accuracy": e.get("float_accuracy"), "streaming": z.get(name).streaming})
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    click.echo(f"{'name':<30}{'task':<28}{'params':>10}{'MACs':>12}{'float acc':>11}  streaming")
    for r in rows:
        acc = "-" if r["float_accuracy"] is None else f"{100 * r['float_accuracy']:.2f} %"
        click.echo(f"{r['name']:<30}{r['task']:<28}{r['params'] or '-':>10}{r['macs'] or '-':>12}{acc:>11}  "
                   f"{'yes' if r['streaming'] else 'no'}")


@zoo.command("path")
@click.argument("name")
@click.option("--kind", type=click.Choice(["onnx", "step", "eval", "calib", "plan"]), default="onnx",
              show_default=True, help="Which file: the model, its streaming (step) form, its evaluation set, "
                                      "calibration set, or its family's default precision plan.")
def zoo_path(name, kind):
    """Print the path of a bundled model's file (use it in scripts: lowbit inspect $(lowbit zoo path NAME))."""
    from lowbit.tools import zoo as z
    try:
        p = z.path(name, kind)
    except KeyError as e:
        raise LowbitError(e.args[0]) from None
    if not p.exists():
        raise LowbitError(f"{p} is missing from this installation of lowbit")
    click.echo(str(p))


if __name__ == "__main__":
    sys.exit(main())
