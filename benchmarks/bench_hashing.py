"""Benchmark content hashing of image files: ``fer_utils.data.file_sha256`` against the plainest
way to do the same (``hashlib.sha256(path.read_bytes())``), in one process, on the same files.

Every run record, feature-cache key and data fingerprint hashes each image once, so this decides
how long ``fer data check``, a warm ``extract_features`` and bundle choice take on a large data
set. Reports files per second of both and their ratio (≥ 1 means no overhead)::

    python benchmarks/bench_hashing.py --n 1500            # synthetic 100 px JPEGs in a temp folder
    python benchmarks/bench_hashing.py --data data/synthetic
"""
from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fer_utils.data import file_sha256, load_dataset


def _files(args, tmp: Path) -> list[Path]:
    if args.data:
        return [Path(p) for p in load_dataset(args.data)["path"]]
    rng = np.random.default_rng(0)
    files = []
    for i in range(args.n):
        files.append(tmp / f"{i:05d}.jpg")
        Image.fromarray(rng.integers(0, 256, (100, 100, 3), dtype=np.uint8)).save(files[-1], quality=90)
    return files


def _rate(fn, files, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for path in files:
            fn(path)
        best = min(best, time.perf_counter() - start)
    return len(files) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="a data set to hash (default: --n synthetic files)")
    parser.add_argument("--n", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many passes (warm page cache)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(args, Path(tmp))
        baseline = _rate(lambda p: hashlib.sha256(p.read_bytes()).hexdigest(), files, args.repeats)
        ours = _rate(file_sha256, files, args.repeats)
    result = {"files": len(files), "read_bytes_sha256_per_s": round(baseline), "file_sha256_per_s": round(ours),
              "ratio": round(ours / baseline, 3)}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
