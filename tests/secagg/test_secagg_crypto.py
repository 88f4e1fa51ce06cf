"""Known-answer and tamper tests for the hazmat wrapper (RFC 5869, NIST SP 800-38A)."""

from __future__ import annotations

import numpy as np
import pytest

from fedge.errors import SecAggIntegrityError
from fedge.secagg.crypto import (
    Keystream,
    aes_ctr_keystream,
    ed25519_keypair,
    ed25519_sign,
    ed25519_verify,
    hkdf_sha256,
    hkdf_sha256_reference,
    open_sealed,
    seal,
    x25519_keypair,
    x25519_shared,
)
from fedge.secagg.masking import MaskExpander, pairwise_seed

# RFC 5869, appendix A, test cases 1 and 3 (SHA-256).
RFC5869 = [
    (
        "0b" * 22,
        "000102030405060708090a0b0c",
        "f0f1f2f3f4f5f6f7f8f9",
        42,
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865",
    ),
    (
        "0b" * 22,
        "",
        "",
        42,
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
    ),
]


@pytest.mark.parametrize(("ikm", "salt", "info", "length", "okm"), RFC5869)
@pytest.mark.parametrize("kdf", [hkdf_sha256, hkdf_sha256_reference])
def test_hkdf_rfc5869_vectors(kdf, ikm, salt, info, length, okm):
    out = kdf(bytes.fromhex(ikm), salt=bytes.fromhex(salt), info=bytes.fromhex(info), length=length)
    assert out.hex() == okm


def test_reference_ctr_is_nist_aes128_ctr():
    # NIST SP 800-38A F.5.1 CTR-AES128: keystream = ciphertext XOR plaintext.
    key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    counter = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
    pt = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
    ct = bytes.fromhex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff")
    stream = aes_ctr_keystream(key, counter, 32)
    assert stream == bytes(a ^ b for a, b in zip(pt, ct, strict=True))


@pytest.mark.parametrize("nbytes", [1, 16, 100, 4096, 400_003])
def test_keystream_is_aes128_counter_mode(nbytes):
    # the fast (GCM-path) stream equals plain counter mode from seed[16:28] || 00000002
    seed = bytes(range(100, 132))
    expected = aes_ctr_keystream(seed[:16], seed[16:28] + b"\x00\x00\x00\x02", nbytes)
    assert bytes(Keystream(nbytes).fill(seed)) == expected
    with pytest.raises(SecAggIntegrityError):
        Keystream(16).fill(b"short")


def test_mask_expansion_known_answers():
    seed = bytes(range(32))
    assert MaskExpander(4, 32).expand(seed).tolist() == [
        2936221380, 4021702415, 4116569367, 1055598535,
    ]  # fmt: skip
    assert MaskExpander(2, 64).expand(seed).tolist() == [
        17273080349605441220, 4533761189647080727,
    ]  # fmt: skip
    assert MaskExpander(4, 20).expand(seed).tolist() == [208580, 413455, 908567, 731079]
    # the expansion is the little-endian reading of the keystream, reduced mod 2^b
    raw = np.frombuffer(bytes(Keystream(16).fill(seed)), dtype="<u4")
    assert (MaskExpander(4, 20).expand(seed) == raw & (2**20 - 1)).all()


def test_mask_accumulate_is_signed_sum_mod_2b():
    exp = MaskExpander(1000, 24)
    a, b = bytes([1] * 32), bytes([2] * 32)
    acc = exp.zeros()
    exp.accumulate(acc, [a], [b])
    ref = (exp.expand(a).astype(np.int64) - exp.expand(b).astype(np.int64)) % 2**24
    assert (acc == ref).all()


def test_pairwise_seed_is_symmetric_and_bound_to_session():
    sk_u, pk_u = x25519_keypair()
    sk_v, pk_v = x25519_keypair()
    s1 = pairwise_seed(sk_u, pk_v, b"session-1", "u", "v")
    assert s1 == pairwise_seed(sk_v, pk_u, b"session-1", "v", "u")
    assert s1 != pairwise_seed(sk_u, pk_v, b"session-2", "u", "v")


def test_seal_detects_tampering_and_wrong_context():
    key = bytes(32)
    blob = seal(key, b"secret share", b"aad")
    assert open_sealed(key, blob, b"aad") == b"secret share"
    flipped = bytearray(blob)
    flipped[-20] ^= 1
    with pytest.raises(SecAggIntegrityError, match="authentication"):
        open_sealed(key, bytes(flipped), b"aad")
    with pytest.raises(SecAggIntegrityError):
        open_sealed(key, blob, b"other aad")
    with pytest.raises(SecAggIntegrityError):
        open_sealed(bytes([1] * 32), blob, b"aad")
    with pytest.raises(SecAggIntegrityError, match="too short"):
        open_sealed(key, blob[:10], b"aad")


def test_signatures_and_low_order_keys():
    sk, pk = ed25519_keypair()
    sig = ed25519_sign(sk, b"advert")
    ed25519_verify(pk, sig, b"advert", what="advert")
    with pytest.raises(SecAggIntegrityError, match="substituted"):
        ed25519_verify(pk, sig, b"advert!", what="advert")
    _, other = ed25519_keypair()
    with pytest.raises(SecAggIntegrityError):
        ed25519_verify(other, sig, b"advert", what="advert")
    x_sk, _ = x25519_keypair()
    with pytest.raises(SecAggIntegrityError):
        x25519_shared(x_sk, bytes(32))  # the all-zero (low-order) point
