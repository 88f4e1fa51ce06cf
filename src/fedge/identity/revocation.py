"""The fleet's certificate revocation list, and a checker servers consult on every request.

``fedge pki revoke`` re-signs ``crl.pem`` and replaces it atomically. A :class:`RevocationChecker`
``stat()``s that file on each check and reloads it when its mtime, size or inode changed, so a
revocation takes effect on the very next request, without a restart. A CRL that cannot be read or
whose signature does not verify against the fleet CA makes the checker fail closed (raise), rather
than silently accept revoked peers.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from fedge.errors import PkiError
from fedge.identity.certificates import Identity, load_certificate, verify_peer

__all__ = ["PeerVerifier", "RevocationChecker", "RevocationList", "load_revocation_list"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevocationList:
    """A verified snapshot of the fleet CRL."""

    serials: frozenset[int]
    number: int | None  # CRL number, increases with every re-signing
    last_update: datetime
    next_update: datetime | None
    # serial -> (when it was revoked, why: an x509.ReasonFlags name), as the CRL's entries say
    entries: Mapping[int, tuple[datetime, str]] = field(default_factory=dict, compare=False)

    def is_revoked(self, serial: int) -> bool:
        """True when ``serial`` is on this CRL."""
        return serial in self.serials


def load_revocation_list(path: str | Path, ca: x509.Certificate) -> RevocationList:
    """Read ``path`` (PEM or DER CRL), check it is signed by ``ca``, and return a snapshot."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read revocation list {path}: {exc.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            crl = x509.load_pem_x509_crl(data)
        else:
            crl = x509.load_der_x509_crl(data)
    except ValueError:
        raise PkiError(f"{path} is not a readable certificate revocation list") from None
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"revocation list {path} is not signed by this fleet's CA; refusing it")
    try:
        number: int | None = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = None
    next_update = crl.next_update_utc
    if next_update is not None and next_update < datetime.now(UTC):
        # A stale CRL still lists every revocation it knows; keep honouring it, but say so.
        log.warning("revocation list %s is past its next update (%s)", path, next_update)
    return RevocationList(
        serials=frozenset(entry.serial_number for entry in crl),
        number=number,
        last_update=crl.last_update_utc,
        next_update=next_update,
        entries={e.serial_number: (e.revocation_date_utc, _reason(e)) for e in crl},
    )


def _reason(entry: x509.RevokedCertificate) -> str:
    try:
        return entry.extensions.get_extension_for_class(x509.CRLReason).value.reason.name
    except x509.ExtensionNotFound:
        return "unspecified"


class RevocationChecker:
    """A live view of a CRL file: reloaded whenever the file changes, checked on every call.

    Thread-safe. Cost per check when nothing changed: one ``os.stat``.
    """

    def __init__(self, path: str | Path, ca: x509.Certificate) -> None:
        self._path = Path(path)
        self._ca = ca
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._current: RevocationList | None = None
        self.current()  # fail at start-up, not at the first request

    def current(self) -> RevocationList:
        """The CRL as it is on disk now (reloaded if the file changed since the last call)."""
        try:
            st = os.stat(self._path)
        except OSError as exc:
            raise PkiError(f"cannot stat revocation list {self._path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        with self._lock:
            if self._current is None or stamp != self._stamp:
                self._current = load_revocation_list(self._path, self._ca)
                self._stamp = stamp
                log.info(
                    "loaded revocation list %s: %d revoked (CRL number %s)",
                    self._path,
                    len(self._current.serials),
                    self._current.number,
                )
            return self._current

    def is_revoked(self, serial: int) -> bool:
        """True when ``serial`` is on the CRL as it is on disk now."""
        return self.current().is_revoked(serial)


class PeerVerifier:
    """What a server keeps to authenticate peers: the fleet CA plus a live revocation checker."""

    def __init__(self, ca_cert: str | Path, crl: str | Path) -> None:
        self.ca = load_certificate(ca_cert)
        self.revocation = RevocationChecker(crl, self.ca)

    def verify(self, cert: bytes | x509.Certificate, *, now: datetime | None = None) -> Identity:
        """:func:`~fedge.identity.certificates.verify_peer` against the current CRL."""
        return verify_peer(cert, self.ca, self.revocation, now=now)
