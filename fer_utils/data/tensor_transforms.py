"""The one tensor data path: uint8 image batches -> resized, augmented, normalised float batches.

Training, validation, testing, feature extraction and serving (:class:`~fer_utils.inference.predict.Predictor`)
all turn images into model inputs with a :class:`BatchTransform`, on whatever device the batch
is on (the model's): ``uint8 [B, H, W, 3]`` or ``[B, 3, H, W]`` (+ labels, + a
``torch.Generator``) -> ``float32 [B, 3, S, S]``. So what a served model sees is what it saw in
training, and the CPU only decodes (once: :mod:`fer_utils.data.decoded`) and moves uint8 bytes,
a quarter of the float bytes; on an H100 per-sample PIL resizing on the CPU had held feature
extraction to 0.24-0.49 of the forward-only rate.

Evaluation: ``torchvision.transforms.v2.functional.resize(uint8, (S, S), antialias=True)`` (torch's
``interpolate(mode="bilinear", antialias=True)``, rounded back to uint8, as v2 ``Resize`` does on
tensors), ``/ 255``, ``Normalize(mean, std)``: equal to v2 ``Resize`` + ``ToDtype`` +
``Normalize`` on the same uint8 tensor.

Training draws every random parameter **per sample** (not once per batch), from the generator
given (on the CPU, then moved to the batch's device, so CPU and CUDA draw the same numbers):

``hflip``               each sample mirrored with probability 0.5 (a mask)
``hflip_always``        every sample mirrored (the original study's "flip" variant)
``hflip_rotate``        ``hflip``, then a rotation by an angle uniform in ``±rotate_degrees``
                        about the centre (``affine_grid`` + ``grid_sample``, nearest neighbour and
                        fill 0, as torchvision's ``RandomRotation`` defaults)
``random_resized_crop`` a box per sample drawn by torchvision's ``RandomResizedCrop`` rule on the
                        ``S x S`` image (area fraction uniform in ``rrc_scale``, log aspect ratio
                        uniform in log(3/4)..log(4/3), up to 10 tries, else the centre crop),
                        mapped onto the stored image and resampled straight to ``S x S`` with
                        ``torchvision.ops.roi_align`` (``aligned=True``; the adaptive sampling
                        ratio averages ``ceil(box / S)`` samples per output pixel and side, which
                        antialiases a shrinking crop): one resampling instead of resize-then-crop
``minority``            ``hflip_rotate`` on the samples whose label is in ``augment_labels`` only
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch.nn import functional as F
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from fer_utils.errors import ConfigError
from fer_utils.options import AUGMENTATIONS, MINORITY_AUGMENTATION, Preprocessing

RRC_RATIO: tuple[float, float] = (3 / 4, 4 / 3)
"""Aspect-ratio range of the random-resized crop (torchvision's default)."""
RRC_TRIES = 10
"""Boxes tried per sample before the centre-crop fallback (torchvision's rule)."""


def check_augmentation(augmentation: str) -> None:
    if augmentation not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}")


def check_rrc_scale(rrc_scale: Sequence[float]) -> tuple[float, float]:
    low, high = (float(v) for v in rrc_scale)
    if not 0 < low <= high <= 1:
        raise ConfigError(f"rrc_scale must be (low, high) with 0 < low <= high <= 1, got {tuple(rrc_scale)}")
    return low, high


def as_nchw(images: torch.Tensor) -> torch.Tensor:
    """A uint8 image batch as a contiguous ``[B, 3, H, W]`` tensor.

    ``[B, H, W, 3]`` is permuted *and copied* (a quarter of the float bytes): a permuted view is
    channels-last in memory, and every step after it (resize, normalisation) would keep that
    layout, handing the model channels-last inputs it did not ask for (VGG16 at 32 px then trained
    at 17 instead of 14 s per epoch on 2 CPU cores). Callers that want channels-last convert the
    result (:func:`fer_utils.models.runtime.apply_transform`)."""
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        raise TypeError(f"expected a uint8 image batch [B, H, W, 3] or [B, 3, H, W], got "
                        f"{getattr(images, 'dtype', type(images).__name__)} {tuple(getattr(images, 'shape', ()))}")
    if images.shape[1] == 3:
        return images.contiguous()
    if images.shape[3] == 3:
        return images.permute(0, 3, 1, 2).contiguous()
    raise TypeError(f"expected 3 colour channels first or last, got shape {tuple(images.shape)}")


