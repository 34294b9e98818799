"""What a dashboard shows next to an answer: where a CNN looked, and how much a caption moved a fused model.

* :func:`gradcam` — for a CNN bundle's :class:`~fer_utils.inference.predict.Predictor`: Grad-CAM (Selvaraju et
  al. 2017) by captum's :class:`~captum.attr.LayerGradCam` on the architecture's last convolutional
  block (:func:`cam_layer`), for the predicted class unless another is asked for. The map says which
  regions of the image raised *the model's* score for that class: it explains the model's decision,
  not the emotion on the face, and a model with random or poor weights gets a map just as confident
  looking. Nothing here judges whether the model deserves trust; its test scores do.
* :func:`text_contribution` — for a fused bundle's :class:`~fer_utils.inference.predict.FusedPredictor`: the
  probabilities with the image's own caption against those with the caption replaced by the fusion
  study's constant caption (:data:`fer_utils.vlm.prompts.CONSTANT_CAPTION`, the sentence of its
  constant-caption control), the CNN features and everything else unchanged. A small difference
  means the caption hardly moved this answer.

Each function refuses the other kind of predictor with a :class:`~fer_utils.errors.ConfigError`
(rather than answering ``None``): a dashboard picks the explanation by the bundle's kind, so a
mix-up is a bug to see, not a blank to show.

Only :func:`gradcam` needs captum (the ``web`` extra). The image is used as given: crop the face
first (:func:`fer_utils.inference.faces.crop_face`), as the dashboard does before predicting.
"""
from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fer_utils.data.index import to_rgb
from fer_utils.errors import ConfigError, DataError
from fer_utils.models.registry import list_models
from fer_utils.models.runtime import batched_forward
from fer_utils.inference.predict import FusedPredictor, Predictor
from fer_utils.vlm.prompts import CONSTANT_CAPTION

__all__ = ["CAM_LAYERS", "GradCAM", "TextContribution", "cam_layer", "gradcam", "text_contribution"]

CAM_LAYERS: dict[str, str] = {
    # the last residual stage (its final ReLU'd output), before average pooling: 7x7 at 224 px
    "resnet18": "features.7",
    # conv5_3's ReLU, before the last max pooling: 14x14 at 224 px (the layer of the Grad-CAM paper)
    "vgg16": "features.0.29",
    # the ReLU after norm5: the rectified final feature maps that are pooled, 7x7 at 224 px
    "densenet121": "features.1",
    # conv_head's BatchNorm with its ReLU6 (timm's BatchNormAct2d): the last map, 7x7 at 224 px
    "efficientnet_lite0": "features.bn2",
}
"""Per registered architecture, the module (a name of ``Classifier.named_modules()``) Grad-CAM
attributes to: the output of the last convolutional block, the last map with spatial extent."""

IMAGE_NAME = "the image to explain (in memory)"


