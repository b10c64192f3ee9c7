"""Integer NumPy kernels (domain ``lowbit.int``), one op family per module; importing registers them all."""
import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_mod.name}")
