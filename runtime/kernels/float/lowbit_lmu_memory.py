"""lowbit.LMUMemory: the linear Legendre-memory recurrence of an LMU."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("LMUMemory", domain="lowbit")
def LMUMemory(u, Abar, Bbar, m0=None):
    """Run the discrete LMU memory over time.

    Inputs: ``u [B, T, du]`` (the encoded input u_t = f(W_u x_t)), ``Abar [d, d]`` and ``Bbar [d, du]``
    (the zero-order-hold discretisation of the Legendre system, theta folded in), optional
    ``m0 [B, d]`` or broadcastable ``[1, d]`` (initial memory; zeros when None). No attributes.

        m_t = Abar @ m_{t-1} + Bbar @ u_t,   t = 0 .. T-1,   m_{-1} = m0

    Outputs: ``m [B, T, d]`` (every m_t), ``m_last [B, d]`` (m_{T-1}; m0 when T == 0).
    """
    batch, steps, _ = u.shape
    d = Abar.shape[0]
    m = np.zeros((batch, d), u.dtype) if m0 is None else np.broadcast_to(m0, (batch, d)).astype(u.dtype)
    a_t, b_t = Abar.T.astype(u.dtype), Bbar.T.astype(u.dtype)
    out = np.empty((batch, steps, d), u.dtype)
    for t in range(steps):
        m = m @ a_t + u[:, t] @ b_t
        out[:, t] = m
    return out, m
