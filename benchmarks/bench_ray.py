"""Benchmark what Ray costs: a local Ray instance against one process, on the same small job.

On the embedded synthetic data set (generated into a temporary folder) it times, in seconds:

- single process: captioning with the tiny BLIP-2 (random weights) and CNN feature extraction with
  a random ResNet18, each into an empty cache (model building excluded);
- Ray: ``ray.init`` of a local instance; the same two steps through :mod:`fer_utils.inference.scale` into
  another empty cache (actors started, models built in them, batches sent, entries read back),
  the part of it spent in the actor step (start-up, batches, computing), and the same step again with everything cached (no
  actor is started); Ray Data's cost per batch (a no-op actor over 200 one-row batches against one
  batch of 200 rows) and the start of a no-op actor; ``ray.shutdown``.

The difference between a Ray step and its single-process twin is Ray's overhead on this machine:
mostly the start-up of the actors (a new Python process that imports torch and builds the model),
which a long run pays once per actor. Example::

    python benchmarks/bench_ray.py --concurrency 1 --json ray.json

Nothing is downloaded; it runs on the CPU (``num_gpus=0``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time


class _Noop:
    """A Ray Data actor that does nothing but report its batch."""

    def __call__(self, batch):
        import pandas as pd

        return pd.DataFrame({"rows": [len(batch)], "computed": [0], "seconds": [0.0], "note": [""]})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=164, help="images of the synthetic set to use")
    parser.add_argument("--concurrency", type=int, default=1, help="Ray actors per step")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray
    import torch

    from fer_utils.data import load_dataset, synthetic
    from fer_utils.training.features import extract_features
    from fer_utils.inference.scale import CaptionerSpec, CNNSpec, caption_index_ray, extract_features_ray
    from fer_utils.vlm import GenerationSettings
    from fer_utils.vlm.pipeline import caption_index
    from fer_utils.vlm.prompts import PROMPTS

    torch.set_num_threads(1)   # as each Ray actor (num_cpus=1) runs
    work = tempfile.mkdtemp(prefix="bench-ray-")
    try:
        data = synthetic.generate(os.path.join(work, "rafdb"), seed=7, scale=0.01, min_per_class=4)
        rows = load_dataset(data).iloc[:args.images]
        settings = GenerationSettings(max_new_tokens=6, batch_size=8)
        prompt = PROMPTS["original"]
        captioner = CaptionerSpec("tiny_blip2", {"seed": 0, "device": "cpu"})
        cnn = CNNSpec(model="resnet18", pretrained=False, seed=0, image_size=100, normalization="half")
        out: dict[str, float | int] = {"images": len(rows), "concurrency": args.concurrency,
                                       "load_average_1min": os.getloadavg()[0]}

        def timed(fn):
            start = time.perf_counter()
            value = fn()
            return value, time.perf_counter() - start

        local = captioner.build()
        _, out["caption_single_s"] = timed(lambda: caption_index(rows, local, prompt, settings, f"{work}/single"))
        model, preprocessing = cnn.build()
        _, out["features_single_s"] = timed(lambda: extract_features(
            model, rows, preprocessing, batch_size=32, num_workers=0, device="cpu", cache_dir=f"{work}/single"))

        _, out["ray_init_s"] = timed(lambda: ray.init(num_cpus=args.cpus, num_gpus=0, include_dashboard=False,
                                                      _temp_dir=os.path.join(work, "ray"), log_to_driver=False))
        result, out["caption_ray_s"] = timed(lambda: caption_index_ray(
            rows, captioner, prompt, settings, f"{work}/ray", concurrency=args.concurrency))
        out["caption_ray_actor_step_s"] = result.throughput.seconds
        _, out["caption_ray_all_cached_s"] = timed(lambda: caption_index_ray(
            rows, captioner, prompt, settings, f"{work}/ray", concurrency=args.concurrency))
        (_, _, extracted), out["features_ray_s"] = timed(lambda: extract_features_ray(
            cnn, rows, batch_size=32, device="cpu", cache_dir=f"{work}/ray", concurrency=args.concurrency))
        out["features_ray_actor_step_s"] = extracted.seconds
        # Ray Data's own cost per call: a no-op actor over 200 one-row batches against one batch
        from fer_utils.inference.scale import run_actors

        _, one = timed(lambda: run_actors(_Noop, 200, {}, batch_rows=200, concurrency=1, use_gpu=False))
        _, many = timed(lambda: run_actors(_Noop, 200, {}, batch_rows=1, concurrency=1, use_gpu=False))
        out["noop_actor_one_batch_s"] = one
        out["per_batch_overhead_ms"] = 1000 * (many - one) / 199
        _, out["ray_shutdown_s"] = timed(ray.shutdown)
    finally:
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)
    for key, value in out.items():
        print(f"{key:28s} {value:.2f}" if isinstance(value, float) else f"{key:28s} {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=2)


if __name__ == "__main__":
    main()
