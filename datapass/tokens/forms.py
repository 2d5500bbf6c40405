"""Forms of the tokens domain and of webhook administration (French messages)."""

from __future__ import annotations

from wtforms import IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import URL, DataRequired, InputRequired, Length, NumberRange

from datapass.forms import Form, MultiCheckboxField
from datapass.notify.models import WEBHOOK_EVENTS


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


EVENT_CHOICES = [SelectChoice(e, e) for e in WEBHOOK_EVENTS]


class EndpointForm(Form):
    provider_id = SelectField("Fournisseur", coerce=int)
    url = StringField(
        "Adresse du récepteur (URL)",
        validators=[
            DataRequired("Indiquez l'adresse du récepteur."),
            URL(require_tld=False, message="Indiquez une URL complète (https://…)."),
            Length(max=500, message="500 caractères au plus."),
        ],
    )
    events = MultiCheckboxField(
        "Événements (aucun coché : tous)", choices=EVENT_CHOICES, validate_choice=True
    )


class EndpointEditForm(Form):
    url = EndpointForm.url
    events = EndpointForm.events
