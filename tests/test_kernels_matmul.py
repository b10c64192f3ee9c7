import numpy as np
import pytest

from lowbit.errors import ModelError
from lowbit.runtime.kernels.float.matmul import Einsum, Gemm, MatMul
from nodecheck import check_op


@pytest.mark.parametrize("transA", [0, 1])
@pytest.mark.parametrize("transB", [0, 1])
@pytest.mark.parametrize("c_shape", [None, (), (1,), (5,), (3, 1), (1, 5), (3, 5)])
def test_gemm_transposes_and_c_broadcast(rng, transA, transB, c_shape):
    a = rng.standard_normal((4, 3) if transA else (3, 4)).astype(np.float32)
    b = rng.standard_normal((5, 4) if transB else (4, 5)).astype(np.float32)
    c = None if c_shape is None else rng.standard_normal(c_shape).astype(np.float32)
    check_op("Gemm", {"a": a, "b": b, "c": c}, {"transA": transA, "transB": transB}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha, beta", [(0.5, 2.0), (1.0, 0.0), (-1.5, 1.0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gemm_alpha_beta(rng, alpha, beta, dtype):
    a = rng.standard_normal((3, 6)).astype(dtype)
    b = rng.standard_normal((5, 6)).astype(dtype)
    c = rng.standard_normal((1, 5)).astype(dtype)
    check_op("Gemm", {"a": a, "b": b, "c": c}, {"alpha": alpha, "beta": beta, "transB": 1}, consts=("b", "c"),
             rtol=1e-5)


def test_gemm_fc_layer(rng):
    a = rng.standard_normal((1, 2048)).astype(np.float32)
    w = (rng.standard_normal((1000, 2048)) * 0.02).astype(np.float32)
    check_op("Gemm", {"a": a, "w": w, "c": rng.standard_normal(1000).astype(np.float32)}, {"transB": 1},
             consts=("w", "c"), rtol=1e-4, atol=1e-5)


def test_gemm_float16_and_errors(rng):
    a = rng.standard_normal((3, 4)).astype(np.float16)
    b = rng.standard_normal((4, 2)).astype(np.float16)
    check_op("Gemm", {"a": a, "b": b}, rtol=1e-2, atol=1e-2)
    with pytest.raises(ModelError, match="do not match"):
        Gemm(a, b, transB=1)
    with pytest.raises(ModelError, match="broadcast"):
        Gemm(a, b, np.zeros((4,), np.float16))


@pytest.mark.parametrize("a_shape, b_shape", [
    ((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)), ((4,), (4,)),
    ((2, 3, 4), (4, 5)), ((4,), (2, 4, 5)), ((2, 3, 4), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 2)),
    ((1, 3, 4), (6, 4, 2)), ((2, 3, 1, 4), (1, 4, 7)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_broadcasting(rng, a_shape, b_shape, dtype):
    check_op("MatMul", {"a": rng.standard_normal(a_shape).astype(dtype),
                        "b": rng.standard_normal(b_shape).astype(dtype)}, rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint32, np.uint64])
def test_matmul_integers(rng, dtype):
    check_op("MatMul", {"a": rng.integers(0, 50, (2, 3, 4)).astype(dtype),
                        "b": rng.integers(0, 50, (4, 5)).astype(dtype)})


def test_matmul_float16(rng):
    check_op("MatMul", {"a": rng.standard_normal((2, 3, 8)).astype(np.float16),
                        "b": rng.standard_normal((8, 4)).astype(np.float16)}, rtol=1e-2, atol=1e-2)


def test_matmul_errors():
    with pytest.raises(ModelError, match="inner"):
        MatMul(np.zeros((3, 4), np.float32), np.zeros((5, 2), np.float32))
    with pytest.raises(ModelError, match="broadcast"):
        MatMul(np.zeros((2, 3, 4), np.float32), np.zeros((3, 4, 2), np.float32))


EINSUM = {
    "matmul": ("ij,jk->ik", [(3, 4), (4, 5)]),
    "batched": ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    "transpose": ("ij->ji", [(3, 4)]),
    "trace_like_sum": ("ii->i", [(4, 4)]),
    "reduce": ("ijk->i", [(2, 3, 4)]),
    "outer": ("i,j->ij", [(3,), (4,)]),
    "dot": ("i,i", [(5,), (5,)]),
    "implicit": ("ij,jk", [(3, 4), (4, 5)]),
    "ellipsis": ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    "attention": ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    "three_operands": ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 5)]),
    "spaces": ("ij, jk -> ik", [(3, 4), (4, 5)]),
}


@pytest.mark.parametrize("case", list(EINSUM))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_einsum(rng, case, dtype):
    eq, shapes = EINSUM[case]
    inputs = {f"x{i}": rng.standard_normal(s).astype(dtype) for i, s in enumerate(shapes)}
    check_op("Einsum", inputs, {"equation": eq}, rtol=1e-5, atol=1e-6)


def test_einsum_int(rng):
    check_op("Einsum", {"a": rng.integers(-5, 5, (3, 4)).astype(np.int32),
                        "b": rng.integers(-5, 5, (4, 2)).astype(np.int32)}, {"equation": "ij,jk->ik"})


@pytest.mark.parametrize("eq, shapes", [("ij,jk->ik", [(3, 4)]), ("ij->ji", [(3, 4, 5)]), ("i$j->j", [(3, 4)]),
                                        ("ij,jk->ik", [(3, 4), (5, 6)])])
def test_einsum_errors(eq, shapes):
    with pytest.raises(ModelError, match="Einsum"):
        Einsum(*(np.zeros(s, np.float32) for s in shapes), equation=eq)
