"""Bind a per-round Ed25519 key to a fleet certificate, so a relay cannot substitute it.

Secure aggregation signs key advertisements and round setups with Ed25519 keys
(:mod:`fedge.secagg`). Those keys are fresh for every round; each party proves it owns one by
signing :func:`binding_message` — role, name, job, round and the key — with the private key of
its mutual-TLS certificate. The proof travels with the certificate itself, so whoever receives
it (a coordinator behind a gateway, a device behind the same gateway) checks it end to end:
the certificate chains to the fleet CA and is not revoked, its subject and role are the ones
claimed, and the signature holds. A gateway that forwards the proof cannot forge one (it lacks
the device's TLS key), and a proof from another round or for another key does not verify.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from fedge.errors import CertificateError
from fedge.identity import _x509
from fedge.identity.certificates import (
    Identity,
    RevocationSource,
    Role,
    load_certificate,
    parse_certificate,
)
from fedge.identity.certificates import verify_peer as _verify_peer

__all__ = ["binding_message", "sign_key_binding", "verify_key_binding"]

_MAX_CERT_BYTES = 16 * 1024


def binding_message(
    role: Role | str, name: str, job_id: str, round_number: int, key: bytes
) -> bytes:
    """The canonical bytes a key-binding proof signs."""
    if len(key) != 32:
        raise CertificateError(f"an identity key must be 32 bytes, got {len(key)}")
    head = f"fedge/secagg/v1/key-binding|{Role(role).value}|{name}|{job_id}|{int(round_number)}|"
    return head.encode() + key


def sign_key_binding(key_pem_or_path: bytes | str | Path, message: bytes) -> bytes:
    """Sign :func:`binding_message` output with a fleet TLS private key (PEM bytes or a path)."""
    data = (
        key_pem_or_path
        if isinstance(key_pem_or_path, bytes)
        else Path(key_pem_or_path).read_bytes()
    )
    return _x509.ecdsa_sign(_x509.load_private_key(data), message)


def verify_key_binding(
    certificate: bytes,
    proof: bytes,
    *,
    role: Role,
    name: str,
    job_id: str,
    round_number: int,
    key: bytes,
    ca: x509.Certificate | bytes | str | Path,
    revocation: RevocationSource | None,
) -> Identity:
    """Check a key-binding proof end to end; return the certificate's identity or raise.

    Raises :class:`~fedge.errors.CertificateError` (or a subclass: expired, revoked) when the
    certificate is not a valid fleet certificate of ``role`` named ``name``, or when ``proof`` is
    not its signature over ``binding_message(role, name, job_id, round_number, key)``.
    """
    if len(certificate) > _MAX_CERT_BYTES:
        raise CertificateError(f"certificate of {name!r} is over {_MAX_CERT_BYTES} bytes")
    ca_cert = load_certificate(ca) if isinstance(ca, (str, Path)) else parse_certificate(ca)
    cert = parse_certificate(certificate)
    identity = _verify_peer(cert, ca_cert, revocation)
    if identity.role is not role or identity.name != name:
        raise CertificateError(
            f"key binding claims {role.value} {name!r}, but the certificate is of "
            f"{identity.role.value} {identity.name!r}: refused"
        )
    message = binding_message(role, name, job_id, round_number, key)
    if not _x509.ecdsa_verify(cert, proof, message):
        raise CertificateError(
            f"the identity key of {role.value} {name!r} is not signed by its certificate's key "
            f"for job {job_id!r} round {round_number}: substituted or replayed key, refused"
        )
    return identity
