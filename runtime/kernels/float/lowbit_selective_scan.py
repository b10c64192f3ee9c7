"""lowbit.SelectiveScan: the input-dependent (selective) state-space scan of Mamba."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("SelectiveScan", domain="lowbit")
def SelectiveScan(x, delta, A, B, C, D, h0=None):
    """Diagonal selective SSM over time (Mamba's ``selective_scan_fn`` without the z gate).

    Inputs: ``x [B, T, D]``, ``delta [B, T, D]`` (step sizes, already softplus-ed), ``A [D, N]`` (negative
    state matrix, -exp(A_log)), ``B [B, T, N]``, ``C [B, T, N]`` (input-dependent projections), ``D [D]``
    (skip), optional ``h0 [B, D, N]`` or broadcastable (initial state; zeros when None). No attributes.

        h_t = exp(delta_t[:, None] * A) * h_{t-1} + (delta_t * x_t)[:, None] * B_t[None, :]
        y_t = sum_n h_t[:, n] * C_t[n] + D * x_t

    Outputs: ``y [B, T, D]``, ``h_last [B, D, N]``.
    """
    batch, steps, dim = x.shape
    n = A.shape[1]
    dt = x.dtype
    h = np.zeros((batch, dim, n), dt) if h0 is None else np.broadcast_to(h0, (batch, dim, n)).astype(dt)
    y = np.empty_like(x)
    for t in range(steps):
        decay = np.exp(delta[:, t, :, None] * A)
        h = decay * h + (delta[:, t] * x[:, t])[:, :, None] * B[:, t, None, :]
        y[:, t] = (h * C[:, t, None, :]).sum(-1) + D * x[:, t]
    return y, h
