"""Recipes of the image classifiers ``mobilenet_digits`` and ``vit_digits`` (torch imported lazily)."""
from __future__ import annotations

from pathlib import Path

from . import data

IMAGE_SIZE = 16
SEED = 0
CONFIG = {
    # epochs, peak learning rate, weight decay, max shift (pixels at 16x16) of the augmentation
    "mobilenet_digits": dict(epochs=40, lr=4e-3, weight_decay=1e-4, shift=2),
    "vit_digits": dict(epochs=120, lr=2e-3, weight_decay=5e-2, shift=2),
}


def train(name: str, out_dir: Path, quick: bool = False) -> dict:
    import torch

    from . import torch_train, torch_vision
    from .train import write_eval_calib

    cfg = CONFIG[name]
    gen = torch_train.seed_everything(SEED)
    x_tr, y_tr, x_te, y_te = data.digits_split()
    img_tr, img_te = data.images(x_tr, IMAGE_SIZE), data.images(x_te, IMAGE_SIZE)
    if name == "mobilenet_digits":
        model, macs = torch_vision.MobileNetDigits(), torch_vision.mobilenet_macs(IMAGE_SIZE)
    else:
        model, macs = torch_vision.ViTDigits(size=IMAGE_SIZE), torch_vision.vit_macs(IMAGE_SIZE)

    def augment(batch, g):
        return (torch_train.random_shift(batch[0], cfg["shift"], g),)

    torch_train.fit(model, torch.from_numpy(img_tr), torch.from_numpy(y_tr), epochs=1 if quick else cfg["epochs"],
                    lr=cfg["lr"], weight_decay=cfg["weight_decay"], augment=augment, gen=gen, name=name)
    torch_acc = torch_train.accuracy(model, torch.from_numpy(img_te), torch.from_numpy(y_te))
    torch_train.export_onnx(model, (torch.from_numpy(img_te[:1]),), out_dir / f"{name}.onnx",
                            input_names=["image"], output_names=["logits"],
                            dynamic_axes={"image": {0: "N"}, "logits": {0: "N"}},
                            keep_batchnorm=name == "mobilenet_digits")
    write_eval_calib(name, out_dir, {"image": img_te}, y_te, {"image": img_tr})
    return {"params": torch_train.count_params(model), "macs": macs, "torch_accuracy": round(torch_acc, 6)}
