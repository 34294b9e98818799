"""The site's settings: defaults, the instance folder, and the secret key.

``create_app(config)`` starts from :data:`DEFAULTS`, then the environment (:data:`ENVIRONMENT`:
``FER_SECRET_KEY``, ``FER_WEB_BUNDLE``, ``FER_RETENTION_DAYS``, ``FER_RATELIMIT_STORAGE_URI``,
``FER_SECURE_COOKIES``, ``FER_TRUSTED_PROXIES``), then ``config``. The secret key is never written in
code: it comes from ``FER_SECRET_KEY`` or is generated once into ``<instance>/secret_key``
(mode 0600) and read from there on every start, so sessions survive a restart.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from fer_utils.cache import atomic_write
from fer_utils.errors import ConfigError
from fer_utils.inference.uploads import MAX_IMAGE_PIXELS

SECRET_FILE = "secret_key"
DATABASE_FILE = "fer.sqlite3"
UPLOADS = "uploads"

DEFAULTS: dict = {
    # Uploads: the request size limit (413 beyond it) and the decoded-size limit (a decompression
    # bomb is a small file that decodes to a huge image: refused before its pixels are decoded).
    "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
    "MAX_IMAGE_PIXELS": MAX_IMAGE_PIXELS,
    # The model: a bundle folder, or None to serve the best validation macro F1 among the bundles
    # trained on FER_DATA (default: the project's synthetic data set), optionally of one kind.
    "FER_BUNDLE": None,
    "FER_DATA": None,
    "FER_BUNDLE_KIND": None,
    "FER_DEVICE": "cpu",
    "FER_CROP_FACE": True,
    # Rate limits (Flask-Limiter syntax); RATELIMIT_ENABLED=False turns them off (benchmarks).
    "RATELIMIT_ENABLED": True,
    "RATELIMIT_STORAGE_URI": "memory://",
    "RATELIMIT_HEADERS_ENABLED": True,
    "RATELIMIT_LOGIN": "10 per minute",
    "RATELIMIT_REGISTER": "5 per minute",
    "RATELIMIT_PREDICT": "30 per minute",
    # Cookies: HttpOnly and SameSite always; Secure when served over HTTPS (set SESSION_COOKIE_SECURE).
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "REMEMBER_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": 3600,
    "BABEL_DEFAULT_LOCALE": "ko",
    "LANGUAGES": ("ko", "en"),
    "HISTORY_PER_PAGE": 12,
    "ADMIN_PER_PAGE": 25,
    # Privacy: uploads older than this many days are purged by `fer web purge` (None: kept).
    "RETENTION_DAYS": None,
    # Reverse proxies in front of the site whose X-Forwarded-For / -Proto it trusts (Werkzeug's
    # ProxyFix): 0 trusts none, so a client cannot spoof its address; behind one proxy set 1, or
    # every visitor has the proxy's address and the per-address rate limits become one for all.
    "TRUSTED_PROXIES": 0,
}

ENVIRONMENT = {"FER_SECRET_KEY": "SECRET_KEY", "FER_WEB_BUNDLE": "FER_BUNDLE", "FER_RETENTION_DAYS": "RETENTION_DAYS",
               "FER_RATELIMIT_STORAGE_URI": "RATELIMIT_STORAGE_URI", "FER_SECURE_COOKIES": "SESSION_COOKIE_SECURE",
               "FER_TRUSTED_PROXIES": "TRUSTED_PROXIES"}


def from_environment(env=None) -> dict:
    """The settings the environment gives (see :data:`ENVIRONMENT`)."""
    env = os.environ if env is None else env
    found = {key: env[name] for name, key in ENVIRONMENT.items() if env.get(name)}
    if "RETENTION_DAYS" in found:
        found["RETENTION_DAYS"] = retention_days(found["RETENTION_DAYS"], "FER_RETENTION_DAYS")
    if "SESSION_COOKIE_SECURE" in found:
        value = found["SESSION_COOKIE_SECURE"].strip().lower()
        if value not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"FER_SECURE_COOKIES: expected 1/0 (true/false), got {value!r}")
        found["SESSION_COOKIE_SECURE"] = found["REMEMBER_COOKIE_SECURE"] = value in ("1", "true", "yes")
    if "TRUSTED_PROXIES" in found:
        found["TRUSTED_PROXIES"] = trusted_proxies(found["TRUSTED_PROXIES"], "FER_TRUSTED_PROXIES")
    return found


def trusted_proxies(value, name: str = "TRUSTED_PROXIES") -> int:
    """``value`` as a number of trusted reverse proxies (0 to 5); ConfigError naming ``name``."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected the number of reverse proxies in front of the site (0-5), "
                          f"got {value!r}") from None
    if not 0 <= count <= 5:
        raise ConfigError(f"{name}: expected 0 to 5 reverse proxies, got {count}")
    return count


def retention_days(value, name: str = "RETENTION_DAYS") -> int | None:
    """``value`` as a positive number of days (None: keep uploads); ConfigError naming ``name``."""
    if value is None or value == "":
        return None
    try:
        days = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected a whole number of days, got {value!r}") from None
    if days < 1:
        raise ConfigError(f"{name}: expected at least 1 day, got {days}")
    return days


def secret_key(instance: Path) -> str:
    """The key in ``<instance>/secret_key``, generated (random, 0600) on first use."""
    file = instance / SECRET_FILE
    if not file.exists():
        instance.mkdir(parents=True, exist_ok=True)
        atomic_write(file, secrets.token_hex(32))
        file.chmod(0o600)
    key = file.read_text(encoding="utf-8").strip()
    if len(key) < 32:
        raise ConfigError(f"{file}: the secret key is shorter than 32 characters; delete the file to "
                          "generate a new one (everyone is logged out) or set FER_SECRET_KEY")
    return key


def instance_folder(config: dict) -> Path:
    """``config["INSTANCE_PATH"]``, else the project's instance folder (``FER_INSTANCE_DIR``)."""
    if config.get("INSTANCE_PATH"):
        return Path(config["INSTANCE_PATH"]).resolve()
    from fer_utils.paths import project_paths

    return project_paths().instance


def uploads_folder() -> Path:
    """The current app's uploads folder."""
    from flask import current_app

    return Path(current_app.config["UPLOAD_FOLDER"])
