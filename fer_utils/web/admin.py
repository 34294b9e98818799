"""Admin pages: every prediction with filters (user, emotion, date) and delete; user management
(disable, enable, promote, demote); the log of admin actions. Rights come from the role only."""
from __future__ import annotations

from datetime import datetime, time, timezone
from functools import wraps

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user, login_required

from fer_utils.web.comments import label_name
from fer_utils.web.extensions import db
from fer_utils.web.forms import AdminFilterForm, ConfirmForm
from fer_utils.web.history import delete_prediction, paginate
from fer_utils.web.models import AdminAction, Prediction, User

bp = Blueprint("admin", __name__, url_prefix="/admin")

USER_ACTIONS = {"disable": _l("disable"), "enable": _l("enable"), "promote": _l("promote"), "demote": _l("demote")}
"""What an admin can do to another account, with its button text."""


def admin_required(view):
    @wraps(view)
    @login_required
    def wrapped(*args, **kwargs):
        if not current_user.is_admin:
            abort(403)
        return view(*args, **kwargs)
    return wrapped


def log_action(action: str, target: str) -> None:
    """Record an admin action (in the table and the app log); committed with the change it describes."""
    db.session.add(AdminAction(admin_id=current_user.id, admin_name=current_user.username, action=action,
                               target=target))
    current_app.logger.info("admin %s (id %s): %s %s", current_user.username, current_user.id, action, target)


def filtered_predictions(form: AdminFilterForm):
    query = db.select(Prediction).join(User)
    if form.user.data:
        query = query.where(User.username == form.user.data)
    if form.emotion.data:
        query = query.where(Prediction.label == form.emotion.data)
    if form.since.data:
        query = query.where(Prediction.created_at >= datetime.combine(form.since.data, time(), timezone.utc))
    if form.until.data:
        end = datetime.combine(form.until.data, time.max, timezone.utc)  # (no +1 day: 9999-12-31 overflows)
        query = query.where(Prediction.created_at <= end)
    return query.order_by(Prediction.created_at.desc(), Prediction.id.desc())


@bp.route("/")
@admin_required
def predictions():
    form = AdminFilterForm(request.args)
    form.show_labels(lambda name: label_name(name, str(get_locale())))
    form.validate()
    if form.errors:
        return render_template("admin/predictions.html", form=form, page=None, delete_form=ConfirmForm()), 400
    page = paginate(filtered_predictions(form), per_page=current_app.config["ADMIN_PER_PAGE"], max_per_page=200)
    filters = {key: value for key, value in request.args.items() if key in form.data and value}
    return render_template("admin/predictions.html", form=form, page=page, delete_form=ConfirmForm(),
                           filters=filters)


@bp.route("/predictions/<int:prediction_id>/delete", methods=["POST"])
@admin_required
def delete(prediction_id: int):
    if not ConfirmForm().validate_on_submit():
        abort(400)
    record = db.session.get(Prediction, prediction_id)
    if record is None:
        abort(404)
    log_action("delete prediction", f"#{record.id} of {record.owner.username} ({record.label})")
    delete_prediction(record)
    flash(_("Prediction #%(id)d was deleted.", id=prediction_id), "ok")
    back = request.form.get("back", "")
    return redirect(back if back.startswith("/admin/") and not back.startswith("//") else url_for("admin.predictions"), 303)


@bp.route("/users")
@admin_required
def users():
    rows = db.session.execute(
        db.select(User, db.func.count(Prediction.id)).outerjoin(Prediction).group_by(User.id).order_by(User.id)).all()
    return render_template("admin/users.html", rows=rows, form=ConfirmForm(), actions=USER_ACTIONS)


@bp.route("/users/<int:user_id>/<action>", methods=["POST"])
@admin_required
def user_action(user_id: int, action: str):
    if action not in USER_ACTIONS:
        abort(404)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    user = db.session.get(User, user_id)
    if user is None:
        abort(404)
    if user.id == current_user.id:
        flash(_("You cannot change your own account here."), "error")
        return redirect(url_for("admin.users"), 303)
    if action == "disable":
        user.active = False
    elif action == "enable":
        user.active = True
    elif action == "promote":
        user.role = "admin"
    else:
        user.role = "user"
    log_action(f"{action} user", f"{user.username} (id {user.id})")
    db.session.commit()
    flash(_("Done: %(action)s %(name)s.", action=USER_ACTIONS[action], name=user.username), "ok")
    return redirect(url_for("admin.users"), 303)


@bp.route("/log")
@admin_required
def log():
    page = paginate(db.select(AdminAction).order_by(AdminAction.id.desc()),
                    per_page=current_app.config["ADMIN_PER_PAGE"], max_per_page=200)
    return render_template("admin/log.html", page=page)
