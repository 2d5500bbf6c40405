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

signing_key_created = _signals.signal("signing-key-created")
"""keys → tokens: a signing key was created (sender: the ``SigningKey``; ``actor``: who made it).
The tokens domain records the act in the audit log."""
