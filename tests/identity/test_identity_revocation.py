"""Revocation: the CRL is re-signed at once and live checkers see it without a restart."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fedge.errors import PkiError, RevokedError
from fedge.identity import (
    PeerVerifier,
    PkiPaths,
    RevocationChecker,
    issue,
    list_certificates,
    load_certificate,
    load_revocation_list,
    revoke,
    verify_peer,
)


def test_fresh_crl_is_empty_and_signed(pki: PkiPaths) -> None:
    crl = load_revocation_list(pki.crl, load_certificate(pki.ca_cert))
    assert crl.serials == frozenset()
    assert crl.number == 1


def test_revocation_takes_effect_immediately(pki: PkiPaths) -> None:
    dev = issue(pki.directory, "device", "dev-1", site="A")
    other = issue(pki.directory, "device", "dev-2", site="A")
    verifier = PeerVerifier(pki.ca_cert, pki.crl)  # a running server's verifier
    cert = load_certificate(dev.cert_path)
    assert verifier.verify(cert).name == "dev-1"

    revoked = revoke(pki.directory, "dev-1", "key_compromise")
    assert [e.serial for e in revoked] == [dev.identity.serial]

    with pytest.raises(RevokedError, match="revoked"):
        verifier.verify(cert)  # same object, no restart
    assert verifier.verify(load_certificate(other.cert_path)).name == "dev-2"
    assert verifier.revocation.current().number == 2
    entry = next(e for e in list_certificates(pki.directory) if e.name == "dev-1")
    assert entry.revoked and entry.reason == "key_compromise"


def test_revoke_by_serial(pki: PkiPaths) -> None:
    dev = issue(pki.directory, "device", "dev-1", site="A")
    checker = RevocationChecker(pki.crl, load_certificate(pki.ca_cert))
    assert not checker.is_revoked(dev.identity.serial)
    serial = dev.identity.serial_hex
    revoke(pki.directory, "0x" + serial.upper())
    assert checker.is_revoked(dev.identity.serial)
    with pytest.raises(RevokedError):
        verify_peer(load_certificate(dev.cert_path), load_certificate(pki.ca_cert), checker)


def test_revoke_errors(pki: PkiPaths) -> None:
    issue(pki.directory, "admin", "ops")
    with pytest.raises(PkiError, match="no certificate"):
        revoke(pki.directory, "nobody")
    with pytest.raises(PkiError, match="unknown reason"):
        revoke(pki.directory, "ops", "because")
    revoke(pki.directory, "ops")
    with pytest.raises(PkiError, match="already revoked"):
        revoke(pki.directory, "ops")


def test_crl_from_another_ca_refused(pki: PkiPaths, other_pki: PkiPaths) -> None:
    with pytest.raises(PkiError, match="not signed by this fleet's CA"):
        load_revocation_list(other_pki.crl, load_certificate(pki.ca_cert))


def test_checker_fails_closed_on_a_replaced_crl(pki: PkiPaths, other_pki: PkiPaths) -> None:
    checker = RevocationChecker(pki.crl, load_certificate(pki.ca_cert))
    # An attacker (or an accident) swaps in an empty CRL signed by someone else.
    os.replace(other_pki.crl, pki.crl)
    with pytest.raises(PkiError, match="not signed"):
        checker.is_revoked(1)


def test_checker_fails_closed_on_garbage(pki: PkiPaths, tmp_path: Path) -> None:
    checker = RevocationChecker(pki.crl, load_certificate(pki.ca_cert))
    Path(pki.crl).write_bytes(b"not a crl at all")
    with pytest.raises(PkiError, match="not a readable"):
        checker.is_revoked(1)
    with pytest.raises(PkiError, match="cannot read"):
        load_revocation_list(tmp_path / "missing.pem", load_certificate(pki.ca_cert))


def test_concurrent_operations_do_not_lose_entries(pki: PkiPaths) -> None:
    names = [f"dev-{i}" for i in range(12)]
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: issue(pki.directory, "device", n, site="A"), names))
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda n: revoke(pki.directory, n), names[:6]))
    entries = list_certificates(pki.directory)
    assert sorted(e.name for e in entries) == sorted(names)
    crl = load_revocation_list(pki.crl, load_certificate(pki.ca_cert))
    assert crl.serials == {e.serial for e in entries if e.name in names[:6]}


def test_no_key_material_in_logs(pki: PkiPaths, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    dev = issue(pki.directory, "device", "dev-1", site="A")
    verifier = PeerVerifier(pki.ca_cert, pki.crl)
    revoke(pki.directory, "dev-1")
    with pytest.raises(RevokedError) as info:
        verifier.verify(load_certificate(dev.cert_path))
    text = caplog.text + str(info.value)
    assert "PRIVATE" not in text and "BEGIN" not in text
    key_body = dev.key_path.read_text().splitlines()[1]
    assert key_body not in text
