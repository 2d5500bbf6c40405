"""The DSFR error pattern shared by every form (datapass/forms.py, templates/_macros/forms.html):
an error summary linking to each field, each message under its own field with its own id,
tied by aria-describedby; the instructor's decision shows its error under its own field only;
the applicant's page opens with what the instructor asked."""

from __future__ import annotations

import re

import pytest
from flask import render_template_string
from wtforms import FormField, StringField
from wtforms.validators import Length, Regexp

from datapass.actor import Actor
from datapass.authorizations import decisions, messages
from datapass.extensions import db
from datapass.forms import Form
from tests import factories
from tests.conftest import login

TEMPLATE = (
    '{% from "_macros/forms.html" import field, form_errors %}'
    "{{ form_errors(form) }}{{ field(form.code) }}{{ field(form.contact.email) }}"
)


class ContactForm(Form):
    class Meta:
        csrf = False

    email = StringField("Adresse", validators=[Length(min=5, message="Trop courte.")])


class TwoErrorsForm(Form):
    class Meta:
        csrf = False

    code = StringField(
        "Code",
        validators=[
            Length(min=10, message="10 caractères au moins."),
            Regexp(r"^\d+$", message="Des chiffres seulement."),
        ],
    )
    contact = FormField(ContactForm, label="Contact")


@pytest.fixture
def api(app):
    return factories.catalogue()["quotient-familial"]


@pytest.fixture
def instructor(api):
    return factories.staff("instructor", api=api, full_name="Inès Tructrice")


@pytest.fixture
def applicant():
    return factories.user(organisation=factories.organisation(), full_name="Alice Demandeuse")


def _ids(html: str) -> list[str]:
    return re.findall(r'\bid="([^"]+)"', html)


def test_a_field_with_two_errors_has_two_messages_with_their_own_ids(app):
    with app.test_request_context(method="POST", data={"code": "ab", "contact-email": "x"}):
        form = TwoErrorsForm()
        assert not form.validate()
        assert form.error_list() == [
            ("code", "Code", "10 caractères au moins."),
            ("code", "Code", "Des chiffres seulement."),
            ("contact-email", "Contact — Adresse", "Trop courte."),
        ]
        html = render_template_string(TEMPLATE, form=form)
    ids = _ids(html)
    assert len(ids) == len(set(ids)), ids  # no duplicate id
    described = re.search(r'<input[^>]*id="code"[^>]*>', html).group(0)
    assert 'aria-invalid="true"' in described
    targets = re.search(r'aria-describedby="([^"]+)"', described).group(1).split()
    assert targets == ["code-error", "code-error-2"]
    for target, message in zip(targets, form.code.errors, strict=True):
        assert f'id="{target}" class="fr-error-text">{message}</p>' in html
    # The summary comes first, is focusable (static/app.js focuses it) and links to fields.
    summary = html[: html.index('<div class="fr-input-group')]
    assert 'class="fr-alert fr-alert--error fr-mb-3w dp-error-summary"' in summary
    assert 'tabindex="-1"' in summary and "3 erreurs" in summary
    assert summary.count('<a href="#code">') == 2
    assert '<a href="#contact-email">Contact — Adresse : Trop courte.</a>' in summary


def test_a_valid_form_has_no_summary(app):
    with app.test_request_context(
        method="POST", data={"code": "0123456789", "contact-email": "a@b.fr"}
    ):
        form = TwoErrorsForm()
        form.validate()
        html = render_template_string(TEMPLATE, form=form)
    assert "dp-error-summary" not in html and "aria-invalid" not in html


def _submitted(api, applicant):
    request = factories.filled_request(api, requester=applicant)
    decisions.submit(request, Actor.for_user(applicant))
    db.session.commit()
    return request


def test_an_empty_change_motive_is_flagged_under_its_own_field_only(
    client, api, instructor, applicant
):
    request = _submitted(api, applicant)
    login(client, instructor)
    response = client.post(f"/demandes/{request.id}/actions/request_changes", data={"text": ""})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    aside = html[html.index('aria-labelledby="decision"') :]
    assert aside.count('class="fr-error-text"') == 1
    assert 'id="text-request_changes-error" class="fr-error-text">' in aside
    for event in ("approve", "refuse"):
        textarea = re.search(rf'<textarea[^>]*id="text-{event}"[^>]*>', html).group(0)
        assert "aria-invalid" not in textarea and "aria-describedby" not in textarea
    textarea = re.search(r'<textarea[^>]*id="text-request_changes"[^>]*>', html).group(0)
    assert 'aria-describedby="text-request_changes-error"' in textarea
    summary = html[
        html.index('id="resume-erreurs"') : html.index("</div>", html.index('id="resume-erreurs"'))
    ]
    assert '<a href="#text-request_changes">Motif de la demande de modifications :' in summary
    ids = _ids(html)
    assert len(ids) == len(set(ids))
    assert db.session.get(type(request), request.id).state == "submitted"  # nothing changed


def test_what_the_instructor_asked_opens_the_applicants_page(client, api, instructor, applicant):
    request = _submitted(api, applicant)
    decisions.request_changes(request, Actor.for_user(instructor), "Une conservation de 24 mois.")
    messages.post_message(request, Actor.for_user(instructor), "Et le volume exact ?")
    db.session.commit()
    asks = messages.instructor_asks(request)
    assert asks.change_request.text == "Une conservation de 24 mois."
    assert [m.text for m in asks.messages] == ["Et le volume exact ?"]
    login(client, applicant)
    html = client.get(f"/demandes/{request.id}").get_data(as_text=True)
    callout = html.index('id="demande-instructeur"')
    assert callout < html.index(">La demande</h2>")  # at the top, before the summary
    assert "Une conservation de 24 mois." in html[callout : callout + 2000]
    assert "Et le volume exact ?" in html[callout : callout + 3000]
    # An answer from the organisation settles the message; the change request stays.
    messages.post_message(request, Actor.for_user(applicant), "400 appels par jour.")
    asks = messages.instructor_asks(request)
    assert asks.change_request is not None and asks.messages == []
    # The instructor's own page has no such callout.
    login(client, instructor)
    assert 'id="demande-instructeur"' not in client.get(f"/demandes/{request.id}").get_data(
        as_text=True
    )
