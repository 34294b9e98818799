"""The site's tables: users, predictions, and the log of admin actions (Flask-SQLAlchemy, SQLite).

Times are stored as UTC and come back as timezone-aware UTC datetimes. A prediction's photo files
live in the instance's uploads folder under ``file_id`` (a random hex id: two uploads of
``photo.jpg`` never overwrite each other); ``file_id`` is None once the photo was purged.
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

from flask_login import UserMixin
from sqlalchemy import DateTime, ForeignKey, String, Text, TypeDecorator
from sqlalchemy.orm import Mapped, mapped_column, relationship
from werkzeug.security import check_password_hash, generate_password_hash

from fer_utils.web.extensions import db

ROLES = ("user", "admin")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator):
    """A datetime stored as naive UTC (SQLite keeps no zone) and read back as aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware (UTC) datetime")
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        return None if value is None else value.replace(tzinfo=timezone.utc)


class User(UserMixin, db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(40), unique=True, index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(10), default="user")
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    api_token_sha256: Mapped[str | None] = mapped_column(String(64), unique=True, index=True, default=None)
    session_epoch: Mapped[int] = mapped_column(default=0, server_default="0")
    """Raised at each logout: every session cookie issued before it stops working (a copied cookie
    too, which a signed cookie alone would keep valid until it expires)."""

    predictions = relationship("Prediction", back_populates="owner", cascade="all, delete-orphan",
                               passive_deletes=True)

    def set_password(self, password: str) -> None:
        self.password_hash = generate_password_hash(password)

    def check_password(self, password: str) -> bool:
        return check_password_hash(self.password_hash, password)

    def get_id(self) -> str:
        """What the session cookie keeps: the id, the account's creation time and its session
        epoch. SQLite gives a new account the id of a deleted one (the highest id is reused), so a
        cookie of a deleted account must not open the account that got its id; and a cookie from
        before a logout must not open the account after it."""
        return f"{self.id}.{self.created_at:%Y%m%d%H%M%S%f}.{self.session_epoch or 0}"

    @property
    def is_active(self) -> bool:  # Flask-Login refuses to log in a disabled account
        return bool(self.active)

    @property
    def is_admin(self) -> bool:
        """Admin rights come from the role only (never from the name)."""
        return self.role == "admin"

    @staticmethod
    def token_digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Prediction(db.Model):
    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    file_id: Mapped[str | None] = mapped_column(String(32), unique=True, default=None)
    file_ext: Mapped[str] = mapped_column(String(8))
    original_name: Mapped[str] = mapped_column(String(255))
    image_sha256: Mapped[str] = mapped_column(String(64), index=True)
    label: Mapped[str] = mapped_column(String(20), index=True)
    probabilities_json: Mapped[str] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text, default=None)
    vote: Mapped[str | None] = mapped_column(String(20), default=None)
    face_box_json: Mapped[str | None] = mapped_column(String(80), default=None)
    bundle_id: Mapped[str] = mapped_column(String(255))
    model_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    owner = relationship("User", back_populates="predictions")

    @property
    def probabilities(self) -> dict[str, float]:
        return json.loads(self.probabilities_json)

    @property
    def model(self) -> dict:
        """What made the prediction: ``{"model", "data", "synthetic"}`` (the bundle's data record)."""
        return json.loads(self.model_json or "{}")

    @property
    def face_box(self) -> list[int] | None:
        return None if self.face_box_json is None else json.loads(self.face_box_json)


class AdminAction(db.Model):
    """One admin action (delete a record, disable or promote a user, …), kept after its target is gone."""

    __tablename__ = "admin_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    admin_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), default=None)
    admin_name: Mapped[str] = mapped_column(String(40))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