def rrc_boxes(n: int, size: int, scale: tuple[float, float], generator: torch.Generator | None = None,
              ratio: tuple[float, float] = RRC_RATIO) -> torch.Tensor:
    """``[n, 4]`` crop boxes ``(top, left, height, width)`` in pixels of a ``size x size`` image,
    one per sample, by torchvision's ``RandomResizedCrop.get_params`` rule, vectorised (float64
    on the CPU). The first of :data:`RRC_TRIES` tries whose box fits is kept; none fitting means
    the centre crop (the whole image, for a square one)."""
    area = float(size * size)
    draws = torch.rand(n, RRC_TRIES, 2, generator=generator, dtype=torch.float64)
    target = area * (scale[0] + draws[..., 0] * (scale[1] - scale[0]))
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_low + draws[..., 1] * (log_high - log_low))
    w = torch.round(torch.sqrt(target * aspect))
    h = torch.round(torch.sqrt(target / aspect))
    fits = (w > 0) & (w <= size) & (h > 0) & (h <= size)
    first = fits.double().argmax(1)            # the first fitting try (0 when none fits)
    found = fits.any(1)
    rows = torch.arange(n)
    w, h = w[rows, first], h[rows, first]
    # centre-crop fallback: a square image's ratio 1 lies within [3/4, 4/3], so the whole image
    w = torch.where(found, w, torch.full_like(w, size))
    h = torch.where(found, h, torch.full_like(h, size))
    offsets = torch.rand(n, 2, generator=generator, dtype=torch.float64)  # randint(0, size - h + 1)
    top = torch.where(found, torch.floor(offsets[:, 0] * (size - h + 1)), (size - h) // 2)
    left = torch.where(found, torch.floor(offsets[:, 1] * (size - w + 1)), (size - w) // 2)
    return torch.stack([top, left, h, w], 1)


def rotate(images: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Float ``[B, C, S, S]`` rotated about the centre, counter-clockwise by ``degrees[b]`` each,
    nearest neighbour, zeros outside (torchvision ``RandomRotation``'s defaults)."""
    angle = torch.deg2rad(degrees.to(images.device, torch.float32))
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    # affine_grid maps output to input coordinates (x right, y down): the inverse of the rotation
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="nearest", padding_mode="zeros", align_corners=False)


class BatchTransform:
    """uint8 image batch (any device) -> normalised ``float32 [B, 3, S, S]``; see the module docstring.

    ``train=False`` (or ``augmentation="none"``) is the evaluation path; ``augmentation="minority"``
    needs ``augment_labels`` (the minority classes) and the batch's labels at call time. Instances
    are small and picklable (they travel with a data set into DataLoader workers).
    """

    def __init__(self, preprocessing: Preprocessing, augmentation: str = "none", train: bool = False,
                 rrc_scale: Sequence[float] = (0.8, 1.0), rotate_degrees: float = 15,
                 augment_labels: Iterable[int] | None = None):
        if not isinstance(preprocessing, Preprocessing):
            raise ConfigError(f"BatchTransform needs a Preprocessing, got {type(preprocessing).__name__}")
        check_augmentation(augmentation)
        self.preprocessing = preprocessing
        self.augmentation = augmentation
        self.train = bool(train)
        self.rrc_scale = check_rrc_scale(rrc_scale) if augmentation == "random_resized_crop" else tuple(rrc_scale)
        self.rotate_degrees = float(rotate_degrees)
        self.augment_labels = frozenset(int(c) for c in augment_labels) if augment_labels is not None else None
        if self.train and augmentation == "minority" and self.augment_labels is None:
            raise ConfigError("augmentation 'minority' needs augment_labels (the minority classes): "
                              "use make_datasets() or build_batch_transforms()")

    def __repr__(self) -> str:
        extra = f", augment_labels={sorted(self.augment_labels)}" if self.augment_labels is not None else ""
        return (f"BatchTransform({self.preprocessing!r}, {self.augmentation!r}, train={self.train}, "
                f"rrc_scale={self.rrc_scale}, rotate_degrees={self.rotate_degrees}{extra})")

    @property
    def augments(self) -> bool:
        return self.train and self.augmentation != "none"

    def for_eval(self) -> BatchTransform:
        """The evaluation path of the same preprocessing (what validation, testing and serving use)."""
        if not self.train:
            return self
        return BatchTransform(self.preprocessing)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """Float ``[B, 3, S, S]`` in 0..255 -> ``(x / 255 - mean) / std`` (v2 ``ToDtype`` + ``Normalize``)."""
        mean = torch.tensor(self.preprocessing.mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocessing.std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
        return images.float().mul_(1.0 / 255).sub_(mean).div_(std)

    def resize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, 3, H, W]`` -> uint8 ``[B, 3, S, S]``: v2 ``Resize((S, S), antialias=True)`` on tensors."""
        size = self.preprocessing.image_size
        return TF.resize(images, [size, size], antialias=True)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        x = as_nchw(images)
        if not self.augments:
            return self.normalise(self.resize(x))
        n = x.shape[0]
        selected = None  # samples to augment: all, or (minority) those with a minority label
        augmentation = self.augmentation
        if augmentation == "minority":
            if labels is None:
                raise ValueError("the 'minority' augmentation needs the batch's labels")
            labels = torch.as_tensor(labels).cpu().long()
            selected = torch.isin(labels, torch.tensor(sorted(self.augment_labels), dtype=torch.long))
            augmentation = MINORITY_AUGMENTATION
        if augmentation == "random_resized_crop":
            out = self._random_resized_crop(x, generator)
        else:
            out = self.resize(x).float()
            if augmentation == "hflip_always":
                flip = torch.ones(n, dtype=torch.bool)
            else:
                flip = torch.rand(n, generator=generator) < 0.5
            if selected is not None:
                flip &= selected
            if flip.any():
                mask = flip.to(out.device).view(n, 1, 1, 1)
                out = torch.where(mask, out.flip(-1), out)
            if augmentation == "hflip_rotate":
                angles = (torch.rand(n, generator=generator, dtype=torch.float64) * 2 - 1) * self.rotate_degrees
                rows = torch.arange(n) if selected is None else torch.nonzero(selected).flatten()
                if len(rows):
                    rows_device = rows.to(out.device)
                    out = out.index_copy(0, rows_device, rotate(out.index_select(0, rows_device), angles[rows]))
        return self.normalise(out)

    def _random_resized_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Per-sample random-resized crops of uint8 ``[B, 3, H, W]``, as float ``[B, 3, S, S]`` in 0..255."""
        n, _, height, width = x.shape
        size = self.preprocessing.image_size
        top, left, h, w = rrc_boxes(n, size, self.rrc_scale, generator).unbind(1)
        sy, sx = height / size, width / size  # boxes are drawn on the S x S image, cut from the stored one
        boxes = torch.stack([torch.arange(n, dtype=torch.float64), left * sx, top * sy, (left + w) * sx,
                             (top + h) * sy], 1)
        source = x.float()
        return roi_align(source, boxes.to(source.device, source.dtype), output_size=(size, size),
                         spatial_scale=1.0, sampling_ratio=-1, aligned=True)


class ImageTransform:
    """One RGB image (PIL image, uint8 ``[H, W, 3]`` array or tensor) -> the evaluation input
    ``float32 [3, S, S]``, by :class:`BatchTransform`'s evaluation path (what a model is served with)."""

    def __init__(self, preprocessing: Preprocessing):
        self.batch = BatchTransform(preprocessing)
        self.preprocessing = preprocessing

    def __call__(self, image) -> torch.Tensor:
        if not isinstance(image, torch.Tensor):
            image = torch.from_numpy(np.array(image, dtype=np.uint8, copy=True))
        if image.ndim == 2:
            image = image[..., None].expand(*image.shape, 3)
        return self.batch(image.unsqueeze(0))[0]


def eval_transform(preprocessing: Preprocessing) -> BatchTransform:
    """The evaluation :class:`BatchTransform` of ``preprocessing``."""
    return BatchTransform(preprocessing)


def image_transform(preprocessing: Preprocessing) -> ImageTransform:
    """The evaluation path for single images (:class:`ImageTransform`)."""
    return ImageTransform(preprocessing)


__all__ = ["RRC_RATIO", "BatchTransform", "ImageTransform", "as_nchw", "eval_transform", "image_transform",
           "rotate", "rrc_boxes"]
