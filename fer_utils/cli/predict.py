"""``fer predict``: class probabilities of images from a model bundle, as JSON."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .base import project


@click.command("predict")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--bundle", type=click.Path(path_type=Path), default=None,
              help="Model bundle folder. Default: the bundle with the best validation macro F1 among those "
                   "trained on the data set of --data.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None,
              help="Without --bundle: serve a model trained on this data set (default: the project's "
                   "data/synthetic).")
@click.option("--device", default="cpu", show_default=True)
def predict_cmd(images, bundle, data_path, device):
    """Predict the expression of each image; JSON on stdout (the bundle used, one object per image)."""
    from ..predict import Predictor, choose_bundle

    if bundle is None:
        from ..data import describe_dataset, load_dataset

        folders = project()
        data_path = data_path or folders.synthetic
        if not data_path.exists():
            raise click.BadParameter(f"{data_path} does not exist: name a bundle or the data set it was "
                                     "trained on", param_hint="--data")
        record = describe_dataset(data_path, load_dataset(data_path))
        bundle = choose_bundle(folders.bundles, record["fingerprint"])["path"]
    predictor = Predictor.from_bundle(bundle, device=device)
    results = predictor.predict_labeled([str(p) for p in images])
    out = [{"image": str(path), **res} for path, res in zip(images, results)]
    summary = predictor.summary()
    used = {key: summary[key] for key in ("path", "model", "val_macro_f1", "data")}
    click.echo(json.dumps({"bundle": used, "predictions": out}, indent=2, ensure_ascii=False))
