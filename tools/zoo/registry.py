"""The zoo's model registry: what each model is, and where its committed files are (no torch needed).

Files of a model ``<name>`` in ``models/``: ``<name>.onnx`` (whole-sequence form), ``<name>_step.onnx``
(streaming form: one time step or token per call, state tensors ``state_in_*`` -> ``state_out_*``; recurrent
models and the VLM only), ``<name>_eval.npz`` (test split keyed by graph input names, plus ``labels``),
``<name>_calib.npz`` (64 training samples, same keys, no labels). ``models/zoo.json`` holds the measured
numbers (parameters, MACs, float test accuracy measured with ONNX Runtime).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MODELS_DIR = Path(__file__).resolve().parent / "models"
MANIFEST = MODELS_DIR / "zoo.json"
PLANS_DIR = Path(__file__).resolve().parent / "plans"
# the precision plan each model family ships as its default (issue 5: found per family, see docs/hybrid_ops.md)
FAMILY_PLANS = {"vit_digits": "vit", "autoneural_vqa": "autoneural", "lmu_seqdigits": "lmu",
                "lmuformer_seqdigits": "lmu", "spiking_lmuformer_seqdigits": "spiking", "mamba_seqdigits": "mamba"}

IMAGE_CLASSIFICATION = "image-classification"
SEQUENCE_CLASSIFICATION = "sequence-classification"
VQA = "visual-question-answering"


@dataclass(frozen=True)
class ZooModel:
    name: str
    task: str
    description: str
    streaming: bool = False

    def files(self, models_dir: Path = MODELS_DIR) -> dict[str, Path]:
        """Committed files by kind: ``onnx``, ``step`` (streaming models), ``eval``, ``calib``, and ``plan``
        (the model family's default precision plan, tools/zoo/plans/, where one exists)."""
        out = {"onnx": models_dir / f"{self.name}.onnx"}
        plan = PLANS_DIR / f"{FAMILY_PLANS[self.name]}.toml" if self.name in FAMILY_PLANS else None
        if plan is not None and plan.exists():
            out["plan"] = plan
        if self.streaming:
            out["step"] = models_dir / f"{self.name}_step.onnx"
        out["eval"] = models_dir / f"{self.name}_eval.npz"
        out["calib"] = models_dir / f"{self.name}_calib.npz"
        return out


MODELS: dict[str, ZooModel] = {m.name: m for m in (
    ZooModel("mobilenet_digits", IMAGE_CLASSIFICATION,
             "MobileNetV2-style CNN on 16x16 digits: inverted residual blocks with depthwise 3x3 convs, "
             "unfolded BatchNorm, ReLU6"),
    ZooModel("vit_digits", IMAGE_CLASSIFICATION,
             "Small ViT on 16x16 digits: 4x4 conv patch embedding, 3 pre-norm blocks of 4-head softmax "
             "attention and GELU MLP, LayerNorm, mean pooling"),
    ZooModel("lmu_seqdigits", SEQUENCE_CLASSIFICATION,
             "Legendre Memory Unit on sequential digits (64 steps of one pixel); lowbit.LMUMemory", True),
    ZooModel("lmuformer_seqdigits", SEQUENCE_CLASSIFICATION,
             "LMUFormer block on sequential digits: causal conv patch embedding, LMU, conv channel mixer", True),
    ZooModel("spiking_lmuformer_seqdigits", SEQUENCE_CLASSIFICATION,
             "Spiking LMUFormer: BatchNorm + LIF neurons (lowbit.LIF, tau 2, threshold 1, hard reset)", True),
    ZooModel("mamba_seqdigits", SEQUENCE_CLASSIFICATION,
             "Mamba-style selective SSM blocks on sequential digits (lowbit.SelectiveScan)", True),
    ZooModel("autoneural_vqa", VQA,
             "AutoNeural-style VLM on digit-VQA: MobileNet vision encoder with a Mobile-MQA block, "
             "normalisation-free MLP connector, LFM2-style backbone (gated short convs, GQA, RMSNorm, SwiGLU)",
             True),
)}


def get(name: str) -> ZooModel:
    try:
        return MODELS[name]
    except KeyError:
        raise KeyError(f"no zoo model {name!r}; available: {', '.join(MODELS)}") from None


def names() -> list[str]:
    return list(MODELS)


def path(name: str, kind: str = "onnx") -> Path:
    """Path of one file of a model; ``kind`` is ``onnx``, ``step``, ``eval`` or ``calib``."""
    files = get(name).files()
    if kind not in files:
        raise KeyError(f"zoo model {name!r} has no {kind!r} file; it has {', '.join(files)}")
    return files[kind]


def manifest() -> dict:
    """The measured numbers of every trained model (``models/zoo.json``)."""
    return json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}


def load_eval(name: str) -> dict[str, np.ndarray]:
    with np.load(path(name, "eval")) as f:
        return {k: f[k] for k in f.files}


def load_calib(name: str) -> dict[str, np.ndarray]:
    with np.load(path(name, "calib")) as f:
        return {k: f[k] for k in f.files}


def zero_states(step_model, batch: int) -> dict[str, np.ndarray]:
    """Zero ``state_in_*`` feeds for a step graph (an ``onnx.ModelProto`` or a path); symbolic dims other than
    the batch (e.g. a KV-cache length) become 0."""
    import onnx

    model = step_model if isinstance(step_model, onnx.ModelProto) else onnx.load(str(step_model))
    feeds = {}
    for vi in model.graph.input:
        if not vi.name.startswith("state_in_"):
            continue
        dims = vi.type.tensor_type.shape.dim
        shape = [batch if i == 0 and not d.HasField("dim_value") else (d.dim_value if d.HasField("dim_value") else 0)
                 for i, d in enumerate(dims)]
        feeds[vi.name] = np.zeros(shape, np.float32)
    return feeds
