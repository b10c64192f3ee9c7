"""lowbit: compile neural networks into integer programs for edge NPUs, run them bit-exactly in NumPy,
export them to deployment runtimes and simulate NPU execution.

Python API (the CLI is a thin layer over it):

    import lowbit
    g = lowbit.load("model.onnx")                              # Graph, canonicalised by the standard passes
    outs = lowbit.run(g, {"input": x})                         # float reference executor
    art = lowbit.compile("model.onnx", "calib.npz", precision="w8a8")   # integer program (Artifact)
    art.save("model.lowbit.onnx"); art = lowbit.Artifact.load("model.lowbit.onnx")
    outs = art.run({"input": x})                               # bit-exact integer executor
    report = lowbit.compare("model.onnx", "calib.npz", "eval.npz", ["w8a8", "w8a16"])
    sim = lowbit.simulate(art, npu="ethos-u55-128")            # cycles, traffic, SRAM, energy per layer
    print(sim.table()); sim.totals["latency_ms"]
"""
from lowbit.errors import LowbitError
from lowbit.quant.compile import compile
from lowbit.runtime.artifact import Artifact
from lowbit.tools.api import compare, load, run, simulate

__version__ = "0.1.0"
__all__ = ["load", "run", "compile", "compare", "simulate", "Artifact", "LowbitError", "__version__"]
