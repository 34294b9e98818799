"""Flask-WTF forms: every form that changes something carries a CSRF token."""
from __future__ import annotations

import unicodedata

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from flask_wtf.file import FileField, FileRequired
from wtforms import DateField, PasswordField, SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from fer_utils.labels import EMOTIONS

USERNAME_MIN, USERNAME_MAX = 3, 40
PASSWORD_MIN = 8


def printable_username(form, field):
    """Any printable characters (Korean names welcome), no spaces at either end, no control characters."""
    value = field.data or ""
    if value != value.strip() or not value.isprintable():
        raise ValidationError(_l("Use printable characters, without spaces at the start or end."))


def nfc(value: str | None) -> str | None:
    """One spelling per name: Korean typed as composed syllables or as separate jamo (NFD) looks
    the same, so it must be the same account, not a look-alike second one."""
    return unicodedata.normalize("NFC", value) if value else value


class RegisterForm(FlaskForm):
    username = StringField(_l("Username"), filters=[nfc],
                           validators=[DataRequired(), Length(USERNAME_MIN, USERNAME_MAX), printable_username])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(PASSWORD_MIN, 200)])
    confirm = PasswordField(_l("Repeat password"),
                            validators=[DataRequired(), EqualTo("password", _l("The passwords differ."))])


class LoginForm(FlaskForm):
    username = StringField(_l("Username"), filters=[nfc], validators=[DataRequired(), Length(1, USERNAME_MAX)])
    password = PasswordField(_l("Password"), validators=[DataRequired(), Length(1, 200)])


class UploadForm(FlaskForm):
    photo = FileField(_l("Photo (JPEG, PNG or WebP)"), validators=[FileRequired(_l("Choose a photo."))])


class ConfirmForm(FlaskForm):
    """A button that changes something: only its CSRF token."""


class DeleteAccountForm(FlaskForm):
    password = PasswordField(_l("Password"), validators=[DataRequired()])


class AdminFilterForm(FlaskForm):
    """Read-only filters (GET): no CSRF token needed."""

    class Meta:
        csrf = False

    user = StringField(_l("User"), validators=[Optional(), Length(max=USERNAME_MAX)])
    emotion = SelectField(_l("Emotion"), choices=[SelectChoice("", "—")] + [SelectChoice(e, e) for e in EMOTIONS],
                          validators=[Optional()])
    since = DateField(_l("From"), validators=[Optional()])
    until = DateField(_l("Until"), validators=[Optional()])

    def show_labels(self, name_of) -> None:
        """Show the emotions in the page's language (the values stay the canonical class names)."""
        self.emotion.choices = [SelectChoice("", "—")] + [SelectChoice(e, name_of(e)) for e in EMOTIONS]
