"""Fused model bundles: a CNN, a captioner, a text encoder and a fusion head, served as one model.

A fused bundle is a self-contained folder (it archives and moves as one)::

    bundle.json         "kind": "fused", format_version, labels / labels_ko (as CNN bundles), what
                        rebuilds the captioner and the text encoder (name, arguments and the
                        identity they must have), the prompt, the generation settings, whether
                        captions were post-processed, the head (name, widths, fusion norm), metrics,
                        data record, provenance, weights_sha256 of head.safetensors
    head.safetensors    the fusion head's state dict
    cnn/                a copy of the CNN bundle whose penultimate features the head was trained on
                        (its own bundle.json and model.safetensors; bundle.json records the copy's
                        manifest sha256 and architecture)

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
head); :func:`fer_utils.inference.predict.bundle_summary`, ``list_bundles`` and ``choose_bundle`` treat it
like a CNN bundle.
"""
from __future__ import annotations

import hashlib
import inspect
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
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.options import CAPTIONERS, FUSION_NORMS, TEXT_ENCODERS
from fer_utils.inference.predict import BUNDLE_FORMAT, BUNDLE_JSON, WEIGHTS_FILE, _check_labels, _read_manifest
from fer_utils.vlm.base import GenerationSettings

FUSED_KIND = "fused"
HEAD_FILE = "head.safetensors"
CNN_FOLDER = "cnn"
"""The sub-folder holding the copy of the CNN bundle."""

SERVABLE_CAPTIONERS: tuple[str, ...] = ("blip2", "tiny_blip2")
"""Captioners that can caption a new image. ``simulated`` (reads the label) and ``precomputed``
(looks the image id up in a file) cannot."""

CAPTIONER_KEYS: tuple[str, ...] = ("name", "model_id", "revision", "seed", "dtype", "identity")
"""Keys of a bundle's ``captioner`` record: ``make_captioner``'s arguments (besides the device,
chosen when loading) and the identity the rebuilt captioner must have."""

FUSED_REQUIRED_KEYS: tuple[str, ...] = ("kind", "num_classes", "labels", "labels_ko", "cnn", "captioner", "prompt",
                                        "generation", "postprocess", "encoder", "head", "weights_sha256")
"""Keys of a fused ``bundle.json`` besides ``format_version``; metrics, data and provenance are optional."""


def is_servable_captioner(name: str) -> bool:
    """Whether a fused model whose captions came from captioner ``name`` can be served (see the module docstring)."""
    return name in SERVABLE_CAPTIONERS


def _refuse_unservable(name: Any, error: type[Exception], where: str) -> None:
    if name in ("simulated", "precomputed"):
        why = ("its captions are drawn from the true label" if name == "simulated"
               else "it only looks captions up by image id in a file")
        raise error(f"{where}captioner {name!r} cannot caption a new image ({why}): a fused model trained on its "
                    f"captions makes a fine experiment but cannot be served; use {' or '.join(SERVABLE_CAPTIONERS)}")
    if name not in SERVABLE_CAPTIONERS:
        raise error(f"{where}captioner {name!r} is not one a fused bundle can hold; known captioners: "
                    f"{', '.join(CAPTIONERS)}, servable: {', '.join(SERVABLE_CAPTIONERS)}")


def _jsonable(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists): what identities are compared as."""
    return json.loads(json.dumps(value, allow_nan=False))


def _encoder_arguments(name: str) -> list[str]:
    from fer_utils.vlm.encoders import ENCODERS

    factory = ENCODERS[name]
    return [p for p in inspect.signature(factory).parameters if p not in ("self", "cls", "device")]


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
    _refuse_unservable(name, ConfigError, "fused bundle: ")
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
    accepted = _encoder_arguments(name)
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
    ``val_macro_f1`` (what :func:`~fer_utils.inference.predict.choose_bundle` ranks by); ``data`` is the
    training data's record, the data the CNN bundle was trained on.

    Everything is checked before anything is written; files are written atomically, the CNN copy
    and the head first and ``bundle.json`` last, so an error leaves an existing bundle untouched.
    """
    from fer_utils.models.fusion import create_head, list_heads
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
        cnn_manifest = _read_manifest(source / BUNDLE_JSON)
    except DataError as exc:
        raise ConfigError(f"cnn_bundle {source} is not a usable CNN bundle: {exc}") from None
    if cnn_manifest.get("kind", "cnn") != "cnn":
        raise ConfigError(f"cnn_bundle {source} is a {cnn_manifest['kind']} bundle, not a CNN bundle")
    cnn_weights = source / WEIGHTS_FILE
    if not cnn_weights.is_file():
        raise WeightsNotFoundError(f"{cnn_weights}: model weights missing from the CNN bundle")
    if file_sha256(cnn_weights) != cnn_manifest["weights_sha256"]:
        raise DataError(f"{cnn_weights}: contents do not match the weights_sha256 recorded in "
                        f"{source / BUNDLE_JSON} (replaced or half-written bundle)")
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

def _need(file: Path, value: Any, ok: bool, what: str) -> Any:
    if not ok:
        raise DataError(f"{file}: {what}, got {value!r}")
    return value


