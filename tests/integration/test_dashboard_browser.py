"""The dashboard in a real headless browser, on a real federation (issue 7, item 5).

Chromium from Debian's packages (``chromium`` on the PATH, ``/usr/bin/chromium``: found the way
``.ci/run`` looks for it before installing it) driven by Playwright for Python, which only talks to
it (``playwright install`` is never run). The federation is real processes on loopback (2 sites ×
3 devices); the page is opened with the ops token's login link while a two-round job with secure
aggregation and distributed differential privacy (a ``max_epsilon`` budget) runs. It must load
without console errors, update by itself until both rounds show as committed, show the fleet,
the accuracy and loss curves, and the ε spent against the budget; a promotion and then a
rollback clicked in the page must take effect (checked through the admin API). Requests without
rights are refused (401 without credentials, 403 for a device).

Outside CI the test is skipped, saying why, when Chromium or Playwright is missing; under
``CI=true`` it fails instead.
"""

from __future__ import annotations

import os
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from fedge.demo.federation import LocalFederation
from fedge.transport.messages import TrainingPlan

from .harness import create_job, job_spec, running_federation, small_plan, wait_for_job

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

CHROMIUM = "chromium"  # looked up on the PATH, as .ci/run does (`command -v chromium`)
SECURE = {"phase_timeout_s": 4.0}  # under distributed DP the noise plan sets range and weights
LIMIT = 60.0  # the job's ε budget: two rounds at z = 0.5 over 6 devices spend about 42
PRIVACY = {
    "mode": "distributed", "clip_norm": 0.5, "noise_multiplier": 0.5, "delta": 1e-5,
    "max_epsilon": LIMIT,
}  # fmt: skip


def chromium_path() -> str | None:
    """The Chromium binary the test drives: ``chromium`` on the PATH (Debian's package puts it
    in /usr/bin), the same lookup as .ci/run's, so CI installs exactly what the test finds."""
    return shutil.which(CHROMIUM)


def _browser_or_skip() -> tuple[Any, str]:
    """Playwright's sync API and Chromium's path, or skip (fail under CI=true) saying what is
    missing."""
    missing = []
    chromium = chromium_path()
    if chromium is None:
        missing.append(f"{CHROMIUM} on the PATH (apt-get install chromium)")
    try:
        from playwright import sync_api
    except ImportError:
        missing.append("the playwright package (pip install playwright)")
    if missing or chromium is None:
        reason = f"the browser test needs {' and '.join(missing)}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true but {reason}; .ci/run installs both")
        pytest.skip(reason)
    return sync_api, chromium


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFederation]:
    _browser_or_skip()
    workdir: Path = tmp_path_factory.mktemp("dashboard-fed")
    with running_federation(workdir, small_plan(3)) as fed:
        yield fed


def _client(fed: LocalFederation, cert: str | None = None) -> httpx.Client:
    """An HTTPS client of the coordinator's ops listener, presenting ``cert`` if given."""
    context = ssl.create_default_context(cafile=str(fed.pki / "ca.crt"))
    if cert is not None:
        issued = fed.pki / "issued"
        context.load_cert_chain(issued / f"{cert}.crt", issued / f"{cert}.key")
    assert fed.coordinator_ops_url is not None
    return httpx.Client(base_url=fed.coordinator_ops_url, verify=context, timeout=30.0)


def test_requests_without_rights_are_refused(fed: LocalFederation) -> None:
    paths = ["/dashboard/", "/dashboard/api/fleet", "/dashboard/api/jobs"]
    with _client(fed) as anonymous, _client(fed, "dev-a-0") as device, _client(fed, "admin") as ok:
        for path in paths:
            assert anonymous.get(path).status_code == 401, path
            assert device.get(path).status_code == 403, path
            assert ok.get(path).status_code == 200, path  # an admin certificate gets in
        bad = anonymous.post("/dashboard/api/jobs/x/rollback", headers={"X-Fedge-Action": "1"})
        assert bad.status_code == 401


