"""Release manifests: signed like releases, refused when forged, older or equivocating."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.errors import DowngradeError, SignatureError, ValidationError
from fedge.identity.signing import ReleaseSigningKey
from fedge.transport.manifests import ManifestGuard, ManifestStatus, make_manifest, read_manifest
from fedge.transport.messages import ModelRelease
from fedge.transport.releases import make_release, release_metadata

KEY = ReleaseSigningKey.generate()
OTHER = ReleaseSigningKey.generate()
SHA1, SHA2 = "a1" * 32, "b2" * 32


def manifest(
    sha: str,
    sequence: int,
    status: ManifestStatus = "production",
    key: ReleaseSigningKey | None = KEY,
) -> ModelRelease:
    md = release_metadata("digits", 1 if sha == SHA1 else 2, "digits_mlp", None)
    return make_manifest(key, sha, md, status=status, sequence=sequence, issued_at=10.0 * sequence)


def test_a_manifest_round_trips_and_carries_the_version_the_status_and_the_sequence() -> None:
    got = read_manifest(manifest(SHA2, 7, "canary"), KEY.public_key())
    assert (got.job, got.sha256, got.version, got.status, got.sequence, got.issued_at) == (
        "digits",
        SHA2,
        "digits/r2",
        "canary",
        7,
        70.0,
    )


def test_forged_unsigned_and_bare_pointers_are_refused() -> None:
    pub = KEY.public_key()
    with pytest.raises(SignatureError, match="does not verify"):
        read_manifest(manifest(SHA1, 3, key=OTHER), pub)  # signed by another key
    with pytest.raises(SignatureError, match="unsigned"):
        read_manifest(manifest(SHA1, 3, key=None), pub)
    genuine = manifest(SHA1, 3)
    bumped = genuine.model_copy(update={"metadata": {**genuine.metadata, "sequence": "99"}})
    with pytest.raises(SignatureError, match="does not verify"):  # a replay made to look newer
        read_manifest(bumped, pub)
    swapped = genuine.model_copy(update={"sha256": SHA2})  # the manifest for another model
    with pytest.raises(SignatureError):
        read_manifest(swapped, pub)
    bare = make_release(KEY, SHA1, release_metadata("digits", 1, "digits_mlp", None))
    with pytest.raises(ValidationError, match="not a release manifest"):
        read_manifest(bare, pub)  # a version's release alone says nothing about "now"
    assert read_manifest(manifest(SHA1, 3, key=None), None).sequence == 3  # no key: unsigned ok


def test_the_guard_refuses_older_and_equivocating_manifests_and_remembers(tmp_path: Path) -> None:
    pub = KEY.public_key()
    guard = ManifestGuard(tmp_path / "manifests.json")
    m2 = read_manifest(manifest(SHA2, 2), pub)
    assert guard.check(m2)
    guard.accept(m2)
    assert not guard.check(m2)  # the same manifest again: nothing new, not an error
    with pytest.raises(DowngradeError, match="older release manifest"):
        guard.check(read_manifest(manifest(SHA1, 1), pub))
    with pytest.raises(DowngradeError, match="different release manifest"):
        guard.check(read_manifest(manifest(SHA1, 2), pub))
    rollback = read_manifest(manifest(SHA1, 3), pub)  # a rollback is a newer manifest
    assert guard.check(rollback)
    guard.accept(rollback)
    guard.accept(m2)  # accepting an older one later changes nothing
    restarted = ManifestGuard(tmp_path / "manifests.json")
    held = restarted.accepted("digits", pub)
    assert held is not None and (held.sha256, held.sequence) == (SHA1, 3)
    with pytest.raises(DowngradeError):
        restarted.check(m2)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValidationError, match="unreadable"):
        ManifestGuard(tmp_path / "bad.json")
