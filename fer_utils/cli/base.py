"""What every command group shares: errors as one line, and the project's folders."""
from __future__ import annotations

import functools
import re

import click

from fer_utils.errors import FERError


class FERGroup(click.Group):
    """Turn the package's own errors into one clear line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FERError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


FIELD_FLAGS: dict[str, str] = {
    "captions_file": "--captions-file",
    "model_id": "--model-id",
    "preprocessing.image_size": "--image-size",
    **{name: "--" + name.replace("_", "-") for name in (
        "max_new_tokens", "min_new_tokens", "num_beams", "repetition_penalty", "no_repeat_ngram_size",
        "batch_size", "dtype")},
    "pretrained=False": "--random-weights",
    "allow extra ids": "pass --allow-extra-ids",
}
"""The config fields (and remedies) that library messages name -> the option a command-line user
sets instead (the library keeps its wording: notebooks show it too)."""

_FIELDS = re.compile(r"(?:generation setting )?(?<![\w.-])("
                     + "|".join(map(re.escape, sorted(FIELD_FLAGS, key=len, reverse=True))) + r")(?![\w-])")


def with_flags(message: str) -> str:
    """``message`` with each field of :data:`FIELD_FLAGS` replaced by its option."""
    return _FIELDS.sub(lambda match: FIELD_FLAGS[match.group(1)], message)


def flag_errors(fn):
    """Decorate a command's function (innermost): a package error naming a config field names the
    command's option instead (then :class:`FERGroup` prints it as usual)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except FERError as exc:
            if with_flags(str(exc)) != str(exc):
                exc.args = (with_flags(str(exc)),)
            raise
    return wrapper


def project():
    """The current project's folders (:func:`fer_utils.paths.project_paths`)."""
    from fer_utils.paths import project_paths

    return project_paths()
