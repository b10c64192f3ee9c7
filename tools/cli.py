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
    from lowbit.tools.api import load
    from lowbit.tools.report import inspect_data, inspect_text
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
@_shape_option
def run(model, inputs_path, outputs_path, shapes):
    """Run MODEL on the arrays in --inputs and write the outputs to --outputs."""
    from lowbit.runtime.float_executor import check_feeds
    from lowbit.tools.api import load, run as run_graph
    from lowbit.tools.files import load_npz, save_npz
    from lowbit.graph.onnx_import import bind_input_shapes
    from lowbit.graph.passes import optimize
    feeds = load_npz(inputs_path)
    graph = load(model, _parse_shapes(shapes) or None, optimize=False)
    check_feeds(graph, feeds, what=inputs_path)
    bind_input_shapes(graph, {v.name: feeds[v.name].shape for v in graph.inputs if not v.is_static})
    optimize(graph)
    outs = run_graph(graph, feeds)
    save_npz(outputs_path, outs)
    click.echo(f"wrote {len(outs)} output(s) to {outputs_path}: "
               + ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in outs.items()))


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
@click.option("--kind", type=click.Choice(["onnx", "step", "eval", "calib"]), default="onnx", show_default=True,
              help="Which file: the model, its streaming (step) form, its evaluation set or calibration set.")
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
