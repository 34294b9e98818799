"""The ``fer`` command: one small module per command group (data, study, book, predict, runs,
caption/embed, features, web/serve, dashboard, bench).

A group module defines its click group or command; this module assembles them under ``main``.
Errors of the package (:class:`~fer_utils.errors.FERError`) print as one line and exit 2.
"""
from __future__ import annotations

import click

from .base import FERGroup
from .bench import bench_cmd
from .book import book
from .dashboard import dashboard_cmd
from .data import data
from .features import features_cmd
from .predict import predict_cmd
from .runs import runs
from .study import study
from .vlm import caption_cmd, embed_cmd
from .web import serve, web


@click.group(cls=FERGroup)
@click.version_option(package_name="fer_utils")
def main():
    """Reproducible facial expression recognition study (CNN vs CNN + caption features)."""


for command in (data, study, book, predict_cmd, runs, caption_cmd, embed_cmd, features_cmd, web, serve,
                dashboard_cmd, bench_cmd):
    main.add_command(command)

__all__ = ["main"]
