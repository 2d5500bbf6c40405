"""Forms of authorization requests: one per section of the request, plus the instructor's.

They check formats (French messages beside each field); the rules (scopes of the API,
completeness at submission, who may act) live in sections.py, decisions.py and states.py.
"""

from __future__ import annotations

import re

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from flask_wtf.file import FileField
from wtforms import (
    BooleanField,
    DateField,
    IntegerField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import (
    DataRequired,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from datapass import clock
from datapass.authorizations.documents import PDF_MAGIC
from datapass.authorizations.models import CONTACT_ROLES
from datapass.forms import Form

REQUIRED = "Ce champ est obligatoire."
PHONE_RE = re.compile(r"^\+?[0-9][0-9 .\-()]{8,18}[0-9]$")


def required(message: str = REQUIRED) -> DataRequired:
    return DataRequired(message)


def valid_email(form, field) -> None:
    if not field.data:
        return
    try:
        field.data = validate_email(field.data.strip(), check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise ValidationError(
            "Adresse électronique invalide (format attendu : prenom.nom@exemple.fr)."
        ) from exc


def valid_phone(form, field) -> None:
    if field.data and not PHONE_RE.match(field.data.strip()):
        raise ValidationError("Numéro de téléphone invalide (exemple : 01 23 45 67 89).")


def valid_url(form, field) -> None:
    value = (field.data or "").strip()
    field.data = value
    if value and not re.match(r"^https?://[^\s/$.?#][^\s]*\.[^\s]+$", value):
        raise ValidationError("Adresse invalide : elle doit commencer par https:// ou http://.")


def pdf_upload(form, field) -> None:
    """A PDF of at most UPLOAD_MAX_MB, recognised by its first bytes (``%PDF-``)."""
    upload = field.data
    if upload is None or not getattr(upload, "filename", ""):
        field.data = None
        return
    content = upload.read()
    upload.seek(0)
    limit_mb = current_app.config["UPLOAD_MAX_MB"]
    if not content:
        raise ValidationError("Le fichier est vide.")
    if len(content) > limit_mb * 1024 * 1024:
        raise ValidationError(f"Le fichier dépasse la taille maximale de {limit_mb} Mo.")
    if not content.startswith(PDF_MAGIC):
        raise ValidationError("Le fichier n'est pas un document PDF valide.")
    field.content = content


class NewRequestForm(Form):
    api_id = SelectField("API demandée", coerce=int, validators=[required("Choisissez une API.")])


class ProjectForm(Form):
    title = StringField(
        "Intitulé du projet",
        validators=[required(), Length(max=200, message="200 caractères au plus.")],
    )
    description = TextAreaField(
        "Description du projet",
        validators=[required(), Length(max=5000, message="5 000 caractères au plus.")],
    )
    purpose = TextAreaField(
        "Finalité du traitement",
        validators=[required(), Length(max=5000, message="5 000 caractères au plus.")],
    )


class ScopesForm(Form):
    scopes = SelectMultipleField("Données demandées", validate_choice=False)

    def validate_scopes(self, field) -> None:
        if not field.data:
            raise ValidationError("Choisissez au moins une donnée.")
        known = {value for value, _ in field.choices}
        unknown = [code for code in field.data if code not in known]
        if unknown:
            raise ValidationError(
                f"Donnée inconnue pour cette API : {', '.join(unknown)}. "
                "Choisissez parmi les données proposées."
            )


class LegalBasisForm(Form):
    legal_basis_name = StringField(
        "Texte de référence (nom)",
        validators=[required(), Length(max=500, message="500 caractères au plus.")],
    )
    legal_basis_url = StringField(
        "Adresse du texte (Légifrance, délibération publiée…)",
        validators=[Optional(), Length(max=500, message="500 caractères au plus."), valid_url],
    )
    legal_basis_document = FileField("Ou le texte en PDF (10 Mo au plus)", validators=[pdf_upload])

    has_document = False  # set by the view: a document is already attached

    def validate_legal_basis_url(self, field) -> None:
        upload = self.legal_basis_document.data
        has_upload = upload is not None and getattr(upload, "filename", "")
        if not field.data and not has_upload and not self.has_document:
            raise ValidationError("Indiquez l'adresse du texte ou joignez-le en PDF.")


def _contact_fields():
    fields = {}
    for role, label in CONTACT_ROLES.items():
        fields[f"{role}_name"] = StringField(
            f"{label} : nom et prénom",
            validators=[required(), Length(max=200, message="200 caractères au plus.")],
        )
        fields[f"{role}_email"] = StringField(
            f"{label} : adresse électronique",
            validators=[required(), Length(max=320), valid_email],
        )
        fields[f"{role}_phone"] = StringField(
            f"{label} : téléphone", validators=[required(), valid_phone]
        )
    return fields


ContactsForm = type("ContactsForm", (Form,), _contact_fields())


class RetentionForm(Form):
    retention_months = IntegerField(
        "Durée de conservation des données, en mois",
        validators=[
            InputRequired("Indiquez une durée en mois (nombre entier)."),
            NumberRange(1, 120, "Entre 1 et 120 mois."),
        ],
    )
    daily_volume = IntegerField(
        "Volumétrie attendue, en appels par jour",
        validators=[
            InputRequired("Indiquez un nombre d'appels par jour (nombre entier)."),
            NumberRange(1, 100_000_000, "Entre 1 et 100 000 000 d'appels par jour."),
        ],
    )


class HomologationForm(Form):
    homologation_date = DateField(
        "Date de la décision d'homologation",
        validators=[required("Indiquez une date valide (jj/mm/aaaa).")],
    )
    homologation_authority = StringField(
        "Autorité d'homologation (nom et fonction)",
        validators=[required(), Length(max=300, message="300 caractères au plus.")],
    )
    homologation_document = FileField(
        "Décision d'homologation en PDF (10 Mo au plus)", validators=[pdf_upload]
    )

    has_document = False

    def validate_homologation_date(self, field) -> None:
        if field.data and field.data > clock.today():
            raise ValidationError("La date ne peut pas être dans le futur.")

    def validate_homologation_document(self, field) -> None:
        if field.data is None and not self.has_document:
            raise ValidationError("Joignez la décision d'homologation (PDF).")


class TermsForm(Form):
    terms = BooleanField(
        "J'accepte les conditions générales d'utilisation de l'API et m'engage à n'utiliser "
        "les données que pour la finalité déclarée",
        validators=[required("Vous devez accepter les conditions d'utilisation.")],
    )


SECTION_FORMS = {
    "projet": ProjectForm,
    "donnees": ScopesForm,
    "cadre-juridique": LegalBasisForm,
    "contacts": ContactsForm,
    "conservation": RetentionForm,
    "homologation": HomologationForm,
    "conditions": TermsForm,
}


class ReasonForm(Form):
    """A decision or transition; whether the text is required is the lifecycle's rule."""

    text = TextAreaField(
        "Motif ou note",
        validators=[Optional(), Length(max=5000, message="5 000 caractères au plus.")],
    )


class MessageForm(Form):
    body = TextAreaField(
        "Votre message",
        validators=[
            required("Écrivez un message."),
            Length(max=5000, message="5 000 caractères au plus."),
        ],
    )


class TransferForm(Form):
    user_id = SelectField(
        "Nouveau responsable de la demande",
        coerce=int,
        validators=[required("Choisissez un membre.")],
    )


class TemplateForm(Form):
    api_id = SelectField("API", coerce=int, validators=[required("Choisissez une API.")])
    title = StringField(
        "Titre du modèle",
        validators=[required(), Length(max=200, message="200 caractères au plus.")],
    )
    body = TextAreaField(
        "Texte", validators=[required(), Length(max=5000, message="5 000 caractères au plus.")]
    )
