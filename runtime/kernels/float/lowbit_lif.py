"""lowbit.LIF: multi-step leaky integrate-and-fire neurons (spikingjelly LIFNode, decay_input, hard reset)."""
import numpy as np

from lowbit.runtime.registry import float_kernel


@float_kernel("LIF", domain="lowbit")
def LIF(x, v0=None, *, tau=2.0, v_threshold=1.0, v_reset=0.0):
    """Integrate ``x [B, T, *F]`` over time (axis 1) and fire.

    Inputs: ``x`` (input current), optional ``v0 [B, *F]`` or broadcastable (initial membrane potential;
    zeros when None). Attributes: ``tau`` (membrane time constant), ``v_threshold``, ``v_reset`` (floats).

        H_t = V_{t-1} + (X_t - (V_{t-1} - v_reset)) / tau     (charge, decay_input=True)
        S_t = 1 if H_t >= v_threshold else 0                  (fire, Heaviside with Theta(0) = 1)
        V_t = v_reset if S_t else H_t                         (hard reset)

    Outputs: ``spikes [B, T, *F]`` (S_t as 0/1 in x's dtype), ``v_last [B, *F]`` (V_{T-1}).
    """
    batch, steps = x.shape[:2]
    feat = x.shape[2:]
    dt = x.dtype
    v = np.zeros((batch,) + feat, dt) if v0 is None else np.broadcast_to(v0, (batch,) + feat).astype(dt)
    tau, v_th, v_r = dt.type(tau), dt.type(v_threshold), dt.type(v_reset)
    spikes = np.empty_like(x)
    for t in range(steps):
        h = v + (x[:, t] - (v - v_r)) / tau
        fired = h >= v_th
        spikes[:, t] = fired
        v = np.where(fired, v_r, h).astype(dt)
    return spikes, v
