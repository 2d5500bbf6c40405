"""Forms of the lifecycle: the renewal wizard, the self-reactivation, the instructor's
decision (French messages)."""

from __future__ import annotations

from wtforms import (
    EmailField,
    FormField,
    RadioField,
    StringField,
    TextAreaField,
)
from wtforms import (
    Form as PlainForm,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Email, InputRequired, Length, Optional

from datapass.forms import Form, MultiCheckboxField

YES_NO = [SelectChoice("oui", "Oui"), SelectChoice("non", "Non")]


class ContactForm(PlainForm):
    name = StringField(
        "Nom et prénom", validators=[Length(max=200, message="200 caractères au plus.")]
    )
    email = EmailField(
        "Adresse électronique",
        validators=[Optional(), Email(message="Adresse électronique invalide."), Length(max=320)],
    )
    phone = StringField("Téléphone", validators=[Length(max=40, message="40 caractères au plus.")])


def _attest(label: str) -> RadioField:
    return RadioField(
        label, choices=YES_NO, validators=[InputRequired("Répondez par oui ou par non.")]
    )


class RenewalForm(Form):
    same_person = _attest("La même personne est toujours responsable de ce traitement")
    purpose_unchanged = _attest("La finalité du traitement est inchangée")
    legal_basis_holds = _attest("Le cadre juridique est toujours valable")
    controller = FormField(ContactForm, label="Responsable de traitement")
    technical = FormField(ContactForm, label="Contact technique")
    dpo = FormField(ContactForm, label="Délégué à la protection des données")
    business = FormField(ContactForm, label="Contact métier")
    scopes = MultiCheckboxField(
        "Données toujours nécessaires",
        validators=[DataRequired("Gardez au moins une donnée, ou laissez l'accès expirer.")],
    )


class JustificationForm(Form):
    justification = TextAreaField(
        "Pourquoi ce jeton doit-il être réactivé ?",
        validators=[
            DataRequired("Expliquez pourquoi ce jeton doit être réactivé."),
            Length(min=10, max=2000, message="Entre 10 et 2 000 caractères."),
        ],
    )


class DecisionForm(Form):
    decision = RadioField(
        "Décision",
        choices=[
            SelectChoice("confirmer", "Confirmer le renouvellement"),
            SelectChoice("refuser", "Refuser"),
        ],
        validators=[InputRequired("Choisissez une décision.")],
    )
    note = TextAreaField(
        "Motif ou remarque", validators=[Length(max=2000, message="2 000 caractères au plus.")]
    )
