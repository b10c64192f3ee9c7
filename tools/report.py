"""Human-readable and JSON reports: ``inspect``."""
from __future__ import annotations

from lowbit.graph.ir import Graph, Value
from lowbit.graph.stats import graph_totals, node_macs, node_params
import lowbit.runtime.kernels.float  # noqa: F401  (registers the kernels)
import lowbit.runtime.kernels.int  # noqa: F401
from lowbit.runtime.registry import FLOAT_KERNELS, INT_KERNELS


def _si(n: int) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(n)


def _value_json(v: Value | None):
    if v is None:
        return None
    return {"name": v.name, "shape": None if v.shape is None else list(v.shape),
            "dtype": None if v.dtype is None else v.dtype.name, "const": v.const is not None}


def inspect_data(graph: Graph, source: str = "") -> dict:
    seen: set[int] = set()
    nodes = []
    for n in graph.nodes:
        nodes.append({"name": n.name, "op": f"{n.domain}.{n.op_type}" if n.domain else n.op_type,
                      "inputs": [_value_json(v) for v in n.inputs], "outputs": [_value_json(v) for v in n.outputs],
                      "params": node_params(n, seen), "macs": node_macs(n)})
    unsupported: dict[str, list[str]] = {}
    for n in graph.nodes:
        if not (FLOAT_KERNELS.supports(n.op_type, n.domain) or INT_KERNELS.supports(n.op_type, n.domain)):
            unsupported.setdefault(f"{n.domain}.{n.op_type}" if n.domain else n.op_type, []).append(n.name)
    return {"model": source, "graph": graph.name, "opsets": graph.opsets,
            "inputs": [_value_json(v) for v in graph.inputs], "outputs": [_value_json(v) for v in graph.outputs],
            "nodes": nodes, "totals": graph_totals(graph), "op_histogram": graph.op_histogram(),
            "unsupported": unsupported}


def inspect_text(data: dict) -> str:
    lines = [f"model {data['model']}  (graph '{data['graph']}', opsets "
             + ", ".join(f"{d or 'ai.onnx'}:{v}" for d, v in data["opsets"].items()) + ")"]
    for kind in ("inputs", "outputs"):
        lines.append(f"{kind}: " + ", ".join(f"{v['name']} {_fmt(v)}" for v in data[kind]))
    rows = [("#", "node", "op", "inputs", "outputs", "params", "MACs")]
    for i, n in enumerate(data["nodes"]):
        ins = ", ".join(_fmt(v) for v in n["inputs"] if v is not None and not v["const"])
        outs = ", ".join(_fmt(v) for v in n["outputs"])
        rows.append((str(i), n["name"], n["op"], ins, outs, _si(n["params"]) if n["params"] else "",
                     _si(n["macs"]) if n["macs"] else ""))
    widths = [min(max(len(r[k]) for r in rows), 48) for k in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(c[:w].ljust(w) if k < 5 else c.rjust(w)
                               for k, (c, w) in enumerate(zip(r, widths))).rstrip())
    t = data["totals"]
    lines.append(f"totals: {t['nodes']} nodes, {_si(t['params'])} parameters, {_si(t['macs'])} MACs")
    lines.append("ops: " + ", ".join(f"{k} {v}" for k, v in data["op_histogram"].items()))
    if data["unsupported"]:
        lines.append("lowbit cannot run yet: " + "; ".join(
            f"{op} ({len(names)} node{'s' if len(names) > 1 else ''}: {', '.join(names[:5])}"
            f"{', ...' if len(names) > 5 else ''})" for op, names in data["unsupported"].items()))
    else:
        lines.append("lowbit can run every op of this model")
    lines.extend(f"note: {n}" for n in data.get("notes", []))
    return "\n".join(lines)


def _fmt(v: dict) -> str:
    dt = v["dtype"] or "?"
    sh = "?" if v["shape"] is None else "x".join(str(d) for d in v["shape"]) or "scalar"
    return f"{dt}[{sh}]"
