"""Key bindings: a per-round Ed25519 key proven by the holder's fleet certificate."""

from __future__ import annotations

import pytest

from fedge.errors import CertificateError, RevokedError
from fedge.identity import PkiPaths, Role, issue, load_certificate, load_revocation_list, revoke
from fedge.identity.binding import binding_message, sign_key_binding, verify_key_binding

KEY = bytes(range(32))


def _check(pki: PkiPaths, cert_of: str, proof: bytes, **over: object) -> object:
    args: dict[str, object] = {
        "role": Role.DEVICE, "name": "dev1", "job_id": "job", "round_number": 3, "key": KEY,
        "ca": pki.ca_cert, "revocation": None,
    }  # fmt: skip
    args.update(over)
    return verify_key_binding(pki.cert_for(cert_of).read_bytes(), proof, **args)  # type: ignore[arg-type]


def test_a_binding_verifies_only_for_its_holder_round_and_key(pki: PkiPaths) -> None:
    issue(pki.directory, Role.DEVICE, "dev1", site="s1")
    issue(pki.directory, Role.DEVICE, "dev2", site="s1")
    proof = sign_key_binding(
        pki.key_for("dev1"), binding_message(Role.DEVICE, "dev1", "job", 3, KEY)
    )
    who = _check(pki, "dev1", proof)
    assert who.name == "dev1" and who.site == "s1"  # type: ignore[attr-defined]
    with pytest.raises(CertificateError, match="substituted or replayed"):
        _check(pki, "dev1", proof, round_number=4)
    with pytest.raises(CertificateError, match="substituted or replayed"):
        _check(pki, "dev1", proof, key=bytes(32))
    with pytest.raises(CertificateError, match="certificate is of"):
        _check(pki, "dev2", proof)  # someone else's certificate
    with pytest.raises(CertificateError, match="certificate is of"):
        _check(pki, "dev1", proof, role=Role.COORDINATOR)
    forged = sign_key_binding(
        pki.key_for("dev2"), binding_message(Role.DEVICE, "dev1", "job", 3, KEY)
    )
    with pytest.raises(CertificateError, match="substituted or replayed"):
        _check(pki, "dev1", forged)


def test_foreign_and_revoked_certificates_are_refused(pki: PkiPaths, other_pki: PkiPaths) -> None:
    issue(pki.directory, Role.DEVICE, "dev1", site="s1")
    issue(other_pki.directory, Role.DEVICE, "dev1", site="s1")
    message = binding_message(Role.DEVICE, "dev1", "job", 3, KEY)
    proof = sign_key_binding(other_pki.key_for("dev1"), message)
    with pytest.raises(CertificateError, match="this fleet's CA"):
        verify_key_binding(
            other_pki.cert_for("dev1").read_bytes(), proof, role=Role.DEVICE, name="dev1",
            job_id="job", round_number=3, key=KEY, ca=pki.ca_cert, revocation=None,
        )  # fmt: skip
    proof = sign_key_binding(pki.key_for("dev1"), message)
    revoke(pki.directory, "dev1")
    crl = load_revocation_list(pki.crl, load_certificate(pki.ca_cert))
    with pytest.raises(RevokedError):
        _check(pki, "dev1", proof, revocation=crl)
    with pytest.raises(CertificateError, match="32 bytes"):
        binding_message(Role.DEVICE, "dev1", "job", 3, b"short")
