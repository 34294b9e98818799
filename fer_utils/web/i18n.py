"""Korean (default) and English: Flask-Babel with catalogues compiled from the shipped ``.po`` files.

The ``.po`` files are the source (``fer_utils/web/translations``); their ``.mo`` are compiled
into the instance folder when missing or older than the source, so nothing generated is kept in
the repository and an installed package works unchanged.
"""
from __future__ import annotations

from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from flask import current_app, request, session

from fer_utils.cache import atomic_write

SOURCE = Path(__file__).parent / "translations"


def compile_catalogues(target: Path) -> Path:
    """Compile every ``<lang>/LC_MESSAGES/messages.po`` under :data:`SOURCE` into ``target``; returns it."""
    for po in sorted(SOURCE.glob("*/LC_MESSAGES/messages.po")):
        mo = target / po.relative_to(SOURCE).with_suffix(".mo")
        if mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime:
            continue
        with po.open("rb") as handle:
            catalog = read_po(handle, locale=po.parts[-3])
        mo.parent.mkdir(parents=True, exist_ok=True)

        def write(tmp: Path, catalog=catalog) -> None:
            with open(tmp, "wb") as out:
                write_mo(out, catalog)
        atomic_write(mo, write)
    return target


def select_locale() -> str:
    """The language the visitor chose (``/lang/<code>``), else the site's default (Korean)."""
    languages = current_app.config["LANGUAGES"]
    chosen = session.get("lang")
    if chosen in languages:
        return chosen
    if request and request.path.startswith("/api/"):
        return request.accept_languages.best_match(languages) or current_app.config["BABEL_DEFAULT_LOCALE"]
    return current_app.config["BABEL_DEFAULT_LOCALE"]
