"""Which devices a gateway may count: their sites, proven by certificates, and the checks on a
partial's contributors.

A device's site is known from its fleet certificate, which the gateway sends before a partial
names the device (:func:`certify_devices`). A partial may count only unrevoked devices of the
gateway's own site (:func:`check_contributors`); without a fleet CA an unseen device is bound to
the first site that reports it.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from fedge.errors import AuthorizationError, FedgeError
from fedge.identity import Identity, RevocationSource, Role, verify_peer

if TYPE_CHECKING:
    from cryptography import x509

    from fedge.coordinator.schema import DeviceRow

__all__ = ["certify_devices", "check_contributors"]


def certify_devices(
    certificates: Sequence[str],
    gateway: Identity,
    ca: x509.Certificate,
    revocation: RevocationSource | None,
) -> tuple[dict[str, str], list[Identity], dict[str, str]]:
    """Check devices' certificates (base64 DER; CA and CRL) for ``gateway``'s site.

    Returns (the site of each certified device, their identities, the refused ones with why):
    a device certified for another site, by another CA, expired, revoked or not a device is
    refused.
    """
    sites: dict[str, str] = {}
    certified: list[Identity] = []
    refused: dict[str, str] = {}
    for i, text in enumerate(certificates):
        try:
            who = verify_peer(base64.b64decode(text), ca, revocation)
        except (FedgeError, ValueError) as exc:
            refused[f"#{i}"] = str(exc)
            continue
        if who.role is not Role.DEVICE or who.site != gateway.site:
            refused[who.name] = (
                f"{who.role} of site {who.site!r}: gateway {gateway.name!r} registers only "
                f"devices of site {gateway.site!r}"
            )
            continue
        sites[who.name] = str(who.site)
        certified.append(who)
    return sites, certified, refused


def check_contributors(
    known: Mapping[str, DeviceRow],
    contributors: Sequence[str],
    gateway: Identity,
    *,
    fleet_ca: bool,
) -> None:
    """Refuse a partial of ``gateway`` that counts a revoked device, another site's, or (with a
    fleet CA) one whose site was never proven; ``known``: the rows of the contributors."""
    revoked = [d for d in contributors if (row := known.get(d)) is not None and row.revoked]
    if revoked:
        names = ", ".join(repr(d) for d in revoked[:5]) + (" ..." if len(revoked) > 5 else "")
        raise AuthorizationError(
            f"the partial of gateway {gateway.name!r} counts {len(revoked)} revoked device(s) "
            f"({names}; revoked with `fedge devices revoke`). A partial is one sum that cannot be "
            f"taken apart, so it is refused whole: the "
            f"{len(contributors) - len(revoked)} other update(s) it holds are lost for this "
            "round only. The gateway learns revocations at its next check-in and "
            "refuses those devices from then on, so later rounds go on without them; this "
            "happens when a device is revoked while its update is on its way, or behind a gateway "
            "too old to learn revocations (to lose nothing, revoke between rounds: fedge jobs "
            "pause, let the round end, revoke, resume)"
        )
    for device_id in contributors:
        row = known.get(device_id)
        if row is None or row.site is None:
            if not fleet_ca:
                continue  # no fleet CA to check against: the partial binds it to this site
            raise AuthorizationError(
                f"device {device_id!r} is not registered with the coordinator, so its site "
                f"cannot be checked: gateway {gateway.name!r} must send its devices' "
                "certificates (POST /v1/gateway/devices) before a partial names them"
            )
        if row.site is not None and row.site != gateway.site:
            raise AuthorizationError(
                f"device {device_id!r} belongs to site {row.site!r}, not {gateway.site!r}: a "
                "gateway reports only for its own site's devices"
            )
