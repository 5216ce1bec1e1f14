"""The console's forms (Flask-WTF): every POST carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    DecimalField,
    EmailField,
    PasswordField,
    RadioField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import (
    DataRequired,
    Length,
    NumberRange,
    Optional,
    Regexp,
    ValidationError,
)
from wtforms.widgets import CheckboxInput, ListWidget

from app.access.passwords import MAX_LENGTH
from app.access.tokens import DEFAULT_SCOPES, SCOPES
from app.consent.review import REASON_MAX, REASON_MIN
from app.store.models import ROLES

SIX_DIGITS = Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message="Six digits.")


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class CodeForm(FlaskForm):
    code = StringField(
        "6-digit code from your authenticator app",
        validators=[DataRequired(), SIX_DIGITS],
    )


class PlainForm(FlaskForm):
    """A form with nothing but its CSRF token (sign-out, revoke)."""


class ReviewDecisionForm(FlaskForm):
    decision = RadioField(
        "Decision",
        choices=[
            SelectChoice("opt_out", "Treat as opt-out"),
            SelectChoice("not_opt_out", "Not an opt-out"),
        ],
        validators=[DataRequired(message="Choose a decision.")],
    )
    reason = TextAreaField(
        "Reason",
        validators=[
            DataRequired(message="Give a reason."),
            Length(min=REASON_MIN, max=REASON_MAX),
        ],
    )


class TimeZoneForm(FlaskForm):
    """The zone the console shows this staff member's times in; empty: UTC."""

    time_zone = SelectField("Show times in", validate_choice=True)

    def __init__(self, *args, zones: tuple[str, ...] = (), **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.time_zone.choices = [SelectChoice("", "UTC (the default)")] + [
            SelectChoice(zone) for zone in zones if zone != "UTC"
        ]


class StaffCreateForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    role = SelectField(
        "Role", choices=[SelectChoice(r) for r in ROLES], validators=[DataRequired()]
    )


class StaffUpdateForm(FlaskForm):
    action = SelectField(
        "Change",
        choices=[
            SelectChoice("role:viewer", "Make viewer"),
            SelectChoice("role:compliance", "Make compliance"),
            SelectChoice("role:admin", "Make admin"),
            SelectChoice("disable", "Disable"),
            SelectChoice("enable", "Enable"),
            SelectChoice("reset", "Reset: a new enrolment link"),
        ],
        validators=[DataRequired()],
    )


def _at_least_one(field) -> None:
    """Not DataRequired: its `required` flag would make every checkbox required in the browser."""
    if not field.data:
        raise ValidationError("Choose at least one scope.")


class TokenCreateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=1, max=200)])
    scopes = SelectMultipleField(
        "Scopes",
        choices=[SelectChoice(scope) for scope in SCOPES],
        default=list(DEFAULT_SCOPES),
        widget=ListWidget(prefix_label=False),
        option_widget=CheckboxInput(),
        validators=[lambda _form, field: _at_least_one(field)],
    )
    expires_days = DecimalField(
        "Expires after (days, empty: never)",
        places=None,
        validators=[Optional(), NumberRange(min=0.01, max=3650)],
    )


def _code_field(label: str = "6-digit code from your authenticator app"):
    return StringField(label, validators=[Optional(), SIX_DIGITS])


def _new_password_fields():
    return (
        PasswordField("New password", validators=[DataRequired(), Length(max=MAX_LENGTH)]),
        PasswordField("New password again", validators=[DataRequired(), Length(max=MAX_LENGTH)]),
    )


class EnrolForm(FlaskForm):
    """A new or reset account: the owner's own password, and the code proving the new seed."""

    password, confirmation = _new_password_fields()
    code = _code_field("6-digit code your app shows after scanning")


class ReauthForm(FlaskForm):
    """Sign in again before changing credentials: password, and code where one is enrolled."""

    current_password = PasswordField(
        "Current password", validators=[DataRequired(), Length(max=MAX_LENGTH)]
    )
    code = _code_field()


class PasswordChangeForm(ReauthForm):
    new_password, confirmation = _new_password_fields()
