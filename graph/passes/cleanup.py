"""Clean-up passes: Constant nodes to constants, Identity/Dropout removal, dead-code removal."""
from __future__ import annotations


from lowbit.graph.ir import Graph, set_const


def lift_constant_nodes(graph: Graph) -> bool:
    """Turn every ``Constant`` node into a constant value (an initializer)."""
    from lowbit.runtime.float_executor import run_node
    changed = False
    for node in [n for n in graph.nodes if n.op_type == "Constant" and n.domain == ""]:
        out = node.outputs[0]
        (value,) = run_node(node, [])
        graph.remove_node(node)
        set_const(out, value)
        changed = True
    return changed


def remove_identities(graph: Graph) -> bool:
    """Remove Identity nodes and inference-mode Dropout nodes (whose mask output nobody reads)."""
    changed = False
    for node in list(graph.nodes):
        if node.domain != "" or node.op_type not in ("Identity", "Dropout"):
            continue
        if node.op_type == "Dropout" and any(o.consumers or o in graph.outputs for o in node.outputs[1:]):
            continue
        if node.op_type == "Dropout" and node.const_input(2) is not None and bool(node.const_input(2)):
            continue  # training_mode=True: not an identity
        if node.op_type == "Dropout" and node.input(2) is not None and node.const_input(2) is None:
            continue
        extra = node.outputs[1:]
        if graph.bypass(node, node.inputs[0]):
            for v in extra:
                graph.values.pop(v.name, None)
            changed = True
    return changed


def remove_dead_nodes(graph: Graph) -> bool:
    """Remove nodes none of whose outputs is read by another node or exposed as a graph output."""
    live = {id(v) for v in graph.outputs}
    keep = []
    for node in reversed(graph.nodes):
        if any(id(v) in live for v in node.outputs):
            keep.append(node)
            live.update(id(v) for v in node.inputs if v is not None)
    if len(keep) == len(graph.nodes):
        return False
    kept = {id(n) for n in keep}
    for node in list(graph.nodes):
        if id(node) not in kept:
            graph.remove_node(node)
    graph.prune_values()
    return True
