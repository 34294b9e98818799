"""Model bundles: the format, reading and checking one, listing them and choosing the one to serve.

A CNN bundle is a folder::

    model.safetensors   the Classifier's state dict
    bundle.json         format_version, architecture, num_classes, labels (English and Korean, in
                        class order), preprocessing, metrics (test scores and the validation macro
                        F1 it was selected on), data (the training data's record: name,
                        fingerprint, synthetic or not), provenance, weights_sha256

A fused bundle (``"kind": "fused"``; written by :mod:`fer_utils.inference.fused_bundle`) is a
self-contained folder::

    bundle.json         "kind": "fused", format_version, labels / labels_ko (as CNN bundles), what
                        rebuilds the captioner and the text encoder (name, arguments and the
                        identity they must have), the prompt, the generation settings, whether
                        captions were post-processed, the head (name, widths, fusion norm), metrics,
                        data record, provenance, weights_sha256 of head.safetensors
    head.safetensors    the fusion head's state dict
    cnn/                a copy of the CNN bundle whose penultimate features the head was trained on

A bundle without ``kind`` is a CNN bundle. This module is the one place that knows the format:

- writing a CNN bundle: :func:`save_bundle`;
- reading one: :func:`read_manifest` (strict JSON, format version, kind, keys, architecture, the
  canonical labels in order, a fused bundle's every field and its CNN copy) and
  :func:`verify_weights` (a weights file present and matching its recorded sha256), both raising
  errors that name the file and what is wrong; :func:`check_identity` (a rebuilt captioner or
  encoder is the one the bundle was made with);
- listing and choosing: :func:`bundle_summary`, :func:`list_bundles`, :func:`choose_bundle` (the
  best validation macro F1 among the bundles trained on a data set, never the newest file) and
  :func:`default_bundle`, what the CLI, the web site, the dashboard and the benchmarks serve when
  no bundle is named.

Loading a bundle into a model is :meth:`fer_utils.inference.predict.Predictor.from_bundle`.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fer_utils.cache import atomic_write
from fer_utils.data.fingerprint import file_sha256
from fer_utils.errors import ConfigError, DataError, WeightsNotFoundError
from fer_utils.labels import EMOTIONS, EMOTIONS_KO, NUM_CLASSES
from fer_utils.models.heads.registry import list_heads
from fer_utils.models.registry import list_models, model_info
from fer_utils.options import CAPTIONERS, FUSION_NORMS, TEXT_ENCODERS, Preprocessing
from fer_utils.paths import project_paths
from fer_utils.vlm.base import GenerationSettings

if TYPE_CHECKING:
    from torch import nn


BUNDLE_FORMAT = 1
BUNDLE_JSON = "bundle.json"
WEIGHTS_FILE = "model.safetensors"
HEAD_FILE = "head.safetensors"
CNN_FOLDER = "cnn"
"""The sub-folder holding the copy of the CNN bundle."""
FUSED_KIND = "fused"

BUNDLE_KINDS: tuple[str, ...] = ("cnn", "fused")
"""Values of ``bundle.json``'s ``kind``; a bundle without one is a CNN bundle."""
REQUIRED_KEYS: tuple[str, ...] = ("architecture", "num_classes", "labels", "labels_ko", "preprocessing",
                                  "weights_sha256")
"""Keys of a CNN ``bundle.json`` besides ``format_version``; metrics, data and provenance are optional."""
FUSED_REQUIRED_KEYS: tuple[str, ...] = ("kind", "num_classes", "labels", "labels_ko", "cnn", "captioner", "prompt",
                                        "generation", "postprocess", "encoder", "head", "weights_sha256")
"""Keys of a fused ``bundle.json`` besides ``format_version``; metrics, data and provenance are optional."""
SERVABLE_CAPTIONERS: tuple[str, ...] = ("blip2", "tiny_blip2")
"""Captioners that can caption a new image. ``simulated`` (reads the label) and ``precomputed``
(looks the image id up in a file) cannot."""


# --- writing a CNN bundle ------------------------------------------------------------------------

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
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(
        state, tmp, metadata={"format": "fer_utils bundle", "architecture": arch}))
    manifest["weights_sha256"] = file_sha256(weights)
    atomic_write(folder / BUNDLE_JSON, json.dumps(manifest, indent=2, ensure_ascii=False, allow_nan=False) + "\n")
    return folder


# --- reading and checking ----------------------------------------------------------------------

def _refuse_constant(name: str):
    """``json.loads``'s hook for NaN / Infinity, which Python reads but JSON does not have."""
    raise ValueError(f"{name} is not a JSON number")


def check_labels(file: Path, manifest: Mapping) -> None:
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


def read_manifest(file: Path) -> dict:
    """The checked contents of a ``bundle.json``; :class:`DataError` naming ``file`` when unusable.

    Strict: standard JSON only (no NaN), the supported format version, a known ``kind`` (absent:
    a CNN bundle). A CNN bundle needs every key of :data:`REQUIRED_KEYS`, a registered
    architecture, and exactly the canonical classes — ``num_classes`` 7 and the labels of
    :data:`EMOTIONS` / :data:`EMOTIONS_KO` in that order (the weights' outputs are in that order:
    other labels would silently relabel every prediction). A fused bundle is checked by
    :func:`check_fused_manifest` (its CNN copy too).
    """
    manifest = _read_json(file)
    if manifest.get("kind", "cnn") == "fused":
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
    check_labels(file, manifest)
    try:
        manifest["preprocessing"] = Preprocessing.from_dict(manifest["preprocessing"])
    except (ConfigError, TypeError) as exc:
        raise DataError(f"{file}: bad preprocessing ({exc})") from None
    return manifest