def check_fused_manifest(file: Path, manifest: dict) -> dict:
    """The checked manifest of a fused ``bundle.json`` (``file``), parsed from JSON; DataError naming
    ``file`` (or the copied CNN bundle's file) when unusable. Adds ``manifest["cnn"]["manifest"]``:
    the checked manifest of the copied CNN bundle."""
    from fer_utils.models.fusion import list_heads
    from fer_utils.models.registry import model_info

    missing = [k for k in FUSED_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}")
    n = manifest["num_classes"]
    if type(n) is not int or n != NUM_CLASSES:
        raise DataError(f"{file}: num_classes {n!r} is not {NUM_CLASSES}")
    _check_labels(file, manifest)

    cnn = manifest["cnn"]
    _need(file, cnn, isinstance(cnn, dict) and isinstance(cnn.get("path"), str)
          and isinstance(cnn.get("manifest_sha256"), str), "cnn must be {path, architecture, manifest_sha256, ...}")
    relative = Path(cnn["path"])
    _need(file, cnn["path"], bool(cnn["path"]) and not relative.is_absolute() and ".." not in relative.parts,
          "cnn.path must be a sub-folder of the bundle")
    inner = file.parent / relative
    inner_json = inner / BUNDLE_JSON
    if not inner_json.is_file():
        raise WeightsNotFoundError(f"{inner_json}: the fused bundle's copy of its CNN bundle is missing "
                                   f"(named in {file})")
    if hashlib.sha256(inner_json.read_bytes()).hexdigest() != cnn["manifest_sha256"]:
        raise DataError(f"{inner_json}: contents do not match the cnn.manifest_sha256 recorded in {file} "
                        "(the CNN copy was replaced or edited)")
    inner_manifest = _read_manifest(inner_json)
    if inner_manifest.get("kind", "cnn") != "cnn":
        raise DataError(f"{inner_json}: the fused bundle's CNN copy is a {inner_manifest['kind']!r} bundle")
    arch = inner_manifest["architecture"]
    if cnn.get("architecture", arch) != arch:
        raise DataError(f"{file}: cnn.architecture {cnn.get('architecture')!r} is not the copied bundle's {arch!r}")
    cnn["manifest"] = inner_manifest

    captioner = manifest["captioner"]
    _need(file, captioner, isinstance(captioner, dict), "captioner must be an object")
    _refuse_unservable(captioner.get("name"), DataError, f"{file}: ")
    _need(file, captioner.get("identity"), isinstance(captioner.get("identity"), dict),
          "captioner.identity must be an object")
    for key in ("model_id", "revision", "dtype"):
        _need(file, captioner.get(key), isinstance(captioner.get(key, ""), str), f"captioner.{key} must be a string")
    seed = captioner.get("seed", 0)
    _need(file, seed, isinstance(seed, int) and not isinstance(seed, bool), "captioner.seed must be an integer")

    _need(file, manifest["prompt"], isinstance(manifest["prompt"], str), "prompt must be a string")
    _need(file, manifest["postprocess"], isinstance(manifest["postprocess"], bool), "postprocess must be a boolean")
    _need(file, manifest["generation"], isinstance(manifest["generation"], dict), "generation must be an object")
    try:
        GenerationSettings.from_mapping(manifest["generation"])
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{file}: bad generation settings ({exc})") from None

    encoder = manifest["encoder"]
    _need(file, encoder, isinstance(encoder, dict), "encoder must be an object")
    _need(file, encoder.get("name"), encoder.get("name") in TEXT_ENCODERS,
          f"encoder.name must be one of {', '.join(TEXT_ENCODERS)}")
    _need(file, encoder.get("identity"), isinstance(encoder.get("identity"), dict),
          "encoder.identity must be an object")

    head = manifest["head"]
    _need(file, head, isinstance(head, dict), "head must be an object")
    _need(file, head.get("name"), head.get("name") in list_heads(),
          f"head.name must be one of {', '.join(list_heads())}")
    for key in ("cnn_dim", "text_dim"):
        value = head.get(key)
        _need(file, value, type(value) is int and value > 0, f"head.{key} must be a positive integer")
    _need(file, head.get("fusion_norm"), head.get("fusion_norm") in FUSION_NORMS,
          f"head.fusion_norm must be one of {', '.join(FUSION_NORMS)}")
    _need(file, head.get("kwargs"), isinstance(head.get("kwargs", {}), dict), "head.kwargs must be an object")
    feature_dim = model_info(arch).feature_dim
    if head["cnn_dim"] != feature_dim:
        raise DataError(f"{file}: head.cnn_dim {head['cnn_dim']} is not the feature width {feature_dim} of the "
                        f"CNN copy's architecture {arch!r}")
    return manifest


def check_identity(file: Path, what: str, name: str, built: Mapping, recorded: Mapping) -> None:
    """DataError naming ``file`` unless the rebuilt ``what`` (captioner / text encoder) ``name``
    has the ``recorded`` identity."""
    built = _jsonable(dict(built))
    if built != recorded:
        changed = sorted(k for k in set(built) | set(recorded) if built.get(k) != recorded.get(k))
        raise DataError(f"{file}: the {what} {name!r} rebuilt now has identity {built}, but the bundle was made "
                        f"with {recorded} (differs in {', '.join(changed)}): it would not give the captions/vectors "
                        f"the head was trained on (a model revision that changed, or a model built differently)")


__all__ = ["CAPTIONER_KEYS", "CNN_FOLDER", "FUSED_KIND", "FUSED_REQUIRED_KEYS", "HEAD_FILE", "SERVABLE_CAPTIONERS",
           "captioner_record", "check_fused_manifest", "check_identity", "encoder_record", "is_servable_captioner",
           "save_fused_bundle"]
