"""Imports every array model so that each registers itself (ARRAY_MODELS)."""
from lowbit.targets.npusim import ethosu, generic, systolic  # noqa: F401
