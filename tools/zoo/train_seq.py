"""Recipes of the streaming sequence classifiers on sequential digits (torch imported lazily).

Input ``x [N, 64, 1]``: the 64 pixels of a digit in raster order, one per time step. Whole-sequence graph
``<name>.onnx``: ``x -> logits [N, 10]``; step graph ``<name>_step.onnx``: ``x [N, 1, 1], state_in_<i>_<kind>
-> logits [N, 10], state_out_<i>_<kind>`` (i = the state's position in execution order; kind = conv, lif_v,
lmu_m, ssm_h, pool_sum); zero states start a sequence, and ``logits`` after step 64 equal the whole-sequence
logits.
"""
from __future__ import annotations

from pathlib import Path

from . import data

STEPS = 64
SEED = 0
CONFIG = {
    "lmu_seqdigits": dict(epochs=150, lr=3e-3, weight_decay=1e-4),
    "lmuformer_seqdigits": dict(epochs=60, lr=3e-3, weight_decay=1e-4),
    # weight_noise: trained to keep its decisions under weight perturbation (tools/zoo/torch_train.fit), since
    # its spike dynamics amplify any rounding of the weights (docs/zoo.md, "The spiking model")
    "spiking_lmuformer_seqdigits": dict(epochs=100, lr=3e-3, weight_decay=1e-4, weight_noise=0.03),
    "mamba_seqdigits": dict(epochs=40, lr=4e-3, weight_decay=1e-4),
}


def build(name: str):
    from . import torch_seq

    if name == "lmu_seqdigits":
        return torch_seq.LMUNet(steps=STEPS)
    if name == "lmuformer_seqdigits":
        return torch_seq.LMUFormerNet(steps=STEPS)
    if name == "spiking_lmuformer_seqdigits":
        return torch_seq.LMUFormerNet(steps=STEPS, spiking=True)
    if name == "mamba_seqdigits":
        return torch_seq.MambaNet(steps=STEPS)
    raise KeyError(name)


def export_step(net, path: Path):
    import torch

    from . import torch_seq, torch_train

    specs = net.state_specs()
    names = [f"{i}_{kind}" for i, (kind, _) in enumerate(specs)]
    states = tuple(torch.zeros((1,) + tuple(shape)) for _, shape in specs)
    ins, outs = [f"state_in_{n}" for n in names], [f"state_out_{n}" for n in names]
    torch_train.export_onnx(torch_seq.StepModule(net), (torch.zeros(1, 1, 1), *states), path,
                            input_names=["x"] + ins, output_names=["logits"] + outs,
                            dynamic_axes={k: {0: "N"} for k in ["x", "logits"] + ins + outs},
                            keep_batchnorm=True)


def train(name: str, out_dir: Path, quick: bool = False) -> dict:
    import torch

    from . import torch_train
    from .train import write_eval_calib

    cfg = CONFIG[name]
    gen = torch_train.seed_everything(SEED)
    x_tr, y_tr, x_te, y_te = data.digits_split()
    seq_tr, seq_te = data.sequences(x_tr), data.sequences(x_te)
    net = build(name)

    def augment(batch, g):
        img = batch[0].reshape(-1, 1, 8, 8)
        return (torch_train.random_shift(img, 1, g).reshape(-1, STEPS, 1),)

    torch_train.fit(net, torch.from_numpy(seq_tr), torch.from_numpy(y_tr), epochs=1 if quick else cfg["epochs"],
                    lr=cfg["lr"], weight_decay=cfg["weight_decay"], augment=augment, gen=gen, name=name,
                    grad_clip=1.0, weight_noise=cfg.get("weight_noise", 0.0))
    torch_acc = torch_train.accuracy(net, torch.from_numpy(seq_te), torch.from_numpy(y_te))
    torch_train.export_onnx(net, (torch.from_numpy(seq_te[:1]),), out_dir / f"{name}.onnx",
                            input_names=["x"], output_names=["logits"],
                            dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}}, keep_batchnorm=True)
    export_step(net, out_dir / f"{name}_step.onnx")
    write_eval_calib(name, out_dir, {"x": seq_te}, y_te, {"x": seq_tr})
    return {"params": torch_train.count_params(net), "macs": net.macs(), "torch_accuracy": round(torch_acc, 6)}
