"""The model the site serves: one :class:`~fer_utils.inference.predict.Predictor`, loaded on first use.

The bundle is named (``FER_BUNDLE``) or chosen like every front end chooses: the best validation
macro F1 among the bundles trained on the configured data set (:func:`~fer_utils.inference.bundle.choose_bundle`),
never the newest file. Each photo goes through the shared face-crop step
(:func:`fer_utils.inference.faces.crop_face`), then ``Predictor.predict_labeled`` — the same path as
``fer predict --crop-face`` and the dashboard.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from fer_utils.errors import FERError

SYNTHETIC_NOTICE = "trained on synthetic cartoon faces — not a judgement of real emotions"


class NoModelError(FERError):
    """No bundle can be served; the message says which command makes one."""


@dataclass(frozen=True)
class Answer:
    label: str
    probabilities: dict[str, float]
    caption: str | None
    vote: str | None
    face_box: list[int] | None
    face: Image.Image        # what the model saw


class ModelService:
    def __init__(self, config: dict):
        self.bundle = config.get("FER_BUNDLE")
        self.data = config.get("FER_DATA")
        self.kind = config.get("FER_BUNDLE_KIND")
        self.device = config.get("FER_DEVICE", "cpu")
        self.crop = bool(config.get("FER_CROP_FACE", True))
        self._predictor = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    def _locate(self) -> Path:
        if self.bundle:
            return Path(self.bundle)
        from fer_utils.inference.bundle import default_bundle

        try:
            return default_bundle(self.data or None, kind=self.kind)
        except FERError as exc:
            raise NoModelError(f"no model to serve: {exc}") from None

    def predictor(self):
        """The loaded Predictor (loaded once, thread-safe); NoModelError when there is none."""
        if self._predictor is None:
            with self._load_lock:
                if self._predictor is None:
                    from fer_utils.inference.predict import Predictor

                    try:
                        self._predictor = Predictor.from_bundle(self._locate(), device=self.device)
                    except NoModelError:
                        raise
                    except FERError as exc:
                        raise NoModelError(f"the model bundle cannot be served: {exc}") from None
        return self._predictor

    def info(self) -> dict:
        """What the pages say about the model: its summary plus ``bundle_id`` and ``trained_on``."""
        predictor = self.predictor()
        summary = predictor.summary()
        data = summary.get("data") or {}
        sha = predictor.manifest.get("weights_sha256", "")[:12]
        source = Path(summary["path"])
        return {**summary, "bundle_id": f"{source.parent.name}/{source.name}@{sha}",
                "synthetic": bool(data.get("synthetic")), "data_name": data.get("name", "?")}

    def predict(self, image: Image.Image) -> Answer:
        """Crop the largest face (whole image when none) and predict it."""
        from fer_utils.inference.faces import crop_face

        predictor = self.predictor()
        crop = crop_face(image) if self.crop else None
        face = crop.image if crop is not None else image
        with self._run_lock:  # one inference at a time: torch already uses every core for one
            answer = predictor.predict_labeled([face])[0]
        box = list(crop.box) if crop is not None and crop.box is not None else None
        return Answer(answer["label"], answer["probabilities"], answer.get("caption"), answer.get("vote"), box, face)
