"""Benchmark ``POST /api/predict`` as the production server (``fer serve``, waitress) answers it.

What it measures, and the targets: :mod:`fer_utils.bench.web` (the flags are its options). Examples::

    python benchmarks/bench_web.py
    python benchmarks/bench_web.py --bundle data/runs/02_cnn_baselines/resnet18/bundle --requests 100
    python benchmarks/bench_web.py --image face.jpg --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from fer_utils.bench.web import SERVER_THREADS, measure_web


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_table(results: list[dict], targets: list[dict]) -> None:
    print("\nPOST /api/predict (fer serve, waitress)  vs  in process (crop_face + predict_labeled)")
    head = (f"{'bundle':<34} {'clients':>7} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8} {'req/s':>7} "
            f"{'in-proc p50':>11} {'crop p50':>9} {'pred p50':>9} {'HTTP/in-proc':>12} {'srv CPU/req':>11} "
            f"{'cli CPU/req':>11}")
    print(head)
    print("-" * len(head))
    for result in results:
        base = result["in_process"]
        label = f"{result['kind']}:{Path(result['bundle']).parent.name}/{Path(result['bundle']).name}"[-34:]
        for m in result["http"]:
            print(f"{label:<34} {m['clients']:>7} {m['n']:>5} {m['p50_ms']:>8.1f} {m['p95_ms']:>8.1f} "
                  f"{m['mean_ms']:>8.1f} {m['requests_per_s']:>7.1f} {base['p50_ms']:>11.1f} "
                  f"{base['crop_face_p50_ms']:>9.1f} {base['predict_p50_ms']:>9.1f} "
                  f"{m['ratio_to_in_process_p50']:>12.2f} {fmt(m['server_cpu_ms_per_request']):>11} "
                  f"{fmt(m['client_cpu_ms_per_request']):>11}")
    print("(times in ms; in-proc: crop_face + predict_labeled in this process, no HTTP; CPU/req: CPU time of "
          "the server / of the client threads per request, all cores)")
    print("\nTargets")
    for row in targets:
        state = "not measured" if row["met"] is None else ("met" if row["met"] else "NOT MET")
        value = "-" if row["value"] is None else f"{row['value']:.1f}"
        print(f"  {row['target']:<24} {value:>8} (target {row['bound']:<8}) {state:<12} {row['bundle']}")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", type=Path,
                        help="a model bundle (repeatable; default: the best CNN and fused bundles for data/synthetic)")
    parser.add_argument("--image", type=Path, help="the photo to send (default: matplotlib's Grace Hopper portrait)")
    parser.add_argument("--requests", type=int, default=200, help="requests per setting (at most)")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per setting (at most)")
    parser.add_argument("--baseline-requests", type=int, default=50, help="in-process calls per bundle (at most)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls before each measurement")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients of the second setting")
    parser.add_argument("--threads", type=int, default=SERVER_THREADS, help="waitress threads (fer serve --threads)")
    parser.add_argument("--fused-concurrent", action="store_true", help="also run the concurrent setting on fused bundles")
    parser.add_argument("--start-timeout", type=float, default=180.0, help="seconds to wait for the server to answer")
    parser.add_argument("--json", dest="json_out", help="also write the results to this JSON file")
    args = parser.parse_args(argv)

    import torch

    print(f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, server threads {args.threads}")
    report = measure_web(args.bundle, args.image, echo=lambda text: print(text, flush=True), requests=args.requests,
                         seconds=args.seconds, baseline_requests=args.baseline_requests, warmup=args.warmup,
                         clients=args.clients, threads=args.threads, fused_concurrent=args.fused_concurrent,
                         start_timeout=args.start_timeout)
    print(f"image {report['image']} ({report['image_size'][0]} x {report['image_size'][1]})")
    print_table(report["results"], report["targets"])
    print(f"\nload average (1, 5, 15 min) before {report['load_average_before']}, after "
          f"{report['load_average_after']}: the clients, the server and anything else running share the "
          "machine's cores")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
