"""Release signing: an Ed25519 key, separate from every TLS key, signs model versions.

**What is signed.** The signature covers the model content's SHA-256 and the version metadata, in
this canonical encoding (version 1)::

    b"fedge-release-v1\n" + UTF-8 JSON of {"metadata": {...}, "sha256": "<64 lower-case hex>"}

with keys sorted at every level, separators ``,`` and ``:`` (no spaces) and non-ASCII characters
escaped (``ensure_ascii``). Metadata is a flat mapping of strings to strings (job, round, version id,
parent, task, ...). The prefix separates release signatures from any other use of the key. The
signature is the raw 64-byte Ed25519 signature; base64-encode it for JSON.

This module and :mod:`fedge.identity._x509` are the only ones here that import ``cryptography.hazmat``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedge.errors import PkiError, SignatureError
from fedge.identity._files import write_atomic, write_private

__all__ = [
    "RELEASE_SIGNATURE_DOMAIN",
    "ReleaseSigningKey",
    "ReleaseVerifyKey",
    "canonical_release_message",
    "sign_release",
    "verify_release",
    "verify_release_digest",
]

RELEASE_SIGNATURE_DOMAIN = b"fedge-release-v1\n"
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_SIGNATURE_LEN = 64


def canonical_release_message(content_sha256: str, metadata: Mapping[str, str]) -> bytes:
    """The exact bytes a release signature covers (see the module docstring)."""
    digest = content_sha256.lower()
    if not _SHA256_RE.fullmatch(digest):
        raise SignatureError("content_sha256 must be 64 hexadecimal characters")
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SignatureError("release metadata must map strings to strings")
    body = {"metadata": dict(metadata), "sha256": digest}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return RELEASE_SIGNATURE_DOMAIN + text.encode("ascii")


class ReleaseVerifyKey:
    """The public half of the release key: what gateways and devices trust."""

    def __init__(self, key: ed25519.Ed25519PublicKey) -> None:
        self._key = key

    @classmethod
    def from_pem(cls, data: bytes) -> ReleaseVerifyKey:
        """Load a SubjectPublicKeyInfo PEM Ed25519 public key."""
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise PkiError("not a readable PEM public key") from None
        if not isinstance(key, ed25519.Ed25519PublicKey):
            raise PkiError("the release public key must be an Ed25519 key")
        return cls(key)

    @classmethod
    def load(cls, path: str | Path) -> ReleaseVerifyKey:
        """Read ``release.pub`` (or any Ed25519 public key PEM file)."""
        try:
            return cls.from_pem(Path(path).read_bytes())
        except OSError as exc:
            raise PkiError(f"cannot read release public key {path}: {exc.strerror}") from None

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM."""
        return self._key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def raw(self) -> bytes:
        """The 32 raw public key bytes (e.g. to print a fingerprint)."""
        return self._key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raise :class:`SignatureError` unless ``signature`` is valid for ``message``."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError(
                "release signature does not verify: the model or its metadata was altered,"
                " or it was signed by another key; refusing it"
            ) from None


class ReleaseSigningKey:
    """The private release key. Lives on the coordinator only; never logged, file mode 0600."""

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key

    def __repr__(self) -> str:  # never show key material
        return "ReleaseSigningKey(<private>)"

    @classmethod
    def generate(cls) -> ReleaseSigningKey:
        """A fresh Ed25519 key from the operating system's CSPRNG."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> ReleaseSigningKey:
        """Read ``release.key`` (PKCS#8 PEM, unencrypted)."""
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise PkiError(f"cannot read release key {path}: {exc.strerror}") from None
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise PkiError(f"{path} is not a readable PEM private key") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise PkiError(f"{path} is not an Ed25519 release key")
        return cls(key)

    def save(self, private_path: Path, public_path: Path) -> None:
        """Write the private key (0600) and its public key (0644)."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private(private_path, pem)
        write_atomic(public_path, self.public_key().to_pem())

    def public_key(self) -> ReleaseVerifyKey:
        """The matching verify key."""
        return ReleaseVerifyKey(self._key.public_key())

    def sign(self, message: bytes) -> bytes:
        """Raw Ed25519 signature of ``message`` (64 bytes)."""
        return self._key.sign(message)


def sign_release(
    release_key: ReleaseSigningKey, content_sha256: str, metadata: Mapping[str, str]
) -> bytes:
    """Sign a model version: its content SHA-256 (hex) and metadata, canonically encoded."""
    return release_key.sign(canonical_release_message(content_sha256, metadata))


def verify_release_digest(
    public_key: ReleaseVerifyKey,
    content_sha256: str,
    metadata: Mapping[str, str],
    signature: bytes | None,
) -> None:
    """Verify a release signature given the content's SHA-256 (for content hashed while streaming)."""
    if not signature:
        raise SignatureError("the model version is unsigned; refusing to use it")
    if len(signature) != _SIGNATURE_LEN:
        raise SignatureError(
            f"a release signature is {_SIGNATURE_LEN} bytes, got {len(signature)}; refusing it"
        )
    public_key.verify(signature, canonical_release_message(content_sha256, metadata))


def verify_release(
    public_key: ReleaseVerifyKey,
    content: bytes,
    metadata: Mapping[str, str],
    signature: bytes | None,
) -> None:
    """Raise :class:`SignatureError` unless ``signature`` covers ``content`` and ``metadata``.

    Refuses tampered content or metadata, a wrong or truncated signature, a signature made by
    another key, and a missing (``None`` or empty) signature.
    """
    digest = hashlib.sha256(content).hexdigest()
    verify_release_digest(public_key, digest, metadata, signature)
