"""Upload a photo and see the predicted emotion (the home page), and one result's page."""
from __future__ import annotations

import json

from flask import Blueprint, abort, current_app, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required

from fer_utils.web.settings import uploads_folder
from fer_utils.web.comments import comment
from fer_utils.web.extensions import db, limiter, user_or_address
from fer_utils.web.forms import ConfirmForm, UploadForm
from fer_utils.web.images import UploadError, read_upload, remove, store
from fer_utils.web.models import Prediction
from fer_utils.web.service import NoModelError

bp = Blueprint("predict", __name__)

FACE_NOTICE = "no face found: the whole image was used"


def model_service():
    return current_app.extensions["fer_model"]


def model_info() -> tuple[dict | None, str | None]:
    """(the served model's info, None), or (None, why there is none)."""
    try:
        return model_service().info(), None
    except NoModelError as exc:
        return None, str(exc)


def predict_upload(file_storage) -> Prediction:
    """Check, predict and store one upload for the current user; UploadError / NoModelError leave
    nothing behind (no row, no file)."""
    data = file_storage.read()
    checked = read_upload(data, file_storage.filename, current_app.config["MAX_IMAGE_PIXELS"])
    service = model_service()
    answer = service.predict(checked.image)
    info = service.info()
    folder = uploads_folder()
    file_id = store(folder, checked, answer.face)
    record = Prediction(user_id=current_user.id, file_id=file_id, file_ext=checked.ext,
                        original_name=checked.name, image_sha256=checked.sha256, label=answer.label,
                        probabilities_json=json.dumps(answer.probabilities), caption=answer.caption,
                        vote=answer.vote, face_box_json=None if answer.face_box is None else json.dumps(answer.face_box),
                        bundle_id=info["bundle_id"],
                        model_json=json.dumps({"model": info["model"], "data": info["data_name"],
                                               "synthetic": info["synthetic"]}))
    db.session.add(record)
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        remove(folder, file_id, checked.ext)
        raise
    return record


@bp.route("/", methods=["GET"])
@login_required
def index():
    info, problem = model_info()
    return render_template("predict/index.html", form=UploadForm(), info=info, problem=problem)


@bp.route("/predict", methods=["POST"])
@login_required
@limiter.limit(lambda: current_app.config["RATELIMIT_PREDICT"], key_func=user_or_address)
def upload():
    form = UploadForm()
    info, problem = model_info()
    if problem:
        return render_template("predict/index.html", form=form, info=None, problem=problem), 503
    if not form.validate_on_submit():
        return render_template("predict/index.html", form=form, info=info, problem=None), 400
    try:
        record = predict_upload(form.photo.data)
    except UploadError as exc:
        form.photo.errors = [_(exc.message, **exc.params)]
        return render_template("predict/index.html", form=form, info=info, problem=None), 400
    return redirect(url_for("predict.result", prediction_id=record.id), 303)


def visible_prediction(prediction_id: int) -> Prediction:
    """The prediction when the current user owns it or is an admin; 404 otherwise (whether it
    exists is not revealed)."""
    record = db.session.get(Prediction, prediction_id)
    if record is None or (record.user_id != current_user.id and not current_user.is_admin):
        abort(404)
    return record


@bp.route("/result/<int:prediction_id>")
@login_required
def result(prediction_id: int):
    record = visible_prediction(prediction_id)
    info, _problem = model_info()
    from flask_babel import get_locale

    lang = str(get_locale())
    probabilities = sorted(record.probabilities.items(), key=lambda kv: -kv[1])
    return render_template("predict/result.html", record=record, info=info, probabilities=probabilities,
                           comment=comment(record.label, lang), face_notice=record.face_box is None,
                           delete_form=ConfirmForm())
