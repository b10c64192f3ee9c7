"""Small helpers the lowering tests share: a float lowbit Graph from ONNX node lists, and SQNR."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from lowbit.graph.onnx_import import from_onnx_model


def float_graph(nodes, inputs, outputs, inits=(), opset=17):
    """A lowbit Graph of ``nodes`` with float32 ``inputs`` [(name, shape)], ``outputs`` [name] and ``inits``
    [(name, array)], imported through lowbit's ONNX importer."""
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
                          initializer=[numpy_helper.from_array(np.asarray(a), n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return from_onnx_model(m)


def sqnr(ref, x) -> float:
    """10 log10(sum ref^2 / sum (ref - x)^2), in dB."""
    ref = np.asarray(ref, np.float64)
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - np.asarray(x, np.float64)) ** 2))
