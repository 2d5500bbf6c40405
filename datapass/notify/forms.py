"""Forms of webhook administration (French messages)."""

from __future__ import annotations

from wtforms import SelectField, StringField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import URL, DataRequired, Length

from datapass.forms import Form, MultiCheckboxField
from datapass.notify.models import WEBHOOK_EVENTS


class EmptyForm(Form):
    """A button that only needs its CSRF token (ping, enable, disable, rotate, replay…)."""


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
