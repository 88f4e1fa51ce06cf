"""fedge errors ⇄ HTTP status codes, in one table used by the server and the client.

Server side, :func:`install_error_handlers` answers every refusal with an
:class:`~fedge.transport.messages.ErrorBody`; client side, :func:`error_from_response` turns a
status and body back into the matching fedge exception, carrying the server's ``detail``.

=====================================================  ======  =========================
exception (first match wins, most specific first)      status  ``ErrorBody.error``
=====================================================  ======  =========================
RevokedError                                           401     ``certificate_revoked``
ExpiredCertificateError                                401     ``certificate_expired``
CertificateError                                       401     ``unauthenticated``
AuthorizationError                                     403     ``forbidden``
UnknownNameError (no such job/model/device)            404     ``not_found``
PayloadTooLarge                                        413     ``payload_too_large``
ShapeMismatchError / NonFiniteError / WireFormatError  400     ``shape_mismatch`` ...
ValidationError, ConfigError                           400     ``invalid`` / ``invalid_config``
ProtocolError (replay, stale round, out of phase)      409     ``conflict``
PrivacyBudgetExceeded                                  409     ``privacy_budget_exceeded``
UnavailableError, PkiError (cannot check the CRL)      503     ``unavailable``
any other error                                        500     ``internal``
=====================================================  ======  =========================

A JSON body or path parameter that fails validation is 422 ``invalid_request``.

Each refusal (4xx) is also named for the ``fedge_requests_refused_total`` metric, with a reason
from the fixed set :data:`fedge.telemetry.labels.REFUSAL_REASONS`: :func:`refusal_reason` reads
it off the exception (:data:`REFUSAL_TABLE`: its type, and for the broad types the words every
such refusal in fedge uses, e.g. "stale round", "replayed", "belongs to site"), and the handler
hands it to :class:`fedge.telemetry.traffic.TrafficMetricsMiddleware` in the request's state.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from fedge.errors import (
    AuthorizationError,
    CertificateError,
    ConfigError,
    ExpiredCertificateError,
    FedgeError,
    NonFiniteError,
    PayloadTooLarge,
    PkiError,
    PrivacyBudgetExceeded,
    ProtocolError,
    RevokedError,
    SecAggConfigError,
    SecAggError,
    SecAggIntegrityError,
    ShapeMismatchError,
    UnavailableError,
    UnknownNameError,
    ValidationError,
    WireFormatError,
)
from fedge.telemetry.traffic import note_refusal
from fedge.transport.messages import ErrorBody

__all__ = [
    "REFUSAL_TABLE",
    "STATUS_TABLE",
    "error_from_response",
    "error_response",
    "install_error_handlers",
    "refusal_reason",
    "secagg_errors",
    "status_for",
]

log = logging.getLogger(__name__)

# (exception type, status, code): the first isinstance match wins, so specific types come first.
STATUS_TABLE: tuple[tuple[type[FedgeError], int, str], ...] = (
    (RevokedError, 401, "certificate_revoked"),
    (ExpiredCertificateError, 401, "certificate_expired"),
    (CertificateError, 401, "unauthenticated"),
    (AuthorizationError, 403, "forbidden"),
    (UnknownNameError, 404, "not_found"),
    (PayloadTooLarge, 413, "payload_too_large"),
    (ShapeMismatchError, 400, "shape_mismatch"),
    (NonFiniteError, 400, "non_finite"),
    (WireFormatError, 400, "wire_format"),
    (ValidationError, 400, "invalid"),
    (ConfigError, 400, "invalid_config"),
    (PrivacyBudgetExceeded, 409, "privacy_budget_exceeded"),
    (ProtocolError, 409, "conflict"),
    (UnavailableError, 503, "unavailable"),
    (PkiError, 503, "unavailable"),
)
_CLASS_OF_CODE: dict[str, type[FedgeError]] = {code: cls for cls, _, code in STATUS_TABLE}
_CLASS_OF_STATUS: dict[int, type[FedgeError]] = {
    400: ValidationError,
    401: CertificateError,
    403: AuthorizationError,
    404: UnknownNameError,
    409: ProtocolError,
    413: PayloadTooLarge,
    415: ValidationError,
    422: ValidationError,
}


# (exception type, words its message must contain or None, reason): the first match wins.
_STALE = r"stale|not accepting|not open|is closed|no more reports|another session or round"
REFUSAL_TABLE: tuple[tuple[type[FedgeError], re.Pattern[str] | None, str], ...] = tuple(
    (cls, re.compile(words, re.IGNORECASE) if words else None, reason)
    for cls, words, reason in (
        (RevokedError, None, "revoked"),
        (ExpiredCertificateError, None, "expired"),
        (CertificateError, None, "unauthenticated"),
        (AuthorizationError, r"belongs to site|for site|of site", "wrong_site"),
        (AuthorizationError, r"\brevoked\b", "revoked"),
        (AuthorizationError, None, "forbidden"),
        (UnknownNameError, None, "not_found"),
        (PayloadTooLarge, None, "oversized"),
        (ShapeMismatchError, None, "invalid_tensor"),
        (NonFiniteError, None, "invalid_tensor"),
        (WireFormatError, None, "invalid_tensor"),
        (ValidationError, None, "invalid"),
        (ConfigError, None, "invalid"),
        (PrivacyBudgetExceeded, None, "budget_exhausted"),
        (ProtocolError, r"replay|used before", "replay"),
        (ProtocolError, _STALE, "stale_round"),
        (ProtocolError, r"duplicate|already (reported|joined|forwarded|counted)", "duplicate"),
        (ProtocolError, r"phase|started|before the round setup", "out_of_phase"),
        (ProtocolError, None, "conflict"),
    )
)


def refusal_reason(exc: FedgeError) -> str:
    """Why ``exc`` refuses a request, as a ``fedge_requests_refused_total`` reason."""
    text = str(exc)
    for cls, words, reason in REFUSAL_TABLE:
        if isinstance(exc, cls) and (words is None or words.search(text)):
            return reason
    return "other"


def status_for(exc: FedgeError) -> tuple[int, str]:
    """The HTTP status and stable error code for a fedge error."""
    for cls, status, code in STATUS_TABLE:
        if isinstance(exc, cls):
            return status, code
    return 500, "internal"


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response carrying :class:`ErrorBody`."""
    body = ErrorBody(error=code, detail=detail)
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def _describe(request: Request) -> str:
    peer = getattr(request.state, "peer", None)
    who = f"{peer.role} {peer.name!r}" if peer is not None else "unauthenticated peer"
    client = request.client.host if request.client else "?"
    return f"{request.method} {request.url.path} from {who} at {client}"


