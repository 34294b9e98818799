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

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from fer_utils.cache import atomic_write
from fer_utils.data import file_sha256, open_image
from fer_utils.data.tensor_transforms import image_transform
from fer_utils.data.index import to_rgb, warn_if_tiny
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.models.registry import create_model, list_models
from fer_utils.options import Preprocessing
from fer_utils.models.runtime import batched_forward, resolve_device

BUNDLE_FORMAT = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
REQUIRED_KEYS: tuple[str, ...] = ("architecture", "num_classes", "labels", "labels_ko", "preprocessing",
                                  "weights_sha256")
"""Keys of a CNN ``bundle.json`` besides ``format_version``; metrics, data and provenance are optional."""
BUNDLE_KINDS: tuple[str, ...] = ("cnn", "fused")
"""Values of ``bundle.json``'s ``kind``; a bundle without one is a CNN bundle."""

ImageLike = Image.Image | str | os.PathLike | np.ndarray


def save_bundle(path: str | os.PathLike, model: nn.Module, arch: str, preprocessing: Preprocessing,
                metrics: Mapping, data: Mapping, provenance: Mapping | None = None) -> Path:
    """Write ``model`` (a registry Classifier of architecture ``arch``) as a bundle folder ``path``.

    ``metrics`` should hold ``val_macro_f1`` (what :func:`choose_bundle` ranks by) and the test
    scores; ``data`` is the training data's record (:func:`fer_utils.data.describe_dataset`).
    Both files are written atomically, ``bundle.json`` last with the weights file's sha256, so a
    loader can tell a complete bundle and an error (e.g. metrics that are not JSON) leaves an
    existing bundle in the folder untouched. Returns the folder.
    """
    if arch not in list_models() or getattr(model, "arch", arch) != arch:
        raise ConfigError(f"architecture {arch!r} is not registered or not the model's "
                          f"({getattr(model, 'arch', None)!r}); registered: {', '.join(list_models())}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes != NUM_CLASSES:
        raise ConfigError(f"a bundle holds a {NUM_CLASSES}-class registry model, got num_classes={num_classes}")
    missing = [key for key in ("name", "fingerprint", "synthetic") if key not in data]
    if missing:
        raise ConfigError(f"bundle data record lacks {', '.join(missing)}: pass fer_utils.data.describe_dataset(...)")
    manifest = {
        "format_version": BUNDLE_FORMAT,
        "architecture": arch,
        "num_classes": num_classes,
        "labels": list(EMOTIONS),
        "labels_ko": list(EMOTIONS_KO),
        "preprocessing": preprocessing.to_dict(),
        "metrics": dict(metrics),
        "data": dict(data),
        "provenance": dict(provenance or {}),
    }
    try:
        json.dumps(manifest, allow_nan=False)  # NaN is not JSON: a strict reader refuses it
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"bundle metrics/data/provenance must be JSON-serialisable: {exc}") from None
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(
        state, tmp, metadata={"format": "fer_utils bundle", "architecture": arch}))
    manifest["weights_sha256"] = file_sha256(weights)
    atomic_write(folder / BUNDLE_JSON, json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return folder


def _refuse_constant(name: str):
    """``json.loads``'s hook for NaN / Infinity, which Python reads but JSON does not have."""
    raise ValueError(f"{name} is not a JSON number")


def _check_labels(file: Path, manifest: Mapping) -> None:
    """DataError naming ``file`` unless ``labels`` / ``labels_ko`` are exactly the canonical classes, in order."""
    for key, expected in (("labels", EMOTIONS), ("labels_ko", EMOTIONS_KO)):
        if manifest[key] != list(expected):
            raise DataError(f"{file}: {key} {manifest[key]!r} are not {expected!r} in that order")


def _read_json(file: Path) -> dict:
    """The JSON object of a ``bundle.json`` (strict JSON, supported format version); DataError naming ``file``."""
    if not file.is_file():
        raise WeightsNotFoundError(f"{file}: bundle manifest missing (not a model bundle folder?)")
    try:
        manifest = json.loads(file.read_text(encoding="utf-8"), parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise DataError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise DataError(f"{file}: expected a JSON object")
    if manifest.get("format_version") != BUNDLE_FORMAT:
        raise DataError(f"{file}: format_version {manifest.get('format_version')!r} is not supported "
                        f"(this fer_utils reads {BUNDLE_FORMAT})")
    kind = manifest.get("kind", "cnn")
    if kind not in BUNDLE_KINDS:
        raise DataError(f"{file}: kind {kind!r} is not supported (this fer_utils reads {', '.join(BUNDLE_KINDS)})")
    return manifest


def _read_manifest(file: Path) -> dict:
    """The checked contents of a ``bundle.json``; :class:`DataError` naming ``file`` when unusable.

    Strict: standard JSON only (no NaN), the supported format version, a known ``kind`` (absent:
    a CNN bundle). A CNN bundle needs every key of :data:`REQUIRED_KEYS`, a registered
    architecture, and exactly the canonical classes — ``num_classes`` 7 and the labels of
    :data:`EMOTIONS` / :data:`EMOTIONS_KO` in that order (the weights' outputs are in that order:
    other labels would silently relabel every prediction). A fused bundle is checked by
    :func:`fer_utils.inference.fused_bundle.check_fused_manifest` (its CNN copy too).
    """
    manifest = _read_json(file)
    if manifest.get("kind", "cnn") == "fused":
        from fer_utils.inference.fused_bundle import check_fused_manifest
        return check_fused_manifest(file, manifest)
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}")
    if manifest["architecture"] not in list_models():
        raise DataError(f"{file}: unknown architecture {manifest['architecture']!r}; "
                        f"registered: {', '.join(list_models())}")
    n = manifest["num_classes"]
    if type(n) is not int or n != NUM_CLASSES:
        raise DataError(f"{file}: num_classes {n!r} is not {NUM_CLASSES}")
    _check_labels(file, manifest)
    try:
        manifest["preprocessing"] = Preprocessing.from_dict(manifest["preprocessing"])
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{file}: bad preprocessing ({exc})") from None
    return manifest


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
        manifest = _read_manifest(folder / BUNDLE_JSON)
        if manifest.get("kind", "cnn") == "fused":
            return FusedPredictor._from_manifest(folder, manifest, device)
        if issubclass(cls, FusedPredictor):
            raise DataError(f"{folder / BUNDLE_JSON}: a CNN bundle, not a fused bundle")
        return cls._load_cnn(folder, manifest, device)

    @classmethod
    def _load_cnn(cls, folder: Path, manifest: dict, device: str) -> Predictor:
        """The CNN bundle in ``folder`` whose checked ``bundle.json`` is ``manifest``."""
        weights_file = folder / WEIGHTS_FILE
        if not weights_file.is_file():
            raise WeightsNotFoundError(f"{weights_file}: model weights missing from the bundle")
        if file_sha256(weights_file) != manifest["weights_sha256"]:
            raise DataError(f"{weights_file}: contents do not match the weights_sha256 recorded in "
                            f"{folder / BUNDLE_JSON} (replaced or half-written bundle)")
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
        return _summary(self.source, self.manifest)

    def _tensor(self, image: ImageLike, position: int) -> torch.Tensor:
        """The model input of ``images[position]``, decoded as in training (:func:`~fer_utils.data.index.to_rgb`)
        and made by the evaluation :class:`~fer_utils.data.BatchTransform` (``self.transform``).

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
        from fer_utils.inference.fused_bundle import HEAD_FILE, check_identity
        from fer_utils.models.fusion import create_head
        from fer_utils.vlm import GenerationSettings, make_captioner, make_encoder

        file = folder / BUNDLE_JSON
        cnn_record = manifest["cnn"]
        cnn = Predictor._load_cnn(folder / cnn_record["path"], cnn_record["manifest"], device)
        head_record = manifest["head"]
        head_file = folder / HEAD_FILE
        if not head_file.is_file():
            raise WeightsNotFoundError(f"{head_file}: fusion head weights missing from the bundle")
        if file_sha256(head_file) != manifest["weights_sha256"]:
            raise DataError(f"{head_file}: contents do not match the weights_sha256 recorded in {file} "
                            "(replaced or half-written bundle)")
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
        from fer_utils.study.fusion import fuse

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


def bundle_summary(folder: str | os.PathLike) -> dict:
    """What a front end shows of a bundle without loading its weights: ``{"path", "kind", "model",
    "val_macro_f1", "metrics", "data"}`` (``model``: the architecture, or for a fused bundle
    ``"fused:<head> on <architecture>"``). Raises like :meth:`Predictor.from_bundle` when the
    manifest is unusable."""
    folder = Path(folder)
    return _summary(folder, _read_manifest(folder / BUNDLE_JSON))


def _summary(folder: Path | None, manifest: Mapping) -> dict:
    metrics = manifest.get("metrics") or {}
    kind = manifest.get("kind", "cnn")
    if kind == "fused":
        model = f"fused:{manifest['head']['name']} on {manifest['cnn']['manifest']['architecture']}"
    else:
        model = manifest.get("architecture")
    protocol = (manifest.get("provenance") or {}).get("protocol", "corrected")
    return {"path": str(folder) if folder else None, "kind": kind, "model": model, "protocol": protocol,
            "val_macro_f1": metrics.get("val_macro_f1"), "metrics": metrics, "data": manifest.get("data")}


def _weights_files(folder: Path, summary: Mapping) -> list[Path]:
    if summary["kind"] == "fused":
        from fer_utils.inference.fused_bundle import CNN_FOLDER, HEAD_FILE
        return [folder / HEAD_FILE, folder / CNN_FOLDER / WEIGHTS_FILE]
    return [folder / WEIGHTS_FILE]


def _inside_fused_bundle(folder: Path) -> bool:
    """Whether ``folder`` is the CNN copy inside a fused bundle (part of it, not a bundle of its own)."""
    from fer_utils.inference.fused_bundle import CNN_FOLDER

    if folder.name != CNN_FOLDER:
        return False
    try:
        return _read_json(folder.parent / BUNDLE_JSON).get("kind") == "fused"
    except (DataError, WeightsNotFoundError, OSError):
        return False


def list_bundles(root: str | os.PathLike) -> tuple[list[dict], list[str]]:
    """``(servable, skipped)`` bundles under ``root`` (searched recursively), CNN and fused.

    Servable: a valid manifest, its weights file(s), a validation macro F1 and a data record (the
    weights' checksums are verified when the bundle is loaded). ``skipped`` says, per other bundle
    folder, why it cannot be chosen automatically (it can still be named explicitly). The CNN copy
    inside a fused bundle is part of that bundle and not listed.
    """
    root = Path(root)
    servable, skipped = [], []
    for manifest in sorted(root.rglob(BUNDLE_JSON)) if root.is_dir() else []:
        folder = manifest.parent
        if _inside_fused_bundle(folder):
            continue
        try:
            summary = bundle_summary(folder)
        except (DataError, WeightsNotFoundError) as exc:
            skipped.append(f"{folder}: {exc}")
            continue
        absent = [path for path in _weights_files(folder, summary) if not path.is_file()]
        if absent:
            skipped.append(f"{folder}: no {absent[0].relative_to(folder).as_posix()}")
        elif not isinstance(summary["val_macro_f1"], (int, float)) or not isinstance(summary["data"], dict):
            skipped.append(f"{folder}: no validation macro F1 or data record (made by an older fer_utils?)")
        elif summary["protocol"] != "corrected":
            skipped.append(f"{folder}: trained under the original study's protocol (half the data, its validation "
                           "split): its validation score is not comparable; name it explicitly to serve it")
        else:
            servable.append(summary)
    return servable, skipped


def choose_bundle(root: str | os.PathLike, data_fingerprint: str, kind: str | None = None) -> dict:
    """The summary (see :func:`bundle_summary`) of the bundle to serve by default: the best
    validation macro F1 among the servable bundles under ``root`` trained on the data set with
    ``data_fingerprint`` (ties: the first path in sorted order), CNN and fused bundles alike unless
    ``kind`` (``"cnn"`` or ``"fused"``) narrows the choice. Test scores never enter the choice.
    Raises :class:`WeightsNotFoundError` saying what was found when none qualifies."""
    if kind is not None and kind not in BUNDLE_KINDS:
        raise ConfigError(f"kind must be one of {', '.join(BUNDLE_KINDS)} or None, got {kind!r}")
    servable, skipped = list_bundles(root)
    servable = [b for b in servable if kind is None or b["kind"] == kind]
    matching = [b for b in servable if b["data"].get("fingerprint") == data_fingerprint]
    if not matching:
        others = sorted({f"{b['data'].get('name')} ({b['data'].get('fingerprint')})" for b in servable})
        detail = (f"; bundles found for other data: {', '.join(others)}" if others else "") + \
                 (f"; {len(skipped)} unusable bundle folder(s), e.g. {skipped[0]}" if skipped else "")
        what = "model bundle" if kind is None else f"{kind} model bundle"
        raise WeightsNotFoundError(f"no {what} trained on the data set with fingerprint {data_fingerprint} "
                                   f"under {root}{detail}. Train one (`fer study run`) or name one with --bundle")
    return max(matching, key=lambda b: b["val_macro_f1"])
