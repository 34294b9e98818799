"""What the ``fer web`` commands do to the database: create an admin, purge old uploads."""
from __future__ import annotations

import unicodedata
from datetime import timedelta

from fer_utils.errors import ConfigError
from fer_utils.web.settings import uploads_folder
from fer_utils.web.extensions import db
from fer_utils.web.forms import PASSWORD_MIN, USERNAME_MAX, USERNAME_MIN
from fer_utils.web.images import remove
from fer_utils.web.models import Prediction, User, utcnow


def create_admin(username: str, password: str | None, promote: bool = False) -> User:
    """A new admin account, or (``promote``) admin rights for an existing one. ConfigError when
    the name is taken (without ``promote``) or the name/password break the site's rules."""
    username = unicodedata.normalize("NFC", username)  # as the site's forms spell every name
    user = db.session.execute(db.select(User).filter_by(username=username)).scalar()
    if user is not None:
        if not promote:
            raise ConfigError(f"user {username!r} exists; pass --promote to give it admin rights")
        user.role, user.active = "admin", True
        if password:
            _check_password(password)
            user.set_password(password)
            user.session_epoch = (user.session_epoch or 0) + 1   # a new password ends every old session
    else:
        if not USERNAME_MIN <= len(username) <= USERNAME_MAX or username != username.strip() \
                or not username.isprintable():
            raise ConfigError(f"username {username!r}: {USERNAME_MIN} to {USERNAME_MAX} printable characters, "
                              "no spaces at either end")
        if not password:
            raise ConfigError("a new admin needs a password")
        _check_password(password)
        user = User(username=username, role="admin", active=True)
        user.set_password(password)
        db.session.add(user)
    db.session.commit()
    return user


def _check_password(password: str) -> None:
    if len(password) < PASSWORD_MIN:
        raise ConfigError(f"password: at least {PASSWORD_MIN} characters")


def purge_uploads(days: int) -> int:
    """Delete the photo files of predictions older than ``days`` days; the records stay (label,
    probabilities, time) with no photo. Returns how many uploads were purged."""
    cutoff = utcnow() - timedelta(days=days)
    old = db.session.execute(db.select(Prediction).where(Prediction.created_at < cutoff,
                                                         Prediction.file_id.is_not(None))).scalars().all()
    files = [(record.file_id, record.file_ext) for record in old]
    for record in old:
        record.file_id = None
    db.session.commit()
    folder = uploads_folder()
    for file_id, ext in files:
        remove(folder, file_id, ext)
    return len(files)
