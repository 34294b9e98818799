"""One archive of a study's results, to build its book on another machine.

A ``full`` run on a GPU machine leaves run records (``data/runs``) and executed notebooks
(``book/experiments``). :func:`export_results` packs both into one ``.tar.gz`` (model bundles'
weights only when asked: they are large and the book does not need them) with a manifest of every
file's SHA-256; :func:`import_results` unpacks such an archive into another project, after
checking all of it: only regular files under ``runs/`` and ``experiments/``, no absolute path, no
``..``, no link, every file's size and digest as the manifest says, and no existing file
overwritten unless ``replace`` is given. Nothing is written until every check has passed, so a
bad or hostile archive loses nothing already stored.
"""
from __future__ import annotations

import io
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path, PurePosixPath

from fer_utils import __version__
from fer_utils.cache import file_sha256
from fer_utils.errors import DataError

MANIFEST_NAME = "FER_RESULTS.json"
ROOTS = ("runs", "experiments")
"""Top-level folders of an archive: run records and executed notebooks."""
BUNDLE_FOLDER = "bundle"
MAX_FILE_BYTES = 2 << 30
"""The largest member accepted (2 GiB): a model bundle's weights fit, a decompression bomb does not."""


def _files(root: Path, include_bundles: bool) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and (include_bundles or BUNDLE_FOLDER not in p.relative_to(root).parts)
                  and ".ipynb_checkpoints" not in p.parts)


def export_results(out: str | Path, runs_root: str | Path, book_out: str | Path,
                   include_bundles: bool = False) -> dict:
    """Write the run records under ``runs_root`` and the executed notebooks under ``book_out`` to
    the archive ``out`` (``.tar.gz``); returns its manifest. Model bundles are left out unless
    ``include_bundles``."""
    sources = dict(zip(ROOTS, (Path(runs_root), Path(book_out))))
    members = {f"{name}/{path.relative_to(root).as_posix()}": path
               for name, root in sources.items() for path in _files(root, include_bundles)}
    if not any(name.startswith("runs/") for name in members):
        raise DataError(f"{runs_root}: no run records to export; run `fer study run` first")
    manifest = {"format": 1, "fer_utils": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "bundles": include_bundles,
                "files": {name: {"bytes": path.stat().st_size, "sha256": file_sha256(path)}
                          for name, path in members.items()}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(MANIFEST_NAME)
        info.size, info.mtime = len(data), int(time.time())
        tar.addfile(info, io.BytesIO(data))
        for name, path in members.items():
            tar.add(path, arcname=name, recursive=False)
    partial.replace(out)
    return manifest


def _check_name(name: str, archive: Path) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts or "\\" in name:
        raise DataError(f"{archive}: member {name!r} is not a relative path inside the archive")
    if path.parts[0] not in ROOTS and name != MANIFEST_NAME:
        raise DataError(f"{archive}: member {name!r} is outside {' and '.join(r + '/' for r in ROOTS)}")
    return path


def _read_manifest(tar: tarfile.TarFile, archive: Path) -> dict:
    try:
        member = tar.getmember(MANIFEST_NAME)
    except KeyError:
        raise DataError(f"{archive}: no {MANIFEST_NAME}; not an archive made by `fer runs export`") from None
    if not member.isfile() or member.size > 64 << 20:
        raise DataError(f"{archive}: {MANIFEST_NAME} is not a regular file of reasonable size")
    try:
        manifest = json.loads(tar.extractfile(member).read())
    except ValueError as exc:
        raise DataError(f"{archive}: {MANIFEST_NAME} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise DataError(f"{archive}: {MANIFEST_NAME} has no 'files' mapping")
    return manifest


def import_results(archive: str | Path, runs_root: str | Path, book_out: str | Path,
                   replace: bool = False) -> list[Path]:
    """Unpack an archive of :func:`export_results` into ``runs_root`` and ``book_out``; returns
    the files written. Raises :class:`~fer_utils.errors.DataError` naming the archive and the
    member for anything wrong (see the module's docstring), before writing anything."""
    archive = Path(archive)
    targets = dict(zip(ROOTS, (Path(runs_root), Path(book_out))))
    try:
        tar = tarfile.open(archive, "r:*")
    except (OSError, tarfile.TarError) as exc:
        raise DataError(f"{archive}: cannot be read as a tar archive ({exc})") from None
    with tar, tempfile.TemporaryDirectory(prefix="fer-import-") as tmp:
        manifest = _read_manifest(tar, archive)
        listed = manifest["files"]
        seen: dict[str, Path] = {}
        for member in tar.getmembers():
            path = _check_name(member.name, archive)
            if member.name == MANIFEST_NAME or member.isdir():
                continue
            if not member.isfile():
                raise DataError(f"{archive}: member {member.name!r} is a link or device, not a regular file")
            if len(path.parts) < 2:
                raise DataError(f"{archive}: member {member.name!r} is a file in place of a folder")
            if member.name in seen:
                raise DataError(f"{archive}: member {member.name!r} appears twice")
            expected = listed.get(member.name)
            if not isinstance(expected, dict):
                raise DataError(f"{archive}: member {member.name!r} is not listed in {MANIFEST_NAME}")
            if member.size > MAX_FILE_BYTES or member.size != expected.get("bytes"):
                raise DataError(f"{archive}: member {member.name!r} has {member.size} bytes, "
                                f"{MANIFEST_NAME} says {expected.get('bytes')!r}")
            staged = Path(tmp, *path.parts)
            staged.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, staged.open("wb") as dst:
                shutil.copyfileobj(src, dst)
            if file_sha256(staged) != expected.get("sha256"):
                raise DataError(f"{archive}: member {member.name!r} does not match its SHA-256 in {MANIFEST_NAME}")
            seen[member.name] = staged
        missing = sorted(set(listed) - set(seen))
        if missing:
            raise DataError(f"{archive}: {len(missing)} file(s) listed in {MANIFEST_NAME} are missing, "
                            f"e.g. {missing[0]!r}")
        destinations = {name: targets[PurePosixPath(name).parts[0]].joinpath(*PurePosixPath(name).parts[1:])
                        for name in seen}
        links = sorted(str(dest) for dest in destinations.values() if dest.is_symlink())
        if links:
            raise DataError(f"{archive}: {links[0]} is a symbolic link; nothing was imported")
        clashes = sorted(str(dest) for dest in destinations.values() if dest.exists())
        if clashes and not replace:
            raise DataError(f"{archive}: {len(clashes)} file(s) already exist, e.g. {clashes[0]}; nothing was "
                            "imported (pass --replace to overwrite them)")
        written = []
        for name, dest in destinations.items():
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(seen[name], dest)
            written.append(dest)
    return written
