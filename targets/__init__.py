"""Deployment targets (TFLite/LiteRT, ONNX Runtime QDQ, Arm Ethos-U through Vela, CPU) behind one interface
(targets/base.py); importing this package registers every target module named ``target_*.py``."""
import importlib
import pkgutil

from lowbit.targets.base import TARGETS, Constraint, Placement, Target, get_target, register_target

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name.startswith("target_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["TARGETS", "Constraint", "Placement", "Target", "get_target", "register_target"]
