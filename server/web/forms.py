"""The pages' forms. Every one carries Flask-WTF's CSRF token; ``CSRFProtect``
refuses any POST without a valid one before a view runs."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional

__all__ = ["LoginForm", "TotpForm", "ApproveForm", "DenyForm", "RevokeForm", "ActionForm"]

# The service's limits (server.services.MAX_REASON / MAX_COMMENT).
MAX_TEXT = 1000


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    next = HiddenField()


class TotpForm(FlaskForm):
    code = StringField(
        "6-digit code from your authenticator app",
        validators=[DataRequired(), Length(min=6, max=12)],
    )


class ApproveForm(FlaskForm):
    comment = TextAreaField("Comment (optional)", validators=[Optional(), Length(max=MAX_TEXT)])
    # Choices are filled per request; the policy (through the service) decides what is allowed.
    duration = SelectField("Grant", choices=[], validate_choice=False)


class DenyForm(FlaskForm):
    reason = TextAreaField(
        "Reason (required; the requester sees it)",
        validators=[
            DataRequired(message="A reason is required to deny a request."),
            Length(max=MAX_TEXT),
        ],
    )


class RevokeForm(FlaskForm):
    """Revoke, from its confirmation page: the box must be ticked (no script asks "are
    you sure?", the page's CSP allows none), and a POST without it revokes nothing."""

    reason = StringField("Reason (optional)", validators=[Optional(), Length(max=MAX_TEXT)])
    confirm = BooleanField(
        "Yes, revoke this certificate now",
        validators=[
            DataRequired(message="Tick the box to confirm the revoke; nothing was revoked.")
        ],
    )
    next = HiddenField()


class ActionForm(FlaskForm):
    """A button with nothing but the CSRF token (log out, cancel)."""
