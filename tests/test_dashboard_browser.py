"""The Voila dashboard in a real browser (Chromium through Playwright), served by ``fer dashboard`` itself.

The default bundle (a tiny random resnet18 of the session's synthetic data set) is preselected; a
photo uploaded through the upload button is answered (label, bar chart, Grad-CAM) within 3 s, and
again when the same photo is chosen a second time; a text file named ``.png`` gets an error naming it; the *Test results* tab shows the test split's
scores. No request may go to any host but 127.0.0.1 (the dashboard works offline: the ``fer``
template drops Voila's CDN links) and the page may log no console error.

Full-page screenshots go to ``_build/test-artifacts/dashboard/``. Skipped, with the reason, when
Chromium cannot be started (``make test`` installs Debian's ``chromium``). The helpers that start
Chromium are in ``tests/browser.py``, shared with ``test_web_browser.py``.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from browser import LOCAL_HOST, Watch, chromium, journey

from fer_utils.data import describe_dataset, load_dataset
from fer_utils.labels import EMOTIONS
from fer_utils.models import create_model
from fer_utils.inference.bundle import save_bundle
from fer_utils.options import Preprocessing

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "_build" / "test-artifacts" / "dashboard"
TIMEOUT_MS = 15_000
READY_MS = 60_000            # Voila executes the whole notebook before the widgets appear
SERVER_START_S = 90
FIRST_ANSWER_S = 3.0         # first prediction within 3 s of the upload, default bundle, 2 CPU cores


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from chromium(tmp_path_factory, "the dashboard browser test")


# ---- the dashboard, served by `fer dashboard` ------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCAL_HOST, 0))
        return sock.getsockname()[1]


def answers(port: int) -> bool:
    try:
        with socket.create_connection((LOCAL_HOST, port), timeout=1):
            return True
    except OSError:
        return False


def tail(log: Path, size: int = 6000) -> str:
    text = log.read_text(encoding="utf-8", errors="replace") if log.is_file() else "(no log)"
    return text[-size:]


def stop(process: subprocess.Popen) -> None:
    """End ``fer dashboard`` and Voila (one process group; Voila shuts its kernels down, and a kernel
    whose parent is gone ends itself)."""
    if process.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, 15), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory, synthetic_rafdb):
    """``fer dashboard --port P --bundles DIR --data synthetic_rafdb`` for a temporary project and one tiny
    CNN bundle of that data set; ``{"url", "log", "bundle", "n_test"}``."""
    tmp = tmp_path_factory.mktemp("dashboard-browser")
    project = tmp / "project"
    (project / "notebooks").mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "study.yaml", project / "notebooks" / "study.yaml")
    torch.manual_seed(0)
    index = load_dataset(synthetic_rafdb)
    bundle = save_bundle(tmp / "bundles" / "cnn" / "bundle", create_model("resnet18").eval(), "resnet18",
                         Preprocessing(32, (0.5,) * 3, (0.5,) * 3), metrics={"val_macro_f1": 0.4},
                         data=describe_dataset(synthetic_rafdb, index))
    assert (REPO / "fer_utils" / "cli" / "__main__.py").is_file()
    port = free_port()
    env = {**os.environ, "FER_HOME": str(project), "PYTHONUNBUFFERED": "1"}
    for name in ("FER_DATA_DIR", "FER_RUNS_DIR", "FER_CACHE_DIR", "FER_BUNDLES_DIR", "FER_DASHBOARD_BUNDLE"):
        env.pop(name, None)
    log = tmp / "voila.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fer_utils.cli", "dashboard", "--port", str(port), "--bundles",
             str(tmp / "bundles"), "--data", str(synthetic_rafdb)],
            cwd=tmp, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while not answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {process.returncode}" if process.poll() is not None
                       else f"did not answer within {SERVER_START_S} s")
                pytest.fail(f"fer dashboard {why}; its log:\n{tail(log)}")
            time.sleep(0.25)
        yield {"url": f"http://{LOCAL_HOST}:{port}/", "log": log, "bundle": bundle,
               "n_test": int((index["split"] == "test").sum())}
    finally:
        stop(process)


def shot(page, name: str) -> None:
    """A full-page screenshot. Voila's page does not scroll, its ``#rendered_cells`` does: the viewport is
    made as tall as that content for the shot, so that nothing below the fold is cut off."""
    size = page.viewport_size
    height = page.evaluate("() => { const cells = document.querySelector('#rendered_cells');"
                           " return cells ? cells.getBoundingClientRect().top + cells.scrollHeight : 0; }")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(int(height) + 16, 8000))})
    try:
        page.wait_for_timeout(200)   # lumino lays the tabs out again
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
    finally:
        page.set_viewport_size(size)


def loaded(page, selector: str) -> list[int]:
    """``naturalWidth`` of every image matching ``selector`` (0: not loaded or broken)."""
    return page.eval_on_selector_all(selector, "images => images.map(i => i.complete ? i.naturalWidth : 0)")


def upload(page, path: Path) -> float:
    """Choose ``path`` through the dashboard's upload button; the time the file was handed over."""
    with page.expect_file_chooser() as chooser:
        page.click(".fer-upload.widget-upload, .fer-upload .widget-upload")
    start = time.perf_counter()
    chooser.value.set_files(str(path))
    return start


