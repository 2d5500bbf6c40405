"""Forms of the tokens domain (French messages)."""

from __future__ import annotations

from wtforms import IntegerField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange

from datapass.forms import Form


class EmptyForm(Form):
    """A button that only needs its CSRF token (reveal, send, ping, enable…)."""


REASON_REQUIRED = "Indiquez le motif : il est conservé dans le journal et transmis aux détenteurs."


class ReasonForm(Form):
    reason = TextAreaField(
        "Motif",
        validators=[
            DataRequired(REASON_REQUIRED),
            Length(min=5, max=1000, message="Entre 5 et 1 000 caractères."),
        ],
    )


class RotateForm(Form):
    grace_days = IntegerField(
        "Délai de grâce de l'ancien jeton (en jours)",
        default=7,
        validators=[
            InputRequired("Indiquez un nombre de jours entre 0 et 30."),
            NumberRange(min=0, max=30, message="Le délai de grâce va de 0 à 30 jours."),
        ],
    )
