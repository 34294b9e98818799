"""Benchmark a text encoder's throughput (sentences per second) against its batch size.

In one process, on the same captions and encoder, it times ``encoder.encode(captions,
batch_size=b)`` for each ``--batch-sizes`` entry and reports sentences per second, the ratio
to the first batch size (batch 1 by default: one caption at a time, the baseline), and the
largest difference of any vector from the baseline's (batched padding must not change them).
Examples::

    python benchmarks/bench_text_encoders.py                               # MiniLM, 1000 captions, 2 threads
    python benchmarks/bench_text_encoders.py --encoder tiny_clip --batch-sizes 1,64
    python benchmarks/bench_text_encoders.py --encoder clip --device cuda --json out.json   # needs cached weights

Captions are synthetic, about 10 words each (``--words``), in the style of BLIP-2 captions of
faces, drawn with a fixed seed. MiniLM's weights are real (packaged); the tiny encoders' are
random, which does not change their speed; nothing is downloaded.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fer_utils.vlm.encoders import ENCODERS, make_encoder

SUBJECTS = ["a woman", "a man", "a young girl", "an old man", "a boy", "a person", "a smiling woman", "a child"]
STATES = ["looks happy", "is smiling widely", "looks angry", "frowns", "looks surprised", "seems sad",
          "looks disgusted", "appears scared", "has a neutral face", "is laughing"]
DETAILS = ["with short hair", "wearing glasses", "in a dark room", "with a beard", "against a white wall",
           "with her mouth open", "with raised eyebrows", "in the sunlight", "with a hat", "with closed eyes"]
FILLERS = ["and", "looking", "at", "the", "camera", "slightly", "to", "the", "left", "today"]


def synthetic_captions(n: int, words: int = 10, seed: int = 0) -> list[str]:
    """``n`` face-caption-like sentences of about ``words`` words, deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        text = f"{rng.choice(SUBJECTS)} {rng.choice(STATES)} {rng.choice(DETAILS)}".split()
        while len(text) < words:
            text.append(str(rng.choice(FILLERS)))
        out.append(" ".join(text[:words]).capitalize() + ".")
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", default="minilm", choices=list(ENCODERS))
    parser.add_argument("--n", type=int, default=1000, help="captions")
    parser.add_argument("--words", type=int, default=10, help="words per caption")
    parser.add_argument("--batch-sizes", default="1,32,64,128",
                        help="comma-separated; the first is the baseline of the ratios")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=1, help="time each batch size this often, keep the best")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    captions = synthetic_captions(args.n, args.words)
    start = time.perf_counter()
    encoder = make_encoder(args.encoder, device=args.device)
    load_s = time.perf_counter() - start
    encoder.encode(captions[:64], batch_size=32)  # warm-up: allocator, kernel choice

    best = {b: float("inf") for b in batch_sizes}
    vectors = {}
    for _ in range(args.repeats):  # interleaved, so all batch sizes see the same background load
        for b in batch_sizes:
            start = time.perf_counter()
            vectors[b] = encoder.encode(captions, batch_size=b)
            best[b] = min(best[b], time.perf_counter() - start)
    base = batch_sizes[0]
    rows = [{"batch_size": b, "seconds": best[b], "sentences_per_s": args.n / best[b],
             "ratio": best[base] / best[b], "max_abs_diff": float(np.abs(vectors[b] - vectors[base]).max())}
            for b in batch_sizes]

    result = {"encoder": args.encoder, "identity": encoder.identity, "dim": encoder.dim, "n": args.n,
              "words": args.words, "threads": torch.get_num_threads(), "device": str(getattr(encoder, "device", "")),
              "load_s": load_s, "torch": torch.__version__, "rows": rows}
    print(f"{args.encoder} ({encoder.dim}-d) on {result['device']}, {torch.get_num_threads()} threads, "
          f"{args.n} captions of {args.words} words, loaded in {load_s:.1f} s")
    print(f"{'batch':>6} {'seconds':>9} {'sent/s':>9} {f'x b={base}':>8} {'max |diff|':>11}")
    for row in rows:
        print(f"{row['batch_size']:>6} {row['seconds']:>9.2f} {row['sentences_per_s']:>9.1f} {row['ratio']:>8.2f} "
              f"{row['max_abs_diff']:>11.1e}")
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(result, handle, indent=2)
    return result


if __name__ == "__main__":
    main()
