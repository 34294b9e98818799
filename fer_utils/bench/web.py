"""``POST /api/predict`` as the production server (``fer serve``, waitress) answers it, against
the same model work in process.

For each model bundle, :func:`measure_web` measures

(a) in process, without HTTP: ``Predictor.from_bundle``, then per call ``crop_face(image)`` +
    ``predict_labeled([crop.image])`` on the same photo (the model work a request does), p50 and
    its split into face crop and prediction;
(b) over HTTP: ``fer serve --threads 8 --no-rate-limit`` started as a subprocess on a free port
    of 127.0.0.1 (never another address), a user with an API token made beforehand, then
    ``POST /api/predict`` (multipart field ``image``, ``Authorization: Bearer <token>``) from one
    client (sequential) and from ``clients`` concurrent clients (threads, each its own
    keep-alive connection): p50 / p95 / mean latency and requests per second. Each setting stops
    after ``requests`` requests or ``seconds`` seconds, whichever comes first, after warm-up
    requests (the first inferences of a fresh process are several times slower),

and the ratio HTTP p50 / in-process p50 (what the site adds: upload checks, storing three image
files, the database row, HTTP), and :data:`TARGETS`: a CNN bundle's p50 <= 50 ms with one client
and >= 20 requests/s with eight; a fused bundle's p50 <= 150 ms with one client (fused bundles run
one client only, unless ``fused_concurrent``). The default bundles (:func:`default_bundles`) are
the best CNN and the best fused bundle (validation macro F1) trained on the project's synthetic data
set. The client uses only the standard library and runs on the same machine as the server, so on
a small machine the two share its cores (the load average before and after is reported).

``benchmarks/bench_web.py`` (a table) and ``fer bench --only web`` run it.
"""
from __future__ import annotations

import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from fer_utils.bench import load_average

HOST = "127.0.0.1"
SERVER_THREADS = 8
TARGETS = {  # (kind, clients, metric, bound, at most?)
    "cnn_p50_1_client_ms": ("cnn", 1, "p50_ms", 50.0, True),
    "cnn_rps_8_clients": ("cnn", 8, "requests_per_s", 20.0, False),
    "fused_p50_1_client_ms": ("fused", 1, "p50_ms", 150.0, True),
}


def default_image() -> Path:
    """Matplotlib's Grace Hopper portrait (shipped with matplotlib: nothing is downloaded)."""
    from matplotlib import cbook

    return Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def default_bundles() -> list[Path]:
    """The best CNN and the best fused bundle trained on the project's synthetic data set.
    Raises :class:`~fer_utils.errors.FERError` when the project has none (run the study first)."""
    from fer_utils.inference.bundle import default_bundle

    return [default_bundle(kind=kind) for kind in ("cnn", "fused")]


def stats(latencies_s: list[float], wall_s: float) -> dict:
    import numpy as np

    ms = np.asarray(latencies_s) * 1000
    return {"n": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "requests_per_s": len(ms) / wall_s if wall_s > 0 else float("nan")}


def in_process(bundle: Path, image, warmup: int, n: int, seconds: float) -> dict:
    """p50 of crop_face + predict_labeled without HTTP, and of each half."""
    import numpy as np

    from fer_utils.inference.faces import crop_face
    from fer_utils.inference.predict import Predictor

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


def _project_root() -> str | None:
    from fer_utils.errors import FERError
    from fer_utils.paths import project_paths

    try:
        return str(project_paths().root)
    except FERError:
        return None


class Server:
    """``fer serve`` in a subprocess on 127.0.0.1; a context manager that always stops it."""

    def __init__(self, bundle: Path, instance: Path, threads: int, timeout_s: float):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        instance.mkdir(parents=True, exist_ok=True)
        self.log = instance / "server.log"
        command = [sys.executable, "-m", "fer_utils.cli", "serve", "--host", HOST, "--port", str(self.port),
                   "--threads", str(threads), "--no-rate-limit", "--bundle", str(bundle),
                   "--instance", str(instance)]
        env = dict(os.environ)
        root = _project_root()
        if root:
            env["FER_HOME"] = root
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
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                connection.request("GET", "/login")
                if connection.getresponse().status == 200:
                    return
            except OSError:
                pass
            finally:
                connection.close()
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


class Client:
    """One keep-alive HTTP connection to the server that posts the photo to ``/api/predict``."""

    def __init__(self, url: str, token: str, data: bytes, name: str):
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=120)
        boundary = secrets.token_hex(16)
        self.body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                     f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
        self.headers = {"Authorization": f"Bearer {token}",
                        "Content-Type": f"multipart/form-data; boundary={boundary}"}

    def post(self) -> float:
        """One ``POST /api/predict``; its latency in seconds. Raises on anything but a 201 with a label."""
        from fer_utils.labels import EMOTIONS

        start = time.perf_counter()
        self.connection.request("POST", "/api/predict", body=self.body, headers=self.headers)
        response = self.connection.getresponse()
        text = response.read()
        elapsed = time.perf_counter() - start
        try:
            label = json.loads(text).get("label")
        except ValueError:
            label = None
        if response.status != 201 or label not in EMOTIONS:
            raise RuntimeError(f"POST /api/predict: HTTP {response.status}: {text[:300]!r}")
        return elapsed

    def close(self) -> None:
        self.connection.close()


