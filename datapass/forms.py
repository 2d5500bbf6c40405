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


class MultiCheckboxField(SelectMultipleField):
    """A multiple choice shown as checkboxes (DSFR lists them better than a multi-select)."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()
