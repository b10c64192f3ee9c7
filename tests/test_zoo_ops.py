"""The ``lowbit``-domain ops of the model zoo: NumPy float kernels against ONNX Runtime running the
model-local function bodies (the outside oracle), on random float32 inputs."""
import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")

from lowbit.runtime.registry import FLOAT_KERNELS  # noqa: E402
import lowbit.runtime.kernels.float  # noqa: E402,F401  (registers the kernels)
from lowbit.tools.zoo import onnx_ops  # noqa: E402
from lowbit.tools.zoo.lmu import lmu_matrices  # noqa: E402

RNG = np.random.default_rng(0)
ATOL = 2e-5


def _f32(*shape, scale=1.0):
    return (RNG.standard_normal(shape) * scale).astype(np.float32)


def _ort(op, feeds, out_names, **attrs):
    model = onnx_ops.single_op_model(op, {k: list(v.shape) for k, v in feeds.items()},
                                     {k: None for k in out_names}, **attrs)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _kernel(op):
    return FLOAT_KERNELS.get(op, "lowbit")


@pytest.mark.parametrize("batch,steps,du,order", [(1, 1, 1, 4), (3, 17, 1, 16), (2, 9, 3, 8)])
def test_lmu_memory(batch, steps, du, order):
    abar, _ = lmu_matrices(order, theta=float(steps))
    bbar = _f32(order, du)
    u, m0 = _f32(batch, steps, du), _f32(batch, order)
    want = _ort("LMUMemory", {"u": u, "Abar": abar, "Bbar": bbar, "m0": m0}, ["m", "m_last"])
    got = _kernel("LMUMemory")(u, abar, bbar, m0)
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == np.float32
        np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-5)


def test_lmu_memory_zero_state_broadcast():
    abar, bbar = lmu_matrices(8, theta=8.0)
    u = _f32(2, 8, 1)
    want = _ort("LMUMemory", {"u": u, "Abar": abar, "Bbar": bbar, "m0": np.zeros((1, 8), np.float32)},
                ["m", "m_last"])
    got = _kernel("LMUMemory")(u, abar, bbar, None)
    np.testing.assert_allclose(got[0], want[0], atol=ATOL)


@pytest.mark.parametrize("tau,v_threshold,v_reset", [(2.0, 1.0, 0.0), (3.0, 0.5, -0.25)])
@pytest.mark.parametrize("shape", [(2, 11, 5), (1, 4, 3, 2)])
def test_lif(shape, tau, v_threshold, v_reset):
    x = _f32(*shape, scale=1.5)
    v0 = _f32(shape[0], *shape[2:], scale=0.3)
    attrs = dict(tau=tau, v_threshold=v_threshold, v_reset=v_reset)
    want = _ort("LIF", {"x": x, "v0": v0}, ["spikes", "v_last"], **attrs)
    got = _kernel("LIF")(x, v0, **attrs)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], atol=ATOL)
    assert set(np.unique(got[0])) <= {0.0, 1.0} and got[0].any()


@pytest.mark.parametrize("batch,steps,dim,n", [(1, 1, 3, 2), (2, 13, 6, 4)])
def test_selective_scan(batch, steps, dim, n):
    x, b, c = _f32(batch, steps, dim), _f32(batch, steps, n), _f32(batch, steps, n)
    delta = np.log1p(np.exp(_f32(batch, steps, dim))).astype(np.float32)
    a = -np.exp(_f32(dim, n, scale=0.5)).astype(np.float32)
    d, h0 = _f32(dim), _f32(batch, dim, n)
    feeds = {"x": x, "delta": delta, "A": a, "B": b, "C": c, "D": d, "h0": h0}
    want = _ort("SelectiveScan", feeds, ["y", "h_last"])
    got = _kernel("SelectiveScan")(x, delta, a, b, c, d, h0)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("batch,steps,channels,k", [(1, 1, 4, 3), (2, 10, 5, 3), (2, 6, 3, 4)])
def test_short_conv(batch, steps, channels, k):
    bcx, w, s0 = _f32(batch, steps, 3 * channels), _f32(channels, k), _f32(batch, k - 1, channels)
    want = _ort("ShortConv", {"bcx": bcx, "weight": w, "state0": s0}, ["y", "state_last"])
    got = _kernel("ShortConv")(bcx, w, s0)
    for ww, g in zip(want, got):
        assert g.shape == ww.shape
        np.testing.assert_allclose(g, ww, atol=ATOL, rtol=1e-5)


def test_short_conv_streams():
    """Running two chunks with the carried state equals one pass over the whole sequence."""
    bcx, w = _f32(2, 9, 12), _f32(4, 3)
    whole, _ = _kernel("ShortConv")(bcx, w)
    y1, s1 = _kernel("ShortConv")(bcx[:, :4], w)
    y2, _ = _kernel("ShortConv")(bcx[:, 4:], w, s1)
    np.testing.assert_allclose(np.concatenate([y1, y2], 1), whole, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 8), (2, 5, 16)])
def test_rms_norm(shape):
    x, scale = _f32(*shape, scale=3.0), _f32(shape[-1])
    want = _ort("RMSNorm", {"x": x, "scale": scale}, ["y"], epsilon=1e-5)
    got = _kernel("RMSNorm")(x, scale, epsilon=1e-5)
    np.testing.assert_allclose(got, want[0], atol=ATOL, rtol=1e-5)


@pytest.mark.parametrize("order,theta", [(4, 4.0), (64, 64.0), (128, 64.0)])
def test_lmu_zoh_matches_scipy_cont2discrete(order, theta):
    """The NumPy-only ZOH discretisation equals SciPy's (as used by the LMUFormer code)."""
    signal = pytest.importorskip("scipy.signal")
    from lowbit.tools.zoo.lmu import legendre_continuous

    a, b = legendre_continuous(order)
    want_a, want_b, *_ = signal.cont2discrete((a / theta, b / theta, np.ones((1, order)), np.zeros((1, 1))),
                                              dt=1.0, method="zoh")
    got_a, got_b = lmu_matrices(order, theta)
    np.testing.assert_allclose(got_a, want_a, atol=1e-6)
    np.testing.assert_allclose(got_b, want_b, atol=1e-6)
