"""Release signatures: valid ones verify; tampering, wrong keys and missing signatures do not."""

from __future__ import annotations

import hashlib
import json

import pytest

from fedge.errors import PkiError, SignatureError
from fedge.identity import (
    PkiPaths,
    ReleaseSigningKey,
    ReleaseVerifyKey,
    canonical_release_message,
    sign_release,
    verify_release,
    verify_release_digest,
)

CONTENT = b"\x00\x01model weights\xff" * 100
META = {"job": "mnist", "round": "7", "version": "v7", "parent": "v6"}


@pytest.fixture
def release_key(pki: PkiPaths) -> ReleaseSigningKey:
    return ReleaseSigningKey.load(pki.release_key)


@pytest.fixture
def verify_key(pki: PkiPaths) -> ReleaseVerifyKey:
    return ReleaseVerifyKey.load(pki.release_pub)


@pytest.fixture
def signature(release_key: ReleaseSigningKey) -> bytes:
    return sign_release(release_key, hashlib.sha256(CONTENT).hexdigest(), META)


def test_valid_signature_verifies(verify_key: ReleaseVerifyKey, signature: bytes) -> None:
    assert len(signature) == 64
    verify_release(verify_key, CONTENT, META, signature)
    verify_release(verify_key, CONTENT, dict(reversed(META.items())), signature)  # order-free
    verify_release_digest(verify_key, hashlib.sha256(CONTENT).hexdigest().upper(), META, signature)


def test_tampered_content_refused(verify_key: ReleaseVerifyKey, signature: bytes) -> None:
    tampered = bytearray(CONTENT)
    tampered[5] ^= 1
    with pytest.raises(SignatureError, match="does not verify"):
        verify_release(verify_key, bytes(tampered), META, signature)


def test_tampered_metadata_refused(verify_key: ReleaseVerifyKey, signature: bytes) -> None:
    with pytest.raises(SignatureError):
        verify_release(verify_key, CONTENT, {**META, "round": "8"}, signature)
    with pytest.raises(SignatureError):
        verify_release(verify_key, CONTENT, {**META, "extra": ""}, signature)


def test_wrong_signature_refused(verify_key: ReleaseVerifyKey, signature: bytes) -> None:
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    with pytest.raises(SignatureError, match="does not verify"):
        verify_release(verify_key, CONTENT, META, flipped)
    with pytest.raises(SignatureError, match="64 bytes"):
        verify_release(verify_key, CONTENT, META, signature[:-1])


def test_signature_by_another_key_refused(verify_key: ReleaseVerifyKey) -> None:
    other = ReleaseSigningKey.generate()
    forged = sign_release(other, hashlib.sha256(CONTENT).hexdigest(), META)
    with pytest.raises(SignatureError, match="another key"):
        verify_release(verify_key, CONTENT, META, forged)


@pytest.mark.parametrize("missing", [None, b""])
def test_unsigned_refused(verify_key: ReleaseVerifyKey, missing: bytes | None) -> None:
    with pytest.raises(SignatureError, match="unsigned"):
        verify_release(verify_key, CONTENT, META, missing)


def test_canonical_encoding_is_documented_form() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    message = canonical_release_message(digest, {"b": "2", "a": "é"})
    assert message.startswith(b"fedge-release-v1\n")
    body = message.removeprefix(b"fedge-release-v1\n")
    assert body == (b'{"metadata":{"a":"\\u00e9","b":"2"},"sha256":"' + digest.encode() + b'"}')
    assert json.loads(body) == {"metadata": {"a": "é", "b": "2"}, "sha256": digest}


def test_bad_inputs_refused(release_key: ReleaseSigningKey) -> None:
    with pytest.raises(SignatureError, match="64 hexadecimal"):
        sign_release(release_key, "abc", META)
    with pytest.raises(SignatureError, match="strings to strings"):
        sign_release(release_key, "0" * 64, {"round": 7})  # type: ignore[dict-item]


def test_release_key_is_separate_and_private(pki: PkiPaths, release_key: ReleaseSigningKey) -> None:
    assert "PRIVATE" not in repr(release_key) and "<private>" in repr(release_key)
    assert pki.release_key.read_bytes() != pki.ca_key.read_bytes()
    with pytest.raises(PkiError, match="not an Ed25519"):
        ReleaseSigningKey.load(pki.ca_key)  # the TLS CA key is not a release key
    assert ReleaseVerifyKey.load(pki.release_pub).raw() == release_key.public_key().raw()
