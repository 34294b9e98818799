"""Benchmark the data path: per-sample PIL decoding + v2 on PIL (the old path) vs the tensor path.

In one process, on the same synthetic JPEGs, it measures images per second of

(a) evaluation preprocessing alone (decoded batches of model inputs, nothing else);
(b) training preprocessing with ``hflip_rotate`` and with ``random_resized_crop``;
(c) a ResNet18 training step (random weights, :func:`fer_utils.models.create_model`, Adam, batch
    ``--batch-size``, ``--image-size`` px) fed by each path,

for the *old* path -- reimplemented here as it was before the tensor path: a DataLoader over a
per-sample data set that opens each JPEG with PIL (``draft`` to the model size), applies the
torchvision v2 pipeline on the PIL image (``Resize`` -> augmentation -> ``ToImage`` -> ``ToDtype``
-> ``Normalize``) and collates -- and the *new* path: :func:`fer_utils.data.transforms.make_datasets` over the
decoded-image cache (memory-mapped ``.npy``, decoded once beforehand; that one-off decode and the
cost of a cache hit -- hashing the files, mapping the array -- are reported apart, as a run pays
them once, not per epoch), one fancy index per batch, then the :class:`~fer_utils.data.tensor_transforms.BatchTransform` on the
device. Ratios are new / old. Both use the main process only (``num_workers=0``), as the project
does on a CPU. Example::

    python benchmarks/bench_data_path.py --n 512 --json out.json

Weights are random and the images synthetic: speed does not depend on either.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from fer_utils.data.transforms import make_datasets
from fer_utils.models import create_model
from fer_utils.models.runtime import apply_transform, make_loader
from fer_utils.options import Preprocessing


def synthetic_index(folder: Path, n: int, size: int, seed: int = 0) -> pd.DataFrame:
    """``n`` JPEGs (smooth colour fields plus noise, ``size`` px square) as a training index."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        coarse = Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).resize((size, size), Image.BICUBIC)
        noisy = np.clip(np.asarray(coarse, dtype=np.int16) + rng.integers(-20, 21, (size, size, 3)), 0, 255)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(path, quality=90)
        rows.append({"id": path.stem, "path": str(path), "pixels": None, "label": i % 7, "split": "train",
                     "source": "imagefolder"})
    return pd.DataFrame(rows)


# --- the old path, as it was ---------------------------------------------------------------------

def old_transform(prep: Preprocessing, augmentation: str, rrc_scale=(0.8, 1.0), rotate_degrees=15.0) -> v2.Compose:
    """The per-image v2 pipeline on PIL images, as the old ``build_transform`` (since removed) made it."""
    steps = {"none": [], "hflip_rotate": [v2.RandomHorizontalFlip(p=0.5), v2.RandomRotation(rotate_degrees)],
             "random_resized_crop": [v2.RandomResizedCrop(prep.image_size, scale=rrc_scale, antialias=True)]}
    return v2.Compose([v2.Resize((prep.image_size, prep.image_size), antialias=True), *steps[augmentation],
                       v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(prep.mean), list(prep.std))])


class OldDataset(Dataset):
    """The old ``FERDataset``: PIL decode (JPEG draft at the model size) + transform, per sample."""

    def __init__(self, index: pd.DataFrame, transform, draft_size: int):
        self.paths, self.labels = index["path"].tolist(), index["label"].tolist()
        self.transform, self.draft_size = transform, draft_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        with Image.open(self.paths[i]) as image:
            image.draft("RGB", (self.draft_size, self.draft_size))
            image = image.convert("RGB")
        return self.transform(image), self.labels[i]


def old_batches(index, prep, augmentation, batch_size):
    dataset = OldDataset(index, old_transform(prep, augmentation, (0.5, 1.0)), prep.image_size)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    for x, y in loader:
        yield x, y


def new_batches(dataset, augmentation, batch_size):
    """One epoch of the tensor path over ``dataset`` (made once, as a run makes it once)."""
    transform = dataset.batch_transform if augmentation != "none" else dataset.eval_transform
    loader = make_loader(dataset, batch_size, torch.device("cpu"), 0, shuffle=True, seed=0)
    generator = torch.Generator().manual_seed(0)
    for x, y in loader:
        yield apply_transform(transform, x, y, generator), y


