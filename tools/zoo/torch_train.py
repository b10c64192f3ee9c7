"""Torch training and export helpers shared by the zoo recipes (needs torch; imported lazily)."""
from __future__ import annotations

import io
import time
import warnings

import numpy as np
import onnx
import torch

from . import onnx_ops


def seed_everything(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Shift each image ``[N, C, H, W]`` by a random integer offset in [-max_shift, max_shift], zero fill."""
    n, _, h, w = x.shape
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None])[:, None, :, None].expand(n, x.shape[1], h, w + 2 * max_shift)
    out = torch.gather(pad, 2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])[:, None, None, :].expand(n, x.shape[1], h, w)
    return torch.gather(out, 3, cols)


def fit(model, inputs, targets, *, epochs, lr, batch_size=64, weight_decay=1e-4, augment=None, loss_fn=None,
        gen: torch.Generator, log_every=5, grad_clip=None, name="model", weight_noise=0.0):
    """AdamW + one-cycle schedule over ``inputs``/``targets`` (tensors, or tuples of tensors as inputs).

    ``weight_noise``: relative std of multiplicative Gaussian noise put on every weight matrix / kernel
    (parameters of rank >= 2) for each batch's forward and backward pass, the clean weights restored before
    the update (noise-injection training, Zhou et al. 2020 "Noisy Machines"): a model whose decisions survive
    small weight perturbations, as any rounding of its weights is one, without favouring one quantizer."""
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    n = targets.shape[0]
    steps_per_epoch = (n + batch_size - 1) // batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch,
                                                pct_start=0.15)
    loss_fn = loss_fn or torch.nn.functional.cross_entropy
    start = time.time()
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            xb = tuple(x[idx] for x in inputs)
            if augment is not None:
                xb = augment(xb, gen)
            noisy = _perturb(model, weight_noise, gen) if weight_noise else []
            loss = loss_fn(model(*xb), targets[idx])
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():
                for p, clean in noisy:
                    p.copy_(clean)
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if log_every and ((epoch + 1) % log_every == 0 or epoch == epochs - 1):
            print(f"[{name}] epoch {epoch + 1}/{epochs} loss {total / n:.4f} ({time.time() - start:.0f} s)",
                  flush=True)
    model.eval()
    return model


@torch.no_grad()
def _perturb(model, rel: float, gen: torch.Generator) -> list:
    """Multiply every rank >= 2 parameter by (1 + rel * N(0, 1)); returns (parameter, clean copy) pairs."""
    saved = []
    for p in model.parameters():
        if p.dim() >= 2:
            saved.append((p, p.detach().clone()))
            p.mul_(1 + rel * torch.randn(p.shape, generator=gen))
    return saved


@torch.no_grad()
def accuracy(model, inputs, labels, batch_size=256) -> float:
    model.eval()
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    hits = 0
    for i in range(0, labels.shape[0], batch_size):
        out = model(*(x[i:i + batch_size] for x in inputs))
        hits += int((out.argmax(-1) == labels[i:i + batch_size]).sum())
    return hits / labels.shape[0]


def count_params(model) -> int:
    return int(sum(p.numel() for p in model.parameters()))


def _fix_output_dims(model: onnx.ModelProto, feeds: list, dynamic: set) -> None:
    """Outputs of ``lowbit`` ops get made-up symbolic dims from the exporter: replace every symbolic output
    dim that is not one of the requested dynamic axes by the size ONNX Runtime computes on the example."""
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = sess.run(None, {i.name: f for i, f in zip(sess.get_inputs(), feeds)})
    for out, value in zip(model.graph.output, values):
        for dim, size in zip(out.type.tensor_type.shape.dim, value.shape):
            if dim.HasField("dim_param") and dim.dim_param not in dynamic:
                dim.Clear()
                dim.dim_value = size


def export_onnx(module, args: tuple, path, *, input_names, output_names, dynamic_axes=None,
                keep_batchnorm=False) -> onnx.ModelProto:
    """Export with the legacy TorchScript exporter (opset 17), add the ``lowbit`` function bodies, save.

    ``keep_batchnorm`` exports in PRESERVE mode so BatchNormalization nodes stay unfolded (the EVAL-mode
    exporter folds Conv+BN)."""
    module.eval()
    buf = io.BytesIO()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, buf, dynamo=False, opset_version=onnx_ops.OPSET,
                          input_names=input_names, output_names=output_names, dynamic_axes=dynamic_axes,
                          custom_opsets={onnx_ops.DOMAIN: onnx_ops.DOMAIN_VERSION}, training=mode,
                          do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    onnx_ops.attach_functions(model)
    model.producer_name = "lowbit.tools.zoo"
    model.doc_string = ""
    _fix_output_dims(model, [a.detach().numpy() for a in args], set(sum(
        [list(axes.values()) for axes in (dynamic_axes or {}).values()], [])))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return model