def open_dashboard(browser, dashboard):
    """A new page on the dashboard, once Voila has executed the notebook; ``(context, page, watch, response)``."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = Watch(context, page)
    response = page.goto(dashboard["url"], timeout=READY_MS)
    page.wait_for_selector(".fer-upload", state="visible", timeout=READY_MS)
    return context, page, watch, response


# `browser` comes first in each test's arguments: when Chromium cannot start, the skip starts no server.
def test_dashboard_in_a_real_browser(browser, dashboard, tmp_path, record_property):
    from matplotlib import cbook
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    photo = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("These are my notes, not a photo.\n", encoding="utf-8")
    context, page, watch, response = open_dashboard(browser, dashboard)
    with journey(watch, context, page, shot, log=lambda: f"\nVoila's log:\n{tail(dashboard['log'])}"):
        html = response.text()
        assert response.status == 200
        linked = re.findall(r'<(?:link|script)\b[^>]*\b(?:href|src)="((?:https?:)?//[^"]+)"', html)
        assert not linked, f"the page links other hosts: {linked}"
        assert "cdn.jsdelivr.net" not in html
        chosen = page.eval_on_selector(".fer-bundle select", "s => s.options[s.selectedIndex].textContent")
        chosen = chosen.replace("\xa0", " ")   # ipywidgets shows option labels with no-break spaces
        assert chosen == "resnet18 · val macro F1 0.400 · cnn/bundle"
        assert "synthetic" in page.locator(".fer-trained-on").inner_text()
        shot(page, "01-ready")

        start = upload(page, photo)
        page.wait_for_selector(".fer-label", state="visible", timeout=30_000)
        seconds = time.perf_counter() - start
        record_property("upload_to_label_seconds", round(seconds, 3))
        print(f"\nupload -> label visible: {seconds:.2f} s (limit {FIRST_ANSWER_S} s, {os.cpu_count()} CPUs)")
        label = page.locator(".fer-label").get_attribute("data-label")
        assert label in EMOTIONS
        assert "grace_hopper.jpg" in page.locator(".fer-result").inner_text()
        assert page.locator(".fer-face-notice").count() == 0, "the face of the real photo was not found"
        for selector in ("img.fer-face, .fer-face img", "img.fer-bars, .fer-bars img",
                         "img.fer-gradcam, .fer-gradcam img"):
            page.wait_for_function("s => [...document.querySelectorAll(s)].every(i => i.complete)", arg=selector)
            widths = loaded(page, selector)
            assert len(widths) == 1 and widths[0] > 0, (selector, widths)
        shot(page, "02-prediction")
        assert seconds <= FIRST_ANSWER_S, f"the first prediction took {seconds:.2f} s (limit {FIRST_ANSWER_S} s)"

        # the same photo chosen a second time gives a second answer (the widget's value is unchanged)
        upload(page, photo)
        try:
            page.wait_for_function("() => document.querySelectorAll('.fer-result').length == 2", timeout=5_000)
        except PlaywrightTimeout:
            pass
        answers = page.locator(".fer-result").count()
        assert answers == 2, f"the photo chosen a second time gave {answers - 1} new answer(s)"

        upload(page, not_an_image)
        error = page.locator(".fer-results .fer-error")
        error.wait_for(state="visible")
        assert "notes.png" in error.inner_text() and "not an image" in error.inner_text()
        assert page.locator(".fer-result").count() == 2   # the photo's answers stay, below the error
        shot(page, "03-error")

        page.click(".lm-TabBar-tab:has-text('Test results')")
        summary = page.locator(".fer-test-summary")
        summary.wait_for(state="visible")
        assert "macro F1" in summary.inner_text() and f"{dashboard['n_test']} images" in summary.inner_text()
        page.wait_for_function("() => [...document.querySelectorAll('.fer-gallery img')].every(i => i.complete)")
        gallery = loaded(page, ".fer-gallery img")
        assert gallery and all(gallery), gallery
        shot(page, "04-test-results")

