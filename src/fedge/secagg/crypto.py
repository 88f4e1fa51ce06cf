"""The hazmat boundary of secure aggregation: the only secagg module importing ``cryptography``.

Everything above this module handles keys as raw ``bytes`` (32-byte X25519 / Ed25519 keys), so
messages stay serialisable and no third-party exception escapes: failures are mapped to
:class:`~fedge.errors.SecAggIntegrityError` here.

Primitives (as in Bonawitz et al. 2017, arXiv:1611.04482, §4 and Bell et al. 2020,
arXiv:2009.00727, §3):

- X25519 key agreement (RFC 7748) for pairwise mask seeds and share encryption;
- HKDF-SHA256 (RFC 5869) to turn agreed secrets into keys, bound to the session;
- AES-256-GCM for the encrypted Shamir shares and unmask replies;
- AES-128 in counter mode (key and counter block from a 32-byte seed) as the mask PRG;
- Ed25519 (RFC 8032) for signed key advertisements and signed round setups.

Randomness always comes from an injected ``randbytes(n) -> bytes`` (``os.urandom`` by default).
"""

from __future__ import annotations

import functools
import hmac
import os
from collections.abc import Callable, Sequence

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fedge.errors import SecAggIntegrityError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "Keystream",
    "RandBytes",
    "aes_ctr_keystream",
    "ed25519_keypair",
    "ed25519_sign",
    "ed25519_verify",
    "hkdf_sha256",
    "hkdf_sha256_reference",
    "open_sealed",
    "seal",
    "x25519_keypair",
    "x25519_public",
    "x25519_shared",
    "x25519_shared_many",
]

RandBytes = Callable[[int], bytes]
KEY_BYTES = 32
NONCE_BYTES = 12


def _raw_public(key: X25519PublicKey | Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def hkdf_sha256(ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES) -> bytes:
    """HKDF-SHA256 extract-then-expand (RFC 5869), on the standard library's C HMAC.

    Equal to ``cryptography``'s ``HKDF`` (a test checks both against the RFC 5869 vectors) but
    several times cheaper per call, which matters for the thousands of pairwise seeds a
    coordinator derives after dropouts.
    """
    if not 0 < length <= 255 * 32:
        raise SecAggIntegrityError(f"HKDF-SHA256 cannot produce {length} bytes")
    prk = hmac.digest(salt or bytes(32), ikm, "sha256")
    blocks, block = [], b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), "sha256")
        blocks.append(block)
    return b"".join(blocks)[:length]


def hkdf_sha256_reference(
    ikm: bytes, *, salt: bytes, info: bytes, length: int = KEY_BYTES
) -> bytes:
    """``cryptography``'s HKDF-SHA256, kept as the reference for :func:`hkdf_sha256`."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt or None, info=info).derive(ikm)


@functools.lru_cache(maxsize=8)
def _zeros(nbytes: int) -> bytes:
    """Shared read-only zero input for CTR encryption (its ciphertext is the keystream)."""
    return bytes(nbytes)


class Keystream:
    """The mask PRG: AES-128 in counter mode, expanding a 32-byte seed into ``nbytes``.

    The key is ``seed[0:16]`` and the counter block starts at ``seed[16:28] || 00000002``,
    incremented in its low 32 bits (SP 800-38A counter mode with the standard ``inc32``
    function of SP 800-38D; a stream of ``nbytes`` < 64 GiB never wraps it). The stream is
    produced by AES-GCM encryption of zeros with ``seed[16:28]`` as the nonce — GCM's
    ciphertext *is* that counter-mode keystream — because OpenSSL's stitched (VAES) GCM path
    is about twice as fast as its plain CTR path; the tag is discarded.
    :func:`aes_ctr_keystream` computes the same stream with the plain CTR mode, and the tests
    check both against each other and the CTR mode against NIST SP 800-38A F.5.1.
    ``Keystream(n).fill(seed)`` returns a read-only view. Each seed drives one stream only
    (seeds are fresh per round and per purpose).
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self._zeros = _zeros(self.nbytes)

    def fill(self, seed: bytes) -> memoryview:
        """The keystream of ``seed``."""
        if len(seed) != KEY_BYTES:
            raise SecAggIntegrityError(f"stream seed must be {KEY_BYTES} bytes, got {len(seed)}")
        out = AESGCM(seed[:16]).encrypt(seed[16:28], self._zeros, None)
        return memoryview(out)[: self.nbytes]


def aes_ctr_keystream(key: bytes, counter_block: bytes, nbytes: int) -> bytes:
    """Reference AES counter mode keystream (full 128-bit counter increment)."""
    encryptor = Cipher(algorithms.AES(key), modes.CTR(counter_block)).encryptor()
    return encryptor.update(bytes(nbytes)) + encryptor.finalize()


def x25519_keypair(randbytes: RandBytes = os.urandom) -> tuple[bytes, bytes]:
    """A fresh X25519 key pair ``(private, public)`` as raw 32-byte strings."""
    private = X25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    return private.private_bytes_raw(), _raw_public(private.public_key())


def x25519_public(private: bytes) -> bytes:
    """The public key of a raw X25519 private key."""
    return _raw_public(X25519PrivateKey.from_private_bytes(private).public_key())


def x25519_shared(private: bytes, peer_public: bytes) -> bytes:
    """The X25519 shared secret; refuses malformed or low-order peer keys."""
    return x25519_shared_many(private, [peer_public])[0]


def x25519_shared_many(private: bytes, peer_publics: Sequence[bytes]) -> list[bytes]:
    """X25519 shared secrets of one private key with several peers (the key is parsed once)."""
    key = X25519PrivateKey.from_private_bytes(private)
    try:
        return [key.exchange(X25519PublicKey.from_public_bytes(p)) for p in peer_publics]
    except ValueError as exc:
        raise SecAggIntegrityError(f"X25519 agreement refused a peer key: {exc}") from None


def seal(key: bytes, plaintext: bytes, aad: bytes, randbytes: RandBytes = os.urandom) -> bytes:
    """AES-256-GCM encrypt; returns ``nonce || ciphertext || tag``."""
    nonce = randbytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt what :func:`seal` made; a wrong key, AAD or any flipped bit is refused."""
    if len(blob) < NONCE_BYTES + 16:
        raise SecAggIntegrityError(f"ciphertext of {len(blob)} bytes is too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except InvalidTag:
        raise SecAggIntegrityError(
            "ciphertext failed authentication (tampered, truncated, or for another session/peer)"
        ) from None


def ed25519_keypair(randbytes: RandBytes = os.urandom) -> tuple[bytes, bytes]:
    """A fresh Ed25519 identity key pair ``(private, public)`` as raw 32-byte strings."""
    private = Ed25519PrivateKey.from_private_bytes(randbytes(KEY_BYTES))
    return private.private_bytes_raw(), _raw_public(private.public_key())


def ed25519_sign(private: bytes, data: bytes) -> bytes:
    """Sign ``data`` with a raw Ed25519 private key (64-byte signature)."""
    return Ed25519PrivateKey.from_private_bytes(private).sign(data)


def ed25519_verify(public: bytes, signature: bytes, data: bytes, *, what: str) -> None:
    """Verify an Ed25519 signature; raise :class:`SecAggIntegrityError` naming ``what``."""
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise SecAggIntegrityError(
            f"{what}: signature does not verify against the sender's identity key "
            "(substituted or altered in transit); the message is refused"
        ) from None
