"""Signed releases: the coordinator signs every version; gateways and devices refuse bad ones."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from fedge.coordinator import ArtifactStore, CoordinatorService, CoordinatorSettings, Store
from fedge.core.params import ParamSpec
from fedge.errors import SignatureError, UnknownNameError, ValidationError
from fedge.gateway.cache import ModelCache
from fedge.identity import Role
from fedge.identity.signing import ReleaseSigningKey
from fedge.transport import messages as m
from fedge.transport.releases import check_release, make_release, release_metadata

from .conftest import identity
from .helpers import (
    ADMIN,
    GW_A,
    GW_B,
    Clock,
    checkin,
    device_updates,
    model_params,
    partial_payload,
    spec,
)

KEY = ReleaseSigningKey.generate()
OTHER = ReleaseSigningKey.generate()
DEVICE = identity(Role.DEVICE, "a1", "s1")


def signed_service(tmp: Path, key: ReleaseSigningKey | None = KEY) -> CoordinatorService:
    store = Store(f"sqlite:///{tmp / 'coord.db'}")
    settings = CoordinatorSettings(poll_interval_s=1.0)
    return CoordinatorService(
        store, ArtifactStore(tmp / "artifacts"), settings, Clock(), release_key=key
    )


def commit_one_round(svc: CoordinatorService) -> tuple[str, str]:
    """Create the job and commit round 1; (initial sha, round-1 sha)."""
    svc.admin.create_job(ADMIN, spec())
    checkin(svc, GW_A)
    checkin(svc, GW_B)
    svc.tick()
    initial = svc.store.get_job("digits").model_sha256 or ""
    pspec = ParamSpec.of(model_params(svc, initial))
    for gw, ids, seed in ((GW_A, ["a1", "a2"], 1), (GW_B, ["b1", "b2"], 2)):
        checkin(svc, gw)
        payload = partial_payload(gw, "digits", 1, device_updates(pspec, ids, seed))
        assert svc.submit_partial(gw, "digits", 1, payload).accepted
    svc.tick()
    first = svc.admin.get_job(ADMIN, "digits").rounds[0]
    assert first.state == "committed" and first.model_sha256
    return initial, first.model_sha256


def test_coordinator_signs_the_initial_and_every_committed_version(tmp_path: Path) -> None:
    svc = signed_service(tmp_path)
    initial, v1 = commit_one_round(svc)
    pub = KEY.public_key()
    for sha, rnd, parent in ((initial, "0", ""), (v1, "1", initial)):
        release = svc.release(GW_A, sha)
        assert release.metadata == {
            "job": "digits",
            "round": rnd,
            "task": "digits_mlp",
            "version": f"digits/r{rnd}",
            "parent": parent,
        }
        check_release(pub, sha, svc.model(GW_A, sha), release)
        assert svc.release(DEVICE, sha) == release  # devices connected directly too


def test_coordinator_without_a_key_publishes_unsigned_versions(tmp_path: Path) -> None:
    svc = signed_service(tmp_path, key=None)
    svc.admin.create_job(ADMIN, spec())
    sha = svc.store.get_job("digits").model_sha256 or ""
    with pytest.raises(UnknownNameError, match="no release signature"):
        svc.release(GW_A, sha)


# -- refusals, shared by gateway and device tests ------------------------------------------------
GOOD_PAYLOAD = b"model v1 bytes"
GOOD_SHA = hashlib.sha256(GOOD_PAYLOAD).hexdigest()
META = release_metadata("job", 1, "digits_mlp", None)


def flipped(release: m.ModelRelease) -> m.ModelRelease:
    sig = bytearray(base64.b64decode(release.signature))
    sig[0] ^= 1
    return release.model_copy(update={"signature": base64.b64encode(bytes(sig)).decode()})


def bad_releases() -> dict[str, tuple[bytes, m.ModelRelease | None]]:
    """Each refusal case: (payload served, release served) for the version GOOD_SHA."""
    good = make_release(KEY, GOOD_SHA, META)
    return {
        "tampered artifact": (GOOD_PAYLOAD + b"!", good),
        "wrong signature": (GOOD_PAYLOAD, flipped(good)),
        "altered metadata": (
            GOOD_PAYLOAD,
            good.model_copy(update={"metadata": {**META, "round": "7"}}),
        ),
        "another key": (GOOD_PAYLOAD, make_release(OTHER, GOOD_SHA, META)),
        "unsigned": (GOOD_PAYLOAD, None),
    }


@pytest.mark.parametrize("case", sorted(bad_releases()))
def test_check_release_refuses(case: str) -> None:
    payload, release = bad_releases()[case]
    with pytest.raises(SignatureError):
        check_release(KEY.public_key(), GOOD_SHA, payload, release)


def test_check_release_refuses_a_release_of_another_model() -> None:
    other = hashlib.sha256(b"other").hexdigest()
    with pytest.raises(SignatureError, match="not"):
        check_release(KEY.public_key(), GOOD_SHA, GOOD_PAYLOAD, make_release(KEY, other, META))


def gateway_cache(
    tmp: Path, payload: bytes, release: m.ModelRelease | None
) -> tuple[ModelCache, str]:
    """A verifying cache whose upstream holds the last good version and the version under test."""
    old_payload = b"model v0 bytes"
    old_sha = hashlib.sha256(old_payload).hexdigest()
    payloads = {old_sha: old_payload, GOOD_SHA: payload}
    releases = {old_sha: make_release(KEY, old_sha, release_metadata("job", 0, "t", None))}
    if release is not None:
        releases[GOOD_SHA] = release

    def fetch_release(sha: str) -> m.ModelRelease:
        if sha not in releases:
            raise UnknownNameError(f"no release of {sha}")
        return releases[sha]

    cache = ModelCache(
        tmp, payloads.__getitem__, fetch_release=fetch_release, release_key=KEY.public_key()
    )
    assert cache.get(old_sha) == old_payload  # the last good version, cached before
    return cache, old_sha


@pytest.mark.parametrize("case", sorted(bad_releases()))
def test_gateway_refuses_and_keeps_the_last_good_version(tmp_path: Path, case: str) -> None:
    payload, release = bad_releases()[case]
    cache, old = gateway_cache(tmp_path, payload, release)
    with pytest.raises((SignatureError, ValidationError)):
        cache.get(GOOD_SHA)
    assert not cache.has(GOOD_SHA)
    assert [sha for sha, _ in cache.refused] == [GOOD_SHA]  # reported
    assert cache.get(old) == b"model v0 bytes" and cache.release(old) is not None


def test_gateway_caches_a_good_version_with_its_release(tmp_path: Path) -> None:
    good = make_release(KEY, GOOD_SHA, META)
    cache, _ = gateway_cache(tmp_path, GOOD_PAYLOAD, good)
    assert cache.get(GOOD_SHA) == GOOD_PAYLOAD
    assert cache.release(GOOD_SHA) == good
    # after a restart, a release file swapped on disk is caught and the version fetched again
    (tmp_path / f"{GOOD_SHA}.release").write_text(flipped(good).model_dump_json())
    fresh = ModelCache(
        tmp_path,
        {GOOD_SHA: GOOD_PAYLOAD}.__getitem__,
        fetch_release={GOOD_SHA: good}.__getitem__,
        release_key=KEY.public_key(),
    )
    assert fresh.get(GOOD_SHA) == GOOD_PAYLOAD and fresh.fetches == 1
    assert fresh.release(GOOD_SHA) == good
