"""Run a .tflite model through LiteRT, by default with its reference kernels (the bit-exact golden model).

``run_litert(path, feeds)`` takes the inputs as a list (in the model's input order) or as a dict keyed by input
tensor name, each an array of the input tensor's own dtype (float32 for a float-I/O model, int8/int16 for an
integer-I/O model), and returns the outputs as a list in the model's output order. The reference resolver
(BUILTIN_REF) is the one lowbit must match bit for bit; ``resolver="default"`` runs LiteRT's default resolver
(XNNPACK for int8/float) for speed comparisons.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence

import numpy as np

RESOLVERS = {"ref": "BUILTIN_REF", "builtin": "BUILTIN", "default": "AUTO"}


@functools.lru_cache(maxsize=32)
def _interpreter(path: str, resolver: str, num_threads: int):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=path, num_threads=num_threads,
                         experimental_op_resolver_type=getattr(OpResolverType, RESOLVERS[resolver]))
    interp.allocate_tensors()
    return interp


def _set_inputs(interp, feeds):
    details = interp.get_input_details()
    if isinstance(feeds, Mapping):
        feeds = [feeds[d["name"]] for d in details]
    if len(feeds) != len(details):
        raise ValueError(f"the model has {len(details)} inputs, got {len(feeds)} arrays")
    for d, x in zip(details, feeds):
        x = np.asarray(x)
        if x.dtype != d["dtype"] or tuple(x.shape) != tuple(d["shape"]):
            raise ValueError(f"input '{d['name']}' expects {np.dtype(d['dtype']).name}{list(d['shape'])}, "
                             f"got {x.dtype}{list(x.shape)}")
        interp.set_tensor(d["index"], x)


def run_litert(path, feeds: Sequence[np.ndarray] | Mapping[str, np.ndarray], resolver: str = "ref",
               num_threads: int = 1) -> list[np.ndarray]:
    """Outputs of the model at ``path`` on ``feeds`` (see the module docstring)."""
    interp = _interpreter(str(path), resolver, num_threads)
    _set_inputs(interp, feeds)
    interp.invoke()
    return [interp.get_tensor(d["index"]).copy() for d in interp.get_output_details()]


def time_litert(path, feeds, resolver: str = "ref", repeat: int = 5, num_threads: int = 1) -> float:
    """Best-of-``repeat`` wall time of one invoke, in milliseconds."""
    interp = _interpreter(str(path), resolver, num_threads)
    _set_inputs(interp, feeds)
    interp.invoke()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        interp.invoke()
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def input_details(path) -> list[dict]:
    """LiteRT's input details (name, shape, dtype, quantization) of the model at ``path``."""
    return _interpreter(str(path), "ref", 1).get_input_details()


def _float_input_range(path, index: int) -> tuple[float, float]:
    """The real range of the integer type a float input is quantized to (by the QUANTIZE reading it)."""
    interp = _interpreter(str(path), "ref", 1)
    tensors = interp.get_tensor_details()
    for op in interp._get_ops_details():
        if op["op_name"] == "QUANTIZE" and index in op["inputs"]:
            out = tensors[op["outputs"][0]]
            scale, zp = out["quantization"]
            info = np.iinfo(out["dtype"])
            return (int(info.min) - zp) * scale, (int(info.max) - zp) * scale
    return -4.0, 4.0


def random_feeds(path, seed: int = 0) -> list[np.ndarray]:
    """Seeded inputs covering each input's full range: integer inputs span the dtype (extremes included);
    float inputs span the input quantizer's range and beyond it (so that Quantize saturates)."""
    rng = np.random.default_rng(seed)
    feeds = []
    for d in input_details(path):
        shape, dtype = tuple(d["shape"]), np.dtype(d["dtype"])
        if dtype.kind in "iu":
            info = np.iinfo(dtype)
            x = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
            flat = x.reshape(-1)
            flat[:2] = [info.min, info.max][: flat.size]
        else:
            lo, hi = _float_input_range(path, d["index"])
            span = hi - lo
            x = rng.uniform(lo - 0.1 * span, hi + 0.1 * span, size=shape).astype(dtype)
        feeds.append(x)
    return feeds
