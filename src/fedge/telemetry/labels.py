"""The label values of fedge's metrics: fixed sets, so that no label's cardinality can grow.

Route groups name the wire API's routes (never ids or hashes in a path); refusal reasons say why
a request was refused, in the application's terms where the API knows them (see
:func:`fedge.transport.errors.refusal_reason`) and from the HTTP status otherwise; served-version
kinds say what a model payload served *is* (see :mod:`fedge.telemetry.metrics`, Cardinality).
"""

from __future__ import annotations

import re

__all__ = [
    "REFUSAL_REASONS",
    "ROUTE_GROUPS",
    "SERVED_VERSIONS",
    "reason_for_status",
    "route_group",
]

# Route groups of the wire API: the first regular expression that matches a path wins.
ROUTE_GROUPS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), group)
    for pattern, group in (
        (r"^/v1/admin/", "admin"),
        (r"^/v1/gateway/checkin$", "gateway_checkin"),
        (r"^/v1/gateway/devices$", "gateway_devices"),
        (r"/rounds/\d+/secagg(/|$)", "secagg"),
        (r"/rounds/\d+/partials$", "partials"),
        (r"/rounds/\d+/updates$", "updates"),
        (r"^/v1/jobs/[^/]+/production$", "production"),
        (r"^/v1/jobs/[^/]+/health$", "health_reports"),
        (r"^/v1/models/[^/]+/release$", "releases"),
        (r"^/v1/models/", "models"),
        (r"^/v1/checkin$", "checkin"),
        (r"^/v1/health$", "health"),
    )
)

# Why a request was refused (the ``reason`` label): a fixed set; anything else counts as "other".
REFUSAL_REASONS = (
    "unauthenticated",  # no client certificate, or not from the fleet CA (401)
    "expired",  # a certificate outside its validity window (401)
    "revoked",  # a certificate on the CRL, or a device an admin revoked
    "forbidden",  # a role or name that may not do this (403)
    "wrong_site",  # a device or gateway acting for another site (403)
    "not_found",  # no such job, round, model or route (404)
    "oversized",  # a body over its route's limit (413)
    "invalid_tensor",  # a tensor payload of the wrong shape/dtype, non-finite, or malformed (400)
    "invalid",  # a message that fails validation (400, 422)
    "replay",  # a nonce used before (409)
    "stale_round",  # a round that is not open (closed, unknown, or not the current one) (409)
    "out_of_phase",  # a secure-aggregation message in the wrong phase (409)
    "duplicate",  # a second report or join from the same device or gateway (409)
    "budget_exhausted",  # the privacy budget would be exceeded (409)
    "conflict",  # any other refusal of a message in the wrong state (409)
    "rate_limited",  # 429
    "tls_certificate",  # a TLS handshake refused for its certificate
    "tls_handshake",  # any other TLS handshake failure
    "other",
)

_REASONS = {
    400: "invalid",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "invalid",
    409: "conflict",
    413: "oversized",
    415: "invalid",
    422: "invalid",
    429: "rate_limited",
}

# What a served model version is, when it is served (the ``version`` label of models served)
SERVED_VERSIONS = (
    "production",  # the release every gateway serves (the job's production manifest)
    "canary",  # the release of a canary stage in progress
    "round",  # the model of a round open at this tier (devices train from it), not a release
    "other",  # anything else: an older version, one a straggler asks for
)


def route_group(path: str) -> str:
    """The route group of a request path (a bounded label: never ids or hashes)."""
    for pattern, group in ROUTE_GROUPS:
        if pattern.search(path):
            return group
    return "other"


def reason_for_status(status: int) -> str | None:
    """Why a request was refused, from its 4xx status alone (None: it was not refused); the
    API's error handlers name the application's reason when they know it (a refusal raised as
    a fedge error: :func:`fedge.transport.errors.refusal_reason`)."""
    if not 400 <= status < 500:
        return None
    return _REASONS.get(status, "other")
