"""What a lower domain tells the higher ones (blinker, as Flask does).

Dependencies between domains run one way (README, "Architecture"). When a lower domain must
let a higher one act on something that happened (a habilitation approved, a token replaced),
it sends one of these signals instead of importing upwards; the higher domain connects its
receiver at import time. Receivers run synchronously, in the sender's transaction: a receiver
that raises aborts the act, as a direct call would.

Every signal is sent with the object as sender and keyword arguments documented here.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()


# --- keys → tokens ---------------------------------------------------------------------------

signing_key_created = _signals.signal("signing-key-created")
"""keys → tokens: a signing key was created (sender: the ``SigningKey``; ``actor``: who made it).
The tokens domain records the act in the audit log."""

# --- authorizations → tokens, lifecycle -------------------------------------------------------

habilitation_approved = _signals.signal("habilitation-approved")
"""A request was approved: sender the new habilitation; ``actor``. Tokens issues its token."""

habilitation_updated = _signals.signal("habilitation-updated")
"""The update of a validated request was approved, after ``habilitation_approved``: sender the
habilitation it replaces (now obsolete); ``habilitation`` the new one, ``actor``. Lifecycle
hands the old tokens over to the new one and completes a renewal waiting on the update."""

update_closed = _signals.signal("update-closed")
"""The update of a validated request ended without approval (refused or cancelled): sender the
request, back to the content of its habilitation; ``actor``. Lifecycle cancels a renewal
waiting on that update."""

habilitation_revoked = _signals.signal("habilitation-revoked")
"""A habilitation was revoked: sender the habilitation; ``actor``, ``reason``. Tokens revokes
its live tokens."""

# --- tokens → consumption, audit → consumption -----------------------------------------------

use_buffer_due = _signals.signal("use-buffer-due")
"""Tokens' introspection use buffer needs its writer (consumption): sent with the app as
sender, ``every`` (``USAGE_FLUSH_SECONDS``), ``full`` (the buffer is full) and, inline
(``every == 0``), ``at`` (the flush's moment). Background: start (or wake) the flusher,
return 0; inline: write the buffer now and return how many calls were written."""

audit_verifying = _signals.signal("audit-verifying")
"""``audit verify`` runs: each domain whose records are sealed into the chain checks them and
returns its report (``checked``, ``problems``); sent with the session as sender."""
