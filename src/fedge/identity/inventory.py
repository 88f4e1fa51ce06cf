"""The files of a PKI directory and ``inventory.json``, the record of every certificate issued.

The inventory is what ``fedge pki list`` prints and what revocation by name looks up; the CRL is
rebuilt from its revoked entries on every change. Serials are stored as lower-case hex.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509

from fedge.errors import PkiError
from fedge.identity._files import write_atomic
from fedge.identity.certificates import Role, check_name

__all__ = ["REVOCATION_REASONS", "Inventory", "InventoryEntry", "PkiPaths", "load_inventory"]

_INVENTORY_VERSION = 1
REVOCATION_REASONS: dict[str, x509.ReasonFlags] = {
    flag.name: flag
    for flag in x509.ReasonFlags
    if flag not in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.aa_compromise)
}


@dataclass(frozen=True)
class PkiPaths:
    """Where each file of a PKI directory lives."""

    directory: Path

    @property
    def ca_key(self) -> Path:
        """Fleet CA private key."""
        return self.directory / "ca.key"

    @property
    def ca_cert(self) -> Path:
        """Fleet CA certificate."""
        return self.directory / "ca.crt"

    @property
    def crl(self) -> Path:
        """Signed certificate revocation list."""
        return self.directory / "crl.pem"

    @property
    def release_key(self) -> Path:
        """Ed25519 release signing key."""
        return self.directory / "release.key"

    @property
    def release_pub(self) -> Path:
        """Ed25519 release public key."""
        return self.directory / "release.pub"

    @property
    def inventory(self) -> Path:
        """JSON inventory of issued certificates."""
        return self.directory / "inventory.json"

    def cert_for(self, name: str) -> Path:
        """Certificate file of holder ``name``."""
        return self.directory / "issued" / f"{check_name(name, 'name')}.crt"

    def key_for(self, name: str) -> Path:
        """Private key file of holder ``name``."""
        return self.directory / "issued" / f"{check_name(name, 'name')}.key"


@dataclass(frozen=True)
class InventoryEntry:
    """One issued certificate as recorded in ``inventory.json``."""

    serial: int
    name: str
    role: Role
    site: str | None
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None = None
    reason: str | None = None  # a key of REVOCATION_REASONS

    @property
    def revoked(self) -> bool:
        """True once revoked."""
        return self.revoked_at is not None

    def revoke(self, when: datetime, reason: str) -> InventoryEntry:
        """A copy of this entry marked revoked at ``when`` for ``reason``."""
        return replace(self, revoked_at=when, reason=reason)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the inventory (serial as lower-case hex)."""
        return {
            "serial": format(self.serial, "x"),
            "name": self.name,
            "role": self.role.value,
            "site": self.site,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> InventoryEntry:
        """Inverse of :meth:`to_json`."""
        revoked_at = obj.get("revoked_at")
        return cls(
            serial=int(obj["serial"], 16),
            name=obj["name"],
            role=Role(obj["role"]),
            site=obj.get("site"),
            not_before=datetime.fromisoformat(obj["not_before"]),
            not_after=datetime.fromisoformat(obj["not_after"]),
            revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
            reason=obj.get("reason"),
        )


@dataclass
class Inventory:
    """The whole ``inventory.json``: fleet name, last CRL number, every entry (mutable while
    a PKI operation holds the directory lock)."""

    fleet: str
    crl_number: int
    entries: list[InventoryEntry]

    def save(self, path: Path) -> None:
        """Write the inventory atomically."""
        doc = {
            "version": _INVENTORY_VERSION,
            "fleet": self.fleet,
            "crl_number": self.crl_number,
            "certificates": [entry.to_json() for entry in self.entries],
        }
        # no indent: json's C encoder (an indented dump runs in Python, ~10x slower); `fedge
        # pki list` is the human view
        body = json.dumps(doc) + "\n"
        write_atomic(path, body.encode())


def load_inventory(paths: PkiPaths) -> Inventory:
    """Read ``inventory.json`` of a PKI directory, refusing a missing or corrupt one."""
    if not paths.ca_key.exists() or not paths.inventory.exists():
        raise PkiError(f"{paths.directory} is not a fedge PKI directory; run `fedge pki init`")
    try:
        doc = json.loads(paths.inventory.read_text())
        if doc.get("version") != _INVENTORY_VERSION:
            raise PkiError(f"unsupported inventory version {doc.get('version')!r}")
        return Inventory(
            fleet=doc["fleet"],
            crl_number=int(doc["crl_number"]),
            entries=[InventoryEntry.from_json(e) for e in doc["certificates"]],
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"inventory {paths.inventory} is corrupt: {exc}") from None