def is_servable_captioner(name: str) -> bool:
    """Whether a fused model whose captions came from captioner ``name`` can be served (see the module docstring)."""
    return name in SERVABLE_CAPTIONERS


def refuse_unservable(name: Any, error: type[Exception], where: str) -> None:
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


def _need(file: Path, value: Any, ok: bool, what: str) -> Any:
    if not ok:
        raise DataError(f"{file}: {what}, got {value!r}")
    return value


def check_fused_manifest(file: Path, manifest: dict) -> dict:
    """The checked manifest of a fused ``bundle.json`` (``file``), parsed from JSON; DataError naming
    ``file`` (or the copied CNN bundle's file) when unusable. Adds ``manifest["cnn"]["manifest"]``:
    the checked manifest of the copied CNN bundle."""
    missing = [k for k in FUSED_REQUIRED_KEYS if k not in manifest]
    if missing:
        raise DataError(f"{file}: missing key(s) {', '.join(missing)}")
    n = manifest["num_classes"]
    if type(n) is not int or n != NUM_CLASSES:
        raise DataError(f"{file}: num_classes {n!r} is not {NUM_CLASSES}")
    check_labels(file, manifest)

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
    inner_manifest = read_manifest(inner_json)
    if inner_manifest.get("kind", "cnn") != "cnn":
        raise DataError(f"{inner_json}: the fused bundle's CNN copy is a {inner_manifest['kind']!r} bundle")
    arch = inner_manifest["architecture"]
    if cnn.get("architecture", arch) != arch:
        raise DataError(f"{file}: cnn.architecture {cnn.get('architecture')!r} is not the copied bundle's {arch!r}")
    cnn["manifest"] = inner_manifest

    captioner = manifest["captioner"]
    _need(file, captioner, isinstance(captioner, dict), "captioner must be an object")
    refuse_unservable(captioner.get("name"), DataError, f"{file}: ")
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


def verify_weights(weights: Path, recorded_sha256: str, manifest_file: Path, what: str = "model weights") -> Path:
    """``weights`` when it exists and its sha256 is the one ``manifest_file`` records; else
    :class:`WeightsNotFoundError` (missing) or :class:`DataError` (replaced or half-written), naming both."""
    if not weights.is_file():
        raise WeightsNotFoundError(f"{weights}: {what} missing from the bundle {manifest_file.parent}")
    if file_sha256(weights) != recorded_sha256:
        raise DataError(f"{weights}: contents do not match the weights_sha256 recorded in {manifest_file} "
                        "(replaced or half-written bundle)")
    return weights


# --- listing and choosing ----------------------------------------------------------------------

def bundle_summary(folder: str | os.PathLike) -> dict:
    """What a front end shows of a bundle without loading its weights: ``{"path", "kind", "model",
    "val_macro_f1", "metrics", "data"}`` (``model``: the architecture, or for a fused bundle
    ``"fused:<head> on <architecture>"``). Raises like :meth:`Predictor.from_bundle` when the
    manifest is unusable."""
    folder = Path(folder)
    return summarize(folder, read_manifest(folder / BUNDLE_JSON))


def summarize(folder: Path | None, manifest: Mapping) -> dict:
    metrics = manifest.get("metrics") or {}
    kind = manifest.get("kind", "cnn")
    if kind == "fused":
        model = f"fused:{manifest['head']['name']} on {manifest['cnn']['manifest']['architecture']}"
    else:
        model = manifest.get("architecture")
    protocol = (manifest.get("provenance") or {}).get("protocol", "corrected")
    return {"path": str(folder) if folder else None, "kind": kind, "model": model, "protocol": protocol,
            "val_macro_f1": metrics.get("val_macro_f1"), "metrics": metrics, "data": manifest.get("data")}


def weights_files(folder: Path, summary: Mapping) -> list[Path]:
    """The weights files of the bundle in ``folder`` whose summary is ``summary``."""
    if summary["kind"] == "fused":
        return [folder / HEAD_FILE, folder / CNN_FOLDER / WEIGHTS_FILE]
    return [folder / WEIGHTS_FILE]


def _inside_fused_bundle(folder: Path) -> bool:
    """Whether ``folder`` is the CNN copy inside a fused bundle (part of it, not a bundle of its own)."""
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
        absent = [path for path in weights_files(folder, summary) if not path.is_file()]
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


def data_fingerprint(data_path: str | os.PathLike) -> str:
    """The fingerprint a bundle's data record holds for the data set at ``data_path`` (any format)."""
    from fer_utils.data import describe_dataset, load_dataset

    return describe_dataset(data_path, load_dataset(data_path))["fingerprint"]


def default_bundle(data_path: str | os.PathLike | None = None, *, kind: str | None = None,
                   root: str | os.PathLike | None = None) -> Path:
    """The bundle served when none is named: :func:`choose_bundle` under ``root`` (default: the
    project's bundles folder, ``data/runs``) among the bundles trained on ``data_path`` (default:
    the project's synthetic data set), of ``kind`` (None: CNN or fused). Raises
    :class:`WeightsNotFoundError` saying how to make one when the data set or a bundle is missing."""
    if data_path is None or root is None:   # only then is the project folder needed
        folders = project_paths()
        data_path = folders.synthetic if data_path is None else data_path
        root = folders.bundles if root is None else root
    data_path = Path(data_path)
    if not data_path.exists():
        raise WeightsNotFoundError(f"no bundle named, and the data set {data_path} does not exist (so no bundle is "
                                   "trained on it): run `make study` (or `fer study run`), name a bundle, or name "
                                   "the data set a bundle was trained on")
    return Path(choose_bundle(root, data_fingerprint(data_path), kind)["path"])
