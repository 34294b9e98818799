"""Register, log in and out, the account page (API token, delete the account), the language switch."""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import Blueprint, current_app, flash, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy.exc import IntegrityError

from fer_utils.web.settings import uploads_folder
from fer_utils.web.extensions import db, limiter, user_or_address
from fer_utils.web.forms import ConfirmForm, DeleteAccountForm, LoginForm, RegisterForm
from fer_utils.web.images import remove
from fer_utils.web.models import User

bp = Blueprint("auth", __name__)

# Checked against when the username is unknown, so a wrong name and a wrong password take as long.
_DUMMY = User(username="-", password_hash="")


def safe_next(target: str | None) -> str | None:
    """``target`` when it is a path on this site, else None: never an open redirect
    (``//evil.example``, ``https://…``, ``/\\evil``, or a control character)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or any(not ch.isprintable() for ch in target):
        return None
    return target


def _limit(key: str):
    return lambda: current_app.config[key]


@bp.route("/register", methods=["GET", "POST"])
@limiter.limit(_limit("RATELIMIT_REGISTER"), methods=["POST"])
def register():
    if current_user.is_authenticated:
        return redirect(url_for("predict.index"))
    form = RegisterForm()
    if form.validate_on_submit():
        user = User(username=form.username.data, role="user")
        user.set_password(form.password.data)
        db.session.add(user)
        try:
            db.session.commit()
        except IntegrityError:
            db.session.rollback()
            form.username.errors.append(_("This username is taken."))
        else:
            flash(_("Account created. Log in."), "ok")
            return redirect(url_for("auth.login"))
    return render_template("auth/register.html", form=form), 200 if request.method == "GET" else 400


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_limit("RATELIMIT_LOGIN"), methods=["POST"])
def login():
    if current_user.is_authenticated:
        return redirect(url_for("predict.index"))
    form = LoginForm()
    if form.validate_on_submit():
        user = db.session.execute(db.select(User).filter_by(username=form.username.data)).scalar()
        if user is None:
            _DUMMY.password_hash = _DUMMY.password_hash or _dummy_hash()
            _DUMMY.check_password(form.password.data)
            ok = False
        else:
            ok = user.check_password(form.password.data)
        if not ok:
            flash(_("Wrong username or password."), "error")
        elif not user.active:
            flash(_("This account is disabled. Ask an administrator."), "error")
        else:
            _fresh_session()  # no fixation: nothing of the anonymous session but its language
            login_user(user)
            return redirect(safe_next(request.args.get("next")) or url_for("predict.index"))
        return render_template("auth/login.html", form=form), 401
    return render_template("auth/login.html", form=form), 200 if request.method == "GET" else 400


def _dummy_hash() -> str:
    from werkzeug.security import generate_password_hash

    return generate_password_hash(secrets.token_hex(8))


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    if current_user.is_authenticated:       # every cookie issued so far stops working, copies included
        current_user.session_epoch = (current_user.session_epoch or 0) + 1
        db.session.commit()
    logout_user()
    _fresh_session()
    return redirect(url_for("auth.login"))


def _fresh_session() -> None:
    """Clear the session, keeping only the visitor's language choice."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang


@bp.route("/account", methods=["GET"])
@login_required
def account():
    return render_template("auth/account.html", token_form=ConfirmForm(), delete_form=DeleteAccountForm(),
                           token=None)


@bp.route("/account/token", methods=["POST"])
@login_required
def new_token():
    """A new API token, shown once (only its hash is stored); the previous one stops working."""
    form = ConfirmForm()
    if not form.validate_on_submit():
        return redirect(url_for("auth.account"))
    token = secrets.token_urlsafe(32)
    current_user.api_token_sha256 = User.token_digest(token)
    db.session.commit()
    return render_template("auth/account.html", token_form=ConfirmForm(), delete_form=DeleteAccountForm(),
                           token=token)


@bp.route("/account/delete", methods=["POST"])
@login_required
@limiter.limit(_limit("RATELIMIT_LOGIN"), key_func=user_or_address)  # it checks the password, as login does
def delete_account():
    """Delete the account, every prediction and every stored photo of it (password required)."""
    form = DeleteAccountForm()
    if not form.validate_on_submit() or not current_user.check_password(form.password.data):
        flash(_("Wrong password: nothing was deleted."), "error")
        return redirect(url_for("auth.account"), 303)
    user = db.session.get(User, current_user.id)
    files = [(p.file_id, p.file_ext) for p in user.predictions]
    db.session.delete(user)
    db.session.commit()
    folder = uploads_folder()
    for file_id, ext in files:
        remove(folder, file_id, ext)
    logout_user()
    session.clear()
    flash(_("Your account, its predictions and its photos were deleted."), "ok")
    return redirect(url_for("auth.login"))


@bp.route("/lang/<code>")
def set_language(code: str):
    if code in current_app.config["LANGUAGES"]:
        session["lang"] = code
    back = safe_next(request.args.get("next"))
    return redirect(back or url_for("predict.index"))
