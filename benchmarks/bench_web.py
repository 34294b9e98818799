"""Benchmark ``POST /api/predict`` as the production server (``fer serve``, waitress) answers it.

For each model bundle, in one run:

(a) in process, without HTTP: ``Predictor.from_bundle``, then per call ``crop_face(image)`` +
    ``predict_labeled([crop.image])`` on the same photo (the model work a request does), p50 and
    its split into face crop and prediction;
(b) over HTTP: ``fer serve --threads 8 --no-rate-limit`` started as a subprocess on a free port
    of 127.0.0.1 (never another address), a user with an API token made beforehand, then
    ``POST /api/predict`` (multipart field ``image``, ``Authorization: Bearer <token>``) from one
    client (sequential) and from ``--clients`` concurrent clients (threads, each its own
    connection): p50 / p95 / mean latency and requests per second. Each setting stops after
    ``--requests`` requests or ``--seconds`` seconds, whichever comes first, after warm-up
    requests (the first inferences of a fresh process are several times slower).

It prints a table with the ratio HTTP p50 / in-process p50 (what the site adds: upload checks,
storing three image files, the database row, HTTP) and the targets: a CNN bundle's p50 <= 50 ms
with one client and >= 20 requests/s with eight; a fused bundle's p50 <= 150 ms with one client
(fused bundles run one client only, unless ``--fused-concurrent``). Examples::

    python benchmarks/bench_web.py
    python benchmarks/bench_web.py --bundle data/runs/02_cnn_baselines/resnet18/bundle --requests 100
    python benchmarks/bench_web.py --image face.jpg --json out.json

Default bundles: the best CNN and the best fused bundle (validation macro F1) trained on the
project's synthetic data set. The client runs on the same machine as the server, so on a small
machine the two share its cores. Uses ``requests``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from fer_utils.labels import EMOTIONS

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
SERVER_THREADS = 8
TARGETS = {  # (kind, clients, metric, bound, at most?)
    "cnn_p50_1_client_ms": ("cnn", 1, "p50_ms", 50.0, True),
    "cnn_rps_8_clients": ("cnn", 8, "requests_per_s", 20.0, False),
    "fused_p50_1_client_ms": ("fused", 1, "p50_ms", 150.0, True),
}


def default_image() -> Path:
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def default_bundles() -> list[Path]:
    """The best CNN and the best fused bundle trained on the project's synthetic data set."""
    from fer_utils.data import describe_dataset, load_dataset
    from fer_utils.paths import project_paths
    from fer_utils.predict import choose_bundle

    paths = project_paths()
    fingerprint = describe_dataset(paths.synthetic, load_dataset(paths.synthetic))["fingerprint"]
    return [Path(choose_bundle(paths.bundles, fingerprint, kind=kind)["path"]) for kind in ("cnn", "fused")]


def stats(latencies_s: list[float], wall_s: float) -> dict:
    ms = np.asarray(latencies_s) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "requests_per_s": len(ms) / wall_s if wall_s > 0 else float("nan")}


def in_process(bundle: Path, image: Image.Image, warmup: int, n: int, seconds: float) -> dict:
    """p50 of crop_face + predict_labeled without HTTP, and of each half."""
    from fer_utils.faces import crop_face
    from fer_utils.predict import Predictor

    predictor = Predictor.from_bundle(bundle)
    for _ in range(warmup):
        predictor.predict_labeled([crop_face(image).image])
    crop_s, predict_s = [], []
    deadline = time.perf_counter() + seconds
    while len(crop_s) < n and time.perf_counter() < deadline:
        start = time.perf_counter()
        crop = crop_face(image)
        middle = time.perf_counter()
        predictor.predict_labeled([crop.image])
        crop_s.append(middle - start)
        predict_s.append(time.perf_counter() - middle)
    total = [a + b for a, b in zip(crop_s, predict_s)]
    return {"n": len(total), "p50_ms": 1000 * float(np.median(total)),
            "crop_face_p50_ms": 1000 * float(np.median(crop_s)),
            "predict_p50_ms": 1000 * float(np.median(predict_s)), "face_found": crop.box is not None}


