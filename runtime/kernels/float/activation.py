"""Element-wise activations."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("Relu")
def Relu(x):
    """y = max(x, 0)"""
    return np.maximum(x, np.zeros((), x.dtype))
