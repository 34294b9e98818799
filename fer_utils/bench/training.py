"""Training throughput: :func:`fer_utils.training.train.fit` on images through the project's data sets vs
the same train step on tensors made beforehand (the "no data loading" limit).

:func:`measure_training` builds train and validation :class:`~fer_utils.data.dataset.FERDataset` s with
:func:`fer_utils.data.transforms.make_datasets` (from ``data`` via :func:`~fer_utils.data.load_dataset`, or
from synthetic JPEGs written to a temporary folder), runs ``fit`` for ``epochs`` epochs and takes
the fastest epoch's training images per second (the epoch time includes the small validation
pass, ``val_n`` images, and every DataLoader cost: decoding, resizing, augmentation, collation).
The baseline is the same model (same initial weights; VGG's first dense layer folded below 64 px
and the model compiled in ``torch_compile``'s mode, as ``fit`` does), optimizer, loss, batch size,
AMP and memory layout on the training images decoded and transformed once beforehand: forward,
backward and optimizer step, nothing else; it is timed before and after ``fit`` and the fastest
pass kept.
fit / baseline says how much of the model's speed the data path leaves; 1.0 is the limit.
"""
from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from fer_utils.bench import best_seconds, cuda_sync, peak_memory_mib, synthetic_index


def measure_training(model: str = "densenet121", device: str = "auto", n: int = 256, val_n: int = 32,
                     image_size: int = 100, source_size: int = 100, batch_size: int = 64, epochs: int = 2,
                     num_workers: int | str = 0, augmentation: str = "hflip", amp: bool = True,
                     channels_last: bool = True, repeats: int = 2, data: str | Path | None = None,
                     torch_compile: str = "none") -> dict:
    """Training images/s of ``fit`` (fastest epoch) and of the train step on pre-made tensors."""
    import pandas as pd
    import torch

    from fer_utils.data import load_dataset
    from fer_utils.data.transforms import make_datasets
    from fer_utils.models import create_model, model_info
    from fer_utils.models.runtime import autocast, amp_dtype, resolve_device
    from fer_utils.training.repro import seed_everything
    from fer_utils.training.train import TrainConfig, make_optimizer, compiled, fit, fold_for_training, training_loss

    device = resolve_device(device)
    preprocessing = model_info(model).preprocessing.with_size(image_size)
    config = TrainConfig(batch_size=batch_size, epochs=epochs, patience=epochs + 1, num_workers=num_workers,
                         device=str(device), amp=amp, channels_last=channels_last, torch_compile=torch_compile)
    torch.manual_seed(0)
    initial = create_model(model)
    sync = cuda_sync(device)

    with tempfile.TemporaryDirectory(prefix="fer-bench-training-") as tmp:
        if data:
            index = load_dataset(data)
            index = pd.concat([index[index["split"] == "train"].head(n),
                               index[index["split"] != "train"].head(val_n).assign(split="val")])
        else:
            index = pd.concat([synthetic_index(Path(tmp), n, source_size, seed=0, split="train"),
                               synthetic_index(Path(tmp), val_n, source_size, seed=1, split="val")],
                              ignore_index=True)
        datasets = make_datasets(index, preprocessing, augmentation=augmentation)
        train_ds, val_ds = datasets["train"], datasets["val"]

        # the baseline: the same step on the training images decoded and transformed once
        plain = make_datasets(index, preprocessing)["train"]
        decoded, labels = plain[list(range(len(plain)))]      # uint8 [N, H, W, 3], one batch
        images = plain.eval_transform(decoded)                # the model inputs, made once

        net = copy.deepcopy(initial).to(device)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            net.to(memory_format=memory_format)
        fold_for_training(net, config, image_size)  # as fit does (VGG below 64 px): the same step
        use_amp = amp and device.type == "cuda"
        scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype(device) == torch.float16)
        optimizer = make_optimizer(net, config)
        step_net = compiled(net, torch_compile)  # as fit compiles its training step
        graphs = torch_compile == "reduce-overhead" and device.type == "cuda"
        loss_fn = training_loss(config)
        x_all = images.to(device).contiguous(memory_format=memory_format)
        y_all = labels.to(device)
        usable = len(x_all) - (len(x_all) % batch_size == 1)  # fit drops a last batch of one sample too

        def steps():
            net.train()
            for i in range(0, usable, batch_size):
                x, y = x_all[i:i + batch_size], y_all[i:i + batch_size]
                optimizer.zero_grad(set_to_none=True)
                if graphs:
                    torch.compiler.cudagraph_mark_step_begin()
                with autocast(device, use_amp):
                    loss = loss_fn(step_net(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                loss.item()  # fit reads the loss every step too

        seed_everything(config.seed)  # the deterministic kernels fit asks for
        steps()  # warm-up
        sync()
        # timed before and after fit, the best kept: both see the machine's load of the moment
        before = best_seconds({"steps": steps}, repeats, sync)["steps"]
        fitted = copy.deepcopy(initial)
        result = fit(fitted, train_ds, val_ds, config, progress=False)
        epoch_seconds = [float(s) for s in result.history["seconds"]]
        fit_rate = len(train_ds) / min(epoch_seconds)

        seconds = min(before, best_seconds({"steps": steps}, repeats, sync)["steps"])
    step_rate = usable / seconds
    return {
        "model": model, "device": str(device), "train_images": len(train_ds), "val_images": len(val_ds),
        "image_size": image_size, "batch_size": batch_size, "epochs": len(epoch_seconds),
        "num_workers": num_workers, "augmentation": augmentation, "amp": use_amp, "channels_last": channels_last,
        "torch_compile": torch_compile,
        "torch_threads": torch.get_num_threads(), "epoch_seconds": epoch_seconds,
        "fit_img_s": fit_rate, "fit_first_epoch_img_s": len(train_ds) / epoch_seconds[0],
        "no_loading_img_s": step_rate, "fit_over_no_loading": fit_rate / step_rate,
        **peak_memory_mib(device),
        # off the CPU: does one step there compute what the CPU's float32 eager step computes?
        "step_vs_cpu": None if device.type == "cpu" else step_agreement(
            model, str(device), image_size, min(batch_size, 16), amp=amp, channels_last=channels_last,
            torch_compile=torch_compile),
    }


def step_agreement(model: str = "densenet121", device: str = "cpu", image_size: int = 224, batch_size: int = 16,
                   amp: bool = True, channels_last: bool = True, torch_compile: str = "none", seed: int = 0) -> dict:
    """One training step's loss and gradients as ``fit`` computes them on ``device`` (AMP there
    when CUDA, channels-last, ``torch_compile``) against the reference: the CPU, float32, eager,
    contiguous. Same initial weights (random), same batch, dropout off in both (the CPU's and
    the GPU's random masks cannot agree); BatchNorm in training mode, as in ``fit``. Returns the
    losses and, over every parameter, the relative error of its gradient (the norm of the
    difference over the reference gradient's norm): its largest value and the parameter's name,
    and the median. bf16 autocast is expected near 1e-2, float32 near 1e-5."""
    import copy as copy_module

    import torch
    from torch import nn
    from torch.nn import functional as F

    from fer_utils.models import create_model
    from fer_utils.models.runtime import autocast, resolve_device
    from fer_utils.training.train import compiled

    torch.manual_seed(seed)
    initial = create_model(model)
    for module in initial.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch_size, 3, image_size, image_size, generator=g)
    y = torch.randint(0, initial.num_classes, (batch_size,), generator=g)

    def step(target, use_amp: bool, nhwc: bool, mode: str):
        net = copy_module.deepcopy(initial).to(target)
        inputs = x.to(target)
        if nhwc:
            net.to(memory_format=torch.channels_last)
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        net.train()
        with autocast(target, use_amp):
            loss = F.cross_entropy(compiled(net, mode)(inputs).float(), y.to(target))
        loss.backward()
        return loss.item(), {name: p.grad.detach().float().cpu() for name, p in net.named_parameters()
                             if p.grad is not None}

    target = resolve_device(device)
    use_amp = amp and target.type == "cuda"
    ref_loss, ref_grads = step(torch.device("cpu"), False, False, "none")
    loss, grads = step(target, use_amp, channels_last, torch_compile)
    if torch_compile != "none":
        torch._dynamo.reset()
    errors = {name: float((grads[name] - ref).norm() / ref.norm().clamp_min(1e-12))
              for name, ref in ref_grads.items()}
    worst = max(errors, key=errors.get)
    ordered = sorted(errors.values())
    return {"device": str(target), "amp": use_amp, "channels_last": channels_last, "torch_compile": torch_compile,
            "image_size": image_size, "batch_size": batch_size, "loss": loss, "cpu_loss": ref_loss,
            "loss_abs_diff": abs(loss - ref_loss), "grad_rel_err_max": errors[worst], "grad_rel_err_max_param": worst,
            "grad_rel_err_median": ordered[len(ordered) // 2], "parameters": len(errors)}
