"""Running models: device choice, mixed precision, data loaders, batched inference, weight hashes.

Shared by training (:mod:`fer_utils.training.train`), evaluation, feature extraction and the
:class:`~fer_utils.inference.predict.Predictor`, so that there is one inference loop in the package.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import random
import weakref
from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import (BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler, Subset,
                              TensorDataset, WeightedRandomSampler)

from fer_utils.errors import ConfigError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available else CPU; anything else is checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
    return resolved


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``device``: bfloat16 where supported (CPU, recent GPUs), else float16."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def autocast(device: torch.device, enabled: bool):
    """``torch.autocast`` on ``device`` with :func:`amp_dtype`, or a no-op context when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype(device))


def default_num_workers(device: torch.device) -> int:
    """DataLoader workers for inference/training when the caller says ``"auto"``.

    On CPU, decoding a face image costs about 0.15-0.3 ms against several ms of CNN forward pass
    per image, and every worker process competes with torch's intra-op threads for the same
    cores: on a 2-core machine (``fer bench --only features``, ResNet18 at 100 px) one or two
    workers lowered extraction to 0.68-0.83 of the pure forward rate, against 0.86-0.92 without.
    So 0 (decode in the main process) unless there are cores beyond torch's threads. On CUDA the
    forward pass is cheap and decoding must overlap it: up to 8 workers, leaving one core free.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if device.type == "cuda":
        return max(0, min(8, cores - 1))
    return max(0, min(4, cores - torch.get_num_threads()))


def _seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive NumPy/random seeds from the torch seed of the worker."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """The class label of every sample of ``dataset``, in order (int64): a
    :class:`~fer_utils.data.dataset.FERDataset`'s ``labels``, the second tensor of a ``TensorDataset(x, y)``
    (cached features), or those of a ``Subset`` of either. Anything else is a
    :class:`~fer_utils.errors.ConfigError`: the labels are not known without reading every sample."""
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    labels = getattr(dataset, "labels", None)
    if labels is None and isinstance(dataset, TensorDataset) and len(dataset.tensors) >= 2:
        labels = dataset.tensors[1]
    if labels is None:
        raise ConfigError(f"a class-balanced sampler needs the training labels, but a {type(dataset).__name__} "
                          "exposes none: use a FERDataset (.labels), a TensorDataset(x, y) or a Subset of one")
    labels = torch.as_tensor(np.asarray(labels)).long()
    if labels.ndim != 1 or len(labels) != len(dataset):
        raise ConfigError(f"the labels of a {type(dataset).__name__} must be one per sample: got shape "
                          f"{tuple(labels.shape)} for {len(dataset)} samples")
    return labels


def balanced_sampler(labels, generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """A class-balanced sampler: each draw picks a sample with probability ``1 / (K * n_c)`` (weight
    ``1 / n_c`` for a sample of class ``c`` with ``n_c`` samples, ``K`` the classes present), so every
    class is equally likely; ``len(labels)`` draws per epoch, with replacement (a minority image is
    seen several times an epoch, a majority image may not be seen at all). Seeded by ``generator``."""
    labels = torch.as_tensor(np.asarray(labels)).long()
    counts = torch.bincount(labels)
    weights = 1.0 / counts[labels].double()
    return WeightedRandomSampler(weights, num_samples=len(labels), replacement=True, generator=generator)


def _batch_indexed(dataset: Dataset) -> bool:
    """Whether ``dataset[list_of_positions]`` returns a whole batch (a FERDataset)."""
    from fer_utils.data.dataset import FERDataset

    return isinstance(dataset, FERDataset)


def batch_transform_of(dataset: Dataset, train: bool = False):
    """The batch transform that makes ``dataset``'s model inputs on the device, or None (its items
    already are model inputs: cached features). ``train`` picks the training transform; otherwise
    its evaluation path. A ``Subset`` has its data set's."""
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "batch_transform", None)
    if transform is None:
        return None
    return transform if train else transform.for_eval()


