"""A whole federation on this machine: throwaway PKI, coordinator, gateways and devices.

:class:`LocalFederation` creates a fleet PKI in a work directory, writes each role's TOML config,
starts the coordinator, one gateway per site and the devices as separate processes on loopback
(each on a free port it reports when listening), and gives an admin client to drive jobs. It is
what ``fedge demo`` runs and what the failure-injection tests start; everything is stopped, and
no process is left behind, when it exits.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from fedge.demo.supervisor import ManagedProcess, Supervisor, fedge_argv
from fedge.demo.toml_file import write_toml
from fedge.errors import FedgeError
from fedge.identity import init_pki, issue

__all__ = ["FederationPlan", "LocalFederation", "device_name", "gateway_name"]

_LISTENING = re.compile(r"listening on https://[^\s:]+:(\d+)")
_OPS_LISTENER = re.compile(r"ops listener on https://[^\s:]+:(\d+)")
_ENDPOINT = re.compile(r"prediction endpoint (http://\S+)")


def gateway_name(site: str) -> str:
    """The gateway id of a site."""
    return f"gw-{site}"


def device_name(site: str, index: int) -> str:
    """The id of device ``index`` at ``site``."""
    return f"dev-{site}-{index}"


@dataclass(frozen=True)
class FederationPlan:
    """The shape of the federation and where each device's data comes from."""

    sites: tuple[str, ...] = ("site-a", "site-b")
    devices_per_site: int = 4
    task: str = "mnist_2nn"  # devices collect their share of this task's training set
    partitioner: str = "iid"
    data_seed: int = 0
    rows_per_tick: int = 250  # the demo collector streams this many rows per tick
    tick_s: float = 0.5
    device_labels: dict[str, str] = field(default_factory=lambda: {"kind": "demo"})
    privacy_limit: float = 100.0  # each device owner's ε limit
    log_format: str = "text"  # every process's `fedge --log-format` (text | json)
    traces: bool = False  # every process writes its spans to <workdir>/traces/<name>.jsonl
    otlp_endpoint: str | None = None  # or sends them to this OTLP/HTTP collector
    # more coordinator.toml settings: top-level keys, or sections as dicts (e.g. "canary")
    coordinator_extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_devices(self) -> int:
        """Devices in the whole fleet."""
        return len(self.sites) * self.devices_per_site


