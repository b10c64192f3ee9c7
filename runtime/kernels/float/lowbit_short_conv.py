"""lowbit.ShortConv: the gated short convolution of LFM2 (between its in and out projections)."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("ShortConv", domain="lowbit")
def ShortConv(bcx, weight, state0=None):
    """Gated causal depthwise convolution, the core of ``y = W_out(C * causal_dwconv_k(B * x))``.

    Inputs: ``bcx [B, T, 3C]`` (the output of W_in, split along the last axis into gates B, C and the input
    x, in that order), ``weight [C, K]`` (depthwise taps; ``weight[:, K-1]`` multiplies the current step),
    optional ``state0 [B, K-1, C]`` or broadcastable (the last K-1 values of B*x; zeros when None).
    No attributes.

        v_t = B_t * x_t
        w   = concat(state0, v) along time                                  # [B, K-1+T, C]
        y_t = C_t * sum_k weight[:, k] * w[t + k]

    Outputs: ``y [B, T, C]``, ``state_last [B, K-1, C]`` (the last K-1 rows of w).
    """
    batch, steps, three_c = bcx.shape
    c = three_c // 3
    k = weight.shape[1]
    gate_b, gate_c, xin = bcx[..., :c], bcx[..., c:2 * c], bcx[..., 2 * c:]
    v = gate_b * xin
    init = np.zeros((batch, k - 1, c), bcx.dtype) if state0 is None else np.broadcast_to(state0, (batch, k - 1, c))
    window = np.concatenate([init.astype(bcx.dtype), v], axis=1)
    conv = np.zeros((batch, steps, c), bcx.dtype)
    for j in range(k):
        conv += window[:, j:j + steps] * weight[:, j].astype(bcx.dtype)
    return gate_c * conv, window[:, steps:]
