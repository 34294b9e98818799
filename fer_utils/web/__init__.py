"""The Flask web site: register, log in, upload a photo, see the predicted emotion; history,
dashboard, admin, a JSON API. Korean (default) and English.

``create_app(config)`` is the application factory (flaskr's pattern): blueprints ``auth``,
``predict``, ``history``, ``admin``, ``api``; an instance folder with the SQLite database (WAL)
and the uploads; the model served through :class:`~fer_utils.web.service.ModelService`.
Serve it with ``fer serve`` (waitress); see the README for gunicorn.
"""
from __future__ import annotations

from flask import Flask, g, jsonify, render_template, request
from flask_babel import gettext as _
from sqlalchemy import event
from werkzeug.exceptions import HTTPException
from werkzeug.routing import IntegerConverter

from fer_utils.web import settings
from fer_utils.web.extensions import babel, csrf, db, limiter, login_manager

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


def create_app(config: dict | None = None) -> Flask:
    """The site, configured by :data:`settings.DEFAULTS`, the environment, then ``config``
    (e.g. ``{"INSTANCE_PATH": tmp, "FER_BUNDLE": folder, "TESTING": True}``)."""
    config = dict(config or {})
    values = {**settings.DEFAULTS, **settings.from_environment(), **config}
    values["RETENTION_DAYS"] = settings.retention_days(values.get("RETENTION_DAYS"))
    values["TRUSTED_PROXIES"] = settings.trusted_proxies(values.get("TRUSTED_PROXIES", 0))
    instance = settings.instance_folder(values)
    instance.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__, instance_path=str(instance), instance_relative_config=True)
    app.url_map.converters["int"] = RowId  # before any route: ids past SQLite's range are a 404
    app.config.update(values)
    if values["TRUSTED_PROXIES"]:   # the client's address and scheme as the trusted proxies pass them on
        from werkzeug.middleware.proxy_fix import ProxyFix
        proxies = values["TRUSTED_PROXIES"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)
    app.config.setdefault("SQLALCHEMY_DATABASE_URI", f"sqlite:///{instance / settings.DATABASE_FILE}")
    app.config.setdefault("UPLOAD_FOLDER", str(instance / settings.UPLOADS))
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = settings.secret_key(instance)

    from fer_utils.web.i18n import compile_catalogues, select_locale
    app.config["BABEL_TRANSLATION_DIRECTORIES"] = str(compile_catalogues(instance / "translations"))

    db.init_app(app)
    csrf.init_app(app)
    limiter.init_app(app)
    babel.init_app(app, locale_selector=select_locale)
    _init_login(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", _sqlite_pragmas)
        db.create_all()
        _add_missing_columns()

    from fer_utils.web.service import ModelService
    app.extensions["fer_model"] = ModelService(app.config)

    from fer_utils.web import admin, api, auth, history, predict
    for module in (auth, predict, history, admin, api):
        app.register_blueprint(module.bp)
    csrf.exempt(api.bp)  # the API checks CSRF itself when a session cookie (not a token) authenticates it

    _init_pages(app)
    return app


class RowId(IntegerConverter):
    """``<int:…>`` up to the largest id SQLite stores (a larger one is a 404, not an OverflowError)."""

    def __init__(self, map, fixed_digits=0, min=None, max=2**63 - 1, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


ADDED_COLUMNS = {"users": {"session_epoch": "INTEGER NOT NULL DEFAULT 0"}}
"""Columns added after the first release: a database made before them gets them when the site
starts (create_all makes missing tables, never missing columns)."""


def _add_missing_columns() -> None:
    from sqlalchemy import inspect, text

    inspector = inspect(db.engine)
    with db.engine.begin() as connection:
        for table, columns in ADDED_COLUMNS.items():
            present = {column["name"] for column in inspector.get_columns(table)}
            for name, ddl in columns.items():
                if name not in present:
                    connection.execute(text(f"ALTER TABLE {table} ADD COLUMN {name} {ddl}"))


def _sqlite_pragmas(connection, _record) -> None:
    """WAL (readers never block the writer), foreign keys on, wait for a lock instead of failing."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _init_login(app: Flask) -> None:
    from fer_utils.web.models import User

    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = None
    login_manager.session_protection = "basic"

    @login_manager.user_loader
    def load_user(session_id: str):
        user_id = session_id.partition(".")[0]
        user = db.session.get(User, int(user_id)) if user_id.isascii() and user_id.isdigit() else None
        if user is None or user.get_id() != session_id:  # a deleted account's cookie, its id reused
            return None
        return user if user.active else None  # a disabled account is logged out

    @login_manager.request_loader
    def load_token_user(req):
        """``Authorization: Bearer <token>`` on the API only (a per-user token, stored hashed)."""
        header = req.headers.get("Authorization", "")
        if req.blueprint != "api" or not header.startswith("Bearer "):
            return None
        token = header[len("Bearer "):].strip()
        if not token:
            return None
        user = db.session.execute(db.select(User).filter_by(api_token_sha256=User.token_digest(token))).scalar()
        if user is None or not user.active:
            return None
        g.token_auth = True
        return user

    @login_manager.unauthorized_handler
    def unauthorized():
        from flask import redirect, url_for

        if request.blueprint == "api":
            return jsonify(error=_("Log in or send an API token (Authorization: Bearer …).")), 401
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))


def _init_pages(app: Flask) -> None:
    from fer_utils.web.comments import label_name

    @app.after_request
    def security_headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.context_processor
    def helpers():
        from flask_babel import get_locale

        lang = str(get_locale() or app.config["BABEL_DEFAULT_LOCALE"])
        return {"lang": lang, "label_name": lambda label: label_name(label, lang),
                "languages": app.config["LANGUAGES"]}

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        messages = {
            400: _("The request was refused (an expired or missing form token?). Reload the page and try again."),
            403: _("You are not allowed to do that."),
            404: _("Nothing here."),
            405: _("That is not how this page is used."),
            413: _("The file is too large: the limit is %(size)s.", size=human_size(app.config["MAX_CONTENT_LENGTH"])),
            429: _("Too many requests: wait a minute and try again."),
        }
        message = messages.get(error.code, error.description or error.name)
        if error.code == 400 and getattr(error, "description", "") and "CSRF" not in error.description:
            message = error.description
        # the error's own headers (Allow on a 405, Retry-After on a 429), not its HTML content type
        headers = [(name, value) for name, value in error.get_headers() if name.lower() != "content-type"]
        if request.path.startswith("/api/"):
            return jsonify(error=message), error.code, headers
        return render_template("errors/error.html", code=error.code, message=message), error.code, headers


def human_size(size: int) -> str:
    """``size`` bytes as people read it: ``8 MB``, ``98 KB``."""
    if size >= 2**20:
        return f"{size / 2**20:.3g} MB"
    return f"{max(1, round(size / 2**10))} KB"


__all__ = ["create_app"]
