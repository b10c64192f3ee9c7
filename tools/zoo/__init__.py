"""lowbit's example-model zoo: small trained models as ONNX files, with evaluation and calibration data.

    from lowbit.tools import zoo
    zoo.names()                                   # the models
    zoo.path("lmu_seqdigits", "step")             # a committed file
    zoo.evaluate("mobilenet_digits", zoo.ort_runner(zoo.path("mobilenet_digits")))

Training (``python -m lowbit.tools.zoo.train``) needs the ``train`` extra (torch); nothing imported here does.
Modules named ``torch_*`` need torch and are imported only by the training recipes.
"""
from .evaluation import evaluate, lowbit_runner, ort_runner, task_accuracy_fn
from .registry import MODELS, get, load_calib, load_eval, manifest, names, path

__all__ = ["MODELS", "evaluate", "get", "load_calib", "load_eval", "manifest", "names", "lowbit_runner", "ort_runner",
           "path", "task_accuracy_fn"]
