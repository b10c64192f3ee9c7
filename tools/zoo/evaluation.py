"""Task accuracy of a zoo model under any executor (no torch needed).

An executor is plugged in as ``run_fn(feeds) -> outputs``: ``feeds`` maps graph input names to arrays with a
leading batch axis, ``outputs`` is a dict by output name or a list in graph output order. ``ort_runner``
builds one for ONNX Runtime; lowbit's executors can be wrapped the same way.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

import numpy as np

from . import data, registry

Outputs = Union[Mapping[str, np.ndarray], Sequence[np.ndarray]]
RunFn = Callable[[dict], Outputs]


def ort_runner(model_path, threads: int = 1) -> RunFn:
    """A ``run_fn`` executing ``model_path`` with ONNX Runtime's CPU provider; returns a dict by output name."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(model_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]

    def run(feeds):
        return dict(zip(names, sess.run(None, dict(feeds))))

    return run


def lowbit_runner(model_path) -> RunFn:
    """A ``run_fn`` executing ``model_path`` with lowbit's importer, passes and float executor."""
    import lowbit

    graph = lowbit.load(str(model_path))

    def run(feeds):
        return lowbit.run(graph, dict(feeds))

    return run


RUNNERS = {"ort": ort_runner, "lowbit": lowbit_runner}


def _first(outputs: Outputs, key: str = "logits") -> np.ndarray:
    if isinstance(outputs, Mapping):
        return np.asarray(outputs[key] if key in outputs else next(iter(outputs.values())))
    return np.asarray(outputs[0])


def _batches(feeds: dict, batch_size: int):
    n = len(next(iter(feeds.values())))
    for i in range(0, n, batch_size):
        yield {k: v[i:i + batch_size] for k, v in feeds.items()}


def predict(run_fn: RunFn, feeds: dict, batch_size: int = 512) -> np.ndarray:
    """Class predictions ``[N]`` of a classifier over stacked feeds."""
    return np.concatenate([_first(run_fn(b)).argmax(-1) for b in _batches(feeds, batch_size)])


def greedy_answers(run_fn: RunFn, image: np.ndarray, question: np.ndarray, steps: int = data.ANSWER_LEN,
                   batch_size: int = 512) -> np.ndarray:
    """Greedy decoding with the whole-sequence VQA graph: re-run image + question + answer so far, append the
    argmax of the last position, ``steps`` times. Returns ``[N, steps]`` int64 token ids."""
    outs = []
    for b in _batches({"image": image, "tokens": question}, batch_size):
        tokens = b["tokens"]
        for _ in range(steps):
            logits = _first(run_fn({"image": b["image"], "tokens": tokens}))
            tokens = np.concatenate([tokens, logits[:, -1].argmax(-1)[:, None].astype(np.int64)], 1)
        outs.append(tokens[:, question.shape[1]:])
    return np.concatenate(outs)


def exact_match(generated: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Per sample: the generated tokens equal the reference answer up to and including its <eos>."""
    hits = []
    for g, a in zip(generated, answers):
        n = int(np.argmax(a == data.EOS)) + 1
        hits.append(bool(np.array_equal(g[:n], a[:n])))
    return np.array(hits)


def task_accuracy_fn(name: str, eval_data: dict):
    """``accuracy_fn`` for quant.compare.compare() when zoo model ``name`` is not scored by argmax against
    labels (the VQA model: exact answers under greedy decoding); None otherwise."""
    if name not in registry.names() or registry.get(name).task != registry.VQA:
        return None
    return lambda run_fn: evaluate(name, run_fn, eval_data)


def evaluate(name: str, run_fn: RunFn, eval_data: dict | None = None) -> float:
    """Float test accuracy of zoo model ``name`` under ``run_fn`` (whole-sequence form).

    Classifiers: fraction of argmax(logits) == labels. ``autoneural_vqa``: fraction of exact answers under
    greedy decoding (see ``greedy_answers``)."""
    model = registry.get(name)
    ev = dict(eval_data) if eval_data is not None else registry.load_eval(name)
    labels = ev.pop("labels")
    if model.task == registry.VQA:
        generated = greedy_answers(run_fn, ev["image"], ev["tokens"], steps=labels.shape[1])
        return float(exact_match(generated, labels).mean())
    return float((predict(run_fn, ev) == labels).mean())


def stream_sequence(step_fn: RunFn, step_model, feeds: dict, input_name: str = "x") -> np.ndarray:
    """Run a step graph over a whole sequence ``feeds[input_name] [N, T, ...]`` from zero state, one time
    step per call; returns the logits of every step ``[N, T, classes]``."""
    x = feeds[input_name]
    states = registry.zero_states(step_model, x.shape[0])
    per_step = []
    for t in range(x.shape[1]):
        out = step_fn({input_name: x[:, t:t + 1], **states})
        out = out if isinstance(out, Mapping) else None
        per_step.append(np.asarray(out["logits"]))
        states = {k.replace("state_out_", "state_in_"): v for k, v in out.items() if k.startswith("state_out_")}
    return np.stack(per_step, 1)


def greedy_answers_streaming(prefill_fn: RunFn, step_fn: RunFn, image: np.ndarray, question: np.ndarray,
                             steps: int = data.ANSWER_LEN) -> np.ndarray:
    """Greedy decoding the streaming way: one prefill of image + question (which returns the logits and the
    ``state_out_*`` caches), then one ``step_fn`` call per generated token."""
    out = prefill_fn({"image": image, "tokens": question})
    states = {k.replace("state_out_", "state_in_"): v for k, v in out.items() if k.startswith("state_out_")}
    token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
    generated = [token]
    for _ in range(steps - 1):
        out = step_fn({"token": token, **states})
        states = {k.replace("state_out_", "state_in_"): v for k, v in out.items() if k.startswith("state_out_")}
        token = out["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
        generated.append(token)
    return np.concatenate(generated, 1)
