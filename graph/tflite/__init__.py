"""TFLite import: ``load_tflite(path) -> Graph`` reads an int8 / 16x8 ``.tflite`` model into lowbit's integer IR.

``reader`` parses the flatbuffer and holds the converter registry (``tflite_op``); every ``ops_*`` module in
this package registers converters for a family of TFLite builtins and is imported here.
"""
import importlib
import pkgutil

from lowbit.graph.tflite.reader import CONVERTERS, ImportContext, load_tflite, tflite_op

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name.startswith("ops_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["CONVERTERS", "ImportContext", "load_tflite", "tflite_op"]
