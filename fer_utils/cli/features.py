"""``fer features``: CNN features of a data set, into the cache (namespace ``features``).

The CNN is a model bundle (``--bundle``: its weights and preprocessing) or a registry architecture
(``--model``) with its pretrained ImageNet weights (``--random-weights``: drawn from ``--seed``,
for timing and tests). ``--shard i/n`` extracts every n-th image from the i-th (shards add up in
the cache); ``--ray [ADDRESS]`` runs the extraction on Ray Data actors (:mod:`fer_utils.inference.scale`),
writing the same entries. Ends with a summary on stderr: images, cache hits, images/s.
"""
from __future__ import annotations

import time
from pathlib import Path

import click

from fer_utils.cli.base import flag_errors, project
from fer_utils.cli.vlm import load_shard, ray_context, ray_options


def _options(fn):
    from fer_utils.options import CNN_ARCHITECTURES, NORMALIZATIONS

    options = [
        click.argument("data_path", type=click.Path(path_type=Path, exists=True)),
        click.option("--model", default=None, type=click.Choice(CNN_ARCHITECTURES),
                     help="A registry architecture with its pretrained ImageNet weights (from $TORCH_HOME)."),
        click.option("--bundle", type=click.Path(path_type=Path, exists=True), default=None,
                     help="A CNN model bundle folder: its weights and its preprocessing."),
        click.option("--random-weights", is_flag=True,
                     help="--model with random weights drawn from --seed (timing and tests: features without meaning)."),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--image-size", type=int, default=224, show_default=True, help="--model: input size."),
        click.option("--normalization", type=click.Choice(list(NORMALIZATIONS)), default="imagenet",
                     show_default=True, help="--model: normalisation preset."),
        click.option("--batch-size", type=int, default=64, show_default=True),
        click.option("--num-workers", default="auto", show_default=True, help="DataLoader workers (a number or auto)."),
        click.option("--device", default="auto", show_default=True),
        click.option("--amp/--no-amp", default=False, show_default=True,
                     help="Autocast (bfloat16): faster, not the float32 features (another cache entry)."),
        click.option("--shard", default=None, metavar="I/N", help="Only every N-th image, from the I-th (1-based)."),
        click.option("--cache", "cache_dir", type=click.Path(path_type=Path), default=None,
                     help="Cache folder (default: the project's data/cache)."),
        click.option("--out", type=click.Path(path_type=Path), default=None,
                     help="Also write ids and features to this .npz file (arrays ids, features)."),
        *ray_options(),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.command("features")
@_options
@flag_errors
def features_cmd(**opts):
    """Extract the CNN features of DATA_PATH's images into the cache."""
    import numpy as np

    from fer_utils.cache import Cache
    from fer_utils.training.features import (CACHE_FORMAT, CACHE_NAMESPACE, extract_features, feature_keys,
                                             feature_layer, is_feature_row)
    from fer_utils.models.runtime import amp_dtype, resolve_device
    from fer_utils.inference.scale import CNNSpec
    from fer_utils.vlm.pipeline import Throughput

    if bool(opts["model"]) == bool(opts["bundle"]):
        raise click.UsageError("name the CNN: exactly one of --model NAME or --bundle PATH")
    if opts["random_weights"] and not opts["model"]:
        raise click.UsageError("--random-weights applies to --model (a bundle has its own weights)")
    workers = opts["num_workers"]
    if workers != "auto":
        try:
            workers = int(workers)
        except ValueError:
            raise click.BadParameter(f"{workers!r} is neither a number nor auto", param_hint="--num-workers") from None
    bundle = str(opts["bundle"].resolve()) if opts["bundle"] else ""   # the same folder from any working directory
    spec = CNNSpec(model=opts["model"] or "", bundle=bundle, pretrained=not opts["random_weights"],
                   seed=opts["seed"], image_size=opts["image_size"], normalization=opts["normalization"])
    part = load_shard(opts)
    cache_dir = opts["cache_dir"] or project().cache
    name = opts["model"] or opts["bundle"].name
    with ray_context(opts):
        if opts["ray_address"] is not None:
            from fer_utils.inference.scale import extract_features_ray

            ids, features, throughput = extract_features_ray(
                spec, part, batch_size=opts["batch_size"], num_workers=workers, device=opts["device"],
                cache_dir=cache_dir, amp=opts["amp"], concurrency=opts["concurrency"])
        else:
            model, preprocessing = spec.build()
            cache = Cache(cache_dir, CACHE_NAMESPACE, CACHE_FORMAT)
            precision = str(amp_dtype(resolve_device(opts["device"]))) if opts["amp"] else "float32"
            keys = feature_keys(cache, part, model, preprocessing, feature_layer(model)[0], precision)
            _, todo = cache.lookup_arrays(keys, is_feature_row)
            start = time.perf_counter()
            ids, features = extract_features(model, part, preprocessing, batch_size=opts["batch_size"],
                                             num_workers=workers, device=opts["device"], cache_dir=cache_dir,
                                             amp=opts["amp"])
            distinct = len(set(keys))
            throughput = Throughput(len(part), distinct - len(todo), len(todo),
                                    time.perf_counter() - start if todo else 0.0, distinct)
    if opts["out"] is not None:
        np.savez(opts["out"], ids=np.asarray(ids, dtype=str), features=features)
    click.echo(f"features ({name}, {features.shape[1]}-d): {throughput.summary('images')}", err=True)


__all__ = ["features_cmd"]
