"""`fedge pki` through click's test runner."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fedge.identity import list_certificates, load_certificate, load_revocation_list
from fedge.identity.cli import pki_group


def _run(*args: str) -> str:
    result = CliRunner().invoke(pki_group, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", [[], ["init"], ["issue"], ["revoke"], ["list"]])
def test_help(command: list[str]) -> None:
    assert "Usage:" in _run(*command, "--help")


def test_init_issue_revoke_list(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    d = ["--dir", str(pki)]
    assert "fleet CA created" in _run("init", *d, "--fleet", "acme")
    _run("issue", *d, "coordinator", "coord", "--host", "localhost", "--host", "127.0.0.1")
    _run("issue", *d, "gateway", "gw-a", "--site", "A")
    out = _run("issue", *d, "device", "dev-1", "--site", "A", "--days", "30")
    assert "issued device dev-1 at site A" in out and "0600" in out
    _run("issue", *d, "admin", "ops")
    assert "revoked device dev-1" in _run("revoke", *d, "dev-1", "--reason", "key_compromise")

    table = _run("list", *d).splitlines()
    assert table[0].split() == ["ROLE", "NAME", "SITE", "SERIAL", "EXPIRES", "REVOKED"]
    rows = {line.split()[1]: line for line in table[1:]}
    assert set(rows) == {"coord", "gw-a", "dev-1", "ops"}
    assert "yes (key_compromise)" in rows["dev-1"]
    assert rows["gw-a"].split()[2] == "A" and rows["ops"].split()[2] == "-"
    assert rows["ops"].rstrip().endswith("no")

    serial = next(e.serial for e in list_certificates(pki) if e.name == "dev-1")
    assert f"{serial:x}" in rows["dev-1"]
    crl = load_revocation_list(pki / "crl.pem", load_certificate(pki / "ca.crt"))
    assert crl.serials == {serial}


def test_errors_are_clean(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(pki_group, ["list", "--dir", str(tmp_path / "nothing")])
    assert result.exit_code == 1
    assert "not a fedge PKI directory" in result.output
    _run("init", "--dir", str(tmp_path / "p"), "--fleet", "acme")
    result = runner.invoke(pki_group, ["issue", "--dir", str(tmp_path / "p"), "device", "d"])
    assert result.exit_code == 1 and "needs a site" in result.output
    result = runner.invoke(pki_group, ["issue", "--dir", str(tmp_path / "p"), "robot", "r"])
    assert result.exit_code == 2  # click rejects the role choice
