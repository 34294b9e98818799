"""``POST /api/predict``: a photo in (multipart field ``image``), JSON out.

Authenticated by a per-user token (``Authorization: Bearer <token>``, made on the account page)
or by the session cookie of a logged-in browser — then with its CSRF token in ``X-CSRFToken``,
as any cookie-authenticated change must be. Same checks, rate limit and storage as the site.
"""
from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request
from flask_babel import gettext as _
from flask_login import login_required

from fer_utils.web.extensions import csrf, limiter, user_or_address
from fer_utils.web.images import UploadError
from fer_utils.web.predict import predict_upload
from fer_utils.web.service import NoModelError

bp = Blueprint("api", __name__, url_prefix="/api")


@bp.route("/predict", methods=["POST"])
@login_required
@limiter.limit(lambda: current_app.config["RATELIMIT_PREDICT"], key_func=user_or_address)
def predict():
    if not g.get("token_auth"):
        csrf.protect()
    upload = request.files.get("image")
    if upload is None:
        return jsonify(error=_("Send the photo as the multipart field \"image\".")), 400
    try:
        record = predict_upload(upload)
    except UploadError as exc:
        return jsonify(error=_(exc.message, **exc.params)), 400
    except NoModelError as exc:
        return jsonify(error=str(exc)), 503
    body = {"id": record.id, "label": record.label, "probabilities": record.probabilities,
            "face_box": record.face_box, "model": record.bundle_id, "created_at": record.created_at.isoformat()}
    if record.caption is not None:
        body.update(caption=record.caption, vote=record.vote)
    return jsonify(body), 201
