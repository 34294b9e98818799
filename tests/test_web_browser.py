"""The web site in a real browser (Chromium through Playwright), over real HTTP from waitress.

One journey, as a person clicks through it: register, log in, upload a real photo, read the
result, the history and the dashboard, switch to English, log out, then as an admin delete the
prediction, and check that the database row and the stored photo files are gone. Along the way
no page may log a console error or fail a request, and nothing may be fetched from any host but
127.0.0.1 (the site works offline: no CDN).

Full-page screenshots of each step go to ``_build/test-artifacts/web/``. Skipped, with the
reason, when Chromium cannot be started (``make test`` installs Debian's ``chromium``).
"""
from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch
from browser import LOCAL_HOST, Watch, chromium, journey

from fer_utils.labels import EMOTIONS, KOREAN
from fer_utils.models import create_model
from fer_utils.inference.bundle import save_bundle
from fer_utils.options import Preprocessing

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "_build" / "test-artifacts" / "web"
USER, USER_PASSWORD = "alice", "alice-password-1"
ADMIN, ADMIN_PASSWORD = "boss", "boss-password-1"
TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    yield from chromium(tmp_path_factory, "the browser tests")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site (tiny random model, one admin) served by waitress on a free port of 127.0.0.1."""
    from waitress import create_server

    from fer_utils.web import create_app
    from fer_utils.web.extensions import db
    from fer_utils.web.maintenance import create_admin

    tmp = tmp_path_factory.mktemp("web-browser")
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    bundle = save_bundle(tmp / "bundle", model, "resnet18", Preprocessing(32, (0.5,) * 3, (0.5,) * 3),
                         metrics={"val_macro_f1": 0.4},
                         data={"name": "synthetic", "fingerprint": "0123456789abcdef", "synthetic": True})
    app = create_app({"INSTANCE_PATH": str(tmp / "instance"), "FER_BUNDLE": str(bundle), "SECRET_KEY": "x" * 40,
                      "RATELIMIT_ENABLED": False})
    with app.app_context():
        create_admin(ADMIN, ADMIN_PASSWORD)
        db.session.remove()
    server = create_server(app, host=LOCAL_HOST, port=0, threads=4)
    thread = threading.Thread(target=server.run, name="waitress", daemon=True)
    thread.start()
    yield {"app": app, "url": f"http://{LOCAL_HOST}:{server.effective_port}"}
    server.close()
    thread.join(timeout=5)


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def loaded(page, selector: str) -> list[int]:
    """``naturalWidth`` of every image matching ``selector`` (0: not loaded or broken)."""
    return page.eval_on_selector_all(selector, "images => images.map(i => i.complete ? i.naturalWidth : 0)")


def follow(page, locator) -> None:
    """Click a link or a form's button and wait until the page it leads to has loaded."""
    with page.expect_navigation(wait_until="load"):
        locator.click()


def submit(page, form_selector: str) -> None:
    follow(page, page.locator(f"{form_selector} button[type=submit]"))


