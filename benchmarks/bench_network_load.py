"""Network load test (issue 5, "Figures"): N device agents complete one round through G gateways.

Real processes on loopback, mutual TLS everywhere: one ``fedge coordinator`` and G ``fedge
gateway`` processes started by :class:`fedge.demo.federation.LocalFederation` (its device
processes are NOT started); the devices are asyncio agents, ``--procs`` processes of N/procs
devices each (``benchmarks/_agents.py``), every device with its own certificate and connection.
Training is replaced by a precomputed float32 update so that what is measured is the network
path: check-in, model download from the gateway's cache, update upload, the gateway's partial
sum to the coordinator, aggregation and commit. One job, one round: ``devices_per_round = N``,
``over_selection = 1.0``, task ``mnist_mlp128`` (784-128-10, 101,770 parameters), G sites of
N/G devices.

How each figure is measured:

* **device bytes** -- at the agents, per request, by httpx event hooks: HTTP/1.1 request line +
  headers + body sent, status line + headers + ``Content-Length`` body received. TLS records and
  handshakes are not included; new TCP+TLS connections are counted (``conns``).
* **coordinator ingress** -- on the wire: the gateways' uplink goes through a counting TCP
  forwarder in this process (gateway → forwarder → coordinator), so the bytes counted are TLS
  records including handshakes, i.e. slightly *more* than the HTTP bytes; the device/coordinator
  ratio is therefore a lower bound. The admin client (this process) talks to the coordinator
  directly and is not counted. Counted from job creation to commit ("round") and over the run.
* **round time** -- job creation (just before ``POST /v1/admin/jobs``) → the round's
  ``ended_at`` (commit, coordinator clock); also round open → commit and first task handed to a
  device → commit. Gateway close and partial-delivered times come from the role logs.
* **requests/s** -- every request the agents made to the gateways between the first task and the
  last update receipt, divided by that span; the busiest second is shown as well.
* **memory** -- resident set of the coordinator and of each gateway sampled every 0.1 s from
  ``/proc/<pid>/status`` (``VmRSS``), and the kernel's high-water mark ``VmHWM`` at the end
  (the true peak, which a sampler can miss). CPU seconds per role come from ``/proc/<pid>/stat``.
* **certificates** -- issuing N device certificates in one ``issue_many`` is timed (linear;
  ``bench_pki.py`` compares it with one call per certificate); ``--workdir`` keeps the PKI for
  the next run.

The machine is shared: the 1-minute load average before and after is part of the result.

    python benchmarks/bench_network_load.py                    # 1,000 devices, 4 gateways
    python benchmarks/bench_network_load.py --devices 100      # a quick check (~1 minute)
    python benchmarks/bench_network_load.py --workdir /tmp/netload   # keep/reuse the PKI
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS, table

from fedge.demo import federation
from fedge.demo.federation import (
    FederationPlan,
    LocalFederation,
    device_name,
    gateway_name,
)
from fedge.identity import init_pki, list_certificates
from fedge.identity.pki import CertificateRequest, issue_many
from fedge.transport.messages import JobSpec

_CLK = os.sysconf("SC_CLK_TCK")


# -- measurement helpers ------------------------------------------------------------------------
class CountingForwarder:
    """A TCP forwarder on 127.0.0.1 that counts bytes in each direction (TLS passes through)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.upstream = 0  # client → target (ingress of the target)
        self.downstream = 0  # target → client
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, name="forwarder", daemon=True)
        self._thread.start()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"up": self.upstream, "down": self.downstream, "conns": self.connections}

    def close(self) -> None:
        self._stop.set()
        self._server.close()
        self._thread.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except (TimeoutError, OSError):
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peer = {client: upstream, upstream: client}
        try:
            while not self._stop.is_set():
                ready, _, _ = select.select([client, upstream], [], [], 0.2)
                for s in ready:
                    data = s.recv(1 << 16)
                    if not data:
                        return
                    peer[s].sendall(data)
                    with self._lock:
                        if s is client:
                            self.upstream += len(data)
                        else:
                            self.downstream += len(data)
        except OSError:
            return
        finally:
            for s in (client, upstream):
                with contextlib.suppress(OSError):
                    s.close()


