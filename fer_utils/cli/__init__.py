"""The ``fer`` command: one small module per command group (data, study, book, predict, runs,
caption/embed, features, web/serve, dashboard, bench, weights, lab).

A group module defines its click group or command; this module assembles them under ``main``.
Errors of the package (:class:`~fer_utils.errors.FERError`) print as one line and exit 2.
"""
from __future__ import annotations

import click

from fer_utils.cli.base import FERGroup
from fer_utils.cli.bench import bench_cmd
from fer_utils.cli.book import book
from fer_utils.cli.dashboard import dashboard_cmd
from fer_utils.cli.data import data
from fer_utils.cli.features import features_cmd
from fer_utils.cli.lab import lab_cmd
from fer_utils.cli.predict import predict_cmd
from fer_utils.cli.runs import runs
from fer_utils.cli.study import study
from fer_utils.cli.vlm import caption_cmd, embed_cmd
from fer_utils.cli.web import serve, web
from fer_utils.cli.weights import weights
from fer_utils.study.speed import openmp_waits


@click.group(cls=FERGroup)
@click.version_option(package_name="fer_utils")
def main():
    """Reproducible facial expression recognition study (CNN vs CNN + caption features)."""
    openmp_waits()   # before any command loads torch; notebook kernels and servers inherit it


for command in (data, study, book, predict_cmd, runs, caption_cmd, embed_cmd, features_cmd, web, serve,
                dashboard_cmd, bench_cmd, weights, lab_cmd):
    main.add_command(command)

__all__ = ["main"]