def log_in(page, base: str, username: str, password: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    submit(page, "main form.card")
    assert page.url == f"{base}/", f"logging in as {username} failed"


def test_user_journey_in_a_real_browser(browser, site):  # browser first: a skip builds no site
    from fer_utils.web.extensions import db
    from fer_utils.web.models import AdminAction, Prediction

    from matplotlib import cbook

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    base, app = site["url"], site["app"]
    photo = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    watch = Watch(context, page)
    with journey(watch, context, page, shot):
        # Register: a mismatched confirmation is refused (400, shown in the form), then it works.
        watch.expected_statuses["/register"] = 400
        page.goto(f"{base}/register")
        assert page.locator("html").get_attribute("lang") == "ko"
        page.fill("input[name=username]", USER)
        page.fill("input[name=password]", USER_PASSWORD)
        page.fill("input[name=confirm]", "something-else-1")
        submit(page, "main form.card")
        assert page.locator("main .error").count() == 1
        page.fill("input[name=password]", USER_PASSWORD)
        page.fill("input[name=confirm]", USER_PASSWORD)
        shot(page, "01-register")
        submit(page, "main form.card")
        assert page.url == f"{base}/login"
        assert page.locator(".flash.ok").count() == 1
        del watch.expected_statuses["/register"]

        log_in(page, base, USER, USER_PASSWORD)
        assert page.locator("header .user").inner_text() == USER

        # Upload the photo through the plain HTML form.
        page.set_input_files("input[type=file]", photo)
        submit(page, "form[enctype='multipart/form-data']")
        assert page.url.startswith(f"{base}/result/")
        label = page.locator("#label").get_attribute("data-label")
        assert label in EMOTIONS
        assert page.locator("#comment").inner_text().strip()
        bars = page.locator("svg.bars g[data-emotion]")
        assert bars.count() == len(EMOTIONS)
        assert sorted(bars.evaluate_all("gs => gs.map(g => g.dataset.emotion)")) == sorted(EMOTIONS)
        assert page.locator("svg.bars g[data-emotion]").first.get_attribute("data-emotion") == label
        assert page.locator("#face-notice").count() == 0, "the face of the real photo was not found"
        assert all(loaded(page, ".result img")) and loaded(page, ".result img")
        shot(page, "02-result")

        page.goto(f"{base}/history")
        entries = page.locator("ul.history li")
        assert entries.count() == 1
        assert "grace_hopper.jpg" in entries.first.inner_text()
        assert entries.first.locator(".label").inner_text() == KOREAN[label]
        assert all(loaded(page, "ul.history img")) and loaded(page, "ul.history img")
        shot(page, "03-history")

        page.goto(f"{base}/dashboard")
        page.wait_for_function("() => [...document.querySelectorAll('img.chart')].every(i => i.complete)")
        widths = {name: loaded(page, f"#chart-{name}") for name in ("counts", "timeline")}
        assert all(w and w[0] > 0 for w in widths.values()), widths
        shot(page, "04-dashboard")

        # The header's language link: the same page, now in English.
        follow(page, page.locator("header .lang a[hreflang=en]"))
        assert page.url == f"{base}/dashboard"
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("main h1").inner_text() == "Dashboard"
        assert page.locator("header form[action$='/logout'] button").inner_text() == "Log out"
        page.wait_for_function("() => [...document.querySelectorAll('img.chart')].every(i => i.complete)")
        assert all(w > 0 for w in loaded(page, "img.chart"))
        shot(page, "04b-dashboard-en")

        # Log out (a POST form in the header): the language choice survives.
        follow(page, page.locator("header form[action$='/logout'] button"))
        assert page.url == f"{base}/login"
        assert page.locator("main h1").inner_text() == "Log in"
        assert page.locator("header .user").count() == 0

        log_in(page, base, ADMIN, ADMIN_PASSWORD)
        page.goto(f"{base}/admin/")
        row = page.locator("table.records tbody tr", has=page.locator("td.username", has_text=USER))
        assert row.count() == 1
        assert all(loaded(page, "table.records img")) and loaded(page, "table.records img")
        with app.app_context():
            record = db.session.execute(db.select(Prediction)).scalar_one()
            file_id, owner = record.file_id, record.owner.username
            db.session.remove()
        assert owner == USER and file_id
        uploads = Path(app.config["UPLOAD_FOLDER"])
        assert len(list(uploads.glob(f"{file_id}*"))) == 3  # original, face, thumbnail
        shot(page, "05-admin")

        # Deleting asks first: dismissed, nothing happens; accepted, the record goes.
        dialogs = []
        page.once("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        row.locator("button.danger").click()
        page.wait_for_timeout(300)
        assert dialogs == ["Delete this prediction and its photo?"] and row.count() == 1
        page.once("dialog", lambda dialog: dialog.accept())
        follow(page, row.locator("button.danger"))
        assert page.url.startswith(f"{base}/admin/")
        assert page.locator(".flash.ok").count() == 1
        assert page.locator("table.records tbody td.username").count() == 0
        shot(page, "06-admin-deleted")
        with app.app_context():
            assert db.session.scalar(db.select(db.func.count()).select_from(Prediction)) == 0
            actions = db.session.execute(db.select(AdminAction)).scalars().all()
            assert [(a.admin_name, a.action) for a in actions] == [(ADMIN, "delete prediction")]
            db.session.remove()
        assert not list(uploads.glob(f"{file_id}*"))
        assert not [p for p in uploads.iterdir() if p.is_file()]

