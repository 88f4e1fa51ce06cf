"""``/metrics`` of a real federation after real rounds (issue 7, item 2).

Coordinator, two gateways and six devices run as processes on loopback; a two-round job with
central differential privacy trains through the gateways (plain sums, so gateways see each
update and record its norm). Its clip norm is so small that every update is clipped, so each
gateway's clipped fraction of the round is 1; a one-round job with a clip norm no update reaches
shows 0. Then Prometheus' view is read from each role's ops listener with the ops token, parsed
with ``prometheus_client``'s own parser, and compared with what the admin API and the
coordinator's database say happened. A last job with secure aggregation shows its phases timed
at the coordinator and no update norm recorded by a gateway (it relays masked vectors only).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fedge.demo.federation import LocalFederation, gateway_name
from fedge.errors import AuthorizationError
from fedge.telemetry.labels import REFUSAL_REASONS, SERVED_VERSIONS
from fedge.transport.client import FedgeClient
from fedge.transport.messages import JobView

from .harness import (
    Logs,
    create_job,
    job_spec,
    running_federation,
    small_plan,
    wait_for_job,
    wait_gateways_counted,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

DEVICES = 3  # per site, two sites
CLIP = 0.01  # far below any update's norm (about 0.4 here): every update is clipped
NO_CLIP = 1000.0  # far above: none is

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(fed: LocalFederation, url: str) -> Samples:
    """Every sample of ``url``/metrics, by sample name (read with the ops token)."""
    token = fed.ops_token_file.read_text().strip()
    context = ssl.create_default_context(cafile=str(fed.pki / "ca.crt"))
    response = httpx.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {token}"}, verify=context, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
    return sum(v for got, v in samples.get(name, []) if labels.items() <= got.items())


def series(samples: Samples, name: str, **labels: str) -> list[float]:
    """The values of ``name``'s samples whose labels include ``labels`` (one per series)."""
    return [v for got, v in samples.get(name, []) if labels.items() <= got.items()]


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFederation, JobView]]:
    """A federation that has run a two-round job to the end (and a refused admin request)."""
    workdir: Path = tmp_path_factory.mktemp("metrics")
    with running_federation(workdir, small_plan(DEVICES)) as fed:
        wait_gateways_counted(fed, {gateway_name(s): DEVICES for s in ("a", "b")}, timeout=60)
        spec = job_spec(
            "metrics",
            rounds=2,
            privacy={"mode": "central", "clip_norm": CLIP, "noise_multiplier": 1.0},
        )
        job = create_job(fed, spec)
        view = wait_for_job(fed, job.id, timeout=240)
        issued = fed.pki / "issued"
        device = FedgeClient(
            str(fed.coordinator_url),
            ca=fed.pki / "ca.crt",
            cert=issued / "dev-a-0.crt",
            key=issued / "dev-a-0.key",
            timeout=30,
        )
        with device, pytest.raises(AuthorizationError):
            device.list_jobs()  # a device may not use the admin API: 403, counted as refused
        yield fed, view


def test_coordinator_metrics_match_the_rounds_that_ran(
    ran: tuple[LocalFederation, JobView],
) -> None:
    fed, view = ran
    assert view.state == "completed"
    committed = [r for r in view.rounds if r.state == "committed"]
    assert committed, view
    m = scrape(fed, str(fed.coordinator_ops_url))

    assert value(m, "fedge_rounds_committed_total", job=view.id) == len(committed)
    abandoned = sum(r.state == "abandoned" for r in view.rounds)
    assert value(m, "fedge_rounds_abandoned_total", job=view.id) == abandoned
    last = view.rounds[-1]
    assert value(m, "fedge_round_participants", job=view.id) == last.participants > 0
    assert value(m, "fedge_round_duration_seconds_count", outcome="committed") == len(committed)
    assert value(m, "fedge_round_duration_seconds_sum", outcome="committed") > 0
    for phase in ("configuring", "training", "aggregating"):
        assert value(m, "fedge_round_phase_duration_seconds_count", phase=phase) >= len(committed)
    epsilon = committed[-1].epsilon
    assert epsilon is not None and epsilon > 0
    assert value(m, "fedge_privacy_epsilon", job=view.id) == pytest.approx(epsilon)
    # the initial model and one version per committed round
    assert value(m, "fedge_model_versions", job=view.id) == len(committed) + 1
    assert value(m, "fedge_devices_online") == 2 * DEVICES
    assert value(m, "fedge_devices_eligible") == 2 * DEVICES

    # traffic: the gateways' partials came in, models went out, the admin API was used
    assert value(m, "fedge_http_received_bytes_total", tier="coordinator", route="partials") > 0
    assert value(m, "fedge_http_sent_bytes_total", tier="coordinator", route="models") > 0
    assert value(m, "fedge_models_served_total", tier="coordinator", version="round") >= 1
    assert {labels["version"] for labels, _ in m["fedge_models_served_total"]} <= set(
        SERVED_VERSIONS
    )
    assert value(m, "fedge_requests_refused_total", reason="forbidden") >= 1
    assert {labels["reason"] for labels, _ in m["fedge_requests_refused_total"]} <= set(
        REFUSAL_REASONS
    )
    # the coordinator saw sums only: it recorded no update norm
    assert value(m, "fedge_update_norm_count") == 0


