"""Graph IR, ONNX import/export and graph passes."""
from lowbit.graph.ir import Graph, Node, Value

__all__ = ["Graph", "Node", "Value"]
