"""The console's forms (Flask-WTF): every POST carries a CSRF token."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, RadioField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Regexp

from app.consent.review import REASON_MAX, REASON_MIN
from app.store.models import ROLES


class LoginForm(FlaskForm):
    email = EmailField("E-mail", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=200)])


class CodeForm(FlaskForm):
    code = StringField(
        "6-digit code from your authenticator app",
        validators=[DataRequired(), Regexp(r"^\s*\d{3}\s?\d{3}\s*$", message="Six digits.")],
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
            SelectChoice("reset", "Reset password and second factor"),
        ],
        validators=[DataRequired()],
    )


class TokenCreateForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(min=1, max=200)])