def _proc_status(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / _CLK


class RssSampler:
    """Samples VmRSS of named processes every ``interval`` seconds; keeps each one's maximum."""

    def __init__(self, pids: dict[str, int], interval: float = 0.1) -> None:
        self.pids = dict(pids)
        self.peak: dict[str, int] = dict.fromkeys(pids, 0)
        self.hwm: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        for name, pid in self.pids.items():
            status = _proc_status(pid)
            if "VmRSS" in status:
                self.peak[name] = max(self.peak[name], status["VmRSS"])
            if "VmHWM" in status:
                self.hwm[name] = status["VmHWM"]

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self._sample()

    def stop(self) -> None:
        self._sample()
        self._stop.set()
        self._thread.join(timeout=5)


_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _log_times(path: Path, needle: str) -> list[float]:
    """Unix times of the log lines of ``path`` that contain ``needle``."""
    times = []
    with contextlib.suppress(OSError):
        for line in path.read_text(errors="replace").splitlines():
            match = _LOG_TIME.match(line)
            if match and needle in line:
                stamp = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
                times.append(stamp.timestamp())
    return times


# -- set-up -------------------------------------------------------------------------------------
def make_pki(pki: Path, sites: list[str], per_site: int) -> dict[str, Any]:
    """Fleet CA + coordinator, admin, gateway and device certificates; reuses a complete PKI."""
    names = [device_name(s, i) for s in sites for i in range(per_site)]
    if (pki / "inventory.json").exists():
        have = {e.name for e in list_certificates(pki) if not e.revoked}
        wanted = {"coordinator", "admin", *(gateway_name(s) for s in sites), *names}
        if wanted <= have:
            return {"reused": True, "devices": len(names)}
        shutil.rmtree(pki)
    init_pki(pki, "fedge-netload")
    roles = [
        CertificateRequest("coordinator", "coordinator"),
        CertificateRequest("admin", "admin"),
        *(CertificateRequest("gateway", gateway_name(s), s) for s in sites),
    ]
    issue_many(pki, roles)
    start = time.perf_counter()
    issue_many(
        pki,
        [CertificateRequest("device", n, n.rsplit("-", 1)[0].removeprefix("dev-")) for n in names],
    )
    return {"reused": False, "devices": len(names), "issue_s": time.perf_counter() - start}


def wait_eligible(db: Path, expected: int, timeout: float) -> float:
    """Wait until the gateways have told the coordinator about ``expected`` eligible devices."""
    from fedge.coordinator.store import Store

    store = Store(f"sqlite:///{db}")
    start = time.monotonic()
    try:
        while time.monotonic() - start < timeout:
            total = sum(g.eligible_devices for g in store.list_gateways())
            if total >= expected:
                return time.monotonic() - start
            time.sleep(0.2)
    finally:
        store.close()
    raise RuntimeError(f"only {total} of {expected} devices became eligible in {timeout:.0f} s")


def agent_specs(
    args: argparse.Namespace, fed: LocalFederation, sites: list[str], deadline: float
) -> list[dict[str, Any]]:
    issued = fed.pki / "issued"
    devices = [
        {
            "name": device_name(s, i),
            "url": fed.gateway_urls[s],
            "cert": str(issued / f"{device_name(s, i)}.crt"),
            "key": str(issued / f"{device_name(s, i)}.key"),
        }
        for i in range(args.devices // len(sites))
        for s in sites
    ]
    common = {
        "ca": str(fed.pki / "ca.crt"),
        "long_poll_s": args.long_poll,
        "poll_base_s": args.poll_base,
        "poll_cap_s": args.poll_cap,
        "ramp_s": args.ramp,
        "inflight": args.inflight,
        "request_timeout_s": 120.0,
        "client_keep_alive_s": args.keep_alive or 5.0,  # httpx's default is 5 s
        "num_examples": 50,
        "deadline": deadline,
    }
    return [
        {
            **common,
            "devices": devices[p :: args.procs],
            "seed": 1000 + p,
            "result": str(fed.workdir / f"agents-{p}.json"),
        }
        for p in range(args.procs)
    ]


# -- the run ------------------------------------------------------------------------------------
def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    sites = [f"s{i}" for i in range(args.gateways)]
    per_site = args.devices // args.gateways
    n = per_site * args.gateways
    load_before = os.getloadavg()
    print(f"PKI: {n} device certificates ...", flush=True)
    pki_info = make_pki(workdir / "pki", sites, per_site)
    print(f"  {pki_info}", flush=True)
    for old in ("coordinator", "logs", *(gateway_name(s) for s in sites)):
        shutil.rmtree(workdir / old, ignore_errors=True)
    if args.keep_alive is not None:  # experiment: every role server with another keep-alive
        wrapper = str(Path(__file__).parent / "_role.py")
        federation.fedge_argv = lambda *a: [sys.executable, wrapper, str(args.keep_alive), *a]
    plan = FederationPlan(sites=tuple(sites), devices_per_site=per_site, task=args.task)
    fed = LocalFederation(workdir, plan)
    forwarder: CountingForwarder | None = None
    try:
        fed.start_coordinator()
        assert fed.coordinator_url is not None
        forwarder = CountingForwarder(int(fed.coordinator_url.rsplit(":", 1)[1]))
        for site in sites:
            fed.start_gateway(site, coordinator_url=f"https://127.0.0.1:{forwarder.port}")
        procs = fed.supervisor.processes
        role_pids = {name: p.pid for name, p in procs.items() if p.pid is not None}
        sampler = RssSampler(role_pids)
        deadline = time.time() + args.timeout
        agent_names = []
        for p, spec in enumerate(agent_specs(args, fed, sites, deadline)):
            path = workdir / f"agents-{p}.spec.json"
            path.write_text(json.dumps(spec))
            name = f"agents-{p}"
            fed.supervisor.start(
                name, [sys.executable, str(Path(__file__).parent / "_agents.py"), str(path)]
            )
            agent_names.append(name)
        agent_pids = {name: procs[name].pid for name in agent_names}
        print(
            f"agents: {args.procs} processes × {n // args.procs} devices; registering ...",
            flush=True,
        )
        t_agents = time.time()
        register_s = wait_eligible(workdir / "coordinator" / "coordinator.db", n, args.timeout / 3)
        print(f"  all {n} devices eligible after {register_s:.1f} s", flush=True)

        cpu0 = {name: _cpu_s(pid) for name, pid in {**role_pids, **agent_pids}.items() if pid}
        wire0 = forwarder.snapshot()
        rss0 = {name: _proc_status(pid).get("VmRSS", 0) for name, pid in role_pids.items()}
        spec = JobSpec(
            name="netload",
            task=args.task,
            rounds=1,
            devices_per_round=n,
            over_selection=1.0,
            min_devices=1,
            training_deadline_s=args.timeout,
            report_deadline_s=60.0,
            seed=0,
        )
        with fed.admin_client() as admin:
            t_create = time.time()
            job = admin.create_job(spec)
            while True:
                view = admin.get_job(job.id)
                if view.state in ("completed", "failed") or time.time() > deadline:
                    break
                time.sleep(0.2)
        t_seen = time.time()
        wire1 = forwarder.snapshot()
        cpu1 = {name: _cpu_s(pid) for name, pid in {**role_pids, **agent_pids}.items() if pid}
        print(
            f"job {view.state} ({t_seen - t_create:.1f} s after creation); collecting ...",
            flush=True,
        )
        for name in agent_names:  # they end by themselves once every device is done
            fed.supervisor.wait_until(
                lambda name=name: not procs[name].alive, timeout=60, what=f"{name} to finish"
            )
        sampler.stop()
        wire_end = forwarder.snapshot()
        load_after = os.getloadavg()
        agents = [json.loads((workdir / f"agents-{p}.json").read_text()) for p in range(args.procs)]
        logs = fed.supervisor.log_dir
        gw_logs = {s: logs / f"{gateway_name(s)}.log" for s in sites}
        timeline = {
            "gateway_closed": sorted(
                t for p in gw_logs.values() for t in _log_times(p, " closed: ")
            ),
            "partial_delivered": sorted(
                t for p in gw_logs.values() for t in _log_times(p, " delivered")
            ),
        }
    finally:
        fed.stop()
        if forwarder is not None:
            forwarder.close()
    return summarise(
        args, n, pki_info, view, t_agents, t_create, register_s, agents, sampler, role_pids,
        {"round": {k: wire1[k] - wire0[k] for k in wire0}, "run": wire_end},
        {k: cpu1[k] - cpu0[k] for k in cpu0}, timeline, (load_before, load_after), rss0,
    )  # fmt: skip


def summarise(
    args: argparse.Namespace,
    n: int,
    pki_info: dict[str, Any],
    view: Any,
    t_agents: float,
    t_create: float,
    register_s: float,
    agents: list[dict[str, Any]],
    sampler: RssSampler,
    role_pids: dict[str, int],
    wire: dict[str, dict[str, int]],
    cpu: dict[str, float],
    timeline: dict[str, list[float]],
    load: tuple[tuple[float, float, float], tuple[float, float, float]],
    rss0: dict[str, int],
) -> dict[str, Any]:
    rnd = view.rounds[-1] if view.rounds else None
    records = [r for a in agents for r in a["records"]]
    devices = [d for a in agents for d in a["devices"]]
    errors: Counter[str] = Counter()
    for a in agents:
        errors.update(a["errors"])
    outcomes = Counter(d["outcome"] for d in devices)
    task_at = sorted(d["task_at"] for d in devices if "task_at" in d)
    done_at = sorted(d["done_at"] for d in devices if "done_at" in d)
    commit = rnd.ended_at if rnd and rnd.ended_at else float("nan")
    opened = rnd.started_at if rnd and rnd.started_at else float("nan")

    by_kind: dict[str, dict[str, float]] = {}
    lats: dict[str, list[float]] = {}
    queued: dict[str, float] = Counter()
    for _t, kind, out, into, secs, conns, wait in records:
        k = by_kind.setdefault(kind, {"n": 0, "out": 0, "in": 0, "conns": 0})
        k["n"] += 1
        k["out"] += out
        k["in"] += into
        k["conns"] += conns
        lats.setdefault(kind, []).append(secs)
        queued[kind] += wait
    for kind, k in by_kind.items():
        lat = sorted(lats[kind])
        k["p50_ms"] = 1000 * lat[len(lat) // 2]
        k["p95_ms"] = 1000 * lat[min(len(lat) - 1, int(0.95 * len(lat)))]
        k["max_ms"] = 1000 * lat[-1]
        k["mean_queued_ms"] = 1000 * queued[kind] / k["n"]
    dev_out = sum(k["out"] for k in by_kind.values())
    dev_in = sum(k["in"] for k in by_kind.values())
    first_task = task_at[0] if task_at else float("nan")
    last_done = done_at[-1] if done_at else float("nan")
    in_round = [r for r in records if first_task <= r[0] <= last_done]
    span = max(last_done - first_task, 1e-9)
    per_second = Counter(int(r[0]) for r in in_round)
    round_out = sum(r[2] for r in records if r[0] >= t_create)
    coord_in = wire["round"]["up"]
    update = by_kind.get("update", {"out": 0, "n": 1})
    once = n * update["out"] / max(1, update["n"])  # every device's update sent exactly once
    gaps = sorted(g for d in devices for g in d.get("reconnect_gaps", []))
    handshakes = sum(d.get("connections", 0) for d in devices)
    tls = {
        "handshakes": handshakes,
        "mean_handshake_ms": 1000
        * sum(d.get("handshake_s", 0.0) for d in devices)
        / max(1, handshakes),
        "reconnects": len(gaps),
        "reconnects_after_idle_under_4s": sum(g < 4.0 for g in gaps),
        "reconnect_gap_p50_s": gaps[len(gaps) // 2] if gaps else None,
    }
    gw = sorted(name for name in role_pids if name.startswith("gw-"))
    gib = 1024 * 1024
    result = {
        "devices": n,
        "gateways": args.gateways,
        "agent_procs": args.procs,
        "inflight_per_proc": args.inflight,
        "poll": {
            "long_poll_s": args.long_poll,
            "base_s": args.poll_base,
            "cap_s": args.poll_cap,
            "ramp_s": args.ramp,
        },
        "task": args.task,
        "server_keep_alive_s": args.keep_alive or 5.0,
        "job_state": view.state,
        "round_state": rnd.state if rnd else None,
        "participants": rnd.participants if rnd else 0,
        "outcomes": dict(outcomes),
        "errors": dict(errors.most_common(10)),
        "pki": pki_info,
        "register_s": register_s,
        "time_s": {
            "create_to_commit": commit - t_create,
            "open_to_commit": commit - opened,
            "first_task_to_commit": commit - first_task,
            "create_to_open": opened - t_create,
            "create_to_first_task": first_task - t_create,
            "task_spread": (task_at[-1] - task_at[0]) if task_at else float("nan"),
            "first_task_to_last_update": span,
            "last_update_to_gateways_closed": (
                max(timeline["gateway_closed"]) - last_done if timeline["gateway_closed"] else None
            ),
            "last_gateway_closed_to_commit": (
                commit - max(timeline["gateway_closed"]) if timeline["gateway_closed"] else None
            ),
        },
        "requests": {
            "total": len(records),
            "in_round": len(in_round),
            "per_s_in_round": len(in_round) / span,
            "peak_per_s": max(per_second.values()) if per_second else 0,
            "by_kind": by_kind,
        },
        "bytes": {
            "devices_out_total": dev_out,
            "devices_in_total": dev_in,
            "devices_out_since_job": round_out,
            "coordinator_in_round_wire": coord_in,
            "coordinator_out_round_wire": wire["round"]["down"],
            "coordinator_in_run_wire": wire["run"]["up"],
            "coordinator_connections_run": wire["run"]["conns"],
            "ingress_reduction": round_out / coord_in if coord_in else None,
            "one_update_per_device": once,
            "update_reduction": once / coord_in if coord_in else None,
            "update_bytes_per_device": (
                by_kind["update"]["out"] / by_kind["update"]["n"] if "update" in by_kind else None
            ),
        },
        "memory_mib": {
            "coordinator_peak_sampled": sampler.peak.get("coordinator", 0) / gib,
            "coordinator_hwm": sampler.hwm.get("coordinator", 0) / gib,
            "coordinator_at_job_creation": rss0.get("coordinator", 0) / gib,
            "gateway_at_job_creation": {g: rss0.get(g, 0) / gib for g in gw},
            "gateway_peak_sampled": {g: sampler.peak.get(g, 0) / gib for g in gw},
            "gateway_hwm": {g: sampler.hwm.get(g, 0) / gib for g in gw},
        },
        "tls": tls,
        "cpu_s_during_round": cpu,
        "loadavg": {"before": load[0], "after": load[1], "cores": os.cpu_count()},
        "agents_to_job_s": t_create - t_agents,
    }
    return result


def fmt_mb(b: float) -> str:
    return f"{b / 1e6:,.2f} MB"


def report(r: dict[str, Any]) -> str:
    t, b, q, m = r["time_s"], r["bytes"], r["requests"], r["memory_mib"]
    gw0 = sorted(m["gateway_hwm"])[0] if m["gateway_hwm"] else None
    lines = [
        f"Network load: {r['devices']} devices, {r['gateways']} gateways "
        f"({r['devices'] // r['gateways']} devices each), task {r['task']}, one round; "
        f"{r['agent_procs']} agent processes, ≤{r['inflight_per_proc']} requests in flight each;"
        f" keep-alive {r['server_keep_alive_s']:g} s (servers and devices), long poll"
        f" {r['poll'].get('long_poll_s', 0):g} s, device backoff"
        f" {r['poll']['base_s']:g}-{r['poll']['cap_s']:g} s",
        f"job {r['job_state']}, round {r['round_state']}, participants {r['participants']}, "
        f"device outcomes {r['outcomes']}",
        "",
    ]
    rows = [
        ["round: job created → commit", f"{t['create_to_commit']:.2f} s"],
        ["round: opened → commit", f"{t['open_to_commit']:.2f} s"],
        ["round: first task handed out → commit", f"{t['first_task_to_commit']:.2f} s"],
        ["  job created → first task", f"{t['create_to_first_task']:.2f} s"],
        ["  tasks handed out over", f"{t['task_spread']:.2f} s"],
        ["  first task → last update receipt", f"{t['first_task_to_last_update']:.2f} s"],
        ["  last update → last gateway closed", _s(t["last_update_to_gateways_closed"])],
        ["  last gateway closed → commit", _s(t["last_gateway_closed_to_commit"])],
        ["requests (all, incl. registration)", f"{q['total']:,}"],
        ["requests/s through gateways (first task → last update)", f"{q['per_s_in_round']:.0f}"],
        ["requests/s, busiest second", f"{q['peak_per_s']:,}"],
        ["bytes sent by devices since job creation (HTTP)", fmt_mb(b["devices_out_since_job"])],
        ["bytes received by devices (all, HTTP)", fmt_mb(b["devices_in_total"])],
        ["bytes into coordinator, job → commit (TLS wire)", fmt_mb(b["coordinator_in_round_wire"])],
        ["ingress reduction (devices out / coordinator in)", _x(b["ingress_reduction"])],
        ["N updates sent once each (HTTP)", fmt_mb(b["one_update_per_device"])],
        ["  ÷ coordinator ingress", _x(b["update_reduction"])],
        ["update upload per device (HTTP)", fmt_mb(b["update_bytes_per_device"] or 0)],
        ["coordinator peak RSS (VmHWM / sampled / at job creation)",
         f"{m['coordinator_hwm']:.0f} / {m['coordinator_peak_sampled']:.0f}"
         f" / {m['coordinator_at_job_creation']:.0f} MiB"],
    ]  # fmt: skip
    if gw0:
        rows.append(
            [
                f"gateway {gw0} peak RSS (VmHWM / sampled / at job creation)",
                f"{m['gateway_hwm'][gw0]:.0f} / {m['gateway_peak_sampled'][gw0]:.0f}"
                f" / {m['gateway_at_job_creation'][gw0]:.0f} MiB",
            ]
        )
        rows.append(
            [
                "all gateways peak RSS (VmHWM)",
                ", ".join(f"{v:.0f}" for v in m["gateway_hwm"].values()) + " MiB",
            ]
        )
    load = r["loadavg"]
    rows.append(
        [
            "load average (1 min) before / after",
            f"{load['before'][0]:.2f} / {load['after'][0]:.2f} on {load['cores']} cores",
        ]
    )
    lines.append(table(["figure", "value"], rows))
    kinds = r["requests"]["by_kind"]
    lines += [
        "",
        "per request kind (HTTP bytes at the agents; latency is send → answer; 'queued' is the"
        " mean wait for one of the process's in-flight slots before sending):",
    ]
    lines.append(
        table(
            [
                "kind",
                "requests",
                "out/req",
                "in/req",
                "new conns",
                "p50 ms",
                "p95 ms",
                "max ms",
                "queued ms",
            ],
            [
                [
                    kind,
                    f"{k['n']:,}",
                    f"{k['out'] / k['n']:,.0f} B",
                    f"{k['in'] / k['n']:,.0f} B",
                    f"{k['conns']:,}",
                    f"{k['p50_ms']:.0f}",
                    f"{k['p95_ms']:.0f}",
                    f"{k['max_ms']:.0f}",
                    f"{k['mean_queued_ms']:.0f}",
                ]
                for kind, k in sorted(kinds.items())
            ],
        )
    )
    tls = r["tls"]
    lines.append(
        f"\nTLS: {tls['handshakes']:,} handshakes by {r['devices']:,} devices (mean "
        f"{tls['mean_handshake_ms']:.0f} ms each, client side); {tls['reconnects']:,} reconnects, "
        f"{tls['reconnects_after_idle_under_4s']:,} of them after less than 4 s idle "
        f"(median idle {_s(tls['reconnect_gap_p50_s'])})"
    )
    cpu = r["cpu_s_during_round"]
    lines += ["", "CPU seconds during the round (job created → commit seen):"]
    lines.append(", ".join(f"{k} {v:.1f}" for k, v in sorted(cpu.items())))
    pki = r["pki"]
    if not pki.get("reused"):
        lines.append(
            f"\nissuing {pki['devices']} device certificates (one issue_many): "
            f"{pki['issue_s']:.1f} s ({1000 * pki['issue_s'] / pki['devices']:.1f} ms each)"
        )
    if r["errors"]:
        lines += ["", "errors seen by the agents (retried where transient):"]
        lines += [f"  {n} × {e}" for e, n in r["errors"].items()]
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f} s"


def _x(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1f}×"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="devices (all take part)")
    parser.add_argument("--gateways", type=int, default=4)
    parser.add_argument("--procs", type=int, default=2, help="agent processes")
    parser.add_argument("--inflight", type=int, default=64, help="requests in flight per process")
    parser.add_argument(
        "--long-poll", type=float, default=30.0, help="devices offer to wait this long (0: poll)"
    )
    parser.add_argument("--poll-base", type=float, default=0.5, help="device backoff base (s)")
    parser.add_argument("--poll-cap", type=float, default=5.0, help="device backoff cap (s)")
    parser.add_argument("--ramp", type=float, default=5.0, help="devices start over this many s")
    parser.add_argument("--task", default="mnist_mlp128")
    parser.add_argument(
        "--keep-alive",
        type=float,
        help="experiment: run the coordinator and gateways with this uvicorn keep-alive (s)"
        " instead of uvicorn's default 5 s (benchmarks/_role.py), and let the agents keep idle"
        " connections as long (instead of httpx's default 5 s)",
    )
    parser.add_argument("--timeout", type=float, default=480.0, help="give up after (s)")
    parser.add_argument("--workdir", type=Path, help="keep PKI and logs here (reused next time)")
    parser.add_argument("--out", type=Path, help="JSON results (default: benchmarks/results/)")
    args = parser.parse_args()
    if args.devices % args.gateways:
        parser.error("--devices must be a multiple of --gateways")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fedge-netload-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, workdir.resolve())
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    text = report(result)
    print("\n" + text)
    out = args.out or RESULTS / f"network_load_{args.devices}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".txt").write_text(text + "\n")
    print(f"\nwrote {out} and {out.with_suffix('.txt')}")


if __name__ == "__main__":
    main()
