"""lowbit: compile neural networks into integer programs for edge NPUs, run them bit-exactly in NumPy,
export them to deployment runtimes and simulate NPU execution.

Python API (the CLI is a thin layer over it):

    import lowbit
    g = lowbit.load("model.onnx")                 # Graph, canonicalised by the standard passes
    outs = lowbit.run(g, {"input": x})            # float reference executor
"""
from lowbit.errors import LowbitError
from lowbit.tools.api import load, run

__version__ = "0.1.0"
__all__ = ["load", "run", "LowbitError", "__version__"]