def apply_transform(transform, batch, labels=None, generator: torch.Generator | None = None,
                    channels_last: bool = False):
    """``transform(batch, labels, generator)`` (None: the batch as it is), then the NHWC layout of
    4-D results when ``channels_last``: the step between :func:`to_device` and the model."""
    if transform is not None:
        batch = transform(batch, labels, generator)
    if channels_last and isinstance(batch, torch.Tensor) and batch.ndim == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def make_loader(dataset: Dataset, batch_size: int, device: torch.device, num_workers: int | str = "auto",
                shuffle: bool = False, seed: int | None = None, drop_last: bool = False,
                balanced: bool = False) -> DataLoader:
    """A DataLoader set up for ``device``: seeded shuffling, seeded workers, persistent workers, pinning.

    ``balanced`` draws the samples with :func:`balanced_sampler` (from :func:`dataset_labels`,
    seeded by ``seed``) instead of shuffling them: for a training loader only."""
    workers = default_num_workers(device) if num_workers == "auto" else int(num_workers)
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    sampler = balanced_sampler(dataset_labels(dataset), generator) if balanced else None
    batch_indexed = _batch_indexed(dataset)
    if (isinstance(dataset, TensorDataset) and workers == 0) or batch_indexed:
        # Cached arrays, or a data set of decoded images (FERDataset): fetch each batch with one
        # index (one fancy index into the array) instead of one __getitem__ per sample and a
        # collate (fusion heads trained 2-3x faster). The sampler is the one the plain path
        # builds, drawing from the same generator, so the batches are identical.
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last), batch_size=None,
                          generator=generator, num_workers=workers if batch_indexed else 0,
                          worker_init_fn=_seed_worker if batch_indexed and workers else None,
                          persistent_workers=batch_indexed and workers > 0, pin_memory=device.type == "cuda")
    return DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, drop_last=drop_last,
        generator=generator, num_workers=workers, worker_init_fn=_seed_worker if workers else None,
        persistent_workers=workers > 0, pin_memory=device.type == "cuda",
    )


def to_device(batch, device: torch.device, channels_last: bool = False):
    """Move a tensor, or the tensors inside (nested) tuples, lists and dicts, to ``device``.

    ``channels_last`` converts 4-D tensors (image batches) to NHWC memory layout and leaves any
    other tensor as it is (a 2-D batch of cached features has no channels to reorder). Values
    that are not tensors pass through unchanged.
    """
    if isinstance(batch, torch.Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
    if isinstance(batch, dict):
        return {key: to_device(value, device, channels_last) for key, value in batch.items()}
    if isinstance(batch, (list, tuple)):
        moved = [to_device(value, device, channels_last) for value in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    return batch


def call_model(fn: Callable, inputs):
    """``fn`` applied to one batch of model inputs: a tensor as it is, a tuple or list as
    positional arguments, a dict as keyword arguments (e.g. a fusion head's two modalities)."""
    if isinstance(inputs, dict):
        return fn(**inputs)
    if isinstance(inputs, (list, tuple)):
        return fn(*inputs)
    return fn(inputs)


def batched_forward(fn: Callable[[torch.Tensor], torch.Tensor], batches: Iterable, device: torch.device,
                    amp: bool = False, channels_last: bool = False,
                    transform: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Run ``fn`` over ``batches`` in inference mode; return outputs (float32, CPU) and labels.

    A batch is model inputs or an ``(inputs, label)`` pair (what a DataLoader over a
    :class:`~fer_utils.data.dataset.FERDataset` or a ``TensorDataset(x, y)`` yields); inputs are a tensor,
    or a tuple/dict of tensors passed to ``fn`` as :func:`call_model` says. Labels are ``None``
    when the batches carry none. ``transform`` (e.g. a data set's evaluation
    :class:`~fer_utils.data.tensor_transforms.BatchTransform`) turns the inputs into model inputs on ``device``,
    outside autocast (preprocessing stays float32). Put the model in eval mode (and on
    ``device``) before calling.
    """
    outputs, labels = [], []
    with torch.inference_mode():
        for batch in batches:
            if isinstance(batch, (list, tuple)):
                batch, y = batch[0], batch[1]
                labels.append(torch.as_tensor(y))
            x = to_device(batch, device, channels_last and transform is None)
            x = apply_transform(transform, x, channels_last=channels_last)
            with autocast(device, amp):
                outputs.append(call_model(fn, x).float().cpu())
    if not outputs:
        raise ValueError("no batches to run: the dataset is empty")
    return torch.cat(outputs), (torch.cat(labels) if labels else None)


_WEIGHT_HASHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def weights_sha256(model: nn.Module) -> str:
    """sha256 over the model's state dict (names, dtypes, shapes, bytes), memoised per model.

    The memo is keyed by each tensor's storage pointer and version counter, which every in-place
    update (optimizer step, ``load_state_dict``, ``add_``) bumps: changed weights are re-hashed.
    """
    state = model.state_dict()
    stamp = tuple((name, t.data_ptr(), t._version) for name, t in state.items())
    memo = _WEIGHT_HASHES.get(model)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    digest = hashlib.sha256()
    for name, tensor in state.items():
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    _WEIGHT_HASHES[model] = (stamp, digest.hexdigest())
    return digest.hexdigest()
