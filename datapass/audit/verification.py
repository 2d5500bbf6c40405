"""``audit verify``: the chain, its signed checkpoints and the daily consumption seals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from datapass import signals
from datapass.audit import checkpoints
from datapass.audit import service as audit
from datapass.extensions import db


class Report(Protocol):
    """What each sealing domain answers to :data:`~datapass.signals.audit_verifying`."""

    checked: int
    problems: list[str]


@dataclass
class Verification:
    chain: audit.VerifyResult
    checkpoints: checkpoints.CheckpointReport
    seals: Report

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.checkpoints.problems and not self.seals.problems

    def lines(self) -> list[str]:
        lines = [self.chain.message()]
        if self.checkpoints.problems:
            lines += [f"Point de contrôle en défaut — {p}" for p in self.checkpoints.problems]
        else:
            lines.append(f"Points de contrôle signés : {self.checkpoints.checked} vérifiés.")
        if self.seals.problems:
            lines += [f"Sceau de consommation en défaut — {p}" for p in self.seals.problems]
        else:
            lines.append(f"Sceaux de consommation : {self.seals.checked} recalculés, conformes.")
        return lines


def verify_all(session=None) -> Verification:
    """Verify the chain (from the retention anchor), every checkpoint's signature and position
    in the chain, and every daily seal against the consumption still retained (the
    consumption domain, above this one, answers :data:`~datapass.signals.audit_verifying`)."""
    session = session or db.session
    chain = audit.verify_chain(session)
    signed = checkpoints.verify_checkpoints()
    [(_receiver, seals)] = signals.audit_verifying.send(session)  # one sealing domain
    return Verification(chain, signed, seals)
