"""How an image becomes a model input, and the names of the choices a config offers: torch-free.

:class:`Preprocessing` (square size, per-channel mean and std) is checked here and only here; the
batch transforms (:class:`fer_utils.data.BatchTransform`), the model registry, feature extraction and
model bundles all take one. The constants below are what notebook configs validate against, so
that checking a study manifest never imports torch.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from .errors import ConfigError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
HALF: tuple[float, float, float] = (0.5, 0.5, 0.5)
MIN_IMAGE_SIZE = 32
"""The registry CNNs downsample by 32 (VGG16's five poolings need at least 32 px)."""

NORMALIZATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "half": (HALF, HALF),                       # mean = std = 0.5, as the original study
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),  # what ImageNet-pretrained weights expect
}
"""Named ``(mean, std)`` presets of the ``normalization`` parameter."""

AUGMENTATIONS: tuple[str, ...] = ("none", "hflip", "hflip_always", "hflip_rotate", "random_resized_crop", "minority")
"""Augmentation presets (see :mod:`fer_utils.data.transforms`)."""
MINORITY_AUGMENTATION = "hflip_rotate"
"""The preset the ``minority`` augmentation applies to minority classes."""


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a model input: resize to ``image_size`` square, normalise per channel."""

    image_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self):
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
            raise ConfigError(f"preprocessing.image_size must be an int >= {MIN_IMAGE_SIZE}, got {self.image_size!r}")
        for key in ("mean", "std"):
            try:
                value = tuple(float(v) for v in getattr(self, key))
            except (TypeError, ValueError):
                value = ()
            if len(value) != 3:
                raise ConfigError(f"preprocessing.{key} needs 3 numbers (R, G, B), got {getattr(self, key)!r}")
            object.__setattr__(self, key, value)
        if min(self.std) <= 0:
            raise ConfigError(f"preprocessing.std must be positive, got {self.std}")

    @classmethod
    def preset(cls, image_size: int, normalization: str) -> Preprocessing:
        """``image_size`` with a named :data:`NORMALIZATIONS` preset (``"half"`` or ``"imagenet"``)."""
        try:
            mean, std = NORMALIZATIONS[normalization]
        except KeyError:
            raise ConfigError(f"unknown normalization {normalization!r}; "
                              f"expected one of {', '.join(NORMALIZATIONS)}") from None
        return cls(image_size, mean, std)

    def with_size(self, image_size: int) -> Preprocessing:
        return replace(self, image_size=image_size)

    def to_dict(self) -> dict:
        """JSON-ready form (lists, not tuples); :meth:`from_dict` reads it back."""
        return {"image_size": self.image_size, "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Preprocessing:
        unknown = set(data) - {"image_size", "mean", "std"}
        if unknown:
            raise ConfigError(f"unknown preprocessing key(s): {', '.join(sorted(unknown))}")
        return cls(**data)


ORIGINAL_STUDY_PREPROCESSING = Preprocessing.preset(224, "half")
"""What the original notebooks did: resize to 224, mean = std = 0.5 (REFERENCE.md section 1)."""
