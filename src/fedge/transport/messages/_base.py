"""Wire protocol v1, the shared pieces: the message base class, names, nonces, errors, health."""

from __future__ import annotations

import secrets
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 1

Name = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
Nonce = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
# a round's W3C trace context (fedge.telemetry.tracing): later work is parented to the round
TraceParent = Annotated[str, Field(pattern=r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")]


def new_nonce() -> str:
    """A fresh 128-bit nonce, hex."""
    return secrets.token_hex(16)


class _Msg(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ErrorBody(_Msg):
    """Every refusal: a stable machine code and a sentence that says what to do."""

    error: str  # e.g. "replayed_nonce", "stale_round", "wrong_site", "payload_too_large"
    detail: str


class Health(_Msg):
    """``GET /v1/health``: the server is up and speaks this protocol version."""

    status: Literal["ok"] = "ok"
    protocol: int = PROTOCOL_VERSION
