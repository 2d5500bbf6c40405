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

use_buffer_due = _signals.signal("use-buffer-due")
"""Tokens' introspection use buffer needs its writer (consumption): sent with the app as
sender, ``every`` (``USAGE_FLUSH_SECONDS``), ``full`` (the buffer is full) and, inline
(``every == 0``), ``at`` (the flush's moment). Background: start (or wake) the flusher,
return 0; inline: write the buffer now and return how many calls were written."""

audit_verifying = _signals.signal("audit-verifying")
"""``audit verify`` runs: each domain whose records are sealed into the chain checks them and
returns its report (``checked``, ``problems``); sent with the session as sender."""
