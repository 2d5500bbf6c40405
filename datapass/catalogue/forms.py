"""Forms of the catalogue's administration (French messages beside each field)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from email_validator import EmailNotValidError, validate_email
from wtforms import BooleanField, DateTimeLocalField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional, Regexp, ValidationError

from datapass import clock
from datapass.catalogue.models import ApiStatus, RenewalPolicy
from datapass.forms import Form

REQUIRED = "Ce champ est obligatoire."
SLUG = Regexp(r"^[a-z0-9][a-z0-9-]{1,58}$", message="Minuscules, chiffres et tirets (2 à 60).")


def _emails(form, field) -> None:
    values = [v.strip() for v in re.split(r"[,;\s]+", field.data or "") if v.strip()]
    normalised = []
    for value in values:
        try:
            normalised.append(validate_email(value, check_deliverability=False).normalized)
        except EmailNotValidError as exc:
            raise ValidationError(f"Adresse électronique invalide : {value}") from exc
    field.data = ", ".join(normalised)


def _audience(form, field) -> None:
    if field.data and not re.match(r"^https://[^\s]+$", field.data.strip()):
        raise ValidationError("L'identifiant d'audience est une URL en https://.")


def parse_legal_bases(text: str) -> list[dict[str, str]]:
    """One legal basis per line: ``name | url`` (the URL is optional)."""
    bases = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        name, _, url = line.partition("|")
        bases.append({"name": name.strip(), "url": url.strip()})
    return bases


def format_legal_bases(bases: list[dict[str, str]]) -> str:
    return "\n".join(f"{b['name']} | {b['url']}" if b.get("url") else b["name"] for b in bases)


def paris_to_utc(moment: datetime | None) -> datetime | None:
    """A moment typed in Paris time (datetime-local input), as aware UTC."""
    if moment is None:
        return None
    return moment.replace(tzinfo=clock.PARIS).astimezone(UTC)


class ApiForm(Form):
    name = StringField("Nom", validators=[DataRequired(REQUIRED), Length(max=200)])
    description = TextAreaField("Description", validators=[Optional(), Length(max=5000)])
    audience = StringField(
        "Identifiant d'audience (aud des jetons)",
        validators=[DataRequired(REQUIRED), Length(max=300), _audience],
    )
    legal_bases = TextAreaField(
        "Textes de référence habituels (un par ligne : nom | URL)",
        validators=[Optional(), Length(max=5000)],
    )
    coverage_note = TextAreaField("Couverture des données", validators=[Optional()])
    fallback_procedure = TextAreaField(
        "Solution alternative (plan B)", validators=[Optional(), Length(max=5000)]
    )
    renewal_policy = SelectField(
        "Renouvellement sans changement",
        choices=[SelectChoice(policy.value, policy.label) for policy in RenewalPolicy],
    )
    is_active = BooleanField("Ouverte aux nouvelles demandes")


class NewApiForm(ApiForm):
    provider_id = SelectField("Fournisseur", coerce=int, validators=[DataRequired(REQUIRED)])
    slug = StringField("Identifiant court", validators=[DataRequired(REQUIRED), SLUG])


class StatusForm(Form):
    status = SelectField(
        "Statut", choices=[SelectChoice(status.value, status.label) for status in ApiStatus]
    )
    message = TextAreaField("Message aux demandeurs et aux détenteurs de jetons")
    start = DateTimeLocalField("Début (heure de Paris)", validators=[Optional()])
    end = DateTimeLocalField("Fin (heure de Paris)", validators=[Optional()])

    def validate_message(self, field) -> None:
        if self.status.data == ApiStatus.MAINTENANCE and not (field.data or "").strip():
            raise ValidationError("Expliquez la maintenance (ce qui est indisponible).")

    def validate_end(self, field) -> None:
        if field.data and self.start.data and field.data <= self.start.data:
            raise ValidationError("La fin doit suivre le début.")


class ScopeForm(Form):
    code = StringField(
        "Code",
        validators=[
            DataRequired(REQUIRED),
            Regexp(r"^[a-z][a-z0-9_]{1,99}$", message="Minuscules, chiffres et _ (2 à 100)."),
        ],
    )
    label = StringField("Libellé", validators=[DataRequired(REQUIRED), Length(max=300)])
    sensitive = BooleanField("Donnée sensible")


class ScopeEditForm(Form):
    label = StringField("Libellé", validators=[DataRequired(REQUIRED), Length(max=300)])
    sensitive = BooleanField("Donnée sensible")


class ProviderForm(Form):
    name = StringField("Nom", validators=[DataRequired(REQUIRED), Length(max=200)])
    contact_email = StringField("Adresse de contact", validators=[DataRequired(REQUIRED), _emails])
    developer_emails = StringField(
        "Développeurs prévenus des incidents de webhook (séparés par des virgules)",
        validators=[Optional(), _emails],
    )


class NewProviderForm(ProviderForm):
    slug = StringField("Identifiant court", validators=[DataRequired(REQUIRED), SLUG])


class ClientForm(Form):
    name = StringField(
        "Nom du client machine (système qui l'utilise)",
        validators=[DataRequired(REQUIRED), Length(max=200)],
    )
