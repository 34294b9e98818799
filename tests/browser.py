"""What the browser tests share: starting Debian's Chromium through Playwright (skipped, with the
reason printed, when it cannot start), a Korean font for legible screenshots, and a watch on what a
page does wrong. Imported by the test modules as ``from browser import ...``.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
from pathlib import Path
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

import pytest

CHROMIUM = os.environ.get("FER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-quic", "--disable-sync"]
LOCAL_HOST = "127.0.0.1"


def korean_fonts_env(folder: Path) -> dict:
    """The environment for Chromium with koreanize-matplotlib's NanumGothic added to the system's
    fonts (a fontconfig file in ``folder``), so that Korean text in screenshots is legible on a
    machine without Korean fonts. Unchanged when that package is missing."""
    spec = importlib.util.find_spec("koreanize_matplotlib")
    fonts = Path(spec.origin).parent / "fonts" if spec and spec.origin else None
    if fonts is None or not fonts.is_dir():
        return dict(os.environ)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "fonts.conf"
    config.write_text('<?xml version="1.0"?>\n<!DOCTYPE fontconfig SYSTEM "fonts.dtd">\n<fontconfig>\n'
                      '  <include ignore_missing="yes">/etc/fonts/fonts.conf</include>\n'
                      f"  <dir>{escape(str(fonts))}</dir>\n  <cachedir>{escape(str(folder / 'cache'))}</cachedir>\n"
                      "</fontconfig>\n", encoding="utf-8")
    return {**os.environ, "FONTCONFIG_FILE": str(config)}


def launch_chromium(playwright, env: dict | None = None):
    """``(browser, None)``, or ``(None, why Chromium cannot be used here)``."""
    if not Path(CHROMIUM).is_file():
        return None, (f"no Chromium at {CHROMIUM} (install Debian's `chromium`, as `make test` does, "
                      "or set FER_CHROMIUM to a Chromium binary)")
    try:
        return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, env=env,
                                          timeout=30_000), None
    except Exception as exc:  # playwright raises its own Error (and TimeoutError) types
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        details = [line.strip(" -") for line in lines[1:]
                   if "[err]" in line or "process did exit" in line or "error while loading" in line]
        return None, f"Chromium at {CHROMIUM} does not start: {'; '.join([lines[0], *details[-3:]])[:500]}"


def chromium(tmp_path_factory, what: str):
    """A module fixture's body: yields a started Chromium, or skips ``what`` with the printed reason."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        found, reason = launch_chromium(playwright, korean_fonts_env(tmp_path_factory.mktemp("fontconfig")))
        if found is None:
            print(f"\nskipping {what}: {reason}")
            pytest.skip(reason)
        yield found
        found.close()


class Watch:
    """What the page did wrong: console errors, uncaught exceptions, failed or refused requests,
    error responses, and requests to any host but 127.0.0.1 (which are also blocked)."""

    def __init__(self, context, page):
        self.problems: list[str] = []
        self.outside: list[str] = []
        self.expected_statuses: dict[str, int] = {}
        context.route(lambda url: urlsplit(url).scheme in ("http", "https", "ws", "wss")
                      and urlsplit(url).hostname != LOCAL_HOST, self._block)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.problems.append(f"uncaught exception: {exc}"))
        page.on("requestfailed", lambda req: self.problems.append(
            f"request failed: {req.method} {req.url}: {req.failure}"))
        page.on("response", self._response)

    def _console(self, message):
        if message.type != "error":
            return
        url = message.location.get("url", "")
        status = self.expected_statuses.get(urlsplit(url).path)
        if status is not None and f"status of {status} " in message.text:
            return  # Chromium logs every 4xx document it loads, the expected ones too
        self.problems.append(f"console error: {message.text} ({url})")

    def _block(self, route):
        self.outside.append(route.request.url)
        route.abort()

    def _response(self, response):
        path = urlsplit(response.url).path
        if response.status >= 400 and self.expected_statuses.get(path) != response.status:
            self.problems.append(f"HTTP {response.status}: {response.request.method} {response.url}")


@contextlib.contextmanager
def journey(watch: Watch, context, page, shot, log=None):
    """A user's journey through ``page``: on failure, ``log()`` (a server's log, if given) is
    printed and a last screenshot taken (``shot(page, "99-failure")``) before the error goes on;
    the browser context is closed; then nothing the :class:`Watch` saw may have gone wrong."""
    try:
        yield
    except Exception:
        if log is not None:
            print(log())
        try:
            shot(page, "99-failure")
        except Exception as exc:  # the page may be gone: keep the test's own error
            print(f"no failure screenshot: {exc}")
        raise
    finally:
        context.close()
    assert not watch.problems, "\n".join(watch.problems)
    assert not watch.outside, f"requests to hosts other than {LOCAL_HOST}: {watch.outside}"
