"""lowbit.RMSNorm: root-mean-square normalisation over the last axis."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("RMSNorm", domain="lowbit")
def RMSNorm(x, scale, *, epsilon=1e-6):
    """``y = x / sqrt(mean(x**2, axis=-1, keepdims=True) + epsilon) * scale``.

    Inputs: ``x [..., C]``, ``scale [C]``. Attribute: ``epsilon`` (float). Output: ``y`` shaped like x.
    """
    ms = np.mean(x * x, axis=-1, keepdims=True)
    return (x / np.sqrt(ms + x.dtype.type(epsilon)) * scale).astype(x.dtype)
