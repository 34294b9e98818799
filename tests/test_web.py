"""The Flask site, flaskr-style: a temporary instance folder and SQLite database, the real app
driven by its test client (CSRF on), a real tiny model bundle, real photos. Hostile input too.

Real HTTP (waitress) for the concurrency test; the browser test is tests/test_web_browser.py.
"""
from __future__ import annotations

import io
import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from matplotlib import cbook
from PIL import Image

from fer_utils.cli import main
from fer_utils.labels import EMOTIONS, KOREAN
from fer_utils.models import create_model
from fer_utils.inference.bundle import save_bundle
from fer_utils.options import Preprocessing
from fer_utils.web import create_app
from fer_utils.web.extensions import db, limiter
from fer_utils.web.maintenance import create_admin, purge_uploads
from fer_utils.web.models import AdminAction, Prediction, User
from fer_utils.web.settings import DATABASE_FILE

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PREPROCESSING = Preprocessing(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
DATA = {"name": "synthetic", "fingerprint": "0123456789abcdef", "synthetic": True}
GRACE = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
PASSWORD = "correct horse 1"
TOKEN_FIELD = re.compile(r'name="csrf_token" type="hidden" value="([^"]+)"')


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("resnet18").eval()
    return save_bundle(tmp_path_factory.mktemp("bundle") / "resnet18", model, "resnet18", PREPROCESSING,
                       metrics={"val_macro_f1": 0.4, "macro_f1": 0.38}, data=DATA)


def make_app(tmp_path, bundle, **config):
    settings = {"INSTANCE_PATH": str(tmp_path / "instance"), "FER_BUNDLE": str(bundle), "TESTING": True,
                "RATELIMIT_ENABLED": False, **config}
    return create_app(settings)


@pytest.fixture
def app(tmp_path, bundle):
    return make_app(tmp_path, bundle)


def csrf(client, path="/login") -> str:
    return TOKEN_FIELD.search(client.get(path).get_data(as_text=True)).group(1)


def register(client, username="alice", password=PASSWORD):
    return client.post("/register", data={"csrf_token": csrf(client, "/register"), "username": username,
                                          "password": password, "confirm": password})


def login(client, username="alice", password=PASSWORD, next_url=None):
    path = "/login" + (f"?next={next_url}" if next_url else "")
    return client.post(path, data={"csrf_token": csrf(client), "username": username, "password": password})


def user_client(app, username="alice"):
    client = app.test_client()
    assert register(client, username).status_code == 302
    assert login(client, username).status_code == 302
    return client


def upload(client, data: bytes | None = None, name="grace.jpg", token=True):
    data = GRACE.read_bytes() if data is None else data
    form = {"photo": (io.BytesIO(data), name)}
    if token:
        form["csrf_token"] = csrf(client, "/account")
    return client.post("/predict", data=form, content_type="multipart/form-data")


def png_bytes(array: np.ndarray, **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, "PNG", **save)
    return out.getvalue()


def stored_files(app) -> list[Path]:
    folder = Path(app.config["UPLOAD_FOLDER"])
    return sorted(folder.iterdir()) if folder.exists() else []


def count(app, model=Prediction) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(model))


def prediction_ids(app) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(db.select(Prediction.id).order_by(Prediction.id)))


# --- accounts --------------------------------------------------------------------------------------


def test_register_login_logout(app):
    client = app.test_client()
    assert register(client).status_code == 302
    with app.app_context():
        user = db.session.execute(db.select(User).filter_by(username="alice")).scalar_one()
        assert user.password_hash != PASSWORD and user.password_hash.startswith(("scrypt:", "pbkdf2:"))
        assert user.role == "user" and user.active
    assert login(client, password="wrong password").status_code == 401
    assert login(client, username="nobody").status_code == 401
    response = login(client)
    assert response.status_code == 302 and response.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf(client, "/")}).status_code == 302
    assert client.get("/").status_code == 302


def test_registration_refuses_a_taken_name_short_password_and_control_characters(app):
    client = app.test_client()
    register(client)
    assert register(client).status_code == 400 and count(app, User) == 1
    assert register(client, "bob", "short").status_code == 400
    assert register(client, " bob").status_code == 400
    assert register(client, "bo\x00b").status_code == 400
    assert count(app, User) == 1


def test_a_name_spelt_with_separate_korean_jamo_is_the_same_name(app):
    """NFD (jamo) and NFC (syllables) 관리자 look the same: one account, not a look-alike second."""
    import unicodedata

    composed, decomposed = "관리자", unicodedata.normalize("NFD", "관리자")
    assert composed != decomposed
    client = app.test_client()
    assert register(client, composed).status_code == 302
    assert register(client, decomposed).status_code == 400 and count(app, User) == 1
    assert login(client, decomposed).status_code == 302  # typed either way, the same account
    with app.app_context():
        assert create_admin(decomposed, None, promote=True).username == composed
        assert db.session.execute(db.select(User.username)).scalar_one() == composed