def load(url: str, token: str, data: bytes, name: str, clients: int, n: int, seconds: float) -> dict:
    """Up to ``n`` requests (or ``seconds``) from ``clients`` threads, each with its own connection."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[BaseException] = []
    remaining = [n]

    def client() -> None:
        session = Client(url, token, data, name)
        try:
            while time.perf_counter() < deadline and not errors:
                with lock:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                try:
                    latency = session.post()
                except BaseException as exc:  # reported once the other clients stop
                    errors.append(exc)
                    return
                with lock:
                    latencies.append(latency)
        finally:
            session.close()

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
    if not latencies:
        raise RuntimeError(f"no request finished within {seconds:g} s")
    return {"clients": clients, **stats(latencies, wall), "wall_s": wall}


def warm_up(url: str, token: str, data: bytes, name: str, requests_each: int, clients: int) -> None:
    """Sequential requests first (model warm-up), then one round from ``clients`` threads (each
    server thread loads its own face detector on first use)."""
    session = Client(url, token, data, name)
    try:
        for _ in range(requests_each):
            session.post()
    finally:
        session.close()
    if clients > 1:
        load(url, token, data, name, clients, 2 * clients, seconds=120)


def process_cpu_seconds() -> float:
    """User + system CPU time of this process (the clients), all threads."""
    times = os.times()
    return times.user + times.system


def measure_bundle(bundle: Path, image_path: Path, requests: int = 200, seconds: float = 60.0,
                   baseline_requests: int = 50, warmup: int = 5, clients: int = 8, threads: int = SERVER_THREADS,
                   fused_concurrent: bool = False, start_timeout: float = 180.0, echo=print) -> dict:
    """(a) and (b) of the module's description for one bundle."""
    from PIL import Image

    from fer_utils.inference.bundle import bundle_summary

    data = Path(image_path).read_bytes()
    with Image.open(image_path) as opened:
        image = opened.convert("RGB")
    name = Path(image_path).name
    summary = bundle_summary(bundle)
    settings = [1] if summary["kind"] == "fused" and not fused_concurrent else sorted({1, clients})
    echo(f"{summary['kind']} bundle {bundle} ({summary['model']}): in process ...")
    baseline = in_process(bundle, image, warmup, baseline_requests, seconds)
    result = {"bundle": str(bundle), "kind": summary["kind"], "model": summary["model"],
              "in_process": baseline, "http": []}
    with tempfile.TemporaryDirectory(prefix="fer-bench-web-") as tmp:
        instance = Path(tmp) / "instance"
        token = make_token_user(instance, bundle)
        started = time.perf_counter()
        with Server(bundle, instance, threads, start_timeout) as server:
            result["server_start_s"] = time.perf_counter() - started
            echo(f"  serving on {server.url} (ready in {result['server_start_s']:.1f} s); warm-up ...")
            warm_up(server.url, token, data, name, warmup, max(settings))
            for count in settings:
                echo(f"  {count} client(s) ...")
                server_cpu, client_cpu = server.cpu_seconds(), process_cpu_seconds()
                measured = load(server.url, token, data, name, count, requests, seconds)
                measured["ratio_to_in_process_p50"] = measured["p50_ms"] / baseline["p50_ms"]
                after = server.cpu_seconds()
                measured["server_cpu_ms_per_request"] = (None if server_cpu is None or after is None
                                                         else 1000 * (after - server_cpu) / measured["n"])
                measured["client_cpu_ms_per_request"] = 1000 * (process_cpu_seconds() - client_cpu) / measured["n"]
                result["http"].append(measured)
    return result


def check_targets(results: list[dict]) -> list[dict]:
    """One row per target and bundle of its kind: the value measured, the bound, met or not (None: not measured)."""
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


def measure_web(bundles: list[Path] | None = None, image: Path | None = None, echo=print, **options) -> dict:
    """:func:`measure_bundle` for each bundle (default: :func:`default_bundles`), the targets and
    the load average before and after. ``options`` go to :func:`measure_bundle`."""
    import torch
    from PIL import Image

    image_path = Path(image) if image else default_image()
    bundles = [Path(b) for b in bundles] if bundles else default_bundles()
    load_before = load_average()
    results = [measure_bundle(bundle, image_path, echo=echo, **options) for bundle in bundles]
    with Image.open(image_path) as opened:
        image_size = list(opened.size)
    return {"image": str(image_path), "image_size": image_size, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "server_threads": options.get("threads", SERVER_THREADS),
            "requests": options.get("requests", 200), "seconds": options.get("seconds", 60.0),
            "load_average_before": load_before, "load_average_after": load_average(),
            "results": results, "targets": check_targets(results)}
