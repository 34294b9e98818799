"""Fused model bundles: a CNN, a captioner, a text encoder and a fusion head, served as one model.

A fused bundle is a self-contained folder (it archives and moves as one): ``bundle.json``,
``head.safetensors`` and ``cnn/``, a copy of the CNN bundle whose penultimate features the head was
trained on. The format, and reading and checking it, are :mod:`fer_utils.inference.bundle`'s; this
module writes one (:func:`save_fused_bundle`).

Only captioners that can caption a new image can be served: ``blip2`` (weights from the local
Hugging Face cache) and ``tiny_blip2`` (random weights from a seed: real code paths, meaningless
captions). ``simulated`` captions are drawn from the true label and ``precomputed`` ones are looked
up by image id: both make fine experiments but no servable model, and :func:`save_fused_bundle`
refuses them. The text encoder's weights are not copied either: the bundle records the encoder's
name and arguments and its ``identity``, and loading checks that the rebuilt captioner and encoder
have exactly the recorded identities (a BLIP-2 snapshot that changed, a tiny model built
differently: a :class:`~fer_utils.errors.DataError` naming ``bundle.json``). Missing captioner or
encoder weights raise their own :class:`~fer_utils.errors.WeightsNotFoundError` (model id and the
download command): random weights never stand in.

:func:`save_fused_bundle` writes one; :meth:`fer_utils.inference.predict.Predictor.from_bundle` loads it as a
:class:`fer_utils.inference.predict.FusedPredictor` (image → CNN features, caption → embedding → fuse →
head); :func:`fer_utils.inference.bundle.bundle_summary`, ``list_bundles`` and ``choose_bundle`` treat it
like a CNN bundle.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from torch import nn

from fer_utils.cache import atomic_write
from fer_utils.data import file_sha256
from fer_utils.errors import ConfigError, DataError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.options import FUSION_NORMS, TEXT_ENCODERS
from fer_utils.inference.bundle import (BUNDLE_FORMAT, BUNDLE_JSON, CNN_FOLDER, FUSED_KIND, HEAD_FILE, WEIGHTS_FILE,
                                        read_manifest, refuse_unservable, verify_weights)
from fer_utils.vlm.base import GenerationSettings, factory_arguments


CAPTIONER_KEYS: tuple[str, ...] = ("name", "model_id", "revision", "seed", "dtype", "identity")
"""Keys of a bundle's ``captioner`` record: ``make_captioner``'s arguments (besides the device,
chosen when loading) and the identity the rebuilt captioner must have."""


def captioner_record(name: str, captioner, *, model_id: str = "", revision: str = "", seed: int = 0,
                     dtype: str | None = None) -> dict:
    """The ``captioner`` argument of :func:`save_fused_bundle` for a captioner built as
    ``make_captioner(name, model_id=..., revision=..., seed=..., dtype=...)``: those arguments and
    ``captioner.identity``."""
    record: dict[str, Any] = {"name": name, "model_id": model_id, "revision": revision, "seed": seed,
                              "identity": captioner.identity}
    if dtype is not None:
        record["dtype"] = dtype
    return record


def encoder_record(name: str, encoder, **kwargs) -> dict:
    """The ``encoder`` argument of :func:`save_fused_bundle` for an encoder built as
    ``make_encoder(name, device=..., **kwargs)``: the name, ``kwargs`` and ``encoder.identity``."""
    return {"name": name, **kwargs, "identity": encoder.identity}


def _captioner_entry(captioner: Mapping, settings: GenerationSettings) -> dict:
    if not isinstance(captioner, Mapping):
        raise ConfigError(f"captioner must be a dict (name, model_id, revision, seed, identity), got "
                          f"{type(captioner).__name__}")
    name = captioner.get("name")
    refuse_unservable(name, ConfigError, "fused bundle: ")
    unknown = sorted(set(captioner) - set(CAPTIONER_KEYS))
    if unknown:
        raise ConfigError(f"captioner record has unknown key(s) {', '.join(unknown)}; it takes "
                          f"{', '.join(CAPTIONER_KEYS)} (the device is chosen when the bundle is loaded)")
    if not isinstance(captioner.get("identity"), Mapping) or not captioner["identity"]:
        raise ConfigError(f"captioner {name!r}: the record needs the captioner's identity (captioner.identity), "
                          "which loading checks the rebuilt captioner against")
    entry = {"name": name, "model_id": captioner.get("model_id", ""), "revision": captioner.get("revision", ""),
             "seed": captioner.get("seed", 0), "dtype": captioner.get("dtype", settings.dtype),
             "identity": dict(captioner["identity"])}
    for key in ("model_id", "revision", "dtype"):
        if not isinstance(entry[key], str):
            raise ConfigError(f"captioner {name!r}: {key} must be a string, got {entry[key]!r}")
    if isinstance(entry["seed"], bool) or not isinstance(entry["seed"], int):
        raise ConfigError(f"captioner {name!r}: seed must be an integer, got {entry['seed']!r}")
    if name == "blip2" and not entry["model_id"]:
        raise ConfigError("captioner blip2 needs model_id (the Hugging Face id or local folder it was loaded from)")
    return entry


def _encoder_entry(encoder: Mapping) -> dict:
    if not isinstance(encoder, Mapping):
        raise ConfigError(f"encoder must be a dict (name, its arguments, identity), got {type(encoder).__name__}")
    name = encoder.get("name")
    if name not in TEXT_ENCODERS:
        raise ConfigError(f"unknown text encoder {name!r}; choose one of: {', '.join(TEXT_ENCODERS)}")
    if not isinstance(encoder.get("identity"), Mapping) or not encoder["identity"]:
        raise ConfigError(f"text encoder {name!r}: the record needs the encoder's identity (encoder.identity), "
                          "which loading checks the rebuilt encoder against")
    kwargs = {k: v for k, v in encoder.items() if k not in ("name", "identity")}
    from fer_utils.vlm.encoders import ENCODERS

    accepted = [p for p in factory_arguments(ENCODERS[name]) if p != "device"]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConfigError(f"text encoder {name!r} record has argument(s) {', '.join(unknown)} it does not take "
                          f"(it takes {', '.join(accepted) or 'none'}; the device is chosen when loading)")
    return {"name": name, **kwargs, "identity": dict(encoder["identity"])}


def save_fused_bundle(path: str | os.PathLike, *, cnn_bundle: str | os.PathLike, captioner: Mapping, prompt: str,
                      settings: GenerationSettings, postprocess: bool, encoder: Mapping, head_name: str,
                      head: nn.Module, cnn_dim: int, text_dim: int, fusion_norm: str, metrics: Mapping,
                      data: Mapping, provenance: Mapping | None = None,
                      head_kwargs: Mapping | None = None) -> Path:
    """Write a fused bundle folder ``path`` (see the module docstring); returns the folder.

    ``cnn_bundle``: the CNN bundle whose penultimate features the head was trained on (copied into
    ``path/cnn``; its weights are checked against their recorded sha256 first). ``captioner``:
    ``{"name": "blip2" | "tiny_blip2", "model_id", "revision", "seed", "dtype", "identity"}``
    (:func:`captioner_record`); ``simulated`` and ``precomputed`` are refused (ConfigError: they
    cannot caption a new image). ``prompt``, ``settings`` and ``postprocess``: how the training
    captions were made. ``encoder``: ``{"name", its arguments (e.g. model_id), "identity"}``
    (:func:`encoder_record`). ``head``: the trained ``create_head(head_name, cnn_dim, text_dim,
    **head_kwargs)`` on ``fuse(cnn, text, "fused", fusion_norm)``. ``metrics`` should hold
    ``val_macro_f1`` (what :func:`~fer_utils.inference.bundle.choose_bundle` ranks by); ``data`` is the
    training data's record, the data the CNN bundle was trained on.

    Everything is checked before anything is written; files are written atomically, the CNN copy
    and the head first and ``bundle.json`` last, so an error leaves an existing bundle untouched.
    """
    from fer_utils.models.heads.registry import create_head, list_heads
    from fer_utils.models.registry import model_info

    if not isinstance(settings, GenerationSettings):
        raise ConfigError(f"settings must be GenerationSettings, got {type(settings).__name__}")
    captioner_entry = _captioner_entry(captioner, settings)
    encoder_entry = _encoder_entry(encoder)
    if not isinstance(prompt, str):
        raise ConfigError(f"prompt must be the prompt's text, got {type(prompt).__name__}")
    if not isinstance(postprocess, bool):
        raise ConfigError(f"postprocess must be True or False, got {postprocess!r}")
    if fusion_norm not in FUSION_NORMS:
        raise ConfigError(f"fusion norm must be one of {', '.join(FUSION_NORMS)}, got {fusion_norm!r}")
    if head_name not in list_heads():
        raise ConfigError(f"unknown head {head_name!r}; registered: {', '.join(list_heads())}")
    missing = [key for key in ("name", "fingerprint", "synthetic") if key not in data]
    if missing:
        raise ConfigError(f"bundle data record lacks {', '.join(missing)}: pass fer_utils.data.describe_dataset(...)")

    source = Path(cnn_bundle)
    if source.name == BUNDLE_JSON:
        source = source.parent
    folder = Path(path)
    if folder.resolve() == source.resolve():
        raise ConfigError(f"{folder}: a fused bundle cannot be written into the CNN bundle it copies")
    try:
        cnn_manifest = read_manifest(source / BUNDLE_JSON)
    except DataError as exc:
        raise ConfigError(f"cnn_bundle {source} is not a usable CNN bundle: {exc}") from None
    if cnn_manifest.get("kind", "cnn") != "cnn":
        raise ConfigError(f"cnn_bundle {source} is a {cnn_manifest['kind']} bundle, not a CNN bundle")
    cnn_weights = verify_weights(source / WEIGHTS_FILE, cnn_manifest["weights_sha256"], source / BUNDLE_JSON)
    arch = cnn_manifest["architecture"]
    feature_dim = model_info(arch).feature_dim
    if cnn_dim != feature_dim:
        raise ConfigError(f"cnn_dim {cnn_dim!r} is not the feature width {feature_dim} of the CNN bundle's "
                          f"architecture {arch!r} ({source})")
    cnn_fingerprint = (cnn_manifest.get("data") or {}).get("fingerprint")
    if cnn_fingerprint is not None and cnn_fingerprint != data["fingerprint"]:
        raise ConfigError(f"the CNN bundle {source} was trained on another data set ({cnn_fingerprint}) than the "
                          f"fused model's data record ({data['fingerprint']})")

    kwargs = dict(head_kwargs or {})
    if getattr(head, "cnn_dim", cnn_dim) != cnn_dim or getattr(head, "text_dim", text_dim) != text_dim:
        raise ConfigError(f"head {head_name!r} has cnn_dim={getattr(head, 'cnn_dim', None)}, "
                          f"text_dim={getattr(head, 'text_dim', None)}; expected {cnn_dim}, {text_dim}")
    if getattr(head, "num_classes", NUM_CLASSES) != NUM_CLASSES:
        raise ConfigError(f"a fused bundle holds a {NUM_CLASSES}-class head, got num_classes={head.num_classes}")
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    try:  # the head must load back the way FusedPredictor rebuilds it
        create_head(head_name, cnn_dim, text_dim, num_classes=NUM_CLASSES, **kwargs).load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"the head's weights do not fit create_head({head_name!r}, {cnn_dim}, {text_dim}"
                          f"{', **' + repr(kwargs) if kwargs else ''}) ({exc})") from None

    cnn_json = (source / BUNDLE_JSON).read_bytes()
    manifest = {
        "format_version": BUNDLE_FORMAT,
        "kind": FUSED_KIND,
        "num_classes": NUM_CLASSES,
        "labels": list(EMOTIONS),
        "labels_ko": list(EMOTIONS_KO),
        "cnn": {"path": CNN_FOLDER, "architecture": arch, "feature_dim": feature_dim,
                "manifest_sha256": hashlib.sha256(cnn_json).hexdigest(), "copied_from": str(source)},
        "captioner": captioner_entry,
        "prompt": prompt,
        "generation": settings.to_dict(),
        "postprocess": postprocess,
        "encoder": encoder_entry,
        "head": {"name": head_name, "cnn_dim": int(cnn_dim), "text_dim": int(text_dim), "fusion_norm": fusion_norm,
                 "kwargs": kwargs},
        "metrics": dict(metrics),
        "data": dict(data),
        "provenance": dict(provenance or {}),
    }
    try:
        json.dumps(manifest, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"fused bundle records (captioner, encoder, head kwargs, metrics, data, provenance) must be "
                          f"JSON-serialisable: {exc}") from None

    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / CNN_FOLDER / WEIGHTS_FILE, lambda tmp: shutil.copyfile(cnn_weights, tmp))
    atomic_write(folder / CNN_FOLDER / BUNDLE_JSON, cnn_json)
    weights = atomic_write(folder / HEAD_FILE, lambda tmp: save_file(
        state, tmp, metadata={"format": "fer_utils fused bundle head", "head": head_name}))
    manifest["weights_sha256"] = file_sha256(weights)
    atomic_write(folder / BUNDLE_JSON, json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return folder


# --- reading -----------------------------------------------------------------------------------


__all__ = ["captioner_record", "encoder_record", "save_fused_bundle"]