def test_login_is_required_everywhere_but_login_register_language_and_static(app):
    client = app.test_client()
    open_endpoints = {"auth.login", "auth.register", "auth.set_language", "static"}
    values = {"prediction_id": 1, "user_id": 1, "kind": "thumb", "chart": "counts", "action": "disable",
              "code": "en", "filename": "style.css"}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in open_endpoints:
            continue
        path = rule.build({k: v for k, v in values.items() if k in rule.arguments}, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            response = client.open(path, method=method)
            checked += 1
            if rule.endpoint.startswith("api."):
                assert response.status_code == 401, path
            elif method == "GET":
                assert response.status_code == 302 and "/login" in response.headers["Location"], path
            else:  # a POST without a login is refused (by the CSRF check first, or the login check)
                assert response.status_code in (302, 400), (path, response.status_code)
    assert checked >= 15


def test_next_is_followed_only_within_the_site(app):
    client = app.test_client()
    register(client)
    assert login(client, next_url="/history").headers["Location"] == "/history"
    for hostile in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)",
                    "https:evil.example", "%2F%2Fevil.example", "/%09/evil.example", "%5C%5Cevil.example",
                    "///evil.example", "\t//evil.example"):
        client.post("/logout", data={"csrf_token": csrf(client, "/")})
        assert login(client, next_url=hostile).headers["Location"] == "/", hostile


def test_a_name_called_admin_gets_no_admin_rights_the_role_does(app):
    client = user_client(app, "admin")
    assert client.get("/admin/").status_code == 403
    with app.app_context():
        create_admin("admin", None, promote=True)
    assert client.get("/admin/").status_code == 200


def test_secret_key_is_generated_once_and_kept(tmp_path, bundle):
    first = make_app(tmp_path, bundle)
    key_file = Path(first.instance_path) / "secret_key"
    assert (key_file.stat().st_mode & 0o777) == 0o600
    assert first.config["SECRET_KEY"] == key_file.read_text().strip() and len(first.config["SECRET_KEY"]) >= 32
    assert make_app(tmp_path, bundle).config["SECRET_KEY"] == first.config["SECRET_KEY"]
    other = make_app(tmp_path / "other", bundle)
    assert other.config["SECRET_KEY"] != first.config["SECRET_KEY"]


def test_cookies_are_httponly_and_samesite_and_pages_send_security_headers(app):
    client = app.test_client()
    register(client)
    response = login(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    page = client.get("/")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"


def test_the_database_uses_wal(app):
    with app.app_context():
        assert db.session.execute(db.text("PRAGMA journal_mode")).scalar() == "wal"


# --- upload, predict, history ----------------------------------------------------------------------


def test_upload_predict_store_history_delete(app):
    client = user_client(app)
    response = upload(client)
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        record = db.session.execute(db.select(Prediction)).scalar_one()
        probabilities = record.probabilities
        assert set(probabilities) == set(EMOTIONS) and abs(sum(probabilities.values()) - 1) < 1e-5
        assert record.label == max(probabilities, key=probabilities.get)
        assert record.original_name == "grace.jpg" and len(record.file_id) == 32
        assert record.face_box is not None  # the real Haar cascade finds Grace Hopper's face
        assert record.bundle_id.endswith("@" + json.loads((Path(app.config["FER_BUNDLE"]) / "bundle.json")
                                                          .read_text())["weights_sha256"][:12])
        assert record.created_at.tzinfo is not None
        record_id = record.id
    assert f'data-label="{record.label}"' in page and KOREAN[record.label] in page  # Korean by default
    assert page.count("data-emotion=") == len(EMOTIONS)
    assert "합성 만화 얼굴로 학습한 모델" in page  # what the model was trained on, from the bundle's data record
    history = client.get("/history").get_data(as_text=True)
    assert f"/image/{record_id}/thumb" in history
    for kind, size in (("original", (512, 600)), ("face", None), ("thumb", None)):
        image = client.get(f"/image/{record_id}/{kind}")
        assert image.status_code == 200 and image.headers["Cache-Control"] == "private, no-store"
        with Image.open(io.BytesIO(image.data)) as stored:
            if size:
                assert stored.size == size
    assert len(stored_files(app)) == 3
    response = client.post(f"/history/{record_id}/delete", data={"csrf_token": csrf(client, "/history")})
    assert response.status_code == 303
    assert count(app) == 0 and stored_files(app) == []
    assert client.get(f"/image/{record_id}/face").status_code == 404


def test_a_phone_jpeg_with_a_second_picture_inside_mpo_is_its_first_picture(app):
    """Many phone photos carry a second image (depth map, preview): Pillow opens them as MPO. They
    are JPEG files, and the site reads them as the photo they show."""
    photo = Image.open(GRACE).convert("RGB")
    out = io.BytesIO()
    photo.save(out, "MPO", save_all=True, append_images=[photo.resize((64, 64))], quality=95)
    with Image.open(io.BytesIO(out.getvalue())) as opened:
        assert opened.format == "MPO"                      # what Pillow calls such a file
    client = user_client(app)
    response = upload(client, out.getvalue(), name="phone.jpg")
    assert response.status_code == 303 and count(app) == 1
    with app.app_context():
        record_id = db.session.execute(db.select(Prediction)).scalar_one().id
    with Image.open(io.BytesIO(client.get(f"/image/{record_id}/original").data)) as stored:
        assert stored.format == "JPEG" and stored.size == photo.size


def test_two_uploads_with_the_same_name_are_both_kept(app):
    client = user_client(app)
    first = upload(client, png_bytes(np.full((60, 60, 3), 90, np.uint8)), name="photo.png")
    second = upload(client, png_bytes(np.full((60, 60, 3), 200, np.uint8)), name="photo.png")
    assert first.status_code == second.status_code == 303
    with app.app_context():
        records = db.session.scalars(db.select(Prediction)).all()
        assert len({r.file_id for r in records}) == 2 and len({r.image_sha256 for r in records}) == 2
    assert len(stored_files(app)) == 6


def test_no_face_uses_the_whole_image_and_says_so(app):
    client = user_client(app)
    rng = np.random.default_rng(0)
    response = upload(client, png_bytes(rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)), name="noise.png")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="face-notice"' in page
    with app.app_context():
        assert db.session.execute(db.select(Prediction)).scalar_one().face_box is None