async def _fedge_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FedgeError)
    status, code = status_for(exc)
    if status >= 500:
        log.error("%s failed: %s", _describe(request), exc, exc_info=exc)
    else:
        log.info("refused %s: %d %s: %s", _describe(request), status, code, exc)
        note_refusal(request.scope.setdefault("state", {}), refusal_reason(exc))
    headers = {"Retry-After": "1"} if status == 503 else None
    return error_response(status, code, str(exc), headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for err in exc.errors()[:10]:
        where = ".".join(str(p) for p in err.get("loc", ()))
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    detail = "; ".join(parts) or "request failed validation"
    log.info("refused %s: 422 invalid_request: %s", _describe(request), detail)
    return error_response(422, "invalid_request", detail)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, detail, headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("%s failed unexpectedly", _describe(request), exc_info=exc)
    return error_response(500, "internal", "internal server error; see the server's log")


def install_error_handlers(app: FastAPI) -> None:
    """Answer fedge errors, validation failures and HTTP errors with :class:`ErrorBody`."""
    app.add_exception_handler(FedgeError, _fedge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(Exception, _unexpected)


def error_from_response(status: int, body: bytes) -> FedgeError:
    """The fedge exception for an error response (the server's ``detail`` as its message)."""
    code, detail = "", ""
    try:
        parsed = ErrorBody.model_validate_json(body)
        code, detail = parsed.error, parsed.detail
    except ValueError:
        detail = body[:200].decode("utf-8", "replace")
    detail = detail or f"HTTP {status}"
    if status >= 500 or status == 429:
        return UnavailableError(f"server answered {status}: {detail}")
    cls = _CLASS_OF_CODE.get(code) or _CLASS_OF_STATUS.get(status) or ProtocolError
    if status in (401, 403, 404, 409, 413) and _status_of_class(cls) != status:
        cls = _CLASS_OF_STATUS[status]  # a code we do not know with a status we do
    return cls(detail)


def _status_of_class(cls: type[FedgeError]) -> int:
    for known, status, _ in STATUS_TABLE:
        if issubclass(cls, known):
            return status
    return 500


@contextmanager
def secagg_errors() -> Iterator[None]:
    """Map :mod:`fedge.secagg` refusals at the service boundary: integrity and unsafe
    parameters → :class:`ValidationError` (400); out of phase, duplicate, replayed, wrong round
    or abandoned → :class:`ProtocolError` (409)."""
    try:
        yield
    except (SecAggIntegrityError, SecAggConfigError) as exc:
        raise ValidationError(str(exc)) from None
    except SecAggError as exc:
        raise ProtocolError(str(exc)) from None
