"""``fedge pki``: create the fleet CA, issue and revoke certificates, list what was issued.

The ``fedge`` command mounts this group with ``cli.add_command(pki_group)``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from fedge.errors import FedgeError
from fedge.identity.certificates import Role
from fedge.identity.pki import (
    REVOCATION_REASONS,
    CertificateRequest,
    init_pki,
    issue_many,
    list_certificates,
    revoke,
)

__all__ = ["pki_group"]

_DIR = click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("pki"),
    show_default=True,
    help="PKI directory.",
)


@click.group("pki")
def pki_group() -> None:
    """Fleet identity: the CA, certificates for every role, revocation."""


@pki_group.command("init")
@_DIR
@click.option("--fleet", "fleet_name", required=True, help="Fleet name (CA subject).")
@click.option("--days", "validity_days", default=3650, show_default=True, help="CA validity.")
def init_command(directory: Path, fleet_name: str, validity_days: int) -> None:
    """Create the fleet CA, an empty revocation list and the Ed25519 release key."""
    try:
        paths = init_pki(directory, fleet_name, validity_days=validity_days)
    except FedgeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"fleet CA created in {paths.directory}")
    click.echo(f"  CA certificate   {paths.ca_cert}")
    click.echo(f"  revocation list  {paths.crl}")
    click.echo(f"  release key      {paths.release_key} (public: {paths.release_pub})")


@pki_group.command("issue")
@_DIR
@click.argument("role", type=click.Choice([r.value for r in Role]))
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@click.option("--site", help="Site of a gateway or device.")
@click.option("--days", "validity_days", default=365, show_default=True, help="Validity.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="DNS name or IP the server is reached at (repeatable; coordinator and gateway only;"
    " default localhost, 127.0.0.1, ::1).",
)
@click.option("--replace", is_flag=True, help="Revoke the name's current certificate (superseded).")
def issue_command(
    *,
    directory: Path,
    role: str,
    names: tuple[str, ...],
    site: str | None,
    validity_days: int,
    hosts: tuple[str, ...],
    replace: bool,
) -> None:
    """Issue certificates: ROLE is coordinator, gateway, device or admin; each NAME a subject.

    Several names are issued in one pass (the inventory is written once): a fleet of devices
    is one command, e.g. ``fedge pki issue device dev-001 dev-002 ... --site plant-a``.
    """
    requests = [
        CertificateRequest(role, n, site, validity_days, hosts or None, replace=replace)
        for n in names
    ]
    try:
        issued = issue_many(directory, requests)
    except FedgeError as exc:
        raise click.ClickException(str(exc)) from None
    for cert in issued:
        ident = cert.identity
        where = f" at site {ident.site}" if ident.site else ""
        click.echo(f"issued {ident.role} {ident.name}{where}, serial {ident.serial_hex}")
        click.echo(f"  certificate  {cert.cert_path}")
        click.echo(f"  private key  {cert.key_path} (0600)")


@pki_group.command("revoke")
@_DIR
@click.argument("serial_or_name")
@click.option(
    "--reason",
    type=click.Choice(list(REVOCATION_REASONS)),
    default="unspecified",
    show_default=True,
)
def revoke_command(directory: Path, serial_or_name: str, reason: str) -> None:
    """Revoke a certificate by holder NAME or hex SERIAL; the CRL is re-signed at once."""
    try:
        entries = revoke(directory, serial_or_name, reason)
    except FedgeError as exc:
        raise click.ClickException(str(exc)) from None
    for entry in entries:
        click.echo(f"revoked {entry.role} {entry.name}, serial {entry.serial:x} ({reason})")


@pki_group.command("list")
@_DIR
def list_command(directory: Path) -> None:
    """Print every issued certificate: role, name, site, serial, expiry, revoked."""
    try:
        entries = list_certificates(directory)
    except FedgeError as exc:
        raise click.ClickException(str(exc)) from None
    now = datetime.now(UTC)
    rows = [("ROLE", "NAME", "SITE", "SERIAL", "EXPIRES", "REVOKED")]
    for e in entries:
        expiry = e.not_after.strftime("%Y-%m-%d %H:%M")
        if e.not_after < now:
            expiry += " (expired)"
        revoked = f"yes ({e.reason})" if e.revoked else "no"
        rows.append((e.role.value, e.name, e.site or "-", f"{e.serial:x}", expiry, revoked))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
