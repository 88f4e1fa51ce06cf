"""``fedge demo``: a whole federation on this machine, as separate processes on loopback."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console

if TYPE_CHECKING:
    from fedge.transport.messages import TrainingPlan

__all__ = [
    "DEMO_CLIP_NORM",
    "DEMO_DELTA",
    "DEMO_NOISE_MULTIPLIER",
    "DEMO_OVER_SELECTION",
    "USECASE_TASKS",
    "demo_cohort",
    "demo_command",
    "demo_privacy",
    "demo_training_plan",
]

# `fedge demo --usecase NAME` → the task whose devices are real machines / patients / cars
USECASE_TASKS = {
    "maintenance": "maintenance",
    "healthcare": "wearables",  # activity recognition
    "healthcare-anomaly": "wearables_anomaly",  # abnormal heart-rate response to activity
    "maintenance-warning": "maintenance_warning",  # early warning: fails within 7 days
    "mobility": "mobility",
}


# DP of the demo. A fleet of 8 cannot buy a small ε at a noise level that still learns (every
# round may select all of it: no amplification by sampling), so the demo shows the mechanism at
# such a level and prints the ε it costs; each device's ledger (limit 100) must cover 5 rounds.
# C, min_devices and the local plan under DP are measured (benchmarks/bench_demo_dp.py): with
# C = 0.5 the noise (z·C per round on every one of the 5,957 parameters) disturbs the model less,
# while the updates (median norm 1.4 after one local epoch) are still clipped; ε does not depend
# on C.
DEMO_CLIP_NORM = 0.5
DEMO_NOISE_MULTIPLIER = 0.5
DEMO_DELTA = 1e-5
DEMO_OVER_SELECTION = 1.35


def demo_privacy(*, dp: bool, secagg: bool, noise_multiplier: float) -> dict[str, Any]:
    """The demo job's ``privacy`` table: distributed DP under secure aggregation, else central."""
    if not dp:
        return {}
    mode = "distributed" if secagg else "central"
    return {
        "mode": mode,
        "clip_norm": DEMO_CLIP_NORM,
        "noise_multiplier": noise_multiplier,
        "delta": DEMO_DELTA,
    }