def test_exif_is_stripped_and_orientation_applied(app):
    client = user_client(app)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to show upright
    exif[0x010F] = "SecretCam"
    exif.get_ifd(0x8825)[2] = (37.0, 33.0, 0.0)  # GPS latitude
    out = io.BytesIO()
    Image.new("RGB", (120, 80), (10, 120, 200)).save(out, "JPEG", exif=exif)
    assert b"SecretCam" in out.getvalue()
    response = upload(client, out.getvalue(), name="gps.jpg")
    assert response.status_code == 303
    for path in stored_files(app):
        data = path.read_bytes()
        assert b"SecretCam" not in data and b"Exif" not in data, path.name
        with Image.open(path) as stored:
            assert not stored.getexif(), path.name
    original = next(p for p in stored_files(app) if p.name.count(".") == 1)
    with Image.open(original) as stored:
        assert stored.size == (80, 120)  # upright


@pytest.mark.parametrize("name, data, problem", [
    ("notes.txt", b"just some text, no image", "is not an image"),
    ("empty.png", b"", "is empty"),
    ("anim.gif", None, "is a GIF file"),
    ("cut.jpg", "truncated", "damaged or truncated"),
])
def test_bad_uploads_get_a_clear_message_and_store_nothing(app, name, data, problem):
    client = user_client(app)
    if data is None:
        out = io.BytesIO()
        Image.new("RGB", (40, 40)).save(out, "GIF")
        data = out.getvalue()
    elif data == "truncated":
        data = GRACE.read_bytes()[:20000]
    client.get("/lang/en")  # the English text of the message
    response = upload(client, data, name=name)
    assert response.status_code == 400
    assert problem in response.get_data(as_text=True)
    assert name in response.get_data(as_text=True)
    assert count(app) == 0 and stored_files(app) == []


def test_decompression_bombs_are_refused_before_decoding(tmp_path, bundle):
    app = make_app(tmp_path, bundle, MAX_IMAGE_PIXELS=1_000_000)
    client = user_client(app)
    client.get("/lang/en")
    bomb = png_bytes(np.zeros((1500, 1500), np.uint8), optimize=True)
    assert len(bomb) < 20_000  # a small file ...
    response = upload(client, bomb, name="bomb.png")
    assert response.status_code == 400
    assert "1500 × 1500 pixels, more than the 1,000,000 allowed" in response.get_data(as_text=True)
    assert count(app) == 0 and stored_files(app) == []


def test_oversized_uploads_get_a_friendly_413_page(tmp_path, bundle):
    app = make_app(tmp_path, bundle, MAX_CONTENT_LENGTH=100_000)
    client = user_client(app)
    response = upload(client, b"\xff\xd8" + bytes(200_000), name="huge.jpg")
    assert response.status_code == 413
    page = response.get_data(as_text=True)
    assert "<html" in page and "최대 98 KB까지" in page
    assert count(app) == 0 and stored_files(app) == []


def test_forms_without_a_csrf_token_are_refused(app):
    client = user_client(app)
    assert upload(client, token=False).status_code == 400
    assert count(app) == 0 and stored_files(app) == []
    anonymous = app.test_client()
    assert anonymous.post("/register", data={"username": "eve", "password": PASSWORD,
                                             "confirm": PASSWORD}).status_code == 400
    assert count(app, User) == 1
    assert client.post("/account/delete", data={"password": PASSWORD}).status_code == 400
    assert count(app, User) == 1 and client.get("/history").status_code == 200  # refused: nothing deleted


# --- another user's things -------------------------------------------------------------------------


def test_a_user_cannot_see_or_delete_another_users_image_or_record(app):
    alice = user_client(app, "alice")
    upload(alice)
    (record_id,) = prediction_ids(app)
    mallory = user_client(app, "mallory")
    for path in (f"/result/{record_id}", f"/image/{record_id}/original", f"/image/{record_id}/thumb",
                 f"/image/{record_id}/face"):
        assert mallory.get(path).status_code == 404, path
    response = mallory.post(f"/history/{record_id}/delete", data={"csrf_token": csrf(mallory, "/")})
    assert response.status_code == 404
    assert mallory.post(f"/admin/predictions/{record_id}/delete",
                        data={"csrf_token": csrf(mallory, "/")}).status_code == 403
    assert prediction_ids(app) == [record_id] and len(stored_files(app)) == 3
    assert f"/result/{record_id}" not in mallory.get("/history").get_data(as_text=True)


