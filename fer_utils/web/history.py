"""A user's history (paginated, thumbnails, delete), the dashboard and its charts, and the photo
files — served only to their owner and to admins, by prediction id (never by a path)."""
from __future__ import annotations

import io

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, send_file, url_for
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user, login_required

from fer_utils.web.settings import uploads_folder
from fer_utils.web.extensions import db
from fer_utils.web.forms import ConfirmForm
from fer_utils.web.images import KINDS, file_path, remove
from fer_utils.web.models import Prediction
from fer_utils.web.predict import visible_prediction

bp = Blueprint("history", __name__)

MAX_PAGE = 10**9
"""The last page number a list accepts: a larger one's OFFSET overflows SQLite's integers (a 500)."""


def paginate(select, per_page: int, max_per_page: int):
    """``db.paginate`` of the request's ``page``; a page past :data:`MAX_PAGE` is a 404."""
    if request.args.get("page", 0, type=int) > MAX_PAGE:
        abort(404)
    return db.paginate(select, per_page=per_page, max_per_page=max_per_page)


@bp.route("/history")
@login_required
def index():
    page = paginate(db.select(Prediction).filter_by(user_id=current_user.id)
                    .order_by(Prediction.created_at.desc(), Prediction.id.desc()),
                    per_page=current_app.config["HISTORY_PER_PAGE"], max_per_page=100)
    return render_template("history/index.html", page=page, delete_form=ConfirmForm())


@bp.route("/image/<int:prediction_id>/<kind>")
@login_required
def image(prediction_id: int, kind: str):
    if kind not in KINDS:
        abort(404)
    record = visible_prediction(prediction_id)
    if record.file_id is None:
        abort(404)
    path = file_path(uploads_folder(), record.file_id, record.file_ext, kind)
    if not path.is_file():
        abort(404)
    response = send_file(path, max_age=0, conditional=True)
    response.headers["Cache-Control"] = "private, no-store"
    return response


def delete_prediction(record: Prediction) -> None:
    """Delete the row, then its files (a failed commit leaves both)."""
    file_id, ext = record.file_id, record.file_ext
    db.session.delete(record)
    db.session.commit()
    remove(uploads_folder(), file_id, ext)


@bp.route("/history/<int:prediction_id>/delete", methods=["POST"])
@login_required
def delete(prediction_id: int):
    record = db.session.get(Prediction, prediction_id)
    if record is None or record.user_id != current_user.id:  # admins delete through the admin page
        abort(404)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    delete_prediction(record)
    flash(_("The prediction and its photo were deleted."), "ok")
    return redirect(url_for("history.index", page=request.args.get("page", 1, type=int)), 303)


@bp.route("/dashboard")
@login_required
def dashboard():
    count = db.session.scalar(db.select(db.func.count()).select_from(Prediction)
                              .filter_by(user_id=current_user.id))
    return render_template("history/dashboard.html", count=count)


@bp.route("/dashboard/<chart>.png")
@login_required
def chart(chart: str):
    from fer_utils.web.charts import CHARTS, render

    if chart not in CHARTS:
        abort(404)
    rows = db.session.execute(db.select(Prediction.label, Prediction.created_at)
                              .filter_by(user_id=current_user.id)).all()
    png = render(chart, [(label, created) for label, created in rows], str(get_locale()))
    response = send_file(io.BytesIO(png), mimetype="image/png", max_age=0)
    response.headers["Cache-Control"] = "private, no-store"
    return response