class LocalFederation:
    """Coordinator + gateways + devices as processes under one :class:`Supervisor`."""

    def __init__(self, workdir: str | Path, plan: FederationPlan | None = None) -> None:
        self.workdir = Path(workdir)
        self.plan = plan or FederationPlan()
        self.pki = self.workdir / "pki"
        self.supervisor = Supervisor(self.workdir / "logs")
        self.coordinator_url: str | None = None
        self.gateway_urls: dict[str, str] = {}
        # the ops listeners (/metrics, /healthz, the dashboard; fedge.transport.ops), one token
        self.coordinator_ops_url: str | None = None
        self.gateway_ops_urls: dict[str, str] = {}
        self.ops_token_file = self.workdir / "ops.token"
        self._uplink_override: dict[str, str] = {}

    # -- set-up ---------------------------------------------------------------------------
    def create_pki(self) -> None:
        """A fresh fleet CA and one certificate per process (and the admin)."""
        init_pki(self.pki, "fedge-demo")
        issue(self.pki, "coordinator", "coordinator")
        issue(self.pki, "admin", "admin")
        for site in self.plan.sites:
            issue(self.pki, "gateway", gateway_name(site), site=site)
            for i in range(self.plan.devices_per_site):
                issue(self.pki, "device", device_name(site, i), site=site)

    def _pki_section(self, name: str, *, crl: bool, release_pub: bool = True) -> dict[str, Any]:
        section = {
            "ca": str(self.pki / "ca.crt"),
            "cert": str(self.pki / "issued" / f"{name}.crt"),
            "key": str(self.pki / "issued" / f"{name}.key"),
        }
        if crl:
            section["crl"] = str(self.pki / "crl.pem")
        if release_pub:  # gateways and devices verify every model's release signature
            section["release_pub"] = str(self.pki / "release.pub")
        return section

    def _role_argv(self, role: str, config: Path) -> list[str]:
        """``fedge --log-level info --log-format F ROLE --config CONFIG``."""
        log_format = ("--log-format", self.plan.log_format)
        return fedge_argv("--log-level", "info", *log_format, role, "--config", str(config))

    def traces_file(self, name: str) -> Path:
        """Where process ``name`` writes its spans when the plan asks for ``traces``."""
        return self.workdir / "traces" / f"{name}.jsonl"

    def _telemetry_section(self, name: str) -> dict[str, dict[str, Any]]:
        """``[telemetry]`` for process ``name`` (none when the plan traces nothing)."""
        if self.plan.otlp_endpoint is not None:
            return {"telemetry": {"otlp_endpoint": self.plan.otlp_endpoint}}
        if self.plan.traces:
            return {"telemetry": {"traces_file": str(self.traces_file(name))}}
        return {}

    def _log_size(self, name: str) -> int:
        path = self.supervisor.log_dir / f"{name}.log"
        return path.stat().st_size if path.exists() else 0

    def _wait_listening(
        self,
        proc: ManagedProcess,
        since: int,
        timeout: float = 120.0,
        pattern: re.Pattern[str] = _LISTENING,
    ) -> int:
        """The port ``proc`` reports (``pattern``: its main or its ops listener); only its log
        after byte ``since`` counts (a restart appends to the same log, whose earlier
        "listening" line is the previous process's)."""
        port: list[int] = []

        def found() -> bool:
            with proc.log_path.open("rb") as log:
                log.seek(since)
                match = pattern.search(log.read().decode("utf-8", "replace"))
            if match:
                port.append(int(match.group(1)))
            return bool(match)

        self.supervisor.wait_until(found, timeout=timeout, what=f"{proc.name} to listen")
        return port[0]

    def _ops_section(self, previous_url: str | None) -> dict[str, Any]:
        """``[ops]``: loopback, the port it had before (a restart keeps it), the shared token."""
        port = int(previous_url.rsplit(":", 1)[1]) if previous_url else 0
        return {"host": "127.0.0.1", "port": port, "token_file": str(self.ops_token_file)}

    def _ops_url(self, proc: ManagedProcess, since: int) -> str:
        return f"https://127.0.0.1:{self._wait_listening(proc, since, pattern=_OPS_LISTENER)}"

    def start_coordinator(self, *, database_url: str | None = None) -> str:
        """Start (or restart) the coordinator; returns its URL."""
        state = self.workdir / "coordinator"
        state.mkdir(parents=True, exist_ok=True)
        port = 0
        if self.coordinator_url is not None:  # a restart keeps its address
            port = int(self.coordinator_url.rsplit(":", 1)[1])
        config = write_toml(
            state / "coordinator.toml",
            {
                "host": "127.0.0.1",
                "port": port,
                "database_url": database_url or f"sqlite:///{state / 'coordinator.db'}",
                "artifacts_dir": str(state / "artifacts"),
                "tick_interval_s": 0.25,
                "poll_interval_s": 0.5,
                "release_key": str(self.pki / "release.key"),  # signs every model version
                **{k: v for k, v in self.plan.coordinator_extra.items() if not isinstance(v, dict)},
            },
            {
                **{k: v for k, v in self.plan.coordinator_extra.items() if isinstance(v, dict)},
                "pki": self._pki_section("coordinator", crl=True, release_pub=False),
                "ops": self._ops_section(self.coordinator_ops_url),
                **self._telemetry_section("coordinator"),
            },
        )
        since = self._log_size("coordinator")
        proc = self.supervisor.start("coordinator", self._role_argv("coordinator", config))
        self.coordinator_url = f"https://127.0.0.1:{self._wait_listening(proc, since)}"
        self.coordinator_ops_url = self._ops_url(proc, since)
        return self.coordinator_url

    def start_gateway(self, site: str, *, coordinator_url: str | None = None) -> str:
        """Start (or restart) the gateway of ``site``; returns its URL."""
        name = gateway_name(site)
        state = self.workdir / name
        state.mkdir(parents=True, exist_ok=True)
        uplink = coordinator_url or self._uplink_override.get(site) or self.coordinator_url
        if uplink is None:
            raise FedgeError("start the coordinator before the gateways")
        self._uplink_override[site] = uplink
        previous = self.gateway_urls.get(site)
        config = write_toml(
            state / "gateway.toml",
            {
                "id": name,
                "site": site,
                "listen_host": "127.0.0.1",
                "listen_port": int(previous.rsplit(":", 1)[1]) if previous else 0,
                "coordinator_url": uplink,
                "state_dir": str(state / "state"),
                "checkin_interval_s": 0.5,
                "send_interval_s": 0.5,
                "device_retry_s": 0.5,
            },
            {
                "pki": self._pki_section(name, crl=True),
                "ops": self._ops_section(self.gateway_ops_urls.get(site)),
                **self._telemetry_section(name),
            },
        )
        since = self._log_size(name)
        proc = self.supervisor.start(name, self._role_argv("gateway", config))
        self.gateway_urls[site] = f"https://127.0.0.1:{self._wait_listening(proc, since)}"
        self.gateway_ops_urls[site] = self._ops_url(proc, since)
        return self.gateway_urls[site]

    def start_device(
        self,
        site: str,
        index: int,
        serve_job: str | None = None,
        serving: dict[str, Any] | None = None,
    ) -> ManagedProcess:
        """Start one device; its data share is streamed into its local store by a collector.

        ``serve_job``: the device also runs its local prediction endpoint on that job's
        production model version (see :meth:`prediction_endpoint`); ``serving``: more settings
        of its ``[serving]`` section (e.g. ``min_accuracy``, the health check's holdout floor).
        """
        name = device_name(site, index)
        state = self.workdir / name
        state.mkdir(parents=True, exist_ok=True)
        global_index = self.plan.sites.index(site) * self.plan.devices_per_site + index
        config = write_toml(
            state / "device.toml",
            {
                "id": name,
                "site": site,
                "gateway_url": self.gateway_urls[site],
                "state_dir": str(state / "state"),
                "privacy_limit": self.plan.privacy_limit,
                "idle_poll_s": 0.5,
                "backoff_base_s": 0.25,
                "backoff_cap_s": 2.0,
                "labels": self.plan.device_labels,
            },
            {
                "pki": self._pki_section(name, crl=False),
                "data": {
                    "task": self.plan.task,
                    "partitioner": self.plan.partitioner,
                    "num_devices": self.plan.num_devices,
                    "index": global_index,
                    "seed": self.plan.data_seed,
                    "rows_per_tick": self.plan.rows_per_tick,
                    "interval_s": self.plan.tick_s,
                },
                "eligibility": {"min_examples": 10, "require_charging": False},
                **(
                    {"serving": {"job": serve_job, "poll_s": 0.5, **(serving or {})}}
                    if serve_job
                    else {}
                ),
                **self._telemetry_section(name),
            },
        )
        # Many devices share this machine's cores: one compute thread each, not one per core.
        return self.supervisor.start(
            name, self._role_argv("device", config), env={"OMP_NUM_THREADS": "1"}
        )

    def start(self) -> None:
        """PKI, coordinator, every gateway, every device — in that order."""
        self.create_pki()
        self.start_coordinator()
        for site in self.plan.sites:
            self.start_gateway(site)
        for site in self.plan.sites:
            for i in range(self.plan.devices_per_site):
                self.start_device(site, i)

    # -- driving it -----------------------------------------------------------------------
    def admin_client(self) -> Any:
        """A :class:`~fedge.transport.client.FedgeClient` with the admin certificate."""
        from fedge.transport.client import FedgeClient

        if self.coordinator_url is None:
            raise FedgeError("the coordinator is not running")
        issued = self.pki / "issued"
        return FedgeClient(
            self.coordinator_url,
            ca=self.pki / "ca.crt",
            cert=issued / "admin.crt",
            key=issued / "admin.key",
            timeout=30.0,
        )

    def prediction_endpoint(self, site: str, index: int, timeout: float = 60.0) -> str:
        """The URL of a serving device's local prediction endpoint (from its log)."""
        log_path = self.supervisor.log_dir / f"{device_name(site, index)}.log"
        found: list[str] = []

        def logged() -> bool:
            text = log_path.read_text("utf-8", "replace") if log_path.exists() else ""
            found.extend(_ENDPOINT.findall(text)[-1:])
            return bool(found)

        self.supervisor.wait_until(logged, timeout=timeout, what="the prediction endpoint")
        return found[0]

    def metrics_lines(self) -> list[str]:
        """Where Prometheus reads each role's ``/metrics``, and the token it needs (to print)."""
        urls = [("coordinator", self.coordinator_ops_url)] + [
            (gateway_name(site), url) for site, url in self.gateway_ops_urls.items()
        ]
        lines = [f"metrics      {url}/metrics  ({who})" for who, url in urls if url is not None]
        if lines:
            lines.append(
                f"ops token    {self.ops_token_file}: curl --cacert {self.pki / 'ca.crt'}"
                f' -H "Authorization: Bearer $(cat {self.ops_token_file})" URL'
            )
        return lines

    def dashboard_url(self) -> str:
        """The coordinator's dashboard, as a login link carrying the ops token (for a browser)."""
        if self.coordinator_ops_url is None:
            raise FedgeError("the coordinator's ops listener is not running ([ops] enabled?)")
        token = self.ops_token_file.read_text(encoding="ascii").strip()
        return f"{self.coordinator_ops_url}/login?token={token}&next=/dashboard/"

    def eligible_devices(self) -> int:
        """Devices eligible as the gateways last told the coordinator (its dashboard's fleet
        view, read with the ops token): a round's quotas are planned from these counts."""
        import ssl

        import httpx

        if self.coordinator_ops_url is None:
            raise FedgeError("the coordinator's ops listener is not running ([ops] enabled?)")
        token = self.ops_token_file.read_text(encoding="ascii").strip()
        answer = httpx.get(
            f"{self.coordinator_ops_url}/dashboard/api/fleet",
            headers={"Authorization": f"Bearer {token}"},
            verify=ssl.create_default_context(cafile=str(self.pki / "ca.crt")),
            timeout=10,
        )
        answer.raise_for_status()
        return int(answer.json()["eligible_devices"])

    def wait_for_devices(self, count: int | None = None, *, timeout: float = 300.0) -> None:
        """Wait until the coordinator counts ``count`` devices (default: all) eligible: a job
        created sooner plans round 1 for fewer (a secure sum may then get too few to commit)."""
        want = self.plan.num_devices if count is None else count
        self.supervisor.wait_until(
            lambda: self.eligible_devices() >= want,
            timeout=timeout,
            what=f"the coordinator to count {want} devices eligible (checked in at their gateways)",
            interval=0.5,
        )

    def wait_for_job(self, job_id: str, *, timeout: float, on_poll: Any = None) -> Any:
        """Poll the job until completed/failed; returns its JobView."""
        deadline = time.monotonic() + timeout
        with self.admin_client() as client:
            while True:
                view = client.get_job(job_id)
                if on_poll is not None:
                    on_poll(view)
                if view.state in ("completed", "failed"):
                    return view
                if time.monotonic() > deadline:
                    raise FedgeError(
                        f"job {job_id} did not finish in {timeout:.0f} s (state {view.state})"
                    )
                self.supervisor.wait_until(lambda: True, timeout=1, what="poll")
                time.sleep(0.5)

    def stop(self) -> None:
        """Stop every process."""
        self.supervisor.stop_all()

    def __enter__(self) -> LocalFederation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
