"""What every domain's forms share: the base form — Flask-WTF (CSRF token) with WTForms' own
messages in French (Flask-WTF alone would need Flask-Babel for that) — and a checkbox list."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import SelectMultipleField
from wtforms.meta import DefaultMeta
from wtforms.widgets import CheckboxInput, ListWidget


class Form(FlaskForm):
    class Meta:
        locales = ("fr",)

        def get_translations(self, form):
            return DefaultMeta.get_translations(self, form)

    def error_list(self) -> list[tuple[str | None, str | None, str]]:
        """Every error of the form, in the order of its fields, as the error summary lists
        them: (the field's id to link to, its label, the message); errors of the whole form
        (``form_errors``) last, with no field."""
        items: list[tuple[str | None, str | None, str]] = []
        for field in self:
            if field.type in ("CSRFTokenField", "HiddenField"):
                items.extend((None, None, message) for message in field.errors)
                continue
            if field.type == "FormField":  # a sub-form: its own fields, under its label
                for sub in field:
                    label = f"{field.label.text} — {sub.label.text}"
                    items.extend((sub.id, label, m) for m in sub.errors)
                continue
            items.extend((field.id, field.label.text, m) for m in field.errors)
        items.extend((None, None, message) for message in self.form_errors)
        return items


class MultiCheckboxField(SelectMultipleField):
    """A multiple choice shown as checkboxes (DSFR lists them better than a multi-select)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()
