"""Scheduled jobs of the notify domain."""

from __future__ import annotations

from datapass.notify import mail as mail_delivery


def deliver_mails() -> dict[str, int]:
    """Send every mail that is due, a claim at a time, until none is left or the server
    fails (a deferral: the next run tries again)."""
    totals = {"sent": 0, "failed": 0, "deferred": 0}
    while True:
        counts = mail_delivery.deliver_due()
        for key in totals:
            totals[key] += counts[key]
        if not any(counts.values()) or counts["deferred"]:
            return totals
