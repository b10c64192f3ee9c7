"""Legendre Memory Unit state-space matrices, discretised with zero-order hold (NumPy only, no SciPy).

Continuous form (Voelker et al. 2019, as in the LMUFormer code): ``theta * dm/dt = A m + B u`` with
``A[i, j] = (2i+1) * (-1 if i < j else (-1)**(i-j+1))`` and ``B[i] = (2i+1) * (-1)**i``. With 1/theta folded
in and a time step of 1, zero-order hold gives ``Abar = expm(A/theta)`` and ``Bbar = A^-1 (Abar - I) B/theta``,
read off the matrix exponential of the augmented matrix ``[[A, B], [0, 0]] / theta``.
"""
from __future__ import annotations

import numpy as np


def legendre_continuous(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous ``(A [order, order], B [order, 1])`` of the Legendre delay system, float64."""
    i = np.arange(order)[:, None]
    j = np.arange(order)[None, :]
    a = (2 * i + 1) * np.where(i < j, -1.0, (-1.0) ** (i - j + 1))
    b = (2 * np.arange(order) + 1) * (-1.0) ** np.arange(order)
    return a.astype(np.float64), b[:, None].astype(np.float64)


def expm(m: np.ndarray) -> np.ndarray:
    """Matrix exponential by scaling and squaring with a [13/13] Pade approximant (Higham 2005), float64."""
    m = np.asarray(m, np.float64)
    b = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
         129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
         40840800.0, 960960.0, 16380.0, 182.0, 1.0)
    norm = np.linalg.norm(m, 1)
    s = max(0, int(np.ceil(np.log2(norm / 5.371920351148152))) if norm > 0 else 0)
    a = m / (2.0 ** s)
    ident = np.eye(a.shape[0])
    a2 = a @ a
    a4 = a2 @ a2
    a6 = a4 @ a2
    u = a @ (a6 @ (b[13] * a6 + b[11] * a4 + b[9] * a2) + b[7] * a6 + b[5] * a4 + b[3] * a2 + b[1] * ident)
    v = a6 @ (b[12] * a6 + b[10] * a4 + b[8] * a2) + b[6] * a6 + b[4] * a4 + b[2] * a2 + b[0] * ident
    r = np.linalg.solve(v - u, v + u)
    for _ in range(s):
        r = r @ r
    return r


def zoh(a: np.ndarray, b: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretisation of ``dx/dt = a x + b u``: ``(expm(a dt), int_0^dt expm(a s) ds b)``."""
    n, k = b.shape
    aug = np.zeros((n + k, n + k))
    aug[:n, :n] = a * dt
    aug[:n, n:] = b * dt
    e = expm(aug)
    return e[:n, :n], e[:n, n:]


def lmu_matrices(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Discrete LMU ``(Abar [order, order], Bbar [order, 1])``, float32, for ``m_t = Abar m_{t-1} + Bbar u_t``."""
    a, b = legendre_continuous(order)
    abar, bbar = zoh(a / theta, b / theta)
    return abar.astype(np.float32), bbar.astype(np.float32)


def impulse_response(abar: np.ndarray, bbar: np.ndarray, length: int) -> np.ndarray:
    """``H [length, d, du]`` with ``H[t] = Abar^t Bbar``, so that ``m_t = sum_s H[t-s] u_s`` from zero state."""
    h = np.zeros((length,) + bbar.shape, np.float64)
    cur = bbar.astype(np.float64)
    for t in range(length):
        h[t] = cur
        cur = abar.astype(np.float64) @ cur
    return h.astype(np.float32)
