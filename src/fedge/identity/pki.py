"""The fleet CA on disk: ``init_pki``, ``issue``, ``revoke`` and ``list_certificates``.

Layout of a PKI directory (created 0700)::

    ca.key            0600  fleet CA private key (ECDSA P-256) -- keep it off servers in production
    ca.crt                  fleet CA certificate: the only trust anchor of every TLS link
    crl.pem                 revocation list signed by the CA, replaced atomically on every revoke
    release.key       0600  Ed25519 release key that signs model versions (coordinator only)
    release.pub             its public key, shipped to gateways and devices
    inventory.json          every certificate issued, revoked or not (``fedge pki list``)
    issued/<name>.crt       a holder's certificate
    issued/<name>.key 0600  a holder's private key

Operations that change the directory take an exclusive ``flock`` on ``.lock``, so two ``fedge pki``
commands cannot interleave. Role and site encoding: see :mod:`fedge.identity.certificates`.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from fedge.errors import CertificateError, PkiError
from fedge.identity import _x509
from fedge.identity._files import write_atomic, write_private
from fedge.identity.certificates import (
    Identity,
    Role,
    check_name,
    identity_from_certificate,
    identity_uris,
    load_certificate,
)
from fedge.identity.inventory import (
    REVOCATION_REASONS,
    Inventory,
    InventoryEntry,
    PkiPaths,
    load_inventory,
)
from fedge.identity.signing import ReleaseSigningKey

__all__ = [
    "DEFAULT_SERVER_HOSTS",
    "REVOCATION_REASONS",
    "CertificateRequest",
    "InventoryEntry",
    "IssuedCertificate",
    "PkiPaths",
    "init_pki",
    "issue",
    "issue_many",
    "list_certificates",
    "revoke",
]

DEFAULT_SERVER_HOSTS = ("localhost", "127.0.0.1", "::1")  # SANs when a server gives no hosts
_CLOCK_SKEW = timedelta(minutes=5)  # not_before is back-dated by this much
_CRL_VALIDITY = timedelta(days=365)  # next_update of a freshly signed CRL


@dataclass(frozen=True)
class IssuedCertificate:
    """What :func:`issue` produced: the identity and where its files are."""

    identity: Identity
    cert_path: Path
    key_path: Path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _ca(paths: PkiPaths) -> tuple[_x509.PrivateKey, x509.Certificate]:
    try:
        key_pem = paths.ca_key.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read CA key {paths.ca_key}: {exc.strerror}") from None
    return _x509.load_private_key(key_pem), load_certificate(paths.ca_cert)


def _write_crl(paths: PkiPaths, inventory: Inventory, now: datetime) -> None:
    ca_key, ca_cert = _ca(paths)
    inventory.crl_number += 1
    revoked = [
        (
            e.serial,
            e.revoked_at,
            REVOCATION_REASONS.get(e.reason or "", x509.ReasonFlags.unspecified),
        )
        for e in inventory.entries
        if e.revoked_at is not None
    ]
    crl = _x509.build_crl(
        ca_key=ca_key,
        ca_certificate=ca_cert,
        revoked=revoked,
        crl_number=inventory.crl_number,
        last_update=now,
        next_update=now + _CRL_VALIDITY,
    )
    write_atomic(paths.crl, _x509.to_pem(crl))


def _as_role(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        choices = ", ".join(r.value for r in Role)
        raise CertificateError(f"unknown role {role!r}; choose one of {choices}") from None


def init_pki(
    directory: str | Path,
    fleet_name: str,
    *,
    validity_days: int = 3650,
    now: datetime | None = None,
) -> PkiPaths:
    """Create a fleet CA (key, certificate), an empty signed CRL and an Ed25519 release key."""
    check_name(fleet_name, "fleet name")
    if validity_days < 1:
        raise PkiError("validity_days must be at least 1")
    paths = PkiPaths(Path(directory))
    paths.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(paths.directory):
        if paths.ca_key.exists() or paths.inventory.exists():
            raise PkiError(f"{paths.directory} already holds a fleet CA; refusing to overwrite it")
        now = now or datetime.now(UTC)
        ca_key = _x509.new_private_key()
        ca_cert = _x509.build_ca_certificate(
            ca_key, fleet_name, now - _CLOCK_SKEW, now + timedelta(days=validity_days)
        )
        write_private(paths.ca_key, _x509.private_key_pem(ca_key))
        write_atomic(paths.ca_cert, _x509.to_pem(ca_cert))
        ReleaseSigningKey.generate().save(paths.release_key, paths.release_pub)
        inventory = Inventory(fleet=fleet_name, crl_number=0, entries=[])
        _write_crl(paths, inventory, now)
        inventory.save(paths.inventory)
    return paths


@dataclass(frozen=True)
class CertificateRequest:
    """One certificate to issue: see :func:`issue` for the fields."""

    role: Role | str
    name: str
    site: str | None = None
    validity_days: int = 365
    hosts: Sequence[str] | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    replace: bool = False


def issue(
    directory: str | Path,
    role: Role | str,
    name: str,
    *,
    site: str | None = None,
    validity_days: int = 365,
    hosts: Sequence[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    replace: bool = False,
) -> IssuedCertificate:
    """Issue a certificate for ``name`` with ``role`` (and ``site``); write its key (0600) and cert.

    Coordinators and gateways also get serverAuth and SAN ``hosts`` (default: localhost, 127.0.0.1,
    ::1). ``not_before``/``not_after`` override ``validity_days`` (tests use a past ``not_after``).
    A name that already holds an unrevoked certificate is refused unless ``replace``, which revokes
    the old one(s) as ``superseded``. Many at once: :func:`issue_many`.
    """
    request = CertificateRequest(
        role, name, site, validity_days, hosts, not_before, not_after, replace
    )
    return issue_many(directory, [request])[0]


def issue_many(
    directory: str | Path, requests: Sequence[CertificateRequest]
) -> list[IssuedCertificate]:
    """Issue several certificates in one pass: the inventory is read and written once and the
    files are flushed to disk together, so N certificates cost O(N), not O(N²) (a fleet of
    devices). All requests are checked before any file is written; a bad one issues nothing.
    """
    paths = PkiPaths(Path(directory))
    now = datetime.now(UTC)
    with _locked(paths.directory):
        inventory = load_inventory(paths)
        active: dict[str, list[InventoryEntry]] = {}
        for e in inventory.entries:
            if not e.revoked:
                active.setdefault(e.name, []).append(e)
        seen: set[str] = set()
        plans = [_plan(r, now, active, seen) for r in requests]
        ca_key, ca_cert = _ca(paths)
        issued: list[IssuedCertificate] = []
        superseded: set[int] = set()
        one = len(requests) == 1  # one: fsync its files; many: one sync for the whole batch
        for request, (role, uris, hosts, not_before, not_after) in zip(
            requests, plans, strict=True
        ):
            leaf_key = _x509.new_private_key()
            cert = _x509.build_leaf_certificate(
                ca_key=ca_key,
                ca_certificate=ca_cert,
                leaf_key=leaf_key,
                common_name=request.name,
                organization=inventory.fleet,
                uris=uris,
                hosts=hosts,
                server=role.is_server,
                serial=x509.random_serial_number(),
                not_before=not_before,
                not_after=not_after,
            )
            name = request.name
            write_private(paths.key_for(name), _x509.private_key_pem(leaf_key), durable=one)
            write_atomic(paths.cert_for(name), _x509.to_pem(cert), durable=one)
            identity = identity_from_certificate(cert)
            superseded.update(e.serial for e in active.pop(name, []))
            inventory.entries.append(
                InventoryEntry(
                    serial=identity.serial,
                    name=name,
                    role=role,
                    site=request.site,
                    not_before=identity.not_before,
                    not_after=identity.not_after,
                )
            )
            issued.append(IssuedCertificate(identity, paths.cert_for(name), paths.key_for(name)))
        if not one:
            os.sync()  # every key and certificate is on disk before the inventory names it
        if superseded:
            inventory.entries = [
                e.revoke(now, "superseded") if e.serial in superseded else e
                for e in inventory.entries
            ]
            _write_crl(paths, inventory, now)
        inventory.save(paths.inventory)
    return issued


def _plan(
    request: CertificateRequest,
    now: datetime,
    active: dict[str, list[InventoryEntry]],
    seen: set[str],
) -> tuple[Role, list[str], list[str], datetime, datetime]:
    """Check one request; its role, SAN URIs, hosts and validity window."""
    role = _as_role(request.role)
    name = check_name(request.name, "name")
    uris = identity_uris(role, request.site)
    hosts = request.hosts
    if hosts is None:
        hosts = DEFAULT_SERVER_HOSTS if role.is_server else ()
    if hosts and not role.is_server:
        raise CertificateError(f"a {role} certificate does not serve TLS and takes no hosts")
    not_after = request.not_after
    if not_after is None:
        if request.validity_days < 1:
            raise PkiError("validity_days must be at least 1")
        not_after = now + timedelta(days=request.validity_days)
    not_before = request.not_before
    if not_before is None:
        not_before = min(now - _CLOCK_SKEW, not_after - timedelta(days=1))
    if not_before >= not_after:
        raise PkiError("not_before must be earlier than not_after")
    if name in seen:
        raise PkiError(f"{name!r} is named twice in one issue; name each holder once")
    seen.add(name)
    held = active.get(name)
    if held and not request.replace:
        raise PkiError(
            f"{name!r} already holds certificate {held[0].serial:x}; revoke it first"
            " or pass --replace"
        )
    return role, uris, list(hosts), not_before, not_after


def _parse_serial(text: str) -> int | None:
    cleaned = text.strip().lower().removeprefix("0x").replace(":", "")
    try:
        return int(cleaned, 16)
    except ValueError:
        return None


def revoke(
    directory: str | Path, serial_or_name: str | int, reason: str = "unspecified"
) -> list[InventoryEntry]:
    """Revoke by holder name (all its unrevoked certificates) or serial; re-sign the CRL at once.

    A string is matched against holder names first, then read as a hex serial (``0x`` and colons
    allowed). Returns the entries revoked. ``reason`` is a key of :data:`REVOCATION_REASONS`.
    """
    if reason not in REVOCATION_REASONS:
        raise PkiError(f"unknown reason {reason!r}; choose one of {', '.join(REVOCATION_REASONS)}")
    paths = PkiPaths(Path(directory))
    now = datetime.now(UTC)
    with _locked(paths.directory):
        inventory = load_inventory(paths)
        if isinstance(serial_or_name, int):
            targets = [e for e in inventory.entries if e.serial == serial_or_name]
        else:
            targets = [e for e in inventory.entries if e.name == serial_or_name]
            if not targets:
                serial = _parse_serial(serial_or_name)
                targets = [e for e in inventory.entries if e.serial == serial]
        if not targets:
            raise PkiError(f"no certificate with name or serial {serial_or_name!r} in this PKI")
        to_revoke = [e for e in targets if not e.revoked]
        if not to_revoke:
            raise PkiError(f"{serial_or_name!r} is already revoked")
        done = [e.revoke(now, reason) for e in to_revoke]
        replaced = dict(zip((e.serial for e in to_revoke), done, strict=True))
        inventory.entries = [replaced.get(e.serial, e) for e in inventory.entries]
        _write_crl(paths, inventory, now)
        inventory.save(paths.inventory)
    return done


def list_certificates(directory: str | Path) -> list[InventoryEntry]:
    """Every certificate this PKI has issued, oldest first, revoked ones included."""
    return list(load_inventory(PkiPaths(Path(directory))).entries)
