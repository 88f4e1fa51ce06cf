"""Issuing many certificates in one pass: one inventory write, all or nothing, same checks."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.errors import CertificateError, PkiError
from fedge.identity import PeerVerifier, PkiPaths, Role, list_certificates
from fedge.identity.cli import pki_group
from fedge.identity.pki import CertificateRequest, issue, issue_many


def _device(name: str, site: str = "A", **kw: object) -> CertificateRequest:
    return CertificateRequest(Role.DEVICE, name, site, **kw)  # type: ignore[arg-type]


def test_a_batch_issues_every_certificate(pki: PkiPaths) -> None:
    names = [f"dev-{i:03d}" for i in range(40)]
    issued = issue_many(pki.directory, [_device(n, site=f"s{i % 4}") for i, n in enumerate(names)])
    assert [c.identity.name for c in issued] == names
    verifier = PeerVerifier(pki.ca_cert, pki.crl)
    for i, cert in enumerate(issued):
        who = verifier.verify(cert.cert_path.read_bytes())
        assert (who.role, who.name, who.site) == (Role.DEVICE, names[i], f"s{i % 4}")
        assert stat.S_IMODE(cert.key_path.stat().st_mode) == 0o600
    entries = list_certificates(pki.directory)
    assert [e.name for e in entries] == names
    assert {e.serial for e in entries} == {c.identity.serial for c in issued}


def test_a_bad_request_in_a_batch_issues_nothing(pki: PkiPaths) -> None:
    issue(pki.directory, Role.DEVICE, "dev-held", site="A")
    before = pki.inventory.read_bytes()
    for bad in (
        [_device("dev-new"), _device("dev-held")],  # already holds a certificate
        [_device("dev-new"), _device("dev-new")],  # the same name twice
        [_device("dev-new"), CertificateRequest(Role.DEVICE, "dev-x", None)],  # no site
        [_device("dev-new"), _device("bad name!")],
    ):
        with pytest.raises((PkiError, CertificateError)):
            issue_many(pki.directory, bad)
        assert pki.inventory.read_bytes() == before
        assert not pki.cert_for("dev-new").exists() and not pki.key_for("dev-new").exists()


def test_replace_in_a_batch_supersedes_the_old_certificates(pki: PkiPaths) -> None:
    old = issue(pki.directory, Role.DEVICE, "dev-1", site="A")
    new = issue_many(pki.directory, [_device("dev-1", replace=True), _device("dev-2")])
    entries = {(e.name, e.serial): e for e in list_certificates(pki.directory)}
    assert entries[("dev-1", old.identity.serial)].reason == "superseded"
    assert not entries[("dev-1", new[0].identity.serial)].revoked
    verifier = PeerVerifier(pki.ca_cert, pki.crl)
    assert verifier.revocation.is_revoked(old.identity.serial)


def test_the_cli_issues_several_names_at_once(tmp_path: Path, pki: PkiPaths) -> None:
    result = CliRunner().invoke(
        pki_group,
        ["issue", "--dir", str(pki.directory), "device", "d1", "d2", "d3", "--site", "B"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("issued device") == 3 and "d3 at site B" in result.output
    assert [e.name for e in list_certificates(pki.directory)] == ["d1", "d2", "d3"]
