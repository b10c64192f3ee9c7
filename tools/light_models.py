"""The nine light models shipped inside the onnx package (``onnx/backend/test/data/light``), made real.

Their weights are ``ConstantOfShape(0.02)`` placeholders. ``realize`` replaces each with a seeded random
tensor fitting its role (He-normal conv/FC weights, small biases, BatchNorm scale/shift) and then sets every
BatchNormalization's running mean and variance to the statistics of its actual input on a seeded random image,
so activations keep a trained network's scale through the depth of the model (which matters for quantization
studies). The result is a 5-550 MB model made on the fly and never committed.

    python -m lowbit.tools.light_models resnet50 -o resnet50.onnx
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

LIGHT_MODELS = ["alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50", "shufflenet",
                "squeezenet", "vgg19", "zfnet512"]
_FILES = {"alexnet": "light_bvlc_alexnet.onnx", **{m: f"light_{m}.onnx" for m in LIGHT_MODELS if m != "alexnet"}}


def light_model_path(name: str) -> str:
    if name not in _FILES:
        raise KeyError(f"unknown light model '{name}'; choose one of {', '.join(LIGHT_MODELS)}")
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", _FILES[name])


def _role_init(rng, shape, role) -> np.ndarray:
    shape = tuple(int(d) for d in shape)
    op, slot, attrs = role
    if op in ("Conv", "Gemm") and slot == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else (shape[1] if attrs.get("transB", 0) else shape[0])
        return rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), shape)
    if op == "BatchNormalization":
        return {1: lambda: rng.uniform(0.5, 1.5, shape), 2: lambda: rng.normal(0.0, 0.1, shape),
                3: lambda: np.zeros(shape), 4: lambda: np.ones(shape)}[slot]()
    if op == "Mul":
        return rng.uniform(0.5, 1.5, shape)
    return rng.normal(0.0, 0.05, shape)


def _role(model: onnx.ModelProto, value: str):
    """(op type, input slot, attrs) of the first real consumer of ``value``, looking through Unsqueeze."""
    for n in model.graph.node:
        if value in n.input:
            if n.op_type in ("Unsqueeze", "Reshape"):
                return _role(model, n.output[0])
            return n.op_type, list(n.input).index(value), {a.name: onnx.helper.get_attribute_value(a)
                                                           for a in n.attribute}
    return "", 0, {}


def realize(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light model ``name`` with seeded random weights and input-matched BatchNorm statistics."""
    model = onnx.load(light_model_path(name))
    rng = np.random.default_rng(seed)
    inits = {i.name: i for i in model.graph.initializer}
    keep_nodes, drop_inits = [], set()
    for n in model.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            shape = numpy_helper.to_array(inits[n.input[0]])
            arr = _role_init(rng, shape, _role(model, n.output[0])).astype(np.float32)
            model.graph.initializer.append(numpy_helper.from_array(arr, n.output[0]))
            drop_inits.add(n.input[0])
        else:
            keep_nodes.append(n)
    del model.graph.node[:]
    model.graph.node.extend(keep_nodes)
    still_used = {i for n in keep_nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name not in drop_inits or i.name in still_used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(kept)
    inputs = [i for i in model.graph.input if i.name not in drop_inits or i.name in still_used]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    _calibrate_batchnorm(model, rng)
    return model


def _calibrate_batchnorm(model: onnx.ModelProto, rng) -> None:
    """Set each BatchNormalization's mean/var to its input's per-channel statistics on one random image."""
    from lowbit.graph.ir import set_const
    from lowbit.graph.onnx_import import from_onnx_model
    from lowbit.runtime.float_executor import run as run_float
    graph = from_onnx_model(model)
    stats: dict[str, np.ndarray] = {}

    def observe(node, outs):
        for v, o in zip(node.outputs, outs):
            for c in v.consumers:
                if c.op_type == "BatchNormalization" and c.inputs[0] is v and o.ndim >= 2:
                    axes = tuple(i for i in range(o.ndim) if i != 1)
                    mean, var = o.mean(axis=axes), o.var(axis=axes) + 1e-3
                    for slot, arr in ((3, mean), (4, var)):
                        set_const(c.inputs[slot], arr.astype(np.float32))  # read when the BN node runs
                        stats[c.inputs[slot].name] = arr.astype(np.float32)

    feeds = {v.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in v.shape]).astype(np.float32)
             for v in graph.inputs}
    run_float(graph, feeds, observe=observe)
    for init in model.graph.initializer:
        if init.name in stats:
            init.CopyFrom(numpy_helper.from_array(stats[init.name], init.name))


def main(argv=None) -> None:
    import argparse
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=LIGHT_MODELS)
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from lowbit.tools.files import atomic_write_bytes
    atomic_write_bytes(args.output, realize(args.name, args.seed).SerializeToString())


if __name__ == "__main__":
    main()
