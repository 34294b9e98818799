"""What every command group shares: errors as one line, and the project's folders."""
from __future__ import annotations

import click

from ..errors import FERError


class FERGroup(click.Group):
    """Turn the package's own errors into one clear line and exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except FERError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


def project():
    """The current project's folders (:func:`fer_utils.paths.project_paths`)."""
    from ..paths import project_paths

    return project_paths()
