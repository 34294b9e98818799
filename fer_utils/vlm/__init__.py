"""The vision-language half of the study: captions of faces, their text embeddings, prompts.

- :mod:`~fer_utils.vlm.base`: the interfaces (:class:`Captioner`, :class:`TextEncoder`,
  :class:`GenerationSettings`, :class:`FaceImage`);
- captioners: :mod:`~fer_utils.vlm.blip2` (BLIP-2 through transformers, and a tiny one built in
  code), :mod:`~fer_utils.vlm.simple` (precomputed captions from a file; simulated captions of a
  known accuracy, an experimental control);
- :mod:`~fer_utils.vlm.encoders`: CLIP (transformers and open_clip), all-MiniLM-L6-v2, tiny ones;
- :mod:`~fer_utils.vlm.prompts` and :mod:`~fer_utils.vlm.postprocess`: prompts, caption clean-up
  and the zero-shot "VLM vote" (the emotion a caption names);
- :mod:`~fer_utils.vlm.pipeline`: captions and embeddings of a data index through the cache;
- :mod:`~fer_utils.study.prompt_study`: the prompt-ablation notebook's steps.

Importing this package is cheap: transformers, open_clip and sentence-transformers load only when
a model is built.
"""
from __future__ import annotations

from fer_utils.errors import ConfigError
from fer_utils.options import CAPTIONERS
from fer_utils.vlm.base import ORIGINAL_GENERATION, Captioner, FaceImage, GenerationSettings, TextEncoder, face_images


def make_captioner(name: str, *, model_id: str = "", revision: str = "", captions_file: str = "",
                   accuracy: float = 0.8, seed: int = 0, device: str = "auto", dtype: str = "auto") -> Captioner:
    """The captioner ``name`` (:data:`~fer_utils.options.CAPTIONERS`) with its own arguments:

    - ``blip2``: ``model_id`` (a hub id, loaded from the Hugging Face cache only, or a local
      folder) at ``revision`` ("" = the cached snapshot), on ``device`` in ``dtype``;
    - ``tiny_blip2``: random weights from ``seed`` (captions without meaning);
    - ``precomputed``: ``captions_file`` (CSV or JSONL with id and caption);
    - ``simulated``: true emotion named with probability ``accuracy`` (a control, not a model).
    """
    if name == "blip2":
        from fer_utils.vlm.blip2 import Blip2Captioner
        if not model_id:
            raise ConfigError("captioner blip2 needs model_id (a Hugging Face id or a local folder)")
        return Blip2Captioner.from_pretrained(model_id, revision=revision or None, device=device, dtype=dtype)
    if name == "tiny_blip2":
        from fer_utils.vlm.blip2 import tiny_blip2_captioner
        return tiny_blip2_captioner(seed=seed, device="cpu" if device == "auto" else device)
    if name == "precomputed":
        from fer_utils.vlm.simple import PrecomputedCaptioner
        if not captions_file:
            raise ConfigError("captioner precomputed needs captions_file (a CSV or JSONL file of id, caption)")
        return PrecomputedCaptioner(captions_file)
    if name == "simulated":
        from fer_utils.vlm.simple import SimulatedCaptioner
        return SimulatedCaptioner(accuracy, seed=seed)
    raise ConfigError(f"unknown captioner {name!r}; known: {', '.join(CAPTIONERS)}")


def make_encoder(name: str, **kwargs) -> TextEncoder:
    """The text encoder ``name`` (:data:`~fer_utils.options.TEXT_ENCODERS`); see :mod:`~fer_utils.vlm.encoders`."""
    from fer_utils.vlm.encoders import make_encoder as make
    return make(name, **kwargs)


__all__ = ["ORIGINAL_GENERATION", "Captioner", "FaceImage", "GenerationSettings", "TextEncoder", "face_images",
           "make_captioner", "make_encoder"]
