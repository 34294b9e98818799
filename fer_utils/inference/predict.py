"""Model bundles and the one inference path: images in, class probabilities out.

A bundle is a folder::

    model.safetensors   the Classifier's state dict
    bundle.json         format_version, architecture, num_classes, labels (English and Korean, in
                        class order), preprocessing, metrics (test scores and the validation macro
                        F1 it was selected on), data (the training data's record: name,
                        fingerprint, synthetic or not), provenance, weights_sha256

``save_bundle`` writes one; ``Predictor.from_bundle`` loads it and turns images into class
probabilities with exactly the preprocessing the model was trained with. A bundle that cannot be
used (missing file or key, unknown architecture, labels other than :data:`fer_utils.labels.EMOTIONS`
in that order, weights of the wrong shape or not matching their checksum, non-finite outputs)
raises an error naming the file and what is wrong. ``choose_bundle`` picks the bundle a front end
serves when none is named: the best validation macro F1 among the bundles trained on a given data
set — never the newest file.

A *fused* bundle (``"kind": "fused"`` in its ``bundle.json``; :mod:`fer_utils.inference.fused_bundle` writes
one) holds a copy of a CNN bundle, what rebuilds a captioner and a text encoder, and a fusion head:
``Predictor.from_bundle`` loads it as a :class:`FusedPredictor`, which runs it end to end on raw
images (features, caption, embedding, fusion, head) with the same public methods; its labeled
answers add the caption and the VLM vote. A bundle without ``kind`` is a CNN bundle.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from fer_utils.data import open_image
from fer_utils.data.tensor_transforms import image_transform
from fer_utils.data.index import to_rgb, warn_if_tiny
from fer_utils.errors import ConfigError, DataError
from fer_utils.inference.bundle import (BUNDLE_JSON, HEAD_FILE, WEIGHTS_FILE, check_identity, read_manifest, summarize,
                                        verify_weights)
from fer_utils.models.registry import create_model
from fer_utils.options import Preprocessing
from fer_utils.models.runtime import batched_forward, resolve_device


ImageLike = Image.Image | str | os.PathLike | np.ndarray


class Predictor:
    """Images in, class probabilities out, for one model bundle.

    :meth:`from_bundle` loads a CNN bundle as a ``Predictor`` and a fused bundle as a
    :class:`FusedPredictor` (same public methods; its answers add the caption and the VLM vote).
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing, labels: Sequence[str],
                 labels_ko: Sequence[str], device: str = "cpu", source: Path | None = None,
                 manifest: Mapping | None = None):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.preprocessing = preprocessing
        self.labels = tuple(labels)
        self.labels_ko = tuple(labels_ko)
        self.source = source
        self.manifest = dict(manifest or {})
        # the evaluation path of the tensor transform training validated with: PIL image -> [3, S, S]
        self.transform = image_transform(preprocessing)

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, device: str = "cpu") -> Predictor:
        """Load a bundle folder (or its ``bundle.json``): a CNN bundle, or a fused bundle as a
        :class:`FusedPredictor` (see :mod:`fer_utils.inference.fused_bundle`)."""
        folder = Path(path)
        if folder.name == BUNDLE_JSON:
            folder = folder.parent
        manifest = read_manifest(folder / BUNDLE_JSON)
        if manifest.get("kind", "cnn") == "fused":
            return FusedPredictor._from_manifest(folder, manifest, device)
        if issubclass(cls, FusedPredictor):
            raise DataError(f"{folder / BUNDLE_JSON}: a CNN bundle, not a fused bundle")
        return cls._load_cnn(folder, manifest, device)

    @classmethod
    def _load_cnn(cls, folder: Path, manifest: dict, device: str) -> Predictor:
        """The CNN bundle in ``folder`` whose checked ``bundle.json`` is ``manifest``."""
        weights_file = verify_weights(folder / WEIGHTS_FILE, manifest["weights_sha256"], folder / BUNDLE_JSON)
        try:
            state = load_file(weights_file)
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{weights_file}: unreadable or corrupt weights ({exc})") from None
        model = create_model(manifest["architecture"], num_classes=manifest["num_classes"], pretrained=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise DataError(f"{weights_file}: weights do not fit architecture "
                            f"{manifest['architecture']!r} with {manifest['num_classes']} classes ({exc})") from None
        return cls(model, manifest["preprocessing"], manifest["labels"], manifest["labels_ko"], device,
                   source=folder, manifest=manifest)

    def summary(self) -> dict:
        """The bundle this predictor serves: path, kind, model, validation macro F1, metrics, data record."""
        return summarize(self.source, self.manifest)

    def _tensor(self, image: ImageLike, position: int) -> torch.Tensor:
        """The model input of ``images[position]``, decoded as in training (:func:`~fer_utils.data.index.to_rgb`)
        and made by the evaluation :class:`~fer_utils.data.tensor_transforms.BatchTransform` (``self.transform``).

        Raises :class:`DataError` naming the file (or the position of an in-memory image) when it
        cannot be used; warns when it is tiny.
        """
        if isinstance(image, (str, os.PathLike)):
            name = os.fspath(image)
            rgb = open_image(name)  # decoded at full size, as the decoded-image cache of training does
        else:
            name = f"image {position} (in memory)"
            rgb = to_rgb(image, name)
        warn_if_tiny(rgb, name)
        return self.transform(rgb)

    def _decode(self, image: ImageLike, position: int):
        """What :meth:`_answer` needs of one image (here its model input); DataError when unusable."""
        return self._tensor(image, position)

    def _answer(self, decoded: list) -> list[tuple[np.ndarray, dict]]:
        """Per decoded image: its probabilities and what else its answer says (nothing, here)."""
        return [(row, {}) for row in self._probabilities(torch.stack(decoded))]

    def _rows(self, images: list[ImageLike], batch_size: int,
              report: bool) -> list[tuple[np.ndarray, dict] | DataError]:
        """Per image, its probabilities and extras, or (when ``report``; else it is raised) the DataError
        of an image that cannot be used. Non-finite outputs are the bundle's fault: always raised."""
        rows: list[tuple[np.ndarray, dict] | DataError] = []
        for start in range(0, len(images), batch_size):
            decoded: list = []
            for position in range(start, min(start + batch_size, len(images))):
                try:
                    decoded.append(self._decode(images[position], position))
                except DataError as exc:
                    if not report:
                        raise
                    decoded.append(exc)
            usable = [d for d in decoded if not isinstance(d, DataError)]
            found = iter(self._answer(usable) if usable else ())
            rows.extend(d if isinstance(d, DataError) else next(found) for d in decoded)
        return rows

    def _check_finite(self, proba: np.ndarray) -> np.ndarray:
        if not np.isfinite(proba).all():
            raise DataError(f"{self.source or 'this model (not loaded from a bundle)'}: the model gives "
                            "non-finite probabilities (NaN or infinity): its weights are corrupt or diverged "
                            "in training; retrain it or use another bundle")
        return proba

    def _probabilities(self, batch: torch.Tensor) -> np.ndarray:
        logits, _ = batched_forward(self.model, [batch], self.device)
        return self._check_finite(logits.softmax(1).numpy())

    def predict(self, images: Sequence[ImageLike], batch_size: int = 32) -> np.ndarray:
        """Probabilities ``[N, num_classes]`` (float32, finite, rows sum to 1) of PIL images, paths or
        uint8 arrays. The first image that cannot be used raises :class:`DataError` naming it."""
        rows = self._rows(list(images), batch_size, report=False)
        return np.stack([row for row, _ in rows]) if rows else np.zeros((0, len(self.labels)), dtype=np.float32)

    def predict_labeled(self, images: Sequence[ImageLike], batch_size: int = 32,
                        on_error: str = "raise") -> list[dict]:
        """Per image: ``{"label", "label_ko", "probabilities": {class name: float}}`` (a fused
        bundle's answers also have ``"caption"`` and ``"vote"``: see :class:`FusedPredictor`).

        ``on_error="report"``: an image that cannot be used (missing, corrupt, refused mode) gets
        ``{"error": message naming it}`` in its place and the others are still answered;
        ``"raise"`` (default): the first such image raises :class:`DataError`.
        """
        if on_error not in ("raise", "report"):
            raise ConfigError(f"on_error must be 'raise' or 'report', got {on_error!r}")
        results = []
        for answer in self._rows(list(images), batch_size, report=on_error == "report"):
            if isinstance(answer, DataError):
                results.append({"error": str(answer)})
                continue
            row, extra = answer
            best = int(row.argmax())
            results.append({"label": self.labels[best], "label_ko": self.labels_ko[best], **extra,
                            "probabilities": {name: float(p) for name, p in zip(self.labels, row)}})
        return results


class FusedPredictor(Predictor):
    """Images in, class probabilities out, for a fused bundle (:mod:`fer_utils.inference.fused_bundle`).

    Per image, end to end: the CNN's penultimate features (``model.forward_features`` on the input
    the CNN bundle's own :class:`Predictor` builds: same decoding and preprocessing), the caption
    (the captioner on the image decoded at full size, as the caption pipeline decodes it), its
    post-processing when the bundle records it, its embedding, ``fuse(cnn, text, "fused", norm)``,
    the head, softmax. :meth:`predict_labeled` adds ``"caption"`` (the text that was embedded) and
    ``"vote"`` (the class name the caption's emotion word names, :func:`~fer_utils.vlm.postprocess.emotion_vote`,
    or None) to each answer.

    ``model`` is the CNN (a registry Classifier), ``cnn`` the CNN bundle's Predictor, ``head`` the
    fusion head, ``captioner`` / ``encoder`` the rebuilt VLM models; ``preprocessing`` is the CNN's.
    """

    def __init__(self, cnn: Predictor, captioner, encoder, head: nn.Module, *, prompt: str,
                 settings, postprocess: bool, fusion_norm: str, source: Path | None = None,
                 manifest: Mapping | None = None):
        super().__init__(cnn.model, cnn.preprocessing, cnn.labels, cnn.labels_ko, cnn.device,
                         source=source, manifest=manifest)
        self.cnn = cnn
        self.captioner = captioner
        self.encoder = encoder
        self.head = head.eval().to(self.device)
        self.prompt = prompt
        self.settings = settings
        self.postprocess = bool(postprocess)
        self.fusion_norm = fusion_norm

    @classmethod
    def _from_manifest(cls, folder: Path, manifest: dict, device: str) -> FusedPredictor:
        from fer_utils.models.heads.registry import create_head
        from fer_utils.vlm import GenerationSettings, make_captioner, make_encoder

        file = folder / BUNDLE_JSON
        cnn_record = manifest["cnn"]
        cnn = Predictor._load_cnn(folder / cnn_record["path"], cnn_record["manifest"], device)
        head_record = manifest["head"]
        head_file = verify_weights(folder / HEAD_FILE, manifest["weights_sha256"], file, "fusion head weights")
        try:
            state = load_file(head_file)
        except (SafetensorError, OSError) as exc:
            raise DataError(f"{head_file}: unreadable or corrupt weights ({exc})") from None
        try:
            head = create_head(head_record["name"], head_record["cnn_dim"], head_record["text_dim"],
                               num_classes=manifest["num_classes"], **head_record.get("kwargs", {}))
            head.load_state_dict(state)
        except (RuntimeError, ConfigError) as exc:
            raise DataError(f"{head_file}: weights do not fit head {head_record['name']!r} "
                            f"({head_record['cnn_dim']} + {head_record['text_dim']} inputs) ({exc})") from None
        settings = GenerationSettings.from_mapping(manifest["generation"])

        record = manifest["captioner"]
        try:
            captioner = make_captioner(record["name"], model_id=record.get("model_id", ""),
                                       revision=record.get("revision", ""), seed=record.get("seed", 0),
                                       device=device, dtype=record.get("dtype", settings.dtype))
        except ConfigError as exc:  # missing weights stay the captioner's own WeightsNotFoundError
            raise DataError(f"{file}: cannot rebuild captioner {record['name']!r} ({exc})") from None
        check_identity(file, "captioner", record["name"], captioner.identity, record["identity"])

        record = manifest["encoder"]
        kwargs = {k: v for k, v in record.items() if k not in ("name", "identity")}
        try:
            encoder = make_encoder(record["name"], device=device, **kwargs)
        except ConfigError as exc:
            raise DataError(f"{file}: cannot rebuild text encoder {record['name']!r} ({exc})") from None
        check_identity(file, "text encoder", record["name"], encoder.identity, record["identity"])
        if encoder.dim != head_record["text_dim"]:
            raise DataError(f"{file}: text encoder {record['name']!r} gives {encoder.dim}-d vectors, the head "
                            f"takes text_dim={head_record['text_dim']}")
        return cls(cnn, captioner, encoder, head, prompt=manifest["prompt"], settings=settings,
                   postprocess=manifest["postprocess"], fusion_norm=head_record["fusion_norm"],
                   source=folder, manifest=manifest)

    def _decode(self, image: ImageLike, position: int):
        """(CNN input, FaceImage for the captioner) of one image; DataError naming it when unusable."""
        from fer_utils.vlm import FaceImage

        if isinstance(image, (str, os.PathLike)):
            name = os.fspath(image)
            rgb = full = open_image(name)  # at full size: as the CNN's features and the captions were made
        else:
            name = f"image {position} (in memory)"
            rgb = full = to_rgb(image, name)
        warn_if_tiny(rgb, name)
        return self.transform(rgb), FaceImage(id=name, pixels=np.asarray(full))

    def captions(self, faces: Sequence) -> list[str]:
        """The captions of ``faces`` (FaceImage) as the head was trained on them: captioned with the
        bundle's prompt and settings, then post-processed when the bundle says so."""
        from fer_utils.vlm.postprocess import postprocess

        raw = self.captioner.caption(list(faces), self.prompt, self.settings)
        if len(raw) != len(faces):
            raise RuntimeError(f"captioner {self.captioner.name} returned {len(raw)} captions for {len(faces)} images")
        return [postprocess(text) if self.postprocess else text for text in raw]

    def fused_probabilities(self, features: np.ndarray, captions: Sequence[str]) -> np.ndarray:
        """Probabilities ``[N, num_classes]`` of the head on CNN features ``[N, cnn_dim]`` (the CNN's
        ``forward_features`` of the images) and one caption per row: the captions embedded by the
        bundle's encoder, ``fuse(cnn, text, "fused", norm)``, the head, softmax. The last steps of
        every answer; :func:`fer_utils.inference.explain.text_contribution` runs them with other captions."""
        from fer_utils.models.heads.registry import fuse

        text = np.asarray(self.encoder.encode(list(captions)), dtype=np.float32)
        x = torch.from_numpy(fuse(np.asarray(features, dtype=np.float32), text, "fused", self.fusion_norm))
        logits, _ = batched_forward(self.head, [x], self.device)
        return self._check_finite(logits.softmax(1).numpy())

    def _answer(self, decoded: list) -> list[tuple[np.ndarray, dict]]:
        from fer_utils.vlm.postprocess import emotion_vote

        batch = torch.stack([tensor for tensor, _ in decoded])
        features, _ = batched_forward(self.model.forward_features, [batch], self.device)
        captions = self.captions([face for _, face in decoded])
        proba = self.fused_probabilities(features.numpy(), captions)
        votes = [emotion_vote(caption) for caption in captions]
        return [(row, {"caption": caption, "vote": None if vote is None else self.labels[vote]})
                for row, caption, vote in zip(proba, captions, votes)]


