"""Who a certificate says its holder is, and whether we believe it.

**Encoding.** The holder's name (device id, gateway name, ...) is the certificate subject's common
name (CN). Role and site are Subject Alternative Name URIs in a ``urn:fedge:`` namespace::

    urn:fedge:role:<coordinator|gateway|device|admin>    exactly one
    urn:fedge:site:<site>                                exactly one for gateway and device, none otherwise

SAN URIs are standard, shown by ``openssl x509 -text`` and covered by the CA's signature, so they
cannot be changed without the certificate failing verification. Names and sites are 1-64 characters
of ``[A-Za-z0-9._-]``, starting with a letter or digit (they also name files in the PKI directory).

:func:`verify_peer` checks a peer certificate against the fleet CA, its validity window and the
revocation list, then returns its :class:`Identity`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from fedge.errors import CertificateError, ExpiredCertificateError, RevokedError
from fedge.identity._x509 import to_der

__all__ = [
    "ROLE_URI_PREFIX",
    "SITE_URI_PREFIX",
    "Identity",
    "RevocationSource",
    "Role",
    "check_name",
    "identity_from_certificate",
    "identity_uris",
    "load_certificate",
    "parse_certificate",
    "verify_peer",
]

ROLE_URI_PREFIX = "urn:fedge:role:"
SITE_URI_PREFIX = "urn:fedge:site:"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class Role(StrEnum):
    """What a certificate holder is in the fleet."""

    COORDINATOR = "coordinator"  # cloud coordinator: serves gateways/devices/admins, fleet-wide
    GATEWAY = "gateway"  # edge gateway of one site: serves that site's devices
    DEVICE = "device"  # an edge device of one site; its id is the certificate CN
    ADMIN = "admin"  # an operator running admin commands, fleet-wide

    @property
    def is_server(self) -> bool:
        """True for roles that also serve TLS (coordinator, gateway): they get serverAuth."""
        return self in (Role.COORDINATOR, Role.GATEWAY)

    @property
    def has_site(self) -> bool:
        """True for roles bound to one site (gateway, device)."""
        return self in (Role.GATEWAY, Role.DEVICE)


@dataclass(frozen=True)
class Identity:
    """The verified (or at least parsed) identity carried by a fleet certificate."""

    role: Role
    name: str  # subject CN: device id, gateway name, ...
    site: str | None  # set for gateway and device, None for coordinator and admin
    serial: int
    not_before: datetime  # UTC
    not_after: datetime  # UTC
    # the certificate it was read from (DER; empty when built by hand), so a gateway can pass
    # its devices' certificates on to the coordinator as proof of their site
    der: bytes = field(default=b"", repr=False, compare=False)

    @property
    def serial_hex(self) -> str:
        """The serial number as lower-case hex, as printed by ``fedge pki list``."""
        return format(self.serial, "x")


class RevocationSource(Protocol):
    """Anything that can say whether a serial is revoked (a CRL snapshot or a live checker)."""

    def is_revoked(self, serial: int) -> bool:
        """True when the certificate with this serial number has been revoked."""
        ...


def check_name(value: str, what: str) -> str:
    """Return ``value`` if it is a valid name/site, else raise :class:`CertificateError`."""
    if not _NAME_RE.fullmatch(value):
        raise CertificateError(
            f"invalid {what} {value!r}: use 1-64 characters of letters, digits, '.', '_' or '-',"
            " starting with a letter or digit"
        )
    return value


def identity_uris(role: Role, site: str | None) -> list[str]:
    """The SAN URIs that encode ``role`` and ``site``; refuses a site where none belongs."""
    if role.has_site and site is None:
        raise CertificateError(f"a {role} certificate needs a site (pass --site)")
    if not role.has_site and site is not None:
        raise CertificateError(f"a {role} certificate is fleet-wide and takes no site")
    uris = [ROLE_URI_PREFIX + role.value]
    if site is not None:
        uris.append(SITE_URI_PREFIX + check_name(site, "site"))
    return uris


def parse_certificate(data: bytes | x509.Certificate) -> x509.Certificate:
    """A certificate object from DER or PEM bytes (or the object itself)."""
    if isinstance(data, x509.Certificate):
        return data
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(f"not a readable X.509 certificate: {exc}") from None


def load_certificate(path: str | Path) -> x509.Certificate:
    """Read a PEM (or DER) certificate file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read certificate {path}: {exc.strerror}") from None
    return parse_certificate(data)


def identity_from_certificate(cert: bytes | x509.Certificate) -> Identity:
    """Parse role, name, site, serial and validity out of a fleet certificate (no trust check)."""
    cert = parse_certificate(cert)
    common_names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(common_names) != 1 or not isinstance(common_names[0].value, str):
        raise CertificateError("certificate subject must have exactly one common name")
    name = check_name(common_names[0].value, "name")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise CertificateError(f"certificate of {name!r} has no fedge role (no SAN)") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    roles = [u.removeprefix(ROLE_URI_PREFIX) for u in uris if u.startswith(ROLE_URI_PREFIX)]
    sites = [u.removeprefix(SITE_URI_PREFIX) for u in uris if u.startswith(SITE_URI_PREFIX)]
    if len(roles) != 1:
        raise CertificateError(f"certificate of {name!r} must carry exactly one fedge role URI")
    try:
        role = Role(roles[0])
    except ValueError:
        raise CertificateError(f"certificate of {name!r} has unknown role {roles[0]!r}") from None
    if len(sites) > 1:
        raise CertificateError(f"certificate of {name!r} carries more than one site")
    site = check_name(sites[0], "site") if sites else None
    identity_uris(role, site)  # role/site consistency
    return Identity(
        role=role,
        name=name,
        site=site,
        serial=cert.serial_number,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        der=to_der(cert),
    )


def _check_window(cert: x509.Certificate, what: str, now: datetime) -> None:
    if now < cert.not_valid_before_utc:
        raise ExpiredCertificateError(
            f"{what} is not valid before {cert.not_valid_before_utc.isoformat()}; check the clock"
        )
    if now > cert.not_valid_after_utc:
        raise ExpiredCertificateError(
            f"{what} expired at {cert.not_valid_after_utc.isoformat()}; issue a new one"
            " with `fedge pki issue`"
        )


def verify_peer(
    cert: bytes | x509.Certificate,
    ca: x509.Certificate,
    crl: RevocationSource | None,
    *,
    now: datetime | None = None,
) -> Identity:
    """Check ``cert`` chains to ``ca``, is in its validity window and not revoked; return its identity.

    ``crl`` is a :class:`~fedge.identity.revocation.RevocationList` snapshot or a live
    :class:`~fedge.identity.revocation.RevocationChecker`; pass ``None`` only to skip revocation.
    Raises :class:`CertificateError`, :class:`ExpiredCertificateError` or :class:`RevokedError`.
    """
    cert = parse_certificate(cert)
    now = now or datetime.now(UTC)
    subject = cert.subject.rfc4514_string()
    if cert.issuer != ca.subject:
        raise CertificateError(f"certificate {subject!r} was not issued by this fleet's CA")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CertificateError(
            f"certificate {subject!r} does not carry a valid signature of this fleet's CA"
        ) from None
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is not None and constraints.ca:
        raise CertificateError(f"certificate {subject!r} is a CA certificate, not a peer")
    _check_window(ca, "the fleet CA certificate", now)
    _check_window(cert, f"certificate {subject!r}", now)
    if crl is not None and crl.is_revoked(cert.serial_number):
        raise RevokedError(
            f"certificate {subject!r} (serial {cert.serial_number:x}) has been revoked"
        )
    return identity_from_certificate(cert)
