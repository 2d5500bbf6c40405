"""The lifecycle of access: reminders, expiry, grace, unused access, renewal, closing.

- ``states.py``: the renewal's enum, transitions table and guards (pure);
- ``models.py``: lifecycle acts, renewals, digests sent (and ``lifecycle_due_at`` kept honest);
- ``days.py``: Paris calendar days; ``plan.py``: a token's steps, past and future;
- ``sweep.py``: the scheduled job doing the due steps (the hot path, written for speed);
- ``steps.py``: reminders, expiry, grace end, closing; ``unused.py``: the unused-access steps;
- ``reactivation.py``: a suspended token reactivated by its organisation (once);
- ``renewal.py``: the wizard's rules, the renewal, its completion, ``apply_transition``;
- ``decisions.py``: the instructor's confirmation; ``updates.py``: receivers of
  authorizations' signals (an update approved or closed);
- ``digest.py``: the instructors' daily digest; ``dashboard.py`` and ``trends.py``: the
  security officer's dashboard; ``mails.py``: links and the mails' context;
  ``queries.py``: member tokens, successors;
- ``views.py``, ``forms.py``, ``tasks.py`` (jobs declared in :mod:`datapass.scheduler`).
"""