def cam_layer(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the last convolutional block of a registry Classifier (:data:`CAM_LAYERS`).

    :class:`ConfigError` for a model without a registry ``arch``, for an architecture this module
    does not know (a newly registered one needs its entry in :data:`CAM_LAYERS`), or when the named
    module is missing or is not what it should be (the registry's model changed).
    """
    arch = getattr(model, "arch", None)
    if not isinstance(arch, str) or not hasattr(model, "forward_features"):
        raise ConfigError(f"Grad-CAM needs a registry Classifier (fer_utils.models.create_model), got "
                          f"{type(model).__name__}")
    if arch not in CAM_LAYERS:
        known = "registered" if arch in list_models() else "not registered"
        raise ConfigError(f"Grad-CAM does not know the last convolutional block of architecture {arch!r} "
                          f"({known}); add it to fer_utils.inference.explain.CAM_LAYERS (known: {', '.join(sorted(CAM_LAYERS))})")
    name = CAM_LAYERS[arch]
    modules = dict(model.named_modules())
    layer = modules.get(name)
    if layer is None or isinstance(layer, (nn.Linear, nn.Flatten, nn.AdaptiveAvgPool2d, nn.Dropout)):
        raise ConfigError(f"architecture {arch!r}: module {name!r} is missing or not a convolutional block "
                          f"({type(layer).__name__ if layer is not None else 'absent'}); fix fer_utils.inference.explain.CAM_LAYERS")
    return name, layer


@dataclass(frozen=True, eq=False)
class GradCAM:
    """A Grad-CAM map of one image: where the model found evidence for class ``target``.

    ``heatmap``: float32 ``[H, W]`` (the image's size) in [0, 1], read-only; 1 is the strongest
    positive evidence, 0 none (an all-zero map: the layer gave no positive evidence for the class).
    ``image`` is the RGB image it belongs to, ``layer`` the module it was computed on (see
    :func:`cam_layer`). It explains the model's decision, not the emotion.
    """

    heatmap: np.ndarray
    target: int
    label: str
    label_ko: str
    layer: str
    image: Image.Image

    def overlay(self, alpha: float = 0.45, cmap: str = "jet") -> Image.Image:
        """The heat map coloured by the matplotlib colormap ``cmap`` and blended over the image:
        ``(1 - alpha) * image + alpha * colours`` (an RGB image of the image's size)."""
        from matplotlib import colormaps

        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"overlay alpha must be a number in [0, 1], got {alpha!r}")
        try:
            colormap = colormaps[cmap]
        except KeyError:
            raise ConfigError(f"unknown matplotlib colormap {cmap!r}") from None
        colours = (colormap(self.heatmap)[..., :3] * 255).round().astype(np.uint8)
        return Image.blend(self.image, Image.fromarray(colours, "RGB"), float(alpha))


_LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _model_lock(model: nn.Module) -> threading.Lock:
    """One lock per model: Grad-CAM hooks a layer for the call, so two calls on a model take turns."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.Lock()
        return lock


def _check_target(target, labels: tuple[str, ...]) -> int:
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)) \
            or not 0 <= int(target) < len(labels):
        raise ConfigError(f"target must be a class index 0..{len(labels) - 1} ({', '.join(labels)}), got {target!r}")
    return int(target)


def gradcam(predictor: Predictor, image: Image.Image | np.ndarray, target: int | None = None) -> GradCAM:
    """Grad-CAM of a CNN bundle's model on one (face-cropped) image, for class ``target``
    (default: the class the predictor predicts for the image).

    The model input is built exactly as :meth:`Predictor.predict` builds it (the image decoded by
    :func:`~fer_utils.data.index.to_rgb`, then ``predictor.transform``: the training preprocessing).
    captum's :class:`~captum.attr.LayerGradCam` gives ``sum_k mean(dscore/dA_k) * A_k`` on
    :func:`cam_layer`'s layer (score: the class logit); it is upsampled (bilinear,
    :meth:`~captum.attr.LayerAttribution.interpolate`) to the model's input size, ReLU'd, divided by
    its maximum (an all-zero map stays zero), then resized to the image's size.

    The map explains the model's decision, not the emotion: it shows what raised the model's score
    for the class, whether or not the model is any good (random weights give a map too).

    A :class:`~fer_utils.inference.predict.FusedPredictor` raises :class:`ConfigError` (its answer is the
    fusion head's, not its CNN's: use :func:`text_contribution`); so does a ``target`` that is not
    a class index. An image that cannot be used raises :class:`DataError`.

    The model is left in eval mode (a Predictor's model always is in it; the map is computed in
    it), parameters' ``requires_grad``, ``.grad`` and buffers untouched, no hook left behind, so
    later predictions do not change. Thread safety: captum hooks the layer for the length of the call, so call it while no
    other thread predicts with the same predictor (a dashboard serialises the requests of one
    predictor); calls on the same model take turns (a per-model lock), calls on different
    predictors may run at once.
    """
    if isinstance(predictor, FusedPredictor):
        raise ConfigError("gradcam explains a CNN bundle's answer; this is a fused bundle, whose answer is the "
                          "fusion head's (CNN features + caption), not its CNN's: use text_contribution instead")
    if not isinstance(predictor, Predictor):
        raise ConfigError(f"gradcam needs a fer_utils.inference.predict.Predictor, got {type(predictor).__name__}")
    from captum.attr import LayerAttribution, LayerGradCam

    model = predictor.model
    name, layer = cam_layer(model)
    labels = predictor.labels
    if target is not None:
        target = _check_target(target, labels)
    rgb = to_rgb(image, IMAGE_NAME)
    with _model_lock(model), torch.inference_mode(False), torch.enable_grad():
        # built here, so that a caller's inference mode cannot make it a tensor autograd refuses
        x = predictor.transform(rgb).unsqueeze(0).to(predictor.device)
        model.eval()
        if target is None:
            with torch.no_grad():
                logits = model(x)
            if not torch.isfinite(logits).all():
                raise DataError(f"{predictor.source or 'this model'}: the model gives non-finite outputs "
                                "(corrupt or diverged weights)")
            target = int(logits.argmax(1).item())
        raw = LayerGradCam(model, layer).attribute(x, target=target)
    cam = LayerAttribution.interpolate(raw.detach().float(), tuple(x.shape[-2:]), interpolate_mode="bilinear")
    cam = torch.relu(cam)
    if not torch.isfinite(cam).all():
        raise DataError(f"{predictor.source or 'this model'}: Grad-CAM gave non-finite values (corrupt or "
                        "diverged weights)")
    peak = cam.max()
    cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    cam = F.interpolate(cam, size=(rgb.height, rgb.width), mode="bilinear", align_corners=False).clamp_(0.0, 1.0)
    heatmap = np.ascontiguousarray(cam[0, 0].cpu().numpy(), dtype=np.float32)
    heatmap.flags.writeable = False
    return GradCAM(heatmap=heatmap, target=target, label=labels[target], label_ko=predictor.labels_ko[target],
                   layer=name, image=rgb)


@dataclass(frozen=True)
class TextContribution:
    """How much a fused model's answer owes to the image's caption (see :func:`text_contribution`).

    ``probabilities`` / ``without_text``: class name -> probability with the image's caption / with
    ``neutral_caption`` in its place; ``label`` / ``label_without_text`` their most likely classes;
    ``delta`` = p(label) - p_without_text(label) (positive: the caption raised the answer's
    probability); ``total_variation`` = 1/2 sum |p - q| in [0, 1] (0: the caption changed
    nothing). ``caption`` is the text that was embedded, ``vote`` the class its emotion word names
    (or None), as in :meth:`~fer_utils.inference.predict.Predictor.predict_labeled`.
    """

    caption: str
    vote: str | None
    probabilities: dict[str, float]
    without_text: dict[str, float]
    label: str
    label_without_text: str
    delta: float
    total_variation: float
    neutral_caption: str = CONSTANT_CAPTION


def text_contribution(predictor: FusedPredictor, image: Image.Image | np.ndarray) -> TextContribution:
    """The fused bundle's answer for one (face-cropped) image with its own caption and with the
    caption replaced by :data:`fer_utils.vlm.prompts.CONSTANT_CAPTION` (the fusion study's
    constant-caption control sentence), through the same CNN features, encoder, fusion and head
    (:meth:`~fer_utils.inference.predict.FusedPredictor.fused_probabilities`). The probabilities with the
    caption are exactly :meth:`~fer_utils.inference.predict.Predictor.predict_labeled`'s for the image.

    The comparison is with one neutral sentence, not with "no text" (the head always takes text):
    it measures how far this caption moves the answer from a caption that says nothing about the
    emotion. A CNN bundle's :class:`~fer_utils.inference.predict.Predictor` raises :class:`ConfigError`
    (it reads no text: use :func:`gradcam`); an image that cannot be used raises :class:`DataError`.
    Like prediction, it does not change the predictor; call it while no other thread uses the
    same predictor.
    """
    if not isinstance(predictor, FusedPredictor):
        raise ConfigError("text_contribution needs a fused bundle's predictor (CNN + caption); this is "
                          f"{'a CNN bundle' if isinstance(predictor, Predictor) else type(predictor).__name__}, "
                          "which reads no text: use gradcam instead")
    from fer_utils.vlm.postprocess import emotion_vote

    tensor, face = predictor._decode(image, 0)
    features, _ = batched_forward(predictor.model.forward_features, [tensor.unsqueeze(0)], predictor.device)
    features = features.numpy()
    (caption,) = predictor.captions([face])
    (with_text,) = predictor.fused_probabilities(features, [caption])
    (without,) = predictor.fused_probabilities(features, [CONSTANT_CAPTION])
    labels = predictor.labels
    best, best_without = int(with_text.argmax()), int(without.argmax())
    vote = emotion_vote(caption)
    return TextContribution(
        caption=caption, vote=None if vote is None else labels[vote],
        probabilities={name: float(p) for name, p in zip(labels, with_text)},
        without_text={name: float(p) for name, p in zip(labels, without)},
        label=labels[best], label_without_text=labels[best_without],
        delta=float(with_text[best]) - float(without[best]),
        total_variation=float(0.5 * np.abs(with_text.astype(np.float64) - without.astype(np.float64)).sum()),
        neutral_caption=CONSTANT_CAPTION)