def make_token_user(instance: Path, bundle: Path) -> str:
    """A user with a fresh API token in the instance's database; returns the token."""
    import secrets

    from fer_utils.web import create_app
    from fer_utils.web.extensions import db
    from fer_utils.web.models import User

    token = secrets.token_urlsafe(32)
    app = create_app({"INSTANCE_PATH": str(instance), "FER_BUNDLE": str(bundle)})
    with app.app_context():
        user = User(username="bench", role="user")
        user.set_password(secrets.token_hex(16))
        user.api_token_sha256 = User.token_digest(token)
        db.session.add(user)
        db.session.commit()
        db.session.remove()
        db.engine.dispose()
    return token


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Server:
    """``fer serve`` in a subprocess on 127.0.0.1; a context manager that always stops it."""

    def __init__(self, bundle: Path, instance: Path, threads: int, timeout_s: float):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.log = instance / "server.log"
        fer = Path(sys.executable).with_name("fer")
        command = [str(fer) if fer.exists() else shutil.which("fer") or "fer", "serve", "--host", HOST,
                   "--port", str(self.port), "--threads", str(threads), "--no-rate-limit",
                   "--bundle", str(bundle), "--instance", str(instance)]
        env = {**os.environ, "FER_HOME": str(REPO)}
        env.pop("FER_WEB_BUNDLE", None)
        self._out = open(self.log, "wb")
        self.process = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT, env=env)
        self.timeout_s = timeout_s

    def __enter__(self) -> Server:
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"fer serve exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if requests.get(f"{self.url}/login", timeout=2).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"fer serve did not answer within {self.timeout_s:.0f} s:\n{self.tail()}")

    def cpu_seconds(self) -> float | None:
        """User + system CPU time the server process has used so far (Linux ``/proc``; else None)."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 20) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def post(session: requests.Session, url: str, token: str, data: bytes, name: str) -> float:
    """One ``POST /api/predict``; its latency in seconds. Raises on anything but a 201 with a label."""
    start = time.perf_counter()
    response = session.post(f"{url}/api/predict", files={"image": (name, data, "image/jpeg")},
                            headers={"Authorization": f"Bearer {token}"}, timeout=120)
    elapsed = time.perf_counter() - start
    if response.status_code != 201 or response.json().get("label") not in EMOTIONS:
        raise RuntimeError(f"POST /api/predict: HTTP {response.status_code}: {response.text[:300]}")
    return elapsed


def load(url: str, token: str, data: bytes, name: str, clients: int, n: int, seconds: float) -> dict:
    """Up to ``n`` requests (or ``seconds``) from ``clients`` threads, each with its own session."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []
    remaining = [n]

    def client() -> None:
        with requests.Session() as session:
            while time.perf_counter() < deadline and not errors:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                try:
                    latency = post(session, url, token, data, name)
                except BaseException as exc:  # reported once the other clients stop
                    errors.append(exc)
                    return
                with lock:
                    latencies.append(latency)

    start = time.perf_counter()
    deadline = start + seconds
    threads = [threading.Thread(target=client, name=f"client-{i}") for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if errors:
        raise errors[0]
    return {"clients": clients, **stats(latencies, wall), "wall_s": wall}


def warm_up(url: str, token: str, data: bytes, name: str, requests_each: int, clients: int) -> None:
    """Sequential requests first (model warm-up), then one round from ``clients`` threads (each
    server thread loads its own face detector on first use)."""
    with requests.Session() as session:
        for _ in range(requests_each):
            post(session, url, token, data, name)
    if clients > 1:
        load(url, token, data, name, clients, 2 * clients, seconds=120)


def process_cpu_seconds() -> float:
    """User + system CPU time of this process (the clients), all threads."""
    times = os.times()
    return times.user + times.system


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def bench_bundle(bundle: Path, args, data: bytes, name: str, image: Image.Image) -> dict:
    from fer_utils.predict import bundle_summary

    summary = bundle_summary(bundle)
    settings = [1] if summary["kind"] == "fused" and not args.fused_concurrent else [1, args.clients]
    print(f"\n{summary['kind']} bundle {bundle} ({summary['model']}): in process ...", flush=True)
    baseline = in_process(bundle, image, args.warmup, args.baseline_requests, args.seconds)
    result = {"bundle": str(bundle), "kind": summary["kind"], "model": summary["model"],
              "in_process": baseline, "http": []}
    with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
        instance = Path(tmp) / "instance"
        token = make_token_user(instance, bundle)
        started = time.perf_counter()
        with Server(bundle, instance, args.threads, args.start_timeout) as server:
            result["server_start_s"] = time.perf_counter() - started
            print(f"  serving on {server.url} (ready in {result['server_start_s']:.1f} s); warm-up ...", flush=True)
            warm_up(server.url, token, data, name, args.warmup, max(settings))
            for clients in settings:
                print(f"  {clients} client(s) ...", flush=True)
                server_cpu, client_cpu = server.cpu_seconds(), process_cpu_seconds()
                measured = load(server.url, token, data, name, clients, args.requests, args.seconds)
                measured["ratio_to_in_process_p50"] = measured["p50_ms"] / baseline["p50_ms"]
                after = server.cpu_seconds()
                measured["server_cpu_ms_per_request"] = (None if server_cpu is None or after is None
                                                         else 1000 * (after - server_cpu) / measured["n"])
                measured["client_cpu_ms_per_request"] = 1000 * (process_cpu_seconds() - client_cpu) / measured["n"]
                result["http"].append(measured)
    return result


def check_targets(results: list[dict]) -> list[dict]:
    rows = []
    for key, (kind, clients, metric, bound, at_most) in TARGETS.items():
        for result in results:
            if result["kind"] != kind:
                continue
            found = [m for m in result["http"] if m["clients"] == clients]
            value = found[0][metric] if found else None
            met = None if value is None else (value <= bound if at_most else value >= bound)
            rows.append({"target": key, "bundle": result["bundle"], "value": value,
                         "bound": f"{'<=' if at_most else '>='} {bound:g}", "met": met})
    return rows


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

    image_path = args.image or default_image()
    data = image_path.read_bytes()
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    bundles = args.bundle or default_bundles()
    load_before = load_average()
    print(f"image {image_path} ({image.size[0]} x {image.size[1]}); {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}, server threads {args.threads}; load average {load_before}")
    results = [bench_bundle(bundle, args, data, image_path.name, image) for bundle in bundles]
    targets = check_targets(results)
    print_table(results, targets)
    load_after = load_average()
    print(f"\nload average (1, 5, 15 min) before {load_before}, after {load_after}: the clients, the server and "
          "anything else running share the machine's cores")
    report = {"image": str(image_path), "image_size": list(image.size), "cpus": os.cpu_count(),
              "torch_threads": torch.get_num_threads(), "server_threads": args.threads,
              "requests": args.requests, "seconds": args.seconds, "load_average_before": load_before,
              "load_average_after": load_after, "results": results, "targets": targets}
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
