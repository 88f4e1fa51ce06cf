"""Revocations made with ``fedge pki revoke`` (the fleet CRL), recorded in the audit log.

``fedge pki revoke`` re-signs the CRL file; the coordinator's
:class:`~fedge.identity.revocation.RevocationChecker` reloads it when the file changes. At every
tick :meth:`CrlAudit.check` asks the checker for the CRL as it is on disk (one ``stat`` when
nothing changed) and appends a ``revocation`` entry for each serial the log does not hold yet:

- ``actor`` "pki" (the fleet CA signed the CRL; who ran the command is not known here),
  ``subject`` the certificate's holder when the log knows its serial from an enrolment, else
  ``serial:<hex>``;
- ``details``: ``source`` "crl", the serial (hex, as enrolments write it), the holder's role and
  site when known, the CRL number, and the revocation date and reason the CRL entry carries.

Once per serial, also across restarts: the serials already recorded are read from the log at
the first check, so a revocation made while the coordinator was down is recorded when it starts
again. (Revocations through the admin API, ``POST /v1/admin/devices/{id}/revoke``, are entries of
their own with the admin's identity; they mark the device in the database, not the CRL.)
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from fedge.coordinator.audit import AuditLog
from fedge.errors import PkiError, ProtocolError
from fedge.identity.revocation import RevocationChecker, RevocationList

__all__ = ["CrlAudit"]

log = logging.getLogger(__name__)


class CrlAudit:
    """Records each serial new on the fleet CRL as a ``revocation`` entry, once (thread-safe: a
    check already running elsewhere makes another return at once)."""

    def __init__(self, audit: AuditLog, checker: RevocationChecker) -> None:
        self.audit, self.checker = audit, checker
        self._seen: RevocationList | None = None  # the CRL snapshot checked last
        self._recorded: set[int] | None = None  # serials the log holds (read at the first check)
        self._failing = False
        self._lock = threading.Lock()

    def check(self) -> int:
        """Record the serials new on the CRL since the last check; returns how many."""
        if not self._lock.acquire(blocking=False):
            return 0  # another thread is at it
        try:
            return self._check()
        finally:
            self._lock.release()

    def _check(self) -> int:
        try:
            crl = self.checker.current()
        except PkiError as exc:  # requests are refused meanwhile (the checker fails closed)
            if not self._failing:
                log.error("audit log: cannot read the CRL to record revocations: %s", exc)
            self._failing = True
            return 0
        self._failing = False
        if crl is self._seen:
            return 0
        if self._recorded is None:
            self._recorded = _recorded_serials(self.audit)
        new = sorted(crl.serials - self._recorded)
        holders = _holders(self.audit, {format(serial, "x") for serial in new}) if new else {}
        done = sum(self._record(crl, serial, holders.get(format(serial, "x"))) for serial in new)
        if done == len(new):
            self._seen = crl  # else the next check tries the rest again
        return done

    def _record(
        self, crl: RevocationList, serial: int, holder: tuple[str, dict[str, Any]] | None
    ) -> bool:
        """Append the revocation of ``serial``; False (logged) when the log cannot take it."""
        hexed = format(serial, "x")
        details: dict[str, Any] = {"source": "crl", "serial": hexed, "crl_number": crl.number}
        if holder is not None:
            details.update(role=holder[1].get("role"), site=holder[1].get("site"))
        revoked = crl.entries.get(serial)
        if revoked is not None:
            details.update(revoked_at=revoked[0].isoformat(), reason=revoked[1])
        subject = holder[0] if holder is not None else f"serial:{hexed}"
        try:
            self.audit.append("revocation", "pki", subject, details)
        except (SQLAlchemyError, ProtocolError, ValueError) as exc:
            log.error(
                "audit log: could not record the revocation of %s (%s); will try again",
                subject,
                exc,
            )
            return False
        assert self._recorded is not None
        self._recorded.add(serial)
        log.info("audit log: %s (serial %s) revoked on the fleet CRL", subject, hexed)
        return True


def _recorded_serials(audit: AuditLog) -> set[int]:
    """Serials of the CRL revocations the log holds."""
    out = set()
    for entry in audit.entries(kinds=["revocation"]):
        serial = entry.details.get("serial")
        if entry.details.get("source") == "crl" and isinstance(serial, str):
            out.add(int(serial, 16))
    return out


def _holders(audit: AuditLog, serials: set[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """(holder name, enrolment details) of the certificates with these serials (hex)."""
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for entry in audit.entries(kinds=["enrolment"]):
        serial = entry.details.get("serial")
        if serial in serials:
            found[str(serial)] = (entry.subject, dict(entry.details))
    return found
