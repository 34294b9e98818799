"""``fer weights``: the pretrained models a study profile needs, and whether this machine has them."""
from __future__ import annotations

from pathlib import Path

import click

from fer_utils.cli.base import FERGroup


@click.group(cls=FERGroup)
def weights():
    """The pretrained models a study profile needs."""


@weights.command("list")
@click.option("--profile", default="full", show_default=True, help="The study profile whose plan is read.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Data set the plan is made for (only its path enters the plan; nothing is read).")
@click.option("--only", multiple=True, help="Only this notebook's runs (stem or name); repeatable.")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Study manifest (default: the project's notebooks/study.yaml).")
def weights_list(profile, data_path, only, manifest):
    """List every pretrained weight file and model the profile's runs load, where each is looked
    for, and how to get a missing one. Nothing is downloaded or loaded. Exit 1 when one is
    missing (then `fer study run` with this profile refuses to start)."""
    from fer_utils.study import runner
    from fer_utils.study.weights import describe, needed

    if data_path is None and profile in runner.load_manifest(manifest).get("requires_data", []):
        data_path = Path("RAF-DB")   # the plan needs a data path; no file is read to list the models
    runs = runner.plan_study(profile=profile, data_path=data_path, only=only, manifest_path=manifest)
    needs = needed(runs)
    if not needs:
        click.echo(f"profile {profile!r}: its {len(runs)} run(s) need no pretrained model")
        return
    for line in describe(needs):
        click.echo(line)
    missing = [need for need in needs if not need.present]
    click.echo(f"profile {profile!r}: {len(needs)} pretrained model(s) needed by {len(runs)} run(s), "
               f"{len(missing)} missing")
    if missing:
        raise SystemExit(1)
