"""Graph IR invariants: verify() names the first violation; editing helpers keep links right."""
import numpy as np
import pytest

from lowbit.errors import GraphError
from lowbit.graph.ir import Graph


def _chain():
    g = Graph("t")
    x = g.new_value("x", (2, 3), np.float32)
    g.inputs.append(x)
    a = g.new_value("a")
    b = g.new_value("b")
    g.add_node("Relu", [x], [a], name="r1")
    g.add_node("Identity", [a], [b], name="id")
    g.outputs.append(b)
    return g, x, a, b


def test_valid_chain_verifies():
    g, *_ = _chain()
    g.verify()


def test_undefined_value_is_named():
    g, x, a, b = _chain()
    ghost = g.new_value("ghost")
    g.add_node("Relu", [ghost], [g.new_value("c")], name="r2")
    with pytest.raises(GraphError, match="reads value 'ghost', which is never defined"):
        g.verify()


def test_out_of_order_is_rejected_and_toposort_fixes_it():
    g, *_ = _chain()
    g.nodes.reverse()
    with pytest.raises(GraphError, match="produced later"):
        g.verify()
    g.toposort()
    g.verify()
    assert [n.name for n in g.nodes] == ["r1", "id"]


def test_cycle_is_detected():
    g, x, a, b = _chain()
    add_out = g.new_value("loop")
    n = g.add_node("Add", [x, b], [add_out], name="add")
    g.set_input(g.nodes[0], 0, add_out)  # r1 now reads the value that depends on it
    with pytest.raises(GraphError, match="cycle"):
        g.toposort()
    assert n in g.nodes


def test_double_definition_rejected():
    g, x, a, b = _chain()
    with pytest.raises(GraphError, match="produced by both"):
        g.add_node("Relu", [x], [a], name="again")


def test_bypass_keeps_graph_output_name():
    g, x, a, b = _chain()
    assert g.bypass(g.nodes[1], a)
    g.verify()
    assert [v.name for v in g.outputs] == ["b"]
    assert g.nodes[0].outputs[0].name == "b"


def test_bypass_refuses_when_it_would_rename_a_graph_input():
    g = Graph("t")
    x = g.new_value("x", (2,), np.float32)
    g.inputs.append(x)
    y = g.new_value("y")
    node = g.add_node("Identity", [x], [y])
    g.outputs.append(y)
    assert not g.bypass(node, x)
    g.verify()


def test_constant_shape_mismatch_is_named():
    g, *_ = _chain()
    c = g.add_const("w", np.zeros((2, 2), np.float32))
    c.shape = (3,)
    with pytest.raises(GraphError, match="constant 'w' is declared"):
        g.verify()