def test_path_traversal_in_file_routes_fails(app):
    client = user_client(app)
    upload(client)
    (record_id,) = prediction_ids(app)
    for path in (f"/image/{record_id}/../../secret_key", f"/image/{record_id}/..%2f..%2fsecret_key",
                 f"/image/{record_id}/%2e%2e", "/image/..%2f1/thumb", f"/image/{record_id}/original.jpg",
                 "/static/../instance/secret_key", "/static/..%2f..%2fsecret_key", "/static/%2e%2e/web/auth.py",
                 "/dashboard/..%2fsecret_key.png"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"secret" not in response.data.lower().replace(b"secret_key", b""), path


def test_html_in_a_username_is_escaped(app):
    name = "<script>alert(1)</script>"
    client = user_client(app, name)
    upload(client)
    admin = app.test_client()
    with app.app_context():
        create_admin("boss", "boss password 1")
    login(admin, "boss", "boss password 1")
    for page in (client.get("/").get_data(as_text=True), admin.get("/admin/").get_data(as_text=True),
                 admin.get("/admin/users").get_data(as_text=True)):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert name not in page


def test_sql_looking_input_is_only_text(app):
    client = app.test_client()
    assert login(client, "' OR '1'='1", "' OR '1'='1").status_code == 401
    tricky = "x'); DROP TABLE users;--"
    user_client(app, tricky)
    user_client(app, "bob")
    with app.app_context():
        assert db.session.execute(db.select(User).filter_by(username=tricky)).scalar_one()
        create_admin("boss", "boss password 1")
    admin = app.test_client()
    login(admin, "boss", "boss password 1")
    page = admin.get("/admin/", query_string={"user": "' OR 1=1 --"}).get_data(as_text=True)
    assert "No predictions match" in page or "조건에 맞는 예측이 없습니다" in page
    assert count(app, User) == 3


def test_twenty_concurrent_uploads_lose_no_record(tmp_path, bundle):
    """Real HTTP through waitress (the production server), 20 clients at once, one API token each."""
    requests = pytest.importorskip("requests")
    from waitress import create_server

    app = make_app(tmp_path, bundle)
    tokens = []
    with app.app_context():
        for i in range(20):
            user = User(username=f"user{i}", role="user")
            user.set_password(PASSWORD)
            token = f"token-{i}-" + "x" * 20
            user.api_token_sha256 = User.token_digest(token)
            db.session.add(user)
            tokens.append(token)
        db.session.commit()
    server = create_server(app, host="127.0.0.1", port=0, threads=8)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.effective_port}/api/predict"
    images = [png_bytes(np.full((64, 64, 3), 10 * i, np.uint8)) for i in range(20)]
    results: list = [None] * 20
    start = threading.Barrier(20)

    def send(i):
        start.wait()
        results[i] = requests.post(url, files={"image": ("same-name.png", images[i], "image/png")},
                                   headers={"Authorization": f"Bearer {tokens[i]}"}, timeout=120)

    workers = [threading.Thread(target=send, args=(i,)) for i in range(20)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(180)
    finally:
        server.close()
    assert [r.status_code for r in results] == [201] * 20, [r.text for r in results if r.status_code != 201]
    assert len({r.json()["id"] for r in results}) == 20
    with app.app_context():
        records = db.session.scalars(db.select(Prediction)).all()
        assert len(records) == 20 and len({r.file_id for r in records}) == 20
        assert {r.owner.username for r in records} == {f"user{i}" for i in range(20)}
    assert len(stored_files(app)) == 60


# --- dashboard, admin, API, account -----------------------------------------------------------------


def test_dashboard_charts_are_pngs_of_the_users_own_predictions(app):
    client = user_client(app)
    empty = client.get("/dashboard/counts.png")
    assert empty.status_code == 200 and empty.mimetype == "image/png"
    upload(client)
    for chart in ("counts", "timeline"):
        response = client.get(f"/dashboard/{chart}.png")
        assert response.status_code == 200 and response.mimetype == "image/png"
        with Image.open(io.BytesIO(response.data)) as png:
            assert png.size == (700, 360)
    assert client.get("/dashboard/other.png").status_code == 404
    assert "1" in client.get("/dashboard").get_data(as_text=True)


def test_admin_filters_deletes_and_manages_users_with_every_action_logged(app):
    alice, bob = user_client(app, "alice"), user_client(app, "bob")
    upload(alice)
    upload(bob, png_bytes(np.full((50, 50, 3), 128, np.uint8)), name="bob.png")
    with app.app_context():
        create_admin("boss", "boss password 1")
        records = {r.owner.username: r for r in db.session.scalars(db.select(Prediction))}
        alice_id, bob_id, bob_label = records["alice"].id, records["bob"].id, records["bob"].label
        bob_user = records["bob"].user_id
        # an old record of alice's, for the date filter
        records["alice"].created_at = records["alice"].created_at - timedelta(days=40)
        db.session.commit()
    admin = app.test_client()
    login(admin, "boss", "boss password 1")

    def rows(**query):
        page = admin.get("/admin/", query_string=query)
        assert page.status_code == 200
        return set(map(int, re.findall(r'href="/result/(\d+)"', page.get_data(as_text=True))))

    assert rows() == {alice_id, bob_id}
    assert rows(user="bob") == {bob_id}
    assert rows(emotion=bob_label) >= {bob_id}
    with app.app_context():
        bob_day = db.session.get(Prediction, bob_id).created_at.date()
    assert rows(since=bob_day.isoformat()) == {bob_id}
    assert rows(until=(bob_day - timedelta(days=10)).isoformat()) == {alice_id}
    assert admin.get("/admin/", query_string={"since": "not-a-date"}).status_code == 400
    assert admin.get(f"/result/{bob_id}").status_code == 200  # admins see every record ...
    assert admin.get(f"/image/{bob_id}/thumb").status_code == 200  # ... and photo

    token = csrf(admin, "/admin/")
    assert admin.post(f"/admin/predictions/{bob_id}/delete", data={"csrf_token": token}).status_code == 303
    assert prediction_ids(app) == [alice_id] and len(stored_files(app)) == 3
    assert admin.post(f"/admin/users/{bob_user}/disable", data={"csrf_token": token}).status_code == 303
    assert bob.get("/").status_code == 302  # a disabled account's session ends
    assert login(app.test_client(), "bob").status_code == 401
    assert admin.post(f"/admin/users/{bob_user}/promote", data={"csrf_token": token}).status_code == 303
    assert admin.post(f"/admin/users/{bob_user}/explode", data={"csrf_token": token}).status_code == 404
    with app.app_context():
        bob_row = db.session.get(User, bob_user)
        assert not bob_row.active and bob_row.role == "admin"
        actions = [(a.admin_name, a.action) for a in db.session.scalars(db.select(AdminAction).order_by(AdminAction.id))]
    assert actions == [("boss", "delete prediction"), ("boss", "disable user"), ("boss", "promote user")]
    assert "delete prediction" in admin.get("/admin/log").get_data(as_text=True)
    assert alice.get("/admin/log").status_code == 403


def test_api_predicts_with_a_token_or_a_session_with_its_csrf_token(app):
    client = user_client(app)
    page = client.post("/account/token", data={"csrf_token": csrf(client, "/account")}).get_data(as_text=True)
    token = re.search(r'<code id="api-token">([^<]+)</code>', page).group(1)
    anonymous = app.test_client()
    response = anonymous.post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")},
                              headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 201
    body = response.get_json()
    assert body["label"] in EMOTIONS and abs(sum(body["probabilities"].values()) - 1) < 1e-5
    assert body["face_box"] and "caption" not in body
    bad = anonymous.post("/api/predict", data={"image": (io.BytesIO(b"x"), "g.jpg")},
                         headers={"Authorization": "Bearer wrong"})
    assert bad.status_code == 401 and "error" in bad.get_json()
    not_image = anonymous.post("/api/predict", data={"image": (io.BytesIO(b"hello"), "a.txt")},
                               headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"})
    assert not_image.status_code == 400 and "a.txt is not an image" in not_image.get_json()["error"]
    missing = anonymous.post("/api/predict", data={}, headers={"Authorization": f"Bearer {token}"})
    assert missing.status_code == 400
    # a logged-in browser session needs its CSRF token in a header
    no_csrf = client.post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")})
    assert no_csrf.status_code == 400
    with_csrf = client.post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")},
                            headers={"X-CSRFToken": csrf(client, "/")})
    assert with_csrf.status_code == 201
    assert count(app) == 2
    # a new token replaces the old one; the bearer token does not log in the web pages
    client.post("/account/token", data={"csrf_token": csrf(client, "/account")})
    assert anonymous.post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")},
                          headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert anonymous.get("/history", headers={"Authorization": f"Bearer {token}"}).status_code == 302


def test_deleting_an_account_removes_its_photos_and_records_only(app):
    alice, bob = user_client(app, "alice"), user_client(app, "bob")
    upload(alice)
    upload(bob)
    token = csrf(alice, "/account")
    assert alice.post("/account/delete", data={"csrf_token": token, "password": "wrong"}).status_code == 303
    assert count(app, User) == 2
    assert alice.post("/account/delete", data={"csrf_token": token, "password": PASSWORD}).status_code == 302
    assert count(app, User) == 1 and count(app) == 1 and len(stored_files(app)) == 3
    assert login(app.test_client(), "alice").status_code == 401


def test_a_deleted_accounts_cookie_does_not_open_the_next_account_given_its_id(app):
    """SQLite gives a new row the highest id again once that row is deleted: a cookie kept from
    a deleted account must not log in the account registered after it."""
    mallory = user_client(app, "mallory")
    kept = mallory.get_cookie("session").value
    assert mallory.post("/account/delete", data={"csrf_token": csrf(mallory, "/account"),
                                                 "password": PASSWORD}).status_code == 302
    victim = user_client(app, "victim")
    upload(victim)
    with app.app_context():
        assert db.session.execute(db.select(User.id)).scalar_one() == 1  # mallory's id, reused
    replay = app.test_client()
    replay.set_cookie("session", kept)
    assert replay.get("/history").status_code == 302
    assert replay.get(f"/image/{prediction_ids(app)[0]}/original").status_code == 302
    assert victim.get("/history").status_code == 200  # the victim's own session still works


def test_a_wrong_method_is_405_with_its_allow_header(app):
    client = app.test_client()
    page = client.put("/login")
    assert page.status_code == 405 and set(page.headers["Allow"].split(", ")) >= {"GET", "POST"}
    assert page.headers["Content-Type"].startswith("text/html")
    api = client.get("/api/predict")
    assert api.status_code == 405 and "POST" in api.headers["Allow"] and api.is_json


def test_a_cookie_copied_before_logout_stops_working_at_logout(app):
    """A signed session cookie alone would stay valid after logout until it expires: whoever copied
    it (a shared computer, a stolen cookie) would still be logged in. Logout ends every session of
    the account; logging in again works."""
    client = user_client(app)
    copied = client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/history").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf(client, "/account")}).status_code == 302
    assert thief.get("/history").status_code == 302                  # back to the login page
    assert login(client).status_code == 302 and client.get("/history").status_code == 200


def test_a_database_from_before_the_session_epoch_gets_its_column(tmp_path):
    """An instance database made by an earlier version (no users.session_epoch column) is brought
    up to date when the site starts, keeping its users."""
    import sqlite3

    instance = tmp_path / "instance"
    instance.mkdir()
    with sqlite3.connect(instance / DATABASE_FILE) as old:
        old.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(40) UNIQUE, "
                    "password_hash VARCHAR(255), role VARCHAR(10), active BOOLEAN, created_at DATETIME, "
                    "api_token_sha256 VARCHAR(64) UNIQUE)")
        old.execute("INSERT INTO users VALUES (1, 'old', 'x', 'user', 1, '2026-01-01 00:00:00', NULL)")
    app = create_app({"INSTANCE_PATH": str(instance), "TESTING": True})
    with app.app_context():
        user = db.session.execute(db.select(User)).scalar_one()
        assert user.username == "old" and user.session_epoch == 0


