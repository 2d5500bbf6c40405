"""Forms of the audit pages (the console's search itself is a GET query string)."""

from __future__ import annotations

from wtforms import HiddenField, PasswordField, SelectField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from datapass.forms import Form


class PastedTokenForm(Form):
    """A token pasted to search its events: hashed at once, never stored nor logged."""

    value = PasswordField(
        "Coller un jeton",
        validators=[
            DataRequired("Collez le jeton à rechercher."),
            Length(max=8192, message="8 192 caractères au plus."),
        ],
    )


class ExportForm(Form):
    """Export the current search; the filter travels as hidden fields."""

    format = SelectField(
        "Format",
        choices=[SelectChoice("csv", "CSV"), SelectChoice("jsonl", "JSON Lines")],
        default="csv",
    )
    debut = HiddenField()
    fin = HiddenField()
    acteur = HiddenField()
    organisation = HiddenField()
    api = HiddenField()
    jeton = HiddenField()
    etiquette = HiddenField()