def test_gateway_metrics_show_its_devices_traffic_and_norms(
    ran: tuple[LocalFederation, JobView],
) -> None:
    fed, view = ran
    site = "a"
    m = scrape(fed, fed.gateway_ops_urls[site])
    assert value(m, "fedge_devices_online", site=site) == DEVICES
    assert value(m, "fedge_devices_eligible", site=site) == DEVICES
    received = value(m, "fedge_http_received_bytes_total", tier="gateway", route="updates")
    assert received > 0
    assert value(m, "fedge_http_sent_bytes_total", tier="gateway", route="models") > 0
    assert value(m, "fedge_models_served_total", tier="gateway", version="round") >= 1
    # one norm per plain update the gateway accepted; each device clipped its update to C,
    # and C is so small that every one of them was at it
    updates = value(m, "fedge_update_norm_count", tier="gateway")
    assert updates >= 1
    assert value(m, "fedge_update_norm_sum", tier="gateway") == pytest.approx(
        CLIP * updates, rel=1e-3
    )
    assert value(m, "fedge_updates_clipped_total", tier="gateway") == updates
    assert series(m, "fedge_round_clipped_fraction", job=view.id, tier="gateway") == [1.0]
    # the gateway does not run rounds: no round counters of its own
    assert value(m, "fedge_rounds_committed_total") == 0
    # every device handed a task either reported (one norm each) or dropped out in training
    handed = Logs(fed).lines(gateway_name(site), r"handed \S+ round \d+ to ")
    assert value(m, "fedge_dropouts_total", phase="training") + updates == len(handed)


def test_a_round_where_no_update_reaches_the_clip_norm_has_a_clipped_fraction_of_0(
    ran: tuple[LocalFederation, JobView],
) -> None:
    fed, first = ran
    spec = job_spec(
        "metrics-unclipped",
        privacy={"mode": "central", "clip_norm": NO_CLIP, "noise_multiplier": 1.0},
    )
    view = wait_for_job(fed, create_job(fed, spec).id, timeout=240)
    assert view.state == "completed", view
    for site in ("a", "b"):
        m = scrape(fed, fed.gateway_ops_urls[site])
        assert series(m, "fedge_round_clipped_fraction", job=view.id) == [0.0], site
        assert series(m, "fedge_round_clipped_fraction", job=first.id) == [1.0], site
    # the coordinator saw only the gateways' sums: no fraction of its own
    assert "fedge_round_clipped_fraction" not in scrape(fed, str(fed.coordinator_ops_url))


def test_metrics_need_the_token(ran: tuple[LocalFederation, JobView]) -> None:
    fed, _ = ran
    context = ssl.create_default_context(cafile=str(fed.pki / "ca.crt"))
    url = str(fed.coordinator_ops_url)
    refused = httpx.get(f"{url}/metrics", verify=context, timeout=30)
    assert refused.status_code == 401
    wrong = httpx.get(
        f"{url}/metrics", headers={"Authorization": "Bearer nope"}, verify=context, timeout=30
    )
    assert wrong.status_code == 401
    m = scrape(fed, url)
    assert (
        value(m, "fedge_requests_refused_total", tier="coordinator", reason="unauthenticated") >= 2
    )


def test_secure_aggregation_times_its_phases_and_records_no_norm(
    ran: tuple[LocalFederation, JobView],
) -> None:
    fed, _ = ran
    coordinator, gateway = str(fed.coordinator_ops_url), fed.gateway_ops_urls["a"]
    norms_before = value(scrape(fed, gateway), "fedge_update_norm_count")
    spec = job_spec(
        "metrics-secure",
        training_deadline_s=20.0,
        secure_aggregation={"phase_timeout_s": 4.0, "max_examples": 100_000},
    )
    view = wait_for_job(fed, create_job(fed, spec).id, timeout=240)
    assert any(r.state == "committed" for r in view.rounds), view
    m = scrape(fed, coordinator)
    assert value(m, "fedge_rounds_committed_total", job=view.id) >= 1
    phases = {
        labels["phase"]
        for labels, count in m.get("fedge_secagg_phase_duration_seconds_count", [])
        if count > 0
    }
    assert {"advertise_keys", "share_keys", "masked_input", "unmask"} <= phases, phases
    # a relay sees masked vectors only: it has no update norm to record
    assert value(scrape(fed, gateway), "fedge_update_norm_count") == norms_before
