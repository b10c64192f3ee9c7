"""Recipe of ``autoneural_vqa``, the AutoNeural-style VLM on digit-VQA (torch imported lazily).

Graphs: ``autoneural_vqa.onnx`` (prefill): ``image [N,1,16,16]``, ``tokens [N,L]`` int64 -> ``logits [N,L,V]``
(text positions only; position i predicts token i+1) and the final states ``state_out_0_conv [N,2,64]``,
``state_out_1_k``/``state_out_1_v [N,2,16+L,16]`` (KV caches, visual positions included),
``state_out_2_conv``. ``autoneural_vqa_step.onnx``: ``token [N,1]``, ``state_in_*`` -> ``logits [N,1,V]``,
``state_out_*`` (the KV caches grow by one position per call).
Data: ``tokens`` = a left-padded question of 7 tokens (``data.encode_question``); ``labels [N,3]`` = the answer
tokens, <eos>, <pad>.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import data

IMAGE_SIZE = 16
SEED = 0
CONFIG = dict(epochs=12, lr=3e-3, weight_decay=1e-2, batch_size=128, shift=2)


def _pairs(x, y):
    """Every (image, question) pair of a split: images, question tokens, answers."""
    n, q = len(y), len(data.QUESTIONS)
    img = np.repeat(data.images(x, IMAGE_SIZE), q, axis=0)
    questions = np.tile(np.arange(q), n)
    q_tok, a_tok = data.vqa_samples(np.repeat(y, q), questions)
    return img, q_tok, a_tok


def train(name: str, out_dir: Path, quick: bool = False) -> dict:
    import torch
    from torch import nn

    from . import evaluation, torch_train, torch_vlm
    from .train import write_eval_calib

    cfg = CONFIG
    gen = torch_train.seed_everything(SEED)
    x_tr, y_tr, x_te, y_te = data.digits_split()
    img, q_tok, a_tok = _pairs(x_tr, y_tr)
    text = np.concatenate([q_tok, a_tok], 1)
    net = torch_vlm.AutoNeuralVQA(len(data.TOKENIZER))
    vocab, q_len = len(data.TOKENIZER), data.QUESTION_LEN

    class Teacher(nn.Module):
        """Teacher forcing: logits of the positions that predict the answer tokens."""

        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, image, tokens):
            return self.net.logits(image, tokens)[:, q_len - 1:]

    def loss_fn(logits, answers):
        return nn.functional.cross_entropy(logits.reshape(-1, vocab), answers.reshape(-1), ignore_index=data.PAD)

    def augment(batch, g):
        return (torch_train.random_shift(batch[0], cfg["shift"], g), batch[1])

    if quick:
        keep = np.arange(0, len(img), 40)
        img, text, a_tok = img[keep], text[keep], a_tok[keep]
    torch_train.fit(Teacher(), (torch.from_numpy(img), torch.from_numpy(text[:, :-1])), torch.from_numpy(a_tok),
                    epochs=1 if quick else cfg["epochs"], lr=cfg["lr"], weight_decay=cfg["weight_decay"],
                    batch_size=cfg["batch_size"], augment=augment, loss_fn=loss_fn, gen=gen, name=name,
                    log_every=1, grad_clip=1.0)
    net.eval()

    questions = data.vqa_eval_questions(len(y_te))
    ev_q, ev_a = data.vqa_samples(y_te, questions)
    ev_img = data.images(x_te, IMAGE_SIZE)

    def torch_run(feeds):
        with torch.no_grad():
            return [net.logits(torch.from_numpy(feeds["image"]), torch.from_numpy(feeds["tokens"])).numpy()]

    torch_acc = float(evaluation.exact_match(evaluation.greedy_answers(torch_run, ev_img, ev_q), ev_a).mean())

    names = net.state_names()
    ins, outs = [f"state_in_{n}" for n in names], [f"state_out_{n}" for n in names]

    def seq_axes(n, length):
        return {0: "N", 2: length} if n.endswith(("_k", "_v")) else {0: "N"}

    img1, tok1 = torch.from_numpy(ev_img[:1]), torch.from_numpy(ev_q[:1])
    torch_train.export_onnx(net, (img1, tok1), out_dir / f"{name}.onnx", input_names=["image", "tokens"],
                            output_names=["logits"] + outs,
                            dynamic_axes={"image": {0: "N"}, "tokens": {0: "N", 1: "L"}, "logits": {0: "N", 1: "L"},
                                          **{o: seq_axes(o, "S") for o in outs}},
                            keep_batchnorm=True)
    with torch.no_grad():
        states = net(img1, tok1)[1:]
    torch_train.export_onnx(torch_vlm.StepModule(net), (tok1[:, -1:], *states), out_dir / f"{name}_step.onnx",
                            input_names=["token"] + ins, output_names=["logits"] + outs,
                            dynamic_axes={"token": {0: "N"}, "logits": {0: "N"},
                                          **{i: seq_axes(i, "S_past") for i in ins},
                                          **{o: seq_axes(o, "S") for o in outs}},
                            keep_batchnorm=True)
    tr_img, tr_q, _ = _pairs(x_tr, y_tr)
    write_eval_calib(name, out_dir, {"image": ev_img, "tokens": ev_q}, ev_a, {"image": tr_img, "tokens": tr_q})
    macs = torch_vlm.count_macs(net, IMAGE_SIZE, q_len)
    return {"params": torch_train.count_params(net), "macs": macs["total"], "macs_detail": macs,
            "torch_accuracy": round(torch_acc, 6)}