def test_dashboard_in_chromium_shows_a_live_job_promotes_and_rolls_back(
    fed: LocalFederation, tmp_path: Path
) -> None:
    sync_api, chromium = _browser_or_skip()
    spec = job_spec(
        "dash",
        rounds=2,
        plan=TrainingPlan(epochs=1, batch_size=None, lr=0.5),
        training_deadline_s=20.0,
        secure_aggregation=SECURE,
        privacy=PRIVACY,
    )
    job = create_job(fed, spec).id
    problems: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            # the ops listener's certificate comes from the throwaway fleet CA
            context = browser.new_context(
                ignore_https_errors=True, viewport={"width": 1400, "height": 1000}
            )
            # refused without the login link (a page of its own: its 401 is the point)
            stranger = context.new_page()
            assert stranger.goto(f"{fed.coordinator_ops_url}/dashboard/").status == 401
            stranger.close()

            page = context.new_page()
            page.on(
                "console",
                lambda msg: (
                    problems.append(f"console {msg.type}: {msg.text}")
                    if msg.type == "error"
                    else None
                ),
            )
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.on(
                "response",
                lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None,
            )
            page.on("dialog", lambda dialog: dialog.accept())  # "Really roll back …?"

            response = page.goto(fed.dashboard_url())
            assert response is not None and response.status == 200
            assert page.url.endswith("/dashboard/")

            # live: both rounds turn committed on the open page, without a reload
            # (waits use locators: the page's CSP forbids evaluating strings as script)
            expect = sync_api.expect
            live = page.locator('[data-testid="live"]')
            expect(live).to_contain_text("live · updated", timeout=30_000)
            first = live.inner_text()
            expect(live).not_to_have_text(first, timeout=30_000)  # it polls by itself
            committed = page.locator('[data-testid="round-bar"][data-state="committed"]')
            expect(committed).to_have_count(2, timeout=240_000)

            # the fleet: both sites' gateways and every device
            assert page.locator('[data-testid="gateway-row"]').count() == 2
            expect(page.locator('[data-testid="device-row"]')).to_have_count(6, timeout=30_000)
            assert page.locator('[data-testid="card-devices-eligible"] .value').inner_text() == "6"

            # the curves: one point per committed round on accuracy and loss
            accuracy = page.locator('[data-testid="accuracy-chart"] circle[data-point="accuracy"]')
            loss = page.locator('[data-testid="loss-chart"] circle[data-point="loss"]')
            assert accuracy.count() == 2 and loss.count() == 2
            survivors = page.locator('[data-testid="secagg-chart"] rect[data-bar="survivors"]')
            assert survivors.count() >= 2  # one per secure session (an abandoned one too)
            assert "saved" in page.locator('[data-testid="savings-text"]').inner_text()

            # the privacy budget: ε spent after the last round, against the job's max_epsilon
            view = wait_for_job(fed, job, timeout=60)
            spent = max(r.epsilon for r in view.rounds if r.epsilon is not None)
            assert 0 < spent < LIMIT
            expect(page.locator('[data-testid="privacy-text"]')).to_have_text(
                f"{spent:.3f} of max_epsilon {LIMIT:.2f}", timeout=30_000
            )
            chart = page.locator('[data-testid="privacy-chart"]')
            assert chart.locator('circle[data-point="ε spent"]').count() == 2
            expect(chart.locator(f'line[data-limit="{LIMIT:g}"]')).to_have_count(1)
            expect(chart.locator("text", has_text=f"limit {LIMIT:.2f}")).to_have_count(1)

            # promote, clicked in the page: the newer of the two round versions not in
            # production (a candidate the release gate held, or one it retired)
            with fed.admin_client() as admin:
                versions = [v for v in admin.list_models(job) if v.round is not None][-2:]
                (before,) = [v for v in admin.list_models(job) if v.status == "production"]
            target = next(v for v in reversed(versions) if v.status in ("candidate", "retired"))
            status_line = page.locator('[data-testid="action-status"]')
            button = page.locator(f'[data-testid="promote"][data-version="{target.version}"]')
            button.wait_for(timeout=30_000)
            page.screenshot(path=str(tmp_path / "before-promote.png"), full_page=True)
            button.click()
            expect(status_line).to_have_text(
                f"done: {target.version} is now production", timeout=30_000
            )
            with fed.admin_client() as admin:
                status = {v.sha256: v.status for v in admin.list_models(job)}
            assert (status[target.sha256], status[before.sha256]) == ("production", "retired")

            # rollback, clicked in the page: from the version just promoted to the one before
            button = page.locator(f'[data-testid="rollback"][data-version="{target.version}"]')
            button.wait_for(timeout=30_000)
            button.click()
            expect(status_line).to_have_text(
                f"done: {before.version} is now production", timeout=30_000
            )
            with fed.admin_client() as admin:
                status = {v.sha256: v.status for v in admin.list_models(job)}
            assert (status[before.sha256], status[target.sha256]) == ("production", "rolled_back")
            row = page.locator(f'[data-testid="model-row"][data-version="{target.version}"]')
            expect(row).to_have_attribute("data-status", "rolled_back", timeout=30_000)
        finally:
            browser.close()
    assert problems == [], problems