# --- measuring -----------------------------------------------------------------------------------

def rate(run, n: int, repeats: int) -> float:
    """Images per second of the fastest of ``repeats`` runs of ``run()`` over ``n`` images."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return n / best


def drain(batches) -> None:
    for _ in batches:
        pass


def train_steps(batches, model, optimizer) -> None:
    model.train()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=512, help="images (default 512)")
    parser.add_argument("--source-size", type=int, default=100, help="JPEG side in px (RAF-DB aligned: 100)")
    parser.add_argument("--image-size", type=int, default=48, help="model input side in px (default 48)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="best of this many runs per figure")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    prep = Preprocessing.preset(args.image_size, "half")
    results = {"n": args.n, "source_size": args.source_size, "image_size": args.image_size,
               "batch_size": args.batch_size, "threads": torch.get_num_threads(), "device": "cpu",
               "torch": torch.__version__, "images_per_second": {}, "ratio_new_over_old": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "images").mkdir()
        index = synthetic_index(folder / "images", args.n, args.source_size)
        cache = folder / "cache"
        start = time.perf_counter()
        make_datasets(index, prep, cache_dir=cache)  # the one-off decode into the cache
        results["decode_once_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        make_datasets(index, prep, cache_dir=cache)  # a hit: hash the files, map the array
        results["cache_hit_seconds"] = time.perf_counter() - start

        sets = {augmentation: make_datasets(index, prep, augmentation, (0.5, 1.0), cache_dir=cache)["train"]
                for augmentation in ("none", "hflip_rotate", "random_resized_crop")}
        figures = {}
        for name, augmentation in (("eval", "none"), ("train_hflip_rotate", "hflip_rotate"),
                                   ("train_random_resized_crop", "random_resized_crop")):
            figures[name] = {
                "old": rate(lambda: drain(old_batches(index, prep, augmentation, args.batch_size)), args.n, args.repeats),
                "new": rate(lambda: drain(new_batches(sets[augmentation], augmentation, args.batch_size)), args.n,
                            args.repeats)}
        for path in ("old", "new"):
            torch.manual_seed(0)
            model = create_model("resnet18", num_classes=7)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            def batches(path=path):
                if path == "old":
                    return old_batches(index, prep, "hflip_rotate", args.batch_size)
                return new_batches(sets["hflip_rotate"], "hflip_rotate", args.batch_size)
            figures.setdefault("train_step_resnet18_hflip_rotate", {})[path] = rate(
                lambda: train_steps(batches(), model, optimizer), args.n, args.repeats)
        # the forward + backward pass alone, on inputs made beforehand: the ceiling of (c)
        torch.manual_seed(0)
        model = create_model("resnet18", num_classes=7)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        ready = list(new_batches(sets["hflip_rotate"], "hflip_rotate", args.batch_size))
        figures["train_step_resnet18_hflip_rotate"]["model_only"] = rate(
            lambda: train_steps(ready, model, optimizer), args.n, args.repeats)
    results["images_per_second"] = figures
    results["ratio_new_over_old"] = {name: f["new"] / f["old"] for name, f in figures.items()}
    step = figures["train_step_resnet18_hflip_rotate"]
    results["train_step_fraction_of_model_only"] = {p: step[p] / step["model_only"] for p in ("old", "new")}

    print(f"{args.n} JPEGs {args.source_size}px -> {args.image_size}px, batch {args.batch_size}, "
          f"{results['threads']} torch threads, CPU")
    print(f"one-off decode into the cache: {results['decode_once_seconds']:.2f} s; "
          f"cache hit: {results['cache_hit_seconds']:.2f} s")
    print(f"{'images/s':34s} {'old':>9s} {'new':>9s} {'new/old':>8s}")
    for name, f in figures.items():
        print(f"{name:34s} {f['old']:9.0f} {f['new']:9.0f} {f['new'] / f['old']:8.2f}")
    print(f"training step, model alone: {step['model_only']:.0f} images/s; old path at "
          f"{results['train_step_fraction_of_model_only']['old']:.2f} of it, new at "
          f"{results['train_step_fraction_of_model_only']['new']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    sys.exit(main() and 0)