def test_ids_and_pages_past_sqlite_integers_are_404_not_500(app):
    client = user_client(app)
    with app.app_context():
        create_admin("boss", "boss password 1")
    admin = app.test_client()
    login(admin, "boss", "boss password 1")
    huge = 2**64
    for path in (f"/result/{huge}", f"/image/{huge}/thumb", f"/history?page={huge}"):
        assert client.get(path).status_code == 404, path
    assert client.post(f"/history/{huge}/delete", data={"csrf_token": csrf(client, "/")}).status_code == 404
    token = csrf(admin, "/account")
    for path in (f"/admin/predictions/{huge}/delete", f"/admin/users/{huge}/disable"):
        assert admin.post(path, data={"csrf_token": token}).status_code == 404, path
    for path in (f"/admin/?page={huge}", f"/admin/log?page={huge}"):
        assert admin.get(path).status_code == 404, path
    assert admin.get("/admin/", query_string={"until": "9999-12-31"}).status_code == 200  # the last day there is


def test_the_password_check_of_account_deletion_is_rate_limited(tmp_path, bundle):
    app = make_app(tmp_path, bundle, RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3 per minute")
    limiter.reset()
    try:
        client = user_client(app)  # one login of the 3 (counted per address, this one per user)
        token = csrf(client, "/account")
        codes = [client.post("/account/delete", data={"csrf_token": token, "password": f"guess {i}"}).status_code
                 for i in range(4)]
        assert codes == [303, 303, 303, 429]
        assert client.post("/account/delete", data={"csrf_token": token, "password": PASSWORD}).status_code == 429
        assert count(app, User) == 1
    finally:
        limiter.reset()


def test_hostile_api_uploads_are_refused_or_reduced_to_pixels(app):
    client = user_client(app)
    page = client.post("/account/token", data={"csrf_token": csrf(client, "/account")}).get_data(as_text=True)
    headers = {"Authorization": "Bearer " + re.search(r'<code id="api-token">([^<]+)</code>', page).group(1),
               "Accept-Language": "en"}
    anonymous = app.test_client()

    def send(*files, field="image", **extra):
        return anonymous.post("/api/predict", data={field: [(io.BytesIO(d), n) for d, n in files]},
                              headers={**headers, **extra}, content_type="multipart/form-data")

    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    assert "x.jpg is not an image" in send((svg, "x.jpg")).get_json()["error"]
    assert send((svg, "x.svg")).status_code == 400
    assert "is not an image" in send((b"hello", "a.txt"), (GRACE.read_bytes(), "g.jpg")).get_json()["error"]
    assert send((GRACE.read_bytes(), "g.jpg"), field="photo").status_code == 400
    assert anonymous.post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")},
                          query_string={"access_token": headers["Authorization"][7:]}).status_code == 401
    frames = [Image.new("RGB", (40, 40), (60 * i, 0, 0)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "WEBP", save_all=True, append_images=frames[1:], lossless=True)
    assert send((out.getvalue(), "anim.webp")).status_code == 201  # its first frame, re-encoded
    original = next(p for p in stored_files(app) if p.name.count(".") == 1)
    with Image.open(original) as stored:
        assert stored.format == "WEBP" and getattr(stored, "n_frames", 1) == 1
    assert count(app) == 1


def test_retention_purges_old_photos_and_keeps_the_records(app, tmp_path):
    client = user_client(app)
    upload(client)
    upload(client)
    with app.app_context():
        old = db.session.scalars(db.select(Prediction).order_by(Prediction.id)).first()
        old.created_at = old.created_at - timedelta(days=31)
        db.session.commit()
        old_id = old.id
        assert purge_uploads(30) == 1
        assert db.session.get(Prediction, old_id).file_id is None
    assert count(app) == 2 and len(stored_files(app)) == 3
    page = client.get(f"/result/{old_id}").get_data(as_text=True)
    assert "보관 기간이 지나 사진을 삭제했습니다" in page
    result = CliRunner().invoke(main, ["web", "purge", "--days", "30", "--instance", app.instance_path])
    assert result.exit_code == 0 and "0 prediction(s)" in result.output
    result = CliRunner().invoke(main, ["web", "purge", "--instance", app.instance_path])
    assert result.exit_code == 2 and "--days" in result.output


def test_login_and_prediction_are_rate_limited(tmp_path, bundle):
    app = make_app(tmp_path, bundle, RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="3 per minute",
                   RATELIMIT_PREDICT="2 per minute")
    limiter.reset()  # after make_app: before any app turned the limits on, the limiter has no storage
    try:
        client = user_client(app, "bob")  # one login of the 3 allowed
        small = png_bytes(np.full((40, 40, 3), 100, np.uint8))
        assert [upload(client, small, name="a.png").status_code for _ in range(3)] == [303, 303, 429]
        assert count(app) == 2
        other = app.test_client()
        codes = [login(other, password="wrong password").status_code for _ in range(3)]
        assert codes == [401, 401, 429]
        assert login(other).status_code == 429  # the right password too, until the window passes
    finally:
        limiter.reset()


def test_behind_a_trusted_proxy_each_client_has_its_own_limit(tmp_path, bundle):
    """Behind a reverse proxy every request comes from the proxy's address: without trusting it,
    one visitor's failed logins would lock everyone out. With FER_TRUSTED_PROXIES=1 the address the
    proxy passes on counts; without it, that header is ignored (a client cannot pick its address)."""
    from fer_utils.errors import ConfigError
    from fer_utils.web import settings

    def attempts(client, address, n):
        client.environ_base["HTTP_X_FORWARDED_FOR"] = address     # as the proxy would set it
        return [login(client, password="wrong password").status_code for _ in range(n)]

    for proxies, second in ((1, [401]), (0, [429])):
        app = make_app(tmp_path / str(proxies), bundle, RATELIMIT_ENABLED=True, RATELIMIT_LOGIN="2 per minute",
                       TRUSTED_PROXIES=proxies)
        limiter.reset()
        try:
            assert attempts(app.test_client(), "203.0.113.7", 3) == [401, 401, 429]
            assert attempts(app.test_client(), "198.51.100.9", 1) == second
        finally:
            limiter.reset()
    with pytest.raises(ConfigError, match="FER_TRUSTED_PROXIES: expected 0 to 5"):
        settings.from_environment({"FER_TRUSTED_PROXIES": "9"})


def test_korean_by_default_english_on_request(app):
    client = app.test_client()
    assert "로그인" in client.get("/login").get_data(as_text=True)
    assert client.get("/lang/en?next=/register").headers["Location"] == "/register"
    page = client.get("/login").get_data(as_text=True)
    assert "Log in" in page and "로그인" not in page.replace('한국어', '')
    assert client.get("/lang/xx").status_code == 302
    assert client.get("/lang/ko?next=//evil.example").headers["Location"] == "/"


def test_every_message_of_the_site_has_a_korean_translation():
    """Extracts every translatable string (code and templates) as pybabel would, and checks the
    Korean catalogue translates each, with the same %(name)s fields."""
    from babel.messages.extract import extract_from_dir, extract_python
    from babel.messages.pofile import read_po

    import fer_utils.web as web

    root = Path(web.__file__).parent
    method_map = [("**.py", "python"), ("**/templates/**.html", "jinja2")]
    keywords = {"_": None, "gettext": None, "_l": None, "_n": None, "lazy_gettext": None, "ngettext": (1, 2)}
    found = {message for *_, message, _, _ in extract_from_dir(str(root), method_map, keywords=keywords)}
    with (root.parent / "inference" / "uploads.py").open("rb") as handle:  # the upload checks the site shares
        found |= {message for _, _, message, _ in extract_python(handle, keywords, [], {})}
    assert len(found) > 80 and any(isinstance(m, tuple) for m in found)
    assert "%(name)s is empty" in found
    with (root / "translations/ko/LC_MESSAGES/messages.po").open("rb") as handle:
        catalog = read_po(handle, locale="ko")
    fields = re.compile(r"%\((\w+)\)")

    def korean(message):
        entry = catalog.get(message[0] if isinstance(message, tuple) else message)
        if entry is None:
            return None
        texts = entry.string if isinstance(entry.string, tuple) else (entry.string,)
        return texts if all(texts) else None

    missing = sorted(map(str, (m for m in found if korean(m) is None)))
    assert not missing, f"add Korean for: {missing}"
    for message in found:
        english = message if isinstance(message, tuple) else (message,)
        for text in korean(message):
            assert sorted(set(fields.findall(english[-1]))) == sorted(set(fields.findall(text))), message


# --- command line -----------------------------------------------------------------------------------


def test_cli_init_db_and_create_admin(tmp_path):
    runner = CliRunner()
    instance = str(tmp_path / "inst")
    assert runner.invoke(main, ["web", "init-db", "--instance", instance]).exit_code == 0
    assert (tmp_path / "inst" / "fer.sqlite3").exists()
    result = runner.invoke(main, ["web", "create-admin", "root", "--password-stdin", "--instance", instance],
                           input="a long password\n")
    assert result.exit_code == 0, result.output
    again = runner.invoke(main, ["web", "create-admin", "root", "--password-stdin", "--instance", instance],
                          input="a long password\n")
    assert again.exit_code == 2 and "--promote" in again.output
    short = runner.invoke(main, ["web", "create-admin", "other", "--password-stdin", "--instance", instance],
                          input="short\n")
    assert short.exit_code == 2 and "at least 8" in short.output


def test_serve_share_says_why_it_cannot_open_a_tunnel():
    from fer_utils.cli.web import share_tunnel
    from fer_utils.errors import ConfigError

    with pytest.raises(ConfigError, match="pyngrok|NGROK_AUTHTOKEN"):
        share_tunnel(5000, env={})


@pytest.mark.parametrize("args", [["--debug", "--host", "0.0.0.0"], ["--debug", "--share"],
                                  ["--no-rate-limit", "--host", "192.168.1.5"], ["--debug", "--host", "example.org"]])
def test_serve_keeps_the_debugger_and_the_unlimited_site_on_this_machine(args, tmp_path):
    """Werkzeug's debugger runs any code typed into its page: never on a network address or a tunnel.
    Refused before the app is even built (the instance folder is not created)."""
    from click.testing import CliRunner

    from fer_utils.cli import main

    result = CliRunner().invoke(main, ["serve", "--instance", str(tmp_path / "i"), *args])
    assert result.exit_code == 2 and "is for this machine only" in result.output
    assert not (tmp_path / "i").exists()


def test_loopback_addresses():
    from fer_utils.cli.web import loopback

    assert all(map(loopback, ["127.0.0.1", "127.8.0.1", "localhost", "::1", "[::1]"]))
    assert not any(map(loopback, ["0.0.0.0", "::", "10.0.0.1", "example.org", ""]))


def test_a_missing_model_is_explained_on_the_page(tmp_path):
    app = create_app({"INSTANCE_PATH": str(tmp_path / "i"), "FER_BUNDLE": str(tmp_path / "nothing"),
                      "TESTING": True})
    client = user_client(app)
    page = client.get("/").get_data(as_text=True)
    assert "bundle manifest missing" in page and 'type="file"' not in page
    assert upload(client).status_code == 503 and count(app) == 0


def test_a_fused_bundle_shows_its_caption_and_vlm_vote(tmp_path, bundle):
    """A fused bundle (the real tiny BLIP-2 and tiny CLIP built in code, a gated head): the result
    page and the API give the caption the head read and the emotion it names."""
    from fer_utils.inference.fused_bundle import captioner_record, encoder_record, save_fused_bundle
    from fer_utils.models.heads.registry import create_head
    from fer_utils.vlm import GenerationSettings, make_captioner, make_encoder
    from fer_utils.vlm.prompts import PROMPTS

    captioner = make_captioner("tiny_blip2", seed=0, device="cpu")
    encoder = make_encoder("tiny_clip", device="cpu")
    torch.manual_seed(0)
    cnn_dim = create_model("resnet18").feature_dim
    fused = save_fused_bundle(
        tmp_path / "fused", cnn_bundle=bundle, captioner=captioner_record("tiny_blip2", captioner, seed=0),
        prompt=PROMPTS["original"], settings=GenerationSettings(max_new_tokens=8, batch_size=2), postprocess=True,
        encoder=encoder_record("tiny_clip", encoder), head_name="gated",
        head=create_head("gated", cnn_dim, encoder.dim).eval(), cnn_dim=cnn_dim, text_dim=encoder.dim,
        fusion_norm="modality_l2", metrics={"val_macro_f1": 0.5}, data=DATA)
    app = make_app(tmp_path, fused)
    client = user_client(app)
    page = client.get(upload(client).headers["Location"]).get_data(as_text=True)
    with app.app_context():
        record = db.session.execute(db.select(Prediction)).scalar_one()
        assert record.caption is not None
        assert record.vote is None or record.vote in EMOTIONS
    assert 'id="caption"' in page and 'id="vote"' in page
    assert f">{record.caption}</blockquote>" in page.replace("&#39;", "'").replace("&quot;", '"')
    assert "fused:gated on resnet18" in client.get("/").get_data(as_text=True)
    token_page = client.post("/account/token", data={"csrf_token": csrf(client, "/account")}).get_data(as_text=True)
    token = re.search(r'<code id="api-token">([^<]+)</code>', token_page).group(1)
    body = app.test_client().post("/api/predict", data={"image": (io.BytesIO(GRACE.read_bytes()), "g.jpg")},
                                  headers={"Authorization": f"Bearer {token}"}).get_json()
    assert "caption" in body and "vote" in body


def test_settings_from_the_environment_are_checked(monkeypatch, tmp_path, bundle):
    from fer_utils.errors import ConfigError

    monkeypatch.setenv("FER_SECURE_COOKIES", "1")
    monkeypatch.setenv("FER_RETENTION_DAYS", "30")
    app = make_app(tmp_path, bundle)
    assert app.config["SESSION_COOKIE_SECURE"] is True and app.config["RETENTION_DAYS"] == 30
    monkeypatch.setenv("FER_RETENTION_DAYS", "soon")
    with pytest.raises(ConfigError, match="FER_RETENTION_DAYS"):
        make_app(tmp_path, bundle)
    monkeypatch.setenv("FER_RETENTION_DAYS", "30")
    monkeypatch.setenv("FER_SECURE_COOKIES", "maybe")
    with pytest.raises(ConfigError, match="FER_SECURE_COOKIES"):
        make_app(tmp_path, bundle)


def test_client_file_names_are_shown_never_used_as_paths(app):
    from fer_utils.web.images import display_name

    assert display_name("../../etc/passwd.jpg") == "passwd.jpg"
    assert display_name("C:\\Users\\x\\photo.png") == "photo.png"
    assert display_name("a\x00b\nc.jpg") == "abc.jpg"
    assert display_name("") == "upload" and len(display_name("x" * 500)) == 120
    client = user_client(app)
    assert upload(client, name="../../../secret_key").status_code == 303
    with app.app_context():
        record = db.session.execute(db.select(Prediction)).scalar_one()
        assert record.original_name == "secret_key" and record.file_id not in ("secret_key",)
    assert (Path(app.instance_path) / "secret_key").read_text().strip() == app.config["SECRET_KEY"]


def test_the_language_choice_survives_login_and_logout(app):
    client = app.test_client()
    register(client)
    client.get("/lang/en")
    login(client)
    assert "Log out" in client.get("/").get_data(as_text=True)
    client.post("/logout", data={"csrf_token": csrf(client, "/account")})
    assert "Log in" in client.get("/login").get_data(as_text=True)
