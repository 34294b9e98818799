"""``fer study``: run the parameterised notebooks of the study manifest."""
from __future__ import annotations

from pathlib import Path

import click

from fer_utils.cli.base import FERGroup, project


@click.group(cls=FERGroup)
def study():
    """Run the parameterised notebooks of the study."""


@study.command("run")
@click.option("--profile", default="default", show_default=True,
              help="quick (tests/CI), default (embedded data, CPU) or full (RAF-DB via --data, GPU).")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Data set (default: the project's data/synthetic, generated if missing; "
                   "required by the profiles of the manifest's requires_data: full).")
@click.option("--only", multiple=True, help="Run only this notebook (stem or name); repeatable.")
@click.option("--runs", "runs_root", type=click.Path(path_type=Path), default=None,
              help="Where run records go (default: the project's data/runs).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=None,
              help="Where executed notebooks go (default: the project's book/experiments).")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Study manifest (default: the project's notebooks/study.yaml).")
@click.option("--force", is_flag=True,
              help="Execute every run, also those unchanged since their last execution.")
def study_run(profile, data_path, only, runs_root, out_dir, manifest, force):
    """Execute the study manifest with papermill.

    Nothing is written until the plan (manifest, profile, --only, parameters), every pretrained
    model it needs (`fer weights list`) and the data set's layout are checked; without --data, the
    project's data set is generated first if missing, except for a profile listed under
    requires_data in the manifest (full, the real study), which is then an error. A run whose notebook, parameters, code, data set and the run records it reads
    are unchanged since it last executed is skipped (--force executes it again).
    """
    from fer_utils.study import check as studycheck, runner as st

    from fer_utils.study.weights import check_present

    runs = st.plan_study(profile=profile, data_path=data_path, runs_root=runs_root, out_dir=out_dir,
                         only=only, manifest_path=manifest)
    check_present(runs, profile)   # a missing pretrained model: exit 2 naming each, before anything runs
    checks = st.load_manifest(manifest).get("checks") or {}
    budgeted = checks.get("profile") == profile   # the host's speed is measured before each step
    data_step = None
    if data_path is None:
        for path in st.data_sets(runs):  # the project's default data set, when a run reads it
            data_step = _generate_default_data(path, budgeted)
    done = st.execute_study(runs, echo=click.echo, force=force, measure_speed=budgeted)
    executed = [o for o in done if o.executed]
    click.echo(f"{len(executed)} notebook run(s) executed, {len(done) - len(executed)} unchanged and skipped; "
               f"{sum(o.seconds for o in done):.1f} s now")
    runs_folder = runs_root or project().runs
    if data_step is not None and data_step[0] == 0.0:  # the data set was there: the run that made it counts
        data_step = studycheck.previous_data_step(runs_folder, profile)
    click.echo("time per step (each notebook as its last execution took: a cold run's time"
               + ("; its limit is its share x the host's speed factor measured before it x the tolerance)"
                  if budgeted else ")") + ":")
    steps = studycheck.seconds_per_step(data_step, [(o.run.notebook, o.run_seconds, o.factor) for o in done])
    for line in studycheck.budget_lines(checks, profile, steps, total=not only):
        click.echo(line)
    if not only:  # the timing record is the whole study's
        studycheck.write_times(runs_folder, profile, data_step, done)


@study.command("check")
@click.option("--profile", default="default", show_default=True, help="The profile the study ran.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="The data set the study read (as given to `fer study run`).")
@click.option("--manifest", type=click.Path(path_type=Path), default=None,
              help="Study manifest (default: the project's notebooks/study.yaml).")
def study_check(profile, data_path, manifest):
    """Check a finished study (after `fer study run` and `fer book build`): every planned run left
    an executed notebook, a run record and a page of the book; in the manifest's checks profile,
    no trained model collapsed and every step kept within its limit (its share x the host's speed
    factor measured before it x the manifest's tolerance). Exit 1 on a problem."""
    from fer_utils.study import check as studycheck, runner as st

    paths = project()
    planned = st.plan_study(profile=profile, data_path=data_path, manifest_path=manifest)
    problems = studycheck.check_study(planned, st.load_manifest(manifest), profile, paths.runs,
                                      paths.root / "_build" / "html", paths.book_out)
    for problem in problems:
        click.echo(f"problem: {problem}", err=True)
    if problems:
        raise SystemExit(1)
    click.echo(f"study check passed: {len(planned)} run(s) of profile {profile!r}")


def _generate_default_data(path: Path, measure_speed: bool = False) -> tuple[float, float | None]:
    """Write the embedded synthetic data set at ``path`` when it is missing or when another
    generator version made the synthetic set there (it is replaced by the current default: an
    older default would not be what the default profile was calibrated on); anything else there,
    a current-version set of other settings included, is left alone. Returns the seconds it took
    (0 when nothing was written) and, with ``measure_speed``, the host's speed factor measured
    before it (:mod:`fer_utils.study.speed`; else None)."""
    import os
    import time

    from fer_utils.data import synthetic

    if not path.exists():
        click.echo(f"{path} is missing: generating the embedded synthetic data set")
    elif synthetic.made_by_another_version(path):
        click.echo(f"{path} was made by another version of the generator: generating the embedded "
                   f"synthetic data set (version {synthetic.GENERATOR_VERSION}) in its place")
    else:
        return 0.0, None
    factor = None
    if measure_speed:
        from fer_utils.study import speed

        factor = speed.measure().factor
    start = time.perf_counter()
    synthetic.generate(path, seed=synthetic.DEFAULT_SEED, scale=synthetic.DEFAULT_SCALE,
                       workers=os.cpu_count() or 1)
    return time.perf_counter() - start, factor
