"""Wire protocol v1, secure aggregation: plans, key bindings, joins, inboxes, gateway batches.

Devices send their joins and control messages to their gateway, which relays them (one by one,
or many in a :class:`SecAggBatch`) to the coordinator; the coordinator's messages wait in
inboxes, one per device and one per site (:mod:`fedge.coordinator.secure`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from fedge.transport.messages._base import Name, Nonce, _Msg


class SecAggPlan(_Msg):
    """Secure aggregation is on for the round: how the device builds its vector and waits.

    ``session`` names the round ("job/round"); the cryptographic session id and the exact
    :class:`~fedge.secagg.SessionParams` come later, in the coordinator's signed round setup.
    ``params`` holds ``weighting`` ("examples" or "uniform"), ``max_examples`` (the weight cap
    for "examples") and ``phase_timeout_s`` (the coordinator's per-phase deadline).
    """

    session: str
    params: dict[str, float | int | str | bool]


B64Key = Annotated[str, Field(pattern=r"^[A-Za-z0-9+/]{43}=$")]  # 32 bytes, base64


class KeyBinding(_Msg):
    """A per-round Ed25519 identity key, proven by the holder's fleet certificate.

    ``proof`` is the ECDSA signature, with the certificate's key, over
    :func:`fedge.identity.binding.binding_message` (role, name, job, round, key).
    """

    role: Literal["device", "coordinator"]
    name: Name
    identity_key: B64Key
    certificate: str = Field(max_length=16_384)  # PEM
    proof: str = Field(max_length=256)  # base64 DER ECDSA signature


class SecAggJoin(_Msg):
    """Device → gateway → coordinator: "I trained; count me in the secure sum of this round"."""

    job_id: Name
    round: int = Field(ge=1)
    device_id: Name
    nonce: Nonce
    binding: KeyBinding


class SecAggInbox(_Msg):
    """The secagg messages waiting for one device, from position ``after`` on.

    ``messages`` are base64 :func:`fedge.secagg.messages.to_wire` payloads; ``next`` is the
    cursor to ask from next time. ``bindings`` are the proven keys of the coordinator and the
    device's neighbours (present once the session started). ``state`` is "joining" until the
    coordinator starts the session, "running", then "done" or "abandoned" (with ``reason``).
    """

    state: Literal["joining", "running", "done", "abandoned"]
    messages: list[str] = Field(default_factory=list, max_length=64)
    next: int = Field(0, ge=0)
    bindings: list[KeyBinding] = Field(default_factory=list)
    phase: str = ""
    phase_deadline: float | None = None  # when the coordinator closes the current phase
    relay_deadline: float | None = None  # when a gateway must forward its masked sum
    reason: str = ""


MAX_BATCH_ITEMS = 256  # items of one SecAggBatch (the gateway splits larger batches)
MAX_SITE_MESSAGES = 512  # messages of one SecAggSiteInbox page
B64Message = Annotated[str, Field(max_length=256 * 1024, pattern=r"^[A-Za-z0-9+/]*={0,2}$")]


class SecAggRelayed(_Msg):
    """One device's secagg control message (base64 wire), relayed in a batch by its gateway."""

    device_id: Name  # must be the message's sender, and have joined through this gateway
    message: B64Message


class SecAggBatch(_Msg):
    """Gateway → coordinator: many of its devices' joins and control messages in one request.

    Each item is checked on its own, as if it had come alone (the join's key binding against
    the fleet CA and the gateway's site; a message against the device's join through this
    gateway); a refused item does not refuse the others. Masked inputs never travel here:
    the gateway sums them (one RelaySum, ``POST .../secagg``).
    """

    joins: list[SecAggJoin] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)
    messages: list[SecAggRelayed] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)


class SecAggItemResult(_Msg):
    """The outcome of one batch item: accepted (maybe a duplicate), or refused with the status
    and detail a request of its own would have got (:mod:`fedge.transport.errors`)."""

    accepted: bool
    duplicate: bool = False
    status: int = Field(200, ge=200, le=599)
    error: str = ""  # the ErrorBody code when refused
    reason: str = ""


class SecAggBatchReceipt(_Msg):
    """One result per item of a :class:`SecAggBatch`, in order."""

    joins: list[SecAggItemResult] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)
    messages: list[SecAggItemResult] = Field(default_factory=list, max_length=MAX_BATCH_ITEMS)


class SecAggSiteMessage(_Msg):
    """A message for one of the gateway's devices (base64 wire)."""

    device_id: Name
    message: B64Message


class SecAggSiteInbox(_Msg):
    """The secagg messages for ALL of a gateway's devices, from site cursor ``after`` on.

    The gateway fans them out to its devices' own inboxes. ``bindings`` (in the page read from
    cursor 0 once the session started) are the proven keys of the coordinator (first) and of
    every neighbour of the site's devices; ``neighbours`` says whose keys each device gets.
    State, phase and deadlines as in :class:`SecAggInbox`.
    """

    state: Literal["joining", "running", "done", "abandoned"]
    messages: list[SecAggSiteMessage] = Field(default_factory=list, max_length=MAX_SITE_MESSAGES)
    next: int = Field(0, ge=0)
    bindings: list[KeyBinding] = Field(default_factory=list)
    neighbours: dict[str, list[str]] = Field(default_factory=dict)
    phase: str = ""
    phase_deadline: float | None = None
    relay_deadline: float | None = None
    reason: str = ""
