"""Issuing certificates and reading identities back; verify_peer against CA and validity."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedge.errors import CertificateError, ExpiredCertificateError, PkiError
from fedge.identity import (
    PkiPaths,
    Role,
    identity_from_certificate,
    init_pki,
    issue,
    list_certificates,
    load_certificate,
    verify_peer,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(
    ("role", "site"),
    [("coordinator", None), ("gateway", "A"), ("device", "A"), ("admin", None)],
)
def test_issue_and_parse_back(pki: PkiPaths, role: str, site: str | None) -> None:
    issued = issue(pki.directory, role, f"{role}-1", site=site, validity_days=10)
    ident = identity_from_certificate(load_certificate(issued.cert_path))
    assert ident == issued.identity
    assert (ident.role, ident.name, ident.site) == (Role(role), f"{role}-1", site)
    assert timedelta(days=9) < ident.not_after - datetime.now(UTC) <= timedelta(days=10)
    # DER bytes parse the same
    der = load_certificate(issued.cert_path).public_bytes(serialization.Encoding.DER)
    assert identity_from_certificate(der) == ident


def test_server_certificates_carry_hosts_and_server_auth(pki: PkiPaths) -> None:
    gw = load_certificate(issue(pki.directory, "gateway", "gw-a", site="A").cert_path)
    san = gw.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    eku = gw.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not gw.extensions.get_extension_for_class(x509.BasicConstraints).value.ca

    dev = load_certificate(issue(pki.directory, "device", "dev-1", site="A").cert_path)
    eku = dev.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    san = dev.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == []


def test_custom_hosts(pki: PkiPaths) -> None:
    cert = load_certificate(
        issue(pki.directory, "coordinator", "c", hosts=["cloud.example", "10.0.0.5"]).cert_path
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cloud.example"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.5")]
    with pytest.raises(CertificateError, match="takes no hosts"):
        issue(pki.directory, "device", "d", site="A", hosts=["localhost"])


def test_private_keys_are_owner_only(pki: PkiPaths) -> None:
    issued = issue(pki.directory, "device", "dev-1", site="A")
    assert _mode(issued.key_path) == 0o600
    assert _mode(pki.ca_key) == 0o600
    assert _mode(pki.release_key) == 0o600
    assert _mode(pki.directory) == 0o700
    assert _mode(issued.cert_path) == 0o644


@pytest.mark.parametrize(
    ("role", "name", "site", "message"),
    [
        ("device", "dev-1", None, "needs a site"),
        ("gateway", "gw", None, "needs a site"),
        ("admin", "ops", "A", "takes no site"),
        ("coordinator", "c", "A", "takes no site"),
        ("device", "../etc", "A", "invalid name"),
        ("device", "dev-1", "A/B", "invalid site"),
        ("device", "", "A", "invalid name"),
        ("robot", "r", None, "unknown role"),
    ],
)
def test_invalid_requests_refused(
    pki: PkiPaths, role: str, name: str, site: str | None, message: str
) -> None:
    with pytest.raises(CertificateError, match=message):
        issue(pki.directory, role, name, site=site)


def test_duplicate_name_refused_unless_replace(pki: PkiPaths) -> None:
    first = issue(pki.directory, "device", "dev-1", site="A")
    with pytest.raises(PkiError, match="already holds"):
        issue(pki.directory, "device", "dev-1", site="A")
    second = issue(pki.directory, "device", "dev-1", site="A", replace=True)
    entries = {e.serial: e for e in list_certificates(pki.directory)}
    assert entries[first.identity.serial].reason == "superseded"
    assert not entries[second.identity.serial].revoked


def test_init_refuses_to_overwrite(pki: PkiPaths) -> None:
    with pytest.raises(PkiError, match="already holds a fleet CA"):
        init_pki(pki.directory, "acme")


def test_issue_outside_a_pki_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PkiError, match="not a fedge PKI"):
        issue(tmp_path / "empty", "admin", "ops")


def test_verify_peer_accepts_valid(pki: PkiPaths) -> None:
    issued = issue(pki.directory, "gateway", "gw-a", site="A")
    ca = load_certificate(pki.ca_cert)
    ident = verify_peer(load_certificate(issued.cert_path), ca, None)
    assert ident == issued.identity


def test_expired_certificate_refused(pki: PkiPaths) -> None:
    past = datetime.now(UTC) - timedelta(days=1)
    issued = issue(pki.directory, "device", "old", site="A", not_after=past)
    assert issued.identity.not_after < datetime.now(UTC)
    with pytest.raises(ExpiredCertificateError, match="expired"):
        verify_peer(load_certificate(issued.cert_path), load_certificate(pki.ca_cert), None)


def test_not_yet_valid_certificate_refused(pki: PkiPaths) -> None:
    future = datetime.now(UTC) + timedelta(days=2)
    issued = issue(pki.directory, "device", "early", site="A", not_before=future, validity_days=10)
    with pytest.raises(ExpiredCertificateError, match="not valid before"):
        verify_peer(load_certificate(issued.cert_path), load_certificate(pki.ca_cert), None)


def test_certificate_from_another_ca_refused(pki: PkiPaths, other_pki: PkiPaths) -> None:
    foreign = issue(other_pki.directory, "device", "dev-1", site="A")
    # Same fleet name, so even the issuer name matches: the signature check must catch it.
    with pytest.raises(CertificateError, match="valid signature"):
        verify_peer(load_certificate(foreign.cert_path), load_certificate(pki.ca_cert), None)


def test_ca_certificate_is_not_a_peer(pki: PkiPaths) -> None:
    ca = load_certificate(pki.ca_cert)
    with pytest.raises(CertificateError):
        verify_peer(ca, ca, None)


def test_garbage_refused() -> None:
    with pytest.raises(CertificateError, match="not a readable"):
        identity_from_certificate(b"\x30\x03garbage")


def _self_signed(uris: list[str], cn: str = "x") -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(key, hashes.SHA256())


@pytest.mark.parametrize(
    ("uris", "message"),
    [
        ([], "no fedge role"),
        (["https://example.com"], "exactly one fedge role"),
        (["urn:fedge:role:device", "urn:fedge:role:admin"], "exactly one fedge role"),
        (["urn:fedge:role:root"], "unknown role"),
        (["urn:fedge:role:device"], "needs a site"),
        (["urn:fedge:role:device", "urn:fedge:site:A", "urn:fedge:site:B"], "more than one site"),
        (["urn:fedge:role:admin", "urn:fedge:site:A"], "takes no site"),
    ],
)
def test_malformed_identity_refused(uris: list[str], message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        identity_from_certificate(_self_signed(uris))
