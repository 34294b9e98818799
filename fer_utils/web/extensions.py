"""The Flask extensions of the site, created unbound here and bound by :func:`fer_utils.web.create_app`."""
from __future__ import annotations

from flask import request
from flask_babel import Babel
from flask_login import LoginManager, current_user
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


def user_or_address() -> str:
    """Rate-limit key: the logged-in user (so one account cannot spread its load over addresses),
    else the client's address."""
    if current_user and current_user.is_authenticated:
        return f"user:{current_user.id}"
    return f"addr:{get_remote_address() or request.remote_addr or '-'}"


db = SQLAlchemy(model_class=Base)
login_manager = LoginManager()
csrf = CSRFProtect()
limiter = Limiter(key_func=get_remote_address)
babel = Babel()
