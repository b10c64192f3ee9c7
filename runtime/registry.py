"""Kernel registries: one table per executor, keyed by (domain, op_type).

A float kernel is a plain function named after its op. It takes the node's inputs positionally as NumPy
arrays (None for an omitted optional input) and the node's ONNX attributes as keyword arguments, named as in
the ONNX spec, and returns one array or a tuple of arrays, one per node output:

    @float_kernel("Conv")
    def Conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None, pads=None,
             strides=None): ...

Kernels implement the canonical (latest-opset) form of each op; the ONNX importer rewrites older forms
into it, so a kernel never branches on opset versions.
"""
from __future__ import annotations

from typing import Callable

from lowbit.errors import UnsupportedOpError

Kernel = Callable[..., object]


class KernelRegistry:
    def __init__(self, kind: str):
        self.kind = kind
        self._table: dict[tuple[str, str], Kernel] = {}

    def register(self, op_type: str, domain: str = "") -> Callable[[Kernel], Kernel]:
        def deco(fn: Kernel) -> Kernel:
            key = (_norm_domain(domain), op_type)
            if key in self._table:
                raise RuntimeError(f"{self.kind} kernel for {key} registered twice")
            self._table[key] = fn
            return fn
        return deco

    def get(self, op_type: str, domain: str = "") -> Kernel | None:
        return self._table.get((_norm_domain(domain), op_type))

    def supports(self, op_type: str, domain: str = "") -> bool:
        return (_norm_domain(domain), op_type) in self._table

    def ops(self) -> list[str]:
        return sorted(f"{d}.{o}" if d else o for d, o in self._table)

    def check_graph(self, graph) -> None:
        """Raise one UnsupportedOpError listing every node whose op has no kernel here."""
        missing = [n for n in graph.nodes if not self.supports(n.op_type, n.domain)]
        if missing:
            listed = ", ".join(f"{n.describe()}" for n in missing[:20])
            more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
            kinds = sorted({f"{n.domain}.{n.op_type}" if n.domain else n.op_type for n in missing})
            raise UnsupportedOpError(
                f"lowbit's {self.kind} executor has no kernel for {', '.join(kinds)}: {listed}{more}. "
                f"Run 'lowbit inspect' for the list of supported ops, or replace these ops before export")


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


FLOAT_KERNELS = KernelRegistry("float")
float_kernel = FLOAT_KERNELS.register

# Integer kernels live in the ``lowbit.int`` domain (see docs/integer_ir.md). The integer executor looks there
# first and falls back to the float table for dtype-generic data movement (Reshape, Transpose, Slice, ...).
INT_DOMAIN = "lowbit.int"
INT_KERNELS = KernelRegistry("integer")


def int_kernel(op_type: str):
    return INT_KERNELS.register(op_type, INT_DOMAIN)
