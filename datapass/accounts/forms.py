"""Forms of the accounts domain (French messages, validated before any service call)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from wtforms import (
    BooleanField,
    HiddenField,
    PasswordField,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, EqualTo, Length, Optional, ValidationError

from datapass.accounts.addresses import normalise_email
from datapass.accounts.errors import AccountError
from datapass.accounts.models import ROLE_LABELS, Role
from datapass.accounts.organisations import normalise_siret
from datapass.accounts.passwords import password_problem
from datapass.forms import Form

if TYPE_CHECKING:
    from datapass.accounts.models import Organisation
    from datapass.catalogue.models import Api

EMAIL_REQUIRED = "Saisissez votre adresse électronique."
PASSWORD_REQUIRED = "Saisissez votre mot de passe."


def _valid_email(form, field) -> None:
    try:
        field.data = normalise_email(field.data or "")
    except AccountError as exc:
        raise ValidationError(exc.message) from exc


def _strong_password(form, field) -> None:
    problem = password_problem(field.data or "")
    if problem:
        raise ValidationError(problem)


def _valid_siret(form, field) -> None:
    try:
        field.data = normalise_siret(field.data or "")
    except AccountError as exc:
        raise ValidationError(exc.message) from exc


class LoginForm(Form):
    email = StringField(
        "Adresse électronique", validators=[DataRequired(EMAIL_REQUIRED), _valid_email]
    )
    password = PasswordField("Mot de passe", validators=[DataRequired(PASSWORD_REQUIRED)])
    next = HiddenField()


class SecondFactorForm(Form):
    code = StringField(
        "Code de vérification",
        validators=[
            DataRequired("Saisissez le code à 6 chiffres ou un code de secours."),
            Length(max=32, message="Ce code est trop long."),
        ],
    )


class ForgotPasswordForm(Form):
    email = StringField(
        "Adresse électronique", validators=[DataRequired(EMAIL_REQUIRED), _valid_email]
    )


class NewPasswordForm(Form):
    password = PasswordField(
        "Nouveau mot de passe",
        validators=[DataRequired("Choisissez un mot de passe."), _strong_password],
    )
    confirm = PasswordField(
        "Confirmez le nouveau mot de passe",
        validators=[
            DataRequired("Saisissez de nouveau le mot de passe."),
            EqualTo("password", "Les deux mots de passe ne sont pas identiques."),
        ],
    )


class ChangePasswordForm(NewPasswordForm):
    current_password = PasswordField(
        "Mot de passe actuel",
        validators=[DataRequired("Saisissez votre mot de passe actuel.")],
    )


class ReauthenticateForm(Form):
    password = PasswordField("Mot de passe", validators=[DataRequired(PASSWORD_REQUIRED)])
    code = StringField(
        "Code de vérification", validators=[Optional(), Length(max=32, message="Code trop long.")]
    )
    next = HiddenField()


class TotpConfirmForm(Form):
    code = StringField(
        "Code à 6 chiffres affiché par l'application",
        validators=[DataRequired("Saisissez le code à 6 chiffres affiché par l'application.")],
    )


class EmptyForm(Form):
    """A form with only its CSRF token (buttons that post an act)."""


class OrganisationChoiceForm(Form):
    organisation_id = SelectField("Organisation pour laquelle vous agissez", validate_choice=False)

    def __init__(self, *args, organisations: Iterable[Organisation] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.organisation_id.choices = [
            SelectChoice(str(o.id), f"{o.name} (SIRET {o.siret})") for o in organisations
        ]

    def validate_organisation_id(self, field) -> None:
        # Only the person's own organisations are offered, and only they are accepted.
        if field.data not in _offered(field):
            raise ValidationError("Choisissez l'une de vos organisations.")


class OrganisationForm(Form):
    siret = StringField(
        "SIRET",
        validators=[DataRequired("Saisissez le SIRET (14 chiffres)."), _valid_siret],
    )
    name = StringField(
        "Nom",
        validators=[
            DataRequired("Saisissez le nom de l'organisation."),
            Length(max=250, message="250 caractères au plus."),
        ],
    )
    address = TextAreaField(
        "Adresse", validators=[Optional(), Length(max=500, message="500 caractères au plus.")]
    )


class MemberForm(Form):
    email = StringField(
        "Adresse électronique de la personne",
        validators=[DataRequired("Saisissez l'adresse électronique."), _valid_email],
    )
    verified = BooleanField("Membre vérifié (voit toutes les demandes de l'organisation)")


def _api_choices(apis: Iterable[Api]) -> list:
    return [SelectChoice("", "— Choisir une API —")] + [
        SelectChoice(str(api.id), api.name) for api in apis
    ]


def _role_choices() -> list:
    return [SelectChoice(str(role), ROLE_LABELS[role]) for role in Role]


def _offered(field) -> set[str]:
    return {c.value if hasattr(c, "value") else c[0] for c in field.choices}


def _check_offered(field, message: str) -> None:
    """An optional select: empty, or one of the values offered."""
    if field.data in (None, "", "None"):
        field.data = ""
        return
    if field.data not in _offered(field):
        raise ValidationError(message)


class InviteForm(Form):
    email = StringField(
        "Adresse électronique",
        validators=[DataRequired("Saisissez l'adresse électronique."), _valid_email],
    )
    full_name = StringField(
        "Prénom et nom",
        validators=[
            DataRequired("Saisissez le prénom et le nom."),
            Length(max=200, message="200 caractères au plus."),
        ],
    )
    organisation_id = SelectField("Organisation (facultatif)", validate_choice=False)
    verified = BooleanField("Membre vérifié de cette organisation", default=True)
    roles = SelectMultipleField("Rôles", choices=_role_choices, validate_choice=True)
    api_id = SelectField("API instruite (pour le rôle d'instructeur)", validate_choice=False)

    def __init__(
        self,
        *args,
        organisations: Iterable[Organisation] = (),
        apis: Iterable[Api] = (),
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.organisation_id.choices = [SelectChoice("", "— Aucune —")] + [
            SelectChoice(str(o.id), f"{o.name} ({o.siret})") for o in organisations
        ]
        self.api_id.choices = _api_choices(apis)

    def validate_organisation_id(self, field) -> None:
        _check_offered(field, "Choisissez une organisation de la liste.")

    def validate_api_id(self, field) -> None:
        _check_offered(field, "Choisissez une API du catalogue.")
        if str(Role.INSTRUCTOR) in (self.roles.data or []) and not field.data:
            raise ValidationError("Un instructeur instruit une API : choisissez-la.")


class GrantRoleForm(Form):
    role = SelectField("Rôle", choices=_role_choices, validate_choice=True)
    api_id = SelectField("API instruite (pour le rôle d'instructeur)", validate_choice=False)

    def __init__(self, *args, apis: Iterable[Api] = (), **kwargs):
        super().__init__(*args, **kwargs)
        self.api_id.choices = _api_choices(apis)

    def validate_api_id(self, field) -> None:
        _check_offered(field, "Choisissez une API du catalogue.")
        if self.role.data == Role.INSTRUCTOR and not field.data:
            raise ValidationError("Un instructeur instruit une API : choisissez-la.")


class SearchForm(Form):
    class Meta:
        csrf = False

    q = StringField("Rechercher", validators=[Optional(), Length(max=200)])
