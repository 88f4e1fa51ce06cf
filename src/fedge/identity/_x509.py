"""The hazmat boundary for X.509: keys, certificate and CRL signing.

This is the only module of :mod:`fedge.identity` besides :mod:`fedge.identity.signing` that imports
``cryptography.hazmat``. TLS keys and the fleet CA use ECDSA over P-256 with SHA-256, which every
TLS stack (including Python's :mod:`ssl` over OpenSSL) accepts for TLS 1.2 and 1.3.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedge.errors import PkiError

__all__ = [
    "PrivateKey",
    "RevokedEntry",
    "build_ca_certificate",
    "build_crl",
    "build_leaf_certificate",
    "ecdsa_sign",
    "ecdsa_verify",
    "load_private_key",
    "new_private_key",
    "private_key_pem",
    "to_pem",
]

PrivateKey = ec.EllipticCurvePrivateKey
RevokedEntry = tuple[int, datetime, x509.ReasonFlags]  # serial, revocation date, reason


def new_private_key() -> PrivateKey:
    """A fresh ECDSA P-256 private key from the operating system's CSPRNG."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM of ``key`` (unencrypted: protect the file with 0600 permissions)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(data: bytes) -> PrivateKey:
    """Load a PEM P-256 private key; any other key type is refused."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"cannot read private key: {type(exc).__name__}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise PkiError("private key is not an ECDSA P-256 key; fedge keys are P-256")
    return key


def ecdsa_sign(key: PrivateKey, message: bytes) -> bytes:
    """ECDSA-SHA256 signature (DER) of ``message`` with a fleet TLS key."""
    return key.sign(message, ec.ECDSA(hashes.SHA256()))


def ecdsa_verify(cert: x509.Certificate, signature: bytes, message: bytes) -> bool:
    """True when ``signature`` is an ECDSA-SHA256 signature of ``message`` by ``cert``'s key."""
    public = cert.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey):
        return False
    try:
        public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def to_pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    """PEM encoding of a certificate or CRL."""
    return obj.public_bytes(serialization.Encoding.PEM)


def to_der(cert: x509.Certificate) -> bytes:
    """The certificate in DER form."""
    return cert.public_bytes(serialization.Encoding.DER)


def _name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def build_ca_certificate(
    key: PrivateKey, fleet_name: str, not_before: datetime, not_after: datetime
) -> x509.Certificate:
    """A self-signed fleet CA certificate that may sign leaves (path length 0) and CRLs."""
    name = _name(f"{fleet_name} fleet CA", fleet_name)
    public_key = key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False
        )
    )
    return builder.sign(key, hashes.SHA256())


def build_leaf_certificate(
    *,
    ca_key: PrivateKey,
    ca_certificate: x509.Certificate,
    leaf_key: PrivateKey,
    common_name: str,
    organization: str,
    uris: Sequence[str],
    hosts: Sequence[str],
    server: bool,
    serial: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A leaf certificate: clientAuth always, serverAuth too when ``server``; SAN = URIs + hosts."""
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri) for uri in uris]
    for host in hosts:
        try:
            san.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            san.append(x509.DNSName(host))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if server:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    public_key = leaf_key.public_key()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name, organization))
        .issuer_name(ca_certificate.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(ca_key, hashes.SHA256())


def build_crl(
    *,
    ca_key: PrivateKey,
    ca_certificate: x509.Certificate,
    revoked: Sequence[RevokedEntry],
    crl_number: int,
    last_update: datetime,
    next_update: datetime,
) -> x509.CertificateRevocationList:
    """A CRL signed by the fleet CA listing ``revoked`` (serial, date, reason) entries."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_certificate.subject)
        .last_update(last_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    for serial, when, reason in revoked:
        entry = (
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(when)
            .add_extension(x509.CRLReason(reason), critical=False)
            .build()
        )
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(ca_key, hashes.SHA256())
