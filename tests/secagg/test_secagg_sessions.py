"""Every transition of the device, relay and coordinator sessions, valid and invalid.

Also the adversarial cases of issue 3: substituted keys, tampered shares and ciphertexts,
requests for both shares, replays across rounds, and what a relay can learn.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedge.errors import (
    RoundAbandonedError,
    SecAggIntegrityError,
    SecAggProtocolError,
    UnmaskRefusedError,
)
from fedge.secagg import (
    CoordinatorPhase,
    DevicePhase,
    KeyAdvertisement,
    KeyBundle,
    MaskedInput,
    RelaySum,
    RoundSetup,
    ShareBundle,
    UnmaskRequest,
    shamir,
)
from fedge.secagg.masking import MaskExpander


def grid_vectors(n: int, length: int, levels: int = 100, seed: int = 0) -> np.ndarray:
    """Vectors on the quantisation grid of clip (0, levels) with step 1: quantised exactly."""
    return np.random.default_rng(seed).integers(0, levels + 1, (n, length)).astype(np.float32)


def _advertise(r, skip=()):
    for m in r.coord.start():
        if m.device_id in skip:
            continue
        for reply in r.devices[m.device_id].receive(r.wire(m)):
            r.coord.receive(r.wire(reply))
    return r.coord.close_phase()


# -- happy path, phase by phase --------------------------------------------------------------


def test_phases_advance_in_order(make_round):
    r = make_round(n=5)
    assert r.coord.phase is CoordinatorPhase.SETUP
    bundles = _advertise(r)
    assert r.coord.phase is CoordinatorPhase.SHARE_KEYS
    assert {d.phase for d in r.devices.values()} == {DevicePhase.WAIT_KEYS}
    assert r.coord.waiting_for == frozenset(r.devices)
    for m in bundles:
        for reply in r.devices[m.device_id].receive(r.wire(m)):
            r.coord.receive(r.wire(reply))
    assert r.coord.waiting_for == frozenset()
    share_bundles = r.coord.close_phase()
    for m in share_bundles:
        assert r.devices[m.device_id].receive(r.wire(m)) == []
    assert {d.phase for d in r.devices.values()} == {DevicePhase.READY}
    x = grid_vectors(5, 16)
    r.mask_all(x)
    r.unmask()
    assert r.coord.phase is CoordinatorPhase.DONE
    assert r.coord.outcome is not None and r.coord.outcome.total is not None
    assert (r.coord.outcome.total == x.astype(np.int64).sum(0)).all()
    assert {d.phase for d in r.devices.values()} == {DevicePhase.DONE}
    with pytest.raises(SecAggProtocolError, match="no phase to close"):
        r.coord.close_phase()


# -- out of phase, duplicated, replayed ----------------------------------------------------------


def test_device_refuses_out_of_phase_messages(make_round):
    r = make_round(n=5)
    setups = r.coord.start()
    dev = r.devices[setups[0].device_id]
    with pytest.raises(SecAggProtocolError, match="before the round setup"):
        dev.receive(KeyBundle(r.coord.session_id, dev.device_id, ()))
    with pytest.raises(SecAggProtocolError, match="phase"):
        dev.mask(np.zeros(16, np.float32))
    dev.receive(setups[0])
    with pytest.raises(SecAggProtocolError, match="duplicated or replayed"):
        dev.receive(setups[0])
    with pytest.raises(SecAggProtocolError, match="phase"):
        dev.receive(ShareBundle(r.coord.session_id, dev.device_id, ()))
    with pytest.raises(SecAggProtocolError, match="does not accept"):
        dev.receive(MaskedInput(r.coord.session_id, dev.device_id, np.zeros(16, np.uint32)))
    with pytest.raises(SecAggProtocolError, match="addressed to"):
        dev.receive(KeyBundle(r.coord.session_id, "someone-else", ()))


def test_coordinator_refuses_duplicates_strangers_and_late_messages(make_round):
    r = make_round(n=5)
    setups = r.coord.start()
    advert = r.devices[setups[0].device_id].receive(setups[0])[0]
    r.coord.receive(advert)
    with pytest.raises(SecAggProtocolError, match="duplicate"):
        r.coord.receive(advert)
    stranger = dataclasses.replace(advert, device_id="intruder")
    with pytest.raises(SecAggProtocolError, match="not selected"):
        r.coord.receive(stranger)
    for m in setups[1:]:
        r.coord.receive(r.devices[m.device_id].receive(m)[0])
    r.coord.close_phase()
    with pytest.raises(SecAggProtocolError, match="out of phase"):
        r.coord.receive(advert)  # late / replayed advert


def test_messages_from_another_round_are_refused(make_round):
    old, new = make_round(n=5, seed=1), make_round(n=5, seed=2)
    old_setup = old.coord.start()[0]
    old_advert = old.devices[old_setup.device_id].receive(old_setup)[0]
    new.coord.start()
    with pytest.raises(SecAggProtocolError, match="another session"):
        new.coord.receive(old_advert)
    # a device already in a round refuses a (replayed) setup
    with pytest.raises(SecAggProtocolError, match="replayed"):
        old.devices[old_setup.device_id].receive(old_setup)


def test_relay_refuses_bad_inputs(make_round):
    r = make_round(n=6, gateways=2)
    share_bundles = r.run_until_masking()
    for m in share_bundles:
        r.devices[m.device_id].receive(m)
    gw0 = r.relays["gw0"]
    mine = sorted(gw0.devices)[0]
    other = next(d for d in r.devices if d not in gw0.devices)
    masked = r.devices[mine].mask(grid_vectors(1, 16)[0])
    with pytest.raises(SecAggProtocolError, match="not a device of gateway"):
        gw0.receive(dataclasses.replace(masked, device_id=other))
    with pytest.raises(SecAggProtocolError, match="another session"):
        gw0.receive(dataclasses.replace(masked, session_id=b"x" * 32))
    with pytest.raises(SecAggIntegrityError, match="length"):
        gw0.receive(dataclasses.replace(masked, vector=masked.vector[:3]))
    gw0.receive(masked)
    with pytest.raises(SecAggProtocolError, match="duplicate"):
        gw0.receive(masked)
    with pytest.raises(SecAggProtocolError, match="forwarded"):
        gw0.forward(masked)
    assert gw0.flush() is not None
    with pytest.raises(SecAggProtocolError, match="already forwarded"):
        gw0.receive(masked)


def test_relay_refuses_values_outside_the_modulus(make_round):
    from fedge.secagg import SecAggConfig

    r = make_round(n=5, config=SecAggConfig(bits=20, dropout_rate=0.0))
    relay = next(iter(r.relays.values()))
    d = sorted(relay.devices)[0]
    bad = MaskedInput(r.coord.session_id, d, np.full(16, 2**20, dtype=np.uint32))
    with pytest.raises(SecAggIntegrityError, match="outside"):
        relay.receive(bad)


def test_coordinator_refuses_bad_relay_sums(make_round):
    r = make_round(n=6, gateways=2)
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    x = grid_vectors(6, 16)
    sums = []
    for i, d in enumerate(sorted(r.devices)):
        r.relays[r.gateway_of[d]].receive(r.devices[d].mask(x[i]))
    for relay in r.relays.values():
        sums.append(relay.flush())
    first = sums[0]
    assert isinstance(first, RelaySum)
    r.coord.receive(first)
    with pytest.raises(SecAggProtocolError, match="duplicate sum"):
        r.coord.receive(first)
    with pytest.raises(SecAggProtocolError, match="already reported"):
        r.coord.receive(dataclasses.replace(first, gateway_id="gw-evil"))
    with pytest.raises(SecAggProtocolError, match="did not share keys"):
        r.coord.receive(dataclasses.replace(sums[1], contributors=("ghost",)))
    with pytest.raises(SecAggIntegrityError, match="must be"):
        r.coord.receive(dataclasses.replace(sums[1], vector=sums[1].vector.astype(np.uint64)))
    r.coord.receive(sums[1])
    r.unmask()
    assert (r.coord.outcome.total == x.astype(np.int64).sum(0)).all()


# -- substituted keys, tampered ciphertexts and shares ---------------------------------------------


def test_substituted_key_advertisement_is_detected(make_round):
    r = make_round(n=5)
    bundles = _advertise(r)
    target = bundles[0]
    assert isinstance(target, KeyBundle)
    forged = dataclasses.replace(target.adverts[0], enc_key=b"\x09" * 32)  # relay's own key
    evil = KeyBundle(target.session_id, target.device_id, (forged, *target.adverts[1:]))
    dev = r.devices[target.device_id]
    with pytest.raises(SecAggIntegrityError, match="substituted"):
        dev.receive(evil)
    assert dev.phase is DevicePhase.WAIT_KEYS  # nothing changed; the honest bundle still works
    dev.receive(target)
    # and the coordinator refuses an advertisement whose signature does not verify
    r2 = make_round(n=5, seed=9)
    setup = r2.coord.start()[0]
    advert = r2.devices[setup.device_id].receive(setup)[0]
    assert isinstance(advert, KeyAdvertisement)
    with pytest.raises(SecAggIntegrityError, match="signature"):
        r2.coord.receive(dataclasses.replace(advert, mask_key=b"\x01" * 32))


def test_substituted_coordinator_key_in_setup_is_detected(make_round):
    r = make_round(n=5)
    setup = r.coord.start()[0]
    assert isinstance(setup, RoundSetup)
    evil = dataclasses.replace(setup, coordinator_key=b"\x07" * 32)
    with pytest.raises(SecAggIntegrityError, match="round setup"):
        r.devices[setup.device_id].receive(evil)


def test_tampered_share_ciphertext_is_detected_and_round_survives(make_round):
    r = make_round(n=6)
    share_bundles = r.run_until_masking()
    victim = share_bundles[0]
    assert isinstance(victim, ShareBundle)
    sender, blob = victim.ciphertexts[0]
    flipped = bytearray(blob)
    flipped[20] ^= 0x40
    tampered = ShareBundle(
        victim.session_id, victim.device_id, ((sender, bytes(flipped)), *victim.ciphertexts[1:])
    )
    r.devices[victim.device_id].receive(tampered)
    assert sender in r.devices[victim.device_id].rejected
    for m in share_bundles[1:]:
        r.devices[m.device_id].receive(m)
    x = grid_vectors(6, 16)
    r.mask_all(x)
    r.unmask()
    assert (r.coord.outcome.total == x.astype(np.int64).sum(0)).all()


def _corrupt_held_share(r, holder: str, owner: str) -> None:
    held = r.devices[holder]._held
    seed_share, key_share = held[owner]
    bad = shamir.share_to_bytes((shamir.share_from_bytes(seed_share) + 1) % shamir.PRIME)
    held[owner] = (bad, key_share)


def test_tampered_share_is_outvoted_when_more_than_t_arrive(make_round):
    r = make_round(n=6)  # complete graph, t = 3 of 5 holders
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    ids = sorted(r.devices)
    _corrupt_held_share(r, ids[1], ids[0])
    x = grid_vectors(6, 16)
    r.mask_all(x)
    r.unmask()
    assert r.coord.phase is CoordinatorPhase.DONE
    assert (r.coord.outcome.total == x.astype(np.int64).sum(0)).all()


def test_tampered_share_abandons_when_it_cannot_be_outvoted(make_round):
    r = make_round(n=4)  # complete graph k = 3, t = 2 ... every reply counts
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    ids = sorted(r.devices)
    for holder in ids[1:]:
        _corrupt_held_share(r, holder, ids[0])
    r.mask_all(grid_vectors(4, 16))
    r.unmask()
    assert r.coord.phase is CoordinatorPhase.ABANDONED
    assert "commitment" in r.coord.reason and r.coord.outcome.total is None


# -- the unmask request --------------------------------------------------------------------------


def test_request_for_both_shares_of_a_peer_is_refused(make_round):
    r = make_round(n=5)
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    r.mask_all(grid_vectors(5, 16))
    requests = r.coord.close_phase()
    req = requests[0]
    assert isinstance(req, UnmaskRequest)
    dev = r.devices[req.device_id]
    greedy = dataclasses.replace(req, dropped=(req.survivors[0],))
    with pytest.raises(UnmaskRefusedError, match="both"):
        dev.receive(greedy)
    with pytest.raises(SecAggProtocolError, match="did not share"):
        dev.receive(dataclasses.replace(req, survivors=(*req.survivors, "stranger")))
    with pytest.raises(UnmaskRefusedError, match="below threshold"):
        dev.receive(dataclasses.replace(req, survivors=(), dropped=req.survivors))
    dev.receive(req)  # the honest request is answered once...
    with pytest.raises(SecAggProtocolError, match="phase"):
        dev.receive(dataclasses.replace(req, survivors=(), dropped=req.survivors))  # ...only once


def test_device_refuses_to_mask_below_threshold(make_round):
    r = make_round(n=5)  # t = 3 of k = 4
    bundles = _advertise(r)
    target = bundles[0]
    assert isinstance(target, KeyBundle)
    with pytest.raises(RoundAbandonedError, match="threshold"):
        r.devices[target.device_id].receive(dataclasses.replace(target, adverts=target.adverts[:2]))


# -- what a relay sees ------------------------------------------------------------------------------


def test_relay_sum_is_uniform_even_when_pairwise_masks_cancel_in_site(make_round):
    n, length = 5, 1 << 16
    r = make_round(n=n, length=length, gateways=1)  # whole neighbourhood at one site
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    relay = r.relays["gw0"]
    ids = sorted(r.devices)
    for d in ids:
        relay.receive(r.devices[d].mask(np.zeros(length, np.float32)))  # worst case: all zero
    forwarded = relay.flush()
    assert forwarded is not None
    v = forwarded.vector.astype(np.int64)
    # The pairwise masks do cancel inside the site: removing only the self-masks leaves 0.
    exp = MaskExpander(length, 32)
    self_masks = exp.zeros()
    exp.accumulate(self_masks, [r.devices[d]._seed for d in ids])
    assert ((forwarded.vector - self_masks) == 0).all()
    # ...yet the forwarded sum is indistinguishable from uniform on Z_2^32 (chi-square, 255 dof;
    # 330 is the 0.1 % critical value), in its top byte and in its bottom byte.
    for byte in (v >> 24, v & 0xFF):
        counts = np.bincount(byte, minlength=256)
        expected = length / 256
        chi2 = float(((counts - expected) ** 2 / expected).sum())
        assert chi2 < 330, chi2
    # The same statistic catches an unmasked sum at once.
    plain = np.bincount(np.zeros(length, np.int64), minlength=256)
    assert float(((plain - length / 256) ** 2 / (length / 256)).sum()) > 1e5


def test_relay_transcript_holds_no_secret(make_round):
    r = make_round(n=6, length=64)
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(r.wire(m))
    r.mask_all(grid_vectors(6, 64))
    r.unmask()
    transcript = b"".join(r.wire_log)
    for dev in r.devices.values():
        secrets = [dev._seed, dev._mask_sk, dev._enc_sk]
        for seed_share, key_share in dev._held.values():
            secrets += [seed_share, key_share]
        for s in secrets:
            assert s not in transcript
            assert s.hex() not in transcript.decode("latin-1")
            assert __import__("base64").b64encode(s)[:40] not in transcript
    assert r.coord.phase is CoordinatorPhase.DONE


def test_unmask_reply_with_unrequested_shares_is_refused(make_round):
    from fedge.secagg import UnmaskResponse
    from fedge.secagg.crypto import seal
    from fedge.secagg.device import (
        KEY_SHARE,
        SEED_SHARE,
        decode_unmask_records,
        encode_unmask_record,
        unmask_aad,
        unmask_key,
    )

    r = make_round(n=5)
    for m in r.run_until_masking():
        r.devices[m.device_id].receive(m)
    r.mask_all(grid_vectors(5, 16))
    req = r.coord.close_phase()[0]
    assert isinstance(req, UnmaskRequest)
    dev = r.devices[req.device_id]
    peer = req.survivors[0]
    share = dev._held[peer][1]
    # a key share for a survivor: exactly what a curious server must never obtain
    record = encode_unmask_record(KEY_SHARE, r.coord.index[peer], share)
    key = unmask_key(dev._enc_sk, r.coord.public_key, r.coord.session_id, dev.device_id)
    blob = seal(key, record, unmask_aad(r.coord.session_id, dev.device_id))
    with pytest.raises(SecAggIntegrityError, match="not asked"):
        r.coord.receive(UnmaskResponse(r.coord.session_id, dev.device_id, blob))
    with pytest.raises(SecAggIntegrityError, match="whole number"):
        decode_unmask_records(record[:-1])
    with pytest.raises(SecAggIntegrityError, match="kind"):
        decode_unmask_records(b"\x07" + record[1:])
    assert decode_unmask_records(record)[0][0] == KEY_SHARE != SEED_SHARE
    reply = dev.receive(req)[0]
    r.coord.receive(reply)  # the honest reply is still accepted
