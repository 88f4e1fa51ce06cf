"""The dashboard's routes: one page, its static assets, JSON data endpoints and two admin actions.

Mounted on the coordinator's ops listener (:mod:`fedge.transport.ops`), which lets in only an
admin certificate or the ops token; every route here also depends on
:func:`~fedge.transport.ops.require_ops_access` to know who asked. Under ``/dashboard``:

==========================================  ====================================================
``GET  /``                                  the page (HTML; its script polls the data every 2 s)
``GET  /static/{name}``                     its CSS and JavaScript (packaged, never fetched)
``GET  /api/fleet``                         :class:`~fedge.dashboard.views.FleetView`
``GET  /api/jobs``                          every job (:class:`~fedge.dashboard.views.JobSummary`)
``GET  /api/jobs/{job}``                    :class:`~fedge.dashboard.views.JobDetail`
``POST /api/models/{sha256}/promote``       the service's promote, as who asked
``POST /api/jobs/{job}/rollback``           the service's rollback, as who asked
==========================================  ====================================================

The two actions call the coordinator's admin API
(:class:`~fedge.coordinator.admin_service.CoordinatorAdmin`: its registry rules and audit trail
apply) and need the header ``X-Fedge-Action: 1`` besides the credentials, which a cross-site
form cannot send (defence in depth over the cookie's SameSite=Strict).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from fedge.coordinator.service import CoordinatorService
from fedge.dashboard.views import (
    FleetView,
    JobDetail,
    JobSummary,
    fleet_view,
    job_detail,
    job_summaries,
)
from fedge.errors import AuthorizationError, UnknownNameError
from fedge.identity import Identity, Role
from fedge.transport.messages import ModelVersionView
from fedge.transport.ops import OpsAccess, require_ops_access

__all__ = ["ACTION_HEADER", "TOKEN_ACTOR", "acting_admin", "dashboard_router"]

log = logging.getLogger(__name__)

ACTION_HEADER = "X-Fedge-Action"
TOKEN_ACTOR = "ops-token"  # the name actions taken with the ops token are recorded under

_ASSETS = {  # name -> media type; nothing else is served
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
JobId = Annotated[str, Path(pattern=_NAME, description="job id")]
Sha256 = Annotated[str, Path(pattern=r"^[0-9a-f]{64}$", description="model content hash")]
Caller = Annotated[OpsAccess, Depends(require_ops_access)]
Action = Annotated[str | None, Header(alias=ACTION_HEADER)]


def acting_admin(who: OpsAccess) -> Identity:
    """The identity an action is taken as: the admin's own, or :data:`TOKEN_ACTOR` for the token."""
    if isinstance(who, Identity):
        return who
    now = datetime.now(UTC)
    return Identity(
        role=Role.ADMIN, name=TOKEN_ACTOR, site=None, serial=0, not_before=now, not_after=now
    )


def _asset(name: str) -> bytes:
    return resources.files("fedge.dashboard").joinpath("static", name).read_bytes()


def _require_action_header(value: str | None) -> None:
    if value != "1":
        raise AuthorizationError(
            f"dashboard actions need the header {ACTION_HEADER}: 1 (the page sends it); "
            "refused as a possible cross-site request"
        )


def dashboard_router(service: CoordinatorService) -> APIRouter:
    """The dashboard of ``service``'s coordinator, to mount on its ops listener."""
    router = APIRouter(prefix="/dashboard", tags=["dashboard"])

    @router.get("", include_in_schema=False)
    def bare(who: Caller) -> RedirectResponse:
        """``/dashboard`` → ``/dashboard/`` (the page's relative links need the slash)."""
        return RedirectResponse("/dashboard/", status_code=307)

    @router.get("/", response_class=HTMLResponse)
    def page(who: Caller) -> HTMLResponse:
        """The dashboard page."""
        return HTMLResponse(
            _asset("index.html").decode("utf-8"),
            headers={"Content-Security-Policy": _CSP, "Cache-Control": "no-store"},
        )

    @router.get("/static/{name}")
    def asset(name: str, who: Caller) -> Response:
        """A packaged asset of the page (CSS, JavaScript)."""
        media = _ASSETS.get(name)
        if media is None:
            raise UnknownNameError(f"no dashboard asset {name!r}")
        return Response(_asset(name), media_type=media, headers={"Cache-Control": "no-cache"})

    @router.get("/api/whoami")
    def whoami(who: Caller) -> dict[str, str]:
        """Who the page is signed in as."""
        return {"who": "ops token" if who == "token" else f"admin {acting_admin(who).name}"}

    @router.get("/api/fleet")
    def fleet(who: Caller) -> FleetView:
        """Sites, gateways and devices: online, eligible, last seen."""
        return fleet_view(service.store, service.settings, service.clock())

    @router.get("/api/jobs")
    def jobs(who: Caller) -> list[JobSummary]:
        """Every job, oldest first."""
        return job_summaries(service.store)

    @router.get("/api/jobs/{job_id}")
    def job(job_id: JobId, who: Caller) -> JobDetail:
        """One job: its rounds, curves, privacy, secure-sum survivors, traffic and versions."""
        return job_detail(service.store, service.driver.stats, job_id)

    async def act(
        action: str | None, who: OpsAccess, call: Callable[[Identity, str], ModelVersionView],
        subject: str, what: str,
    ) -> ModelVersionView:  # fmt: skip
        _require_action_header(action)
        admin = acting_admin(who)
        view = await run_in_threadpool(call, admin, subject)
        log.info("dashboard: %s %s %s: %s is %s", admin.name, what, subject, view.version,
                 view.status)  # fmt: skip
        return view

    @router.post("/api/models/{sha256}/promote")
    async def promote(sha256: Sha256, who: Caller, action: Action = None) -> ModelVersionView:
        """Make a version production (the current one is retired)."""
        return await act(action, who, service.admin.promote_model, sha256, "promoted")

    @router.post("/api/jobs/{job_id}/rollback")
    async def rollback(job_id: JobId, who: Caller, action: Action = None) -> ModelVersionView:
        """Roll the job's production version back to the previous one (returns that one)."""
        return await act(action, who, service.admin.rollback_model, job_id, "rolled back")

    return router