def demo_cohort(fleet: int, *, distributed_dp: bool) -> tuple[int, int]:
    """The demo job's ``(devices_per_round, min_devices)`` for a fleet of ``fleet`` devices.

    K is the fleet less a quarter (over-selection hands tasks to all of it). Under distributed
    DP each device's noise is planned for ``min_devices`` survivors, so the sum over n survivors
    carries √(n / min_devices) times the noise the guarantee needs: planned for K = 6, the
    demo's 8 devices add √(8/6) of it, not √2, and a round still commits if 2 drop out. Without
    distributed DP half the fleet will do.
    """
    per_round = max(1, fleet - max(1, fleet // 4))
    return per_round, per_round if distributed_dp else max(1, fleet // 2)


def demo_training_plan(*, usecase: bool, dp: bool) -> TrainingPlan:
    """The devices' local optimizer: a use case's class-balanced plan, shorter under DP.

    A use case's faults / events are rare: each device weighs its examples by the inverse
    frequency of their class in its own data (``class_weighting="balanced"``). Under DP every
    update is clipped to C: five local epochs grow a vector (median norm 3.3) that is cut back
    to C anyway, and one epoch (median norm 1.4) learns more per unit of noise
    (``benchmarks/bench_demo_dp.py``).
    """
    from fedge.transport.messages import TrainingPlan

    if not usecase:
        return TrainingPlan(epochs=1, batch_size=10, lr=0.1)
    return TrainingPlan(epochs=1 if dp else 5, batch_size=16, lr=0.1, class_weighting="balanced")


def _rows_per_tick(task: str, devices: int) -> int:
    """Rows a device's collector appends per tick: its share is in its store in about two.

    At a fixed rate a large share (a mobility device holds thousands of windows) would still be
    arriving while the rounds train, and the model would learn from whatever part had come in.
    """
    from fedge.tasks import get_task

    train, _ = get_task(task).load_data()
    return max(1, -(-len(train) // (2 * devices)))


def run_networked_demo(
    *,
    rounds: int,
    sites: int,
    devices_per_site: int,
    task: str,
    keep: bool,
    workdir: str | None,
    dp: bool = True,
    usecase: str | None = None,
    secagg: bool = True,
    noise_multiplier: float = DEMO_NOISE_MULTIPLIER,
    traces: bool = False,
) -> None:
    """Start the federation, run one job to the end, report, and shut everything down.

    With ``secagg`` (the default) every round's sum is computed with SecAgg+ across the tiers:
    gateways see only masked vectors, the coordinator only the sum over the surviving devices.
    With ``dp`` (the default) too, that sum is differentially private: each device adds its
    share of discrete Gaussian noise before masking (distributed DP); without ``secagg`` the
    coordinator adds Gaussian noise to the plain sum (central DP).
    """
    from fedge.demo.federation import FederationPlan, LocalFederation
    from fedge.demo.report import privacy_line, round_table, show_recall, show_serving
    from fedge.transport.messages import JobSpec

    console = Console(stderr=True)
    started = time.perf_counter()
    root = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="fedge-demo-"))
    if usecase is not None:
        task = USECASE_TASKS[usecase]
    plan = FederationPlan(
        sites=tuple(f"site-{chr(ord('a') + i)}" for i in range(sites)),
        devices_per_site=devices_per_site,
        task=task,
        # a use case's devices are its own machines / patients / cars (natural partition)
        partitioner="natural" if usecase else "iid",
        # every process logs as `fedge --log-format` asked, and writes its spans with --traces
        log_format=click.get_current_context().find_root().params.get("log_format", "text"),
        traces=traces,
        rows_per_tick=_rows_per_tick(task, sites * devices_per_site),
        tick_s=0.5,
    )
    fleet = plan.num_devices
    if secagg and fleet < 3:
        console.print("secure aggregation off below 3 devices")
        secagg = False
    privacy = demo_privacy(dp=dp, secagg=secagg, noise_multiplier=noise_multiplier)
    per_round, min_devices = demo_cohort(fleet, distributed_dp=dp and secagg)
    spec = JobSpec(
        name="demo",
        task=task,
        rounds=rounds,
        devices_per_round=per_round,
        over_selection=DEMO_OVER_SELECTION,
        min_devices=min_devices,
        training_deadline_s=60.0,
        report_deadline_s=30.0,
        plan=demo_training_plan(usecase=usecase is not None, dp=dp),
        privacy=privacy,
        # SecAgg+: each protocol phase waits at most 10 s for stragglers. Without DP updates are
        # clipped to [-1, 1] per coordinate and weights (examples / 10⁵) summed inside the secure
        # sum; with DP the range and levels follow from the noise plan and every device weighs 1
        secure_aggregation=(
            {"phase_timeout_s": 10.0, **({} if dp else {"max_examples": 100_000})}
            if secagg
            else None
        ),
        seed=0,
    )
    try:
        with LocalFederation(root, plan) as fed:
            with console.status("creating a throwaway fleet PKI…"):
                fed.create_pki()
            with console.status("starting the coordinator…"):
                url = fed.start_coordinator()
            console.print(f"coordinator  {url}")
            console.print(  # the browser warns once: the throwaway fleet CA signed its certificate
                f"dashboard    {fed.dashboard_url()}", highlight=False, soft_wrap=True
            )
            for site in plan.sites:
                with console.status(f"starting the gateway of {site}…"):
                    console.print(f"gateway      {fed.start_gateway(site)}  ({site})")
            for site in plan.sites:
                for i in range(devices_per_site):  # the first device also serves predictions
                    serve = spec.name if (site, i) == (plan.sites[0], 0) else None
                    fed.start_device(site, i, serve_job=serve)
            console.print(
                f"devices      {fleet} processes ({devices_per_site} per site), each streaming "
                f"its own share of {task} into its local store; logs in {root / 'logs'}"
            )
            if traces:
                console.print(f"traces       {root / 'traces'} (one JSON-lines file of spans each)")
            # the first round's quotas follow the devices checked in: all of them, not the first few
            with console.status("waiting for every device to check in at its gateway…"):
                fed.wait_for_devices()
            with fed.admin_client() as admin:
                job = admin.create_job(spec)
            console.print(
                f"job          {job.id}: {rounds} rounds, {spec.devices_per_round} devices per "
                f"round (×{spec.over_selection} over-selected), commit with ≥ {spec.min_devices}"
                + (", secure aggregation (SecAgg+) on" if secagg else "")
            )
            if dp:
                console.print(privacy_line(privacy, secagg, job.delta), soft_wrap=True)
            shown: set[int] = set()

            def show(view: Any) -> None:
                for r in view.rounds:
                    if r.state in ("committed", "abandoned") and r.round not in shown:
                        shown.add(r.round)
                        acc = "" if r.accuracy is None else f"accuracy {r.accuracy:.4f}"
                        eps = "" if r.epsilon is None else f"  ε {r.epsilon:.3f}"
                        why = f"  ({r.reason})" if r.reason else ""
                        console.print(
                            f"round {r.round:>3} {r.state:<9} devices {r.participants:>3} "
                            f"gateways {r.gateways_reported}  {acc}{eps}{why}"
                        )

            with console.status("training… (devices start up, check in, train and report)"):
                final = fed.wait_for_job(job.id, timeout=600, on_poll=show)
            Console(width=None if sys.stdout.isatty() else 110).print(round_table(final))
            committed = [r for r in final.rounds if r.state == "committed"]
            last = committed[-1] if committed else None
            console.print(
                f"job {final.state}: {len(committed)} rounds committed"
                + (
                    f", final accuracy {last.accuracy:.4f}"
                    if last and last.accuracy is not None
                    else ""
                )
                + (
                    f", (ε, δ) = ({last.epsilon:.3g}, {final.delta:.3g})"
                    if last and last.epsilon is not None and final.delta is not None
                    else ""
                )
                + f" · {time.perf_counter() - started:.0f} s in all"
            )
            if last is not None and last.model_sha256 and usecase is not None:
                show_recall(fed, console, task, last.model_sha256)
            if committed:
                show_serving(fed, console, job.id, plan.sites[0], task)
            if keep:
                console.print(
                    f"[bold]--keep[/]: the federation stays up (coordinator {url}); "
                    "Ctrl-C stops every process" + ("" if workdir else f" and removes {root}"),
                    highlight=False,
                    soft_wrap=True,
                )
                console.print(
                    f"dashboard    {fed.dashboard_url()}", highlight=False, soft_wrap=True
                )
                for line in fed.metrics_lines():
                    console.print(line, highlight=False, soft_wrap=True)
                try:
                    while True:
                        time.sleep(1)
                except KeyboardInterrupt:
                    console.print("stopping…")
        alive = [p.name for p in fed.supervisor.processes.values() if p.alive]
        console.print("all processes stopped" if not alive else f"still running: {alive}")
    finally:
        # a throwaway work directory goes, --keep or not (--traces: the spans stay to be read)
        if workdir is None and not traces:
            shutil.rmtree(root, ignore_errors=True)


@click.command("demo")
@click.option("--rounds", type=int, default=5, show_default=True, help="Rounds to commit.")
@click.option(
    "--sites",
    type=click.IntRange(1, 8),
    default=2,
    show_default=True,
    help="Sites, one gateway each.",
)
@click.option("--devices-per-site", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option(
    "--task",
    help="Train this task instead of a use case (e.g. mnist_2nn; see `fedge tasks`); "
    "its training set is split IID over the devices (a use case's task is trained on its own "
    "machines / patients / cars with --usecase instead).",
)
@click.option(
    "--keep", is_flag=True, help="Keep the federation (and its dashboard) running until Ctrl-C."
)
@click.option("--workdir", type=click.Path(file_okay=False), help="Keep PKI, state and logs here.")
@click.option(
    "--dp/--no-dp",
    default=True,
    show_default=True,
    help="Differential privacy, ε shown per round: with secure aggregation each device adds its "
    "share of the noise before masking (distributed DP), with --no-secagg the coordinator adds "
    "it (central DP). A fleet of 8 buys little privacy: see the README.",
)
@click.option(
    "--noise-multiplier",
    type=click.FloatRange(min=0.0, min_open=True),
    default=DEMO_NOISE_MULTIPLIER,
    show_default=True,
    help="With --dp: noise std on the sum, in units of the clip norm.",
)
@click.option(
    "--usecase",
    type=click.Choice(sorted(USECASE_TASKS)),
    help="Train a use case (default: maintenance, unless --task is given): the fleet's "
    "machines / patients / cars are dealt over the devices, each with its own data; the summary "
    "shows the recall of every class on held-out devices. healthcare is activity recognition, "
    "healthcare-anomaly the abnormal heart-rate response (on the same patients' windows), "
    "maintenance-warning the early warning (fails within 7 days) on the maintenance machines' "
    "windows.",
)
@click.option(
    "--secagg/--no-secagg",
    default=True,
    show_default=True,
    help="Secure aggregation (SecAgg+ through the gateways): nobody sees a single update.",
)
@click.option(
    "--traces",
    is_flag=True,
    help="Every process writes its OpenTelemetry spans to WORKDIR/traces/<name>.jsonl, kept "
    "after the demo (with OTEL_EXPORTER_OTLP_ENDPOINT set they go to that collector instead).",
)
@click.option("--simulated", is_flag=True, help="Run the in-process simulator demo instead.")
@click.option(
    "--out",
    type=click.Path(),
    default="runs/demo",
    show_default=True,
    help="With --simulated: output directory.",
)
def demo_command(
    rounds: int,
    sites: int,
    devices_per_site: int,
    task: str | None,
    keep: bool,
    workdir: str | None,
    dp: bool,
    noise_multiplier: float,
    usecase: str | None,
    secagg: bool,
    traces: bool,
    simulated: bool,
    out: str,
) -> None:
    """The main demo: a whole federation on this machine.

    Creates a throwaway PKI, starts a coordinator, one edge gateway per site and the devices as
    separate processes talking mutual TLS on loopback, runs a FedAvg job with secure aggregation
    (--no-secagg: plain sums) and distributed differential privacy (--no-dp: none), shows each
    round as it commits with its ε, prints a summary and stops every process. By default the
    job is predictive maintenance (5 fault classes; the summary shows each fault's recall on
    machines no device trained on); --task trains another task. With
    --simulated it runs the simulator on the MNIST example instead (100 virtual devices,
    20 rounds).
    """
    if simulated:
        from fedge.cli.simulate import run_simulation

        run_simulation(None, {"rounds": 20 if rounds == 5 else rounds}, out)
        click.echo(f"plot: {Path(out) / 'history.png'}")
        return
    if task is not None and usecase is not None:
        raise click.UsageError("give --task or --usecase, not both")
    if task is None and usecase is None:
        usecase = "maintenance"  # the default demo: predictive maintenance
    run_networked_demo(
        rounds=rounds,
        sites=sites,
        devices_per_site=devices_per_site,
        task=task or USECASE_TASKS[str(usecase)],
        keep=keep,
        workdir=workdir,
        dp=dp,
        usecase=usecase,
        secagg=secagg,
        noise_multiplier=noise_multiplier,
        traces=traces,
    )
