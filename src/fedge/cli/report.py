"""``fedge report JOB``: a PNG and a self-contained HTML summary of one job's rounds.

The numbers are the dashboard's (:class:`~fedge.dashboard.views.JobDetail`): read from the
coordinator's database (``--config coordinator.toml`` or ``--database URL``), or fetched from its
ops listener (``--ops-url``, with the ops token or an admin certificate), where the dashboard
serves the same JSON. The PNG has four panels: the rounds on a time line coloured by outcome,
accuracy and loss, ε spent against the job's limit, and participation (devices counted per round;
with secure aggregation also tasks handed out, devices joined and survivors). The HTML embeds the
PNG and adds a table of every round: one file, nothing fetched.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from fedge.dashboard.views import JobDetail, RoundInfo
from fedge.errors import ConfigError, UnavailableError, UnknownNameError
from fedge.simulation.history import plot_series, pyplot, style_round_axes

__all__ = ["fetch_job_detail", "read_job_detail", "report_command", "report_html", "report_png"]

STATE_COLOURS = {"committed": "#2e7d32", "abandoned": "#c62828"}  # others: in flight, grey


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _timeline(ax: Any, rounds: Sequence[RoundInfo]) -> None:
    timed = [r for r in rounds if r.started_at is not None]
    t0 = min((r.started_at for r in timed if r.started_at is not None), default=0.0)
    for r in timed:
        assert r.started_at is not None
        end = r.ended_at if r.ended_at is not None else r.started_at
        colour = STATE_COLOURS.get(r.state, "#9e9e9e")
        ax.barh(r.round, max(end - r.started_at, 0.05), left=r.started_at - t0, color=colour)
    from matplotlib.patches import Patch
    from matplotlib.ticker import MaxNLocator

    keys = (*STATE_COLOURS.items(), ("in flight", "#9e9e9e"))
    ax.legend(handles=[Patch(color=c, label=s) for s, c in keys], loc="upper right")
    ax.set(xlabel="seconds since the first round opened", ylabel="round", title="Rounds")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.invert_yaxis()
    ax.grid(alpha=0.3)


def report_png(detail: JobDetail, path: str | Path | None = None) -> bytes:
    """The report's figure as PNG bytes (also written to ``path`` when given)."""
    plt = pyplot()
    rounds = detail.rounds
    numbers = [r.round for r in rounds]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), constrained_layout=True)
    ax_time, ax_acc, ax_eps, ax_part = axes.flat
    _timeline(ax_time, rounds)
    plot_series(ax_acc, numbers, [r.accuracy for r in rounds], "accuracy", color="#1565c0")
    ax_loss = ax_acc.twinx()
    plot_series(ax_loss, numbers, [r.loss for r in rounds], "loss", color="#ef6c00")
    ax_loss.set_ylabel("loss")
    style_round_axes(ax_acc, "accuracy", "Accuracy and loss (held-out set, committed rounds)")
    lines = ax_acc.get_legend_handles_labels()[0] + ax_loss.get_legend_handles_labels()[0]
    ax_acc.legend(lines, [str(line.get_label()) for line in lines], loc="center right")
    plot_series(ax_eps, numbers, [r.epsilon for r in rounds], "ε spent", color="#6a1b9a")
    privacy = detail.privacy
    if privacy.limit is not None:
        ax_eps.axhline(privacy.limit, color="#c62828", ls="--", label=f"{privacy.limit_kind}")
    if privacy.spent is None:
        ax_eps.text(0.5, 0.5, "no ε recorded", ha="center", va="center", transform=ax_eps.transAxes)
    style_round_axes(ax_eps, "ε", f"Privacy spent (mode: {privacy.mode})")
    width = 0.27 if detail.secure_aggregation else 0.6
    if detail.secure_aggregation:
        handed = [r.secagg.expected if r.secagg else 0 for r in rounds]
        joined = [r.secagg.joined if r.secagg else 0 for r in rounds]
        ax_part.bar([n - width for n in numbers], handed, width, label="tasks handed out")
        ax_part.bar(numbers, joined, width, label="joined")
        survivors = [r.secagg.survivors if r.secagg else r.participants for r in rounds]
        ax_part.bar([n + width for n in numbers], survivors, width, label="survivors (summed)")
    else:
        ax_part.bar(numbers, [r.participants for r in rounds], width, label="devices counted")
    style_round_axes(ax_part, "devices", "Participation")
    ax_part.set_ylim(0, 1.3 * max(ax_part.get_ylim()[1], 1))  # room for the legend above the bars
    ax_part.legend(loc="upper center", ncols=3, fontsize="small")
    fig.suptitle(f"job {detail.job.id} · {detail.job.task} · {detail.job.state}")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _summary_rows(detail: JobDetail) -> list[tuple[str, str]]:
    job, privacy = detail.job, detail.privacy
    committed = [r for r in detail.rounds if r.state == "committed"]
    last = committed[-1] if committed else None
    limit = "" if privacy.limit is None else f" of {privacy.limit:g} ({privacy.limit_kind})"
    saved = detail.device_direct_bytes - detail.received_bytes
    return [
        ("job", f"{job.id} ({job.state})"),
        ("task", job.task),
        ("rounds committed", f"{job.rounds_committed} of {job.rounds_wanted}"),
        (
            "round attempts",
            f"{len(detail.rounds)} ({len(detail.rounds) - len(committed)} not committed)",
        ),
        ("final accuracy", _num(last.accuracy if last else None)),
        ("final loss", _num(last.loss if last else None)),
        ("ε spent", f"{_num(privacy.spent, 3)}{limit} · {privacy.mode}"),
        ("secure aggregation", "yes" if detail.secure_aggregation else "no"),
        ("coordinator ingress", f"{detail.received_bytes:,} bytes ({saved:,} saved by gateways)"),
        ("created", _when(job.created_at)),
    ]


def _round_row(r: RoundInfo) -> list[str]:
    took = None if r.started_at is None or r.ended_at is None else r.ended_at - r.started_at
    secagg = "–" if r.secagg is None else f"{r.secagg.survivors}/{r.secagg.expected}"
    return [
        str(r.round),
        r.state,
        _when(r.started_at),
        "–" if took is None else f"{took:.1f} s",
        str(r.participants),
        str(r.gateways_reported),
        secagg,
        _num(r.accuracy),
        _num(r.loss),
        _num(r.epsilon, 3),
        r.reason,
    ]


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em}
th{background:#f3f3f3;text-align:left}td.n{text-align:right}img{max-width:100%}
.committed{color:#2e7d32}.abandoned{color:#c62828}"""

_HEADERS = (
    "round",
    "state",
    "started",
    "took",
    "devices",
    "gateways",
    "survivors/handed out",
    "accuracy",
    "loss",
    "ε",
    "reason",
)


def report_html(detail: JobDetail, png: bytes) -> str:
    """One self-contained HTML page: the summary, the figure (embedded) and every round."""
    e = html.escape
    summary = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _summary_rows(detail))
    head = "".join(f"<th>{e(h)}</th>" for h in _HEADERS)
    body = []
    for r in detail.rounds:
        cells = _round_row(r)
        tds = "".join(
            f'<td class="{e(r.state)}">{e(c)}</td>' if i == 1 else f"<td>{e(c)}</td>"
            for i, c in enumerate(cells)
        )
        body.append(f"<tr>{tds}</tr>")
    image = base64.b64encode(png).decode("ascii")
    title = f"fedge report: job {detail.job.id}"
    made = _when(dt.datetime.now(dt.UTC).timestamp())
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{e(title)}</title>'
        f"<style>{_CSS}</style></head><body>\n<h1>{e(title)}</h1>\n"
        f"<table>{summary}</table>\n"
        f'<img alt="rounds, accuracy and loss, privacy, participation" '
        f'src="data:image/png;base64,{image}">\n'
        f"<h2>Rounds</h2>\n<table><tr>{head}</tr>\n" + "\n".join(body) + "</table>\n"
        f"<p>Made {e(made)} by <code>fedge report</code>.</p>\n</body></html>\n"
    )


def read_job_detail(database_url: str, job_id: str) -> JobDetail:
    """The job's numbers from the coordinator's database."""
    from fedge.coordinator.roundstats import RoundStats
    from fedge.coordinator.store import Store
    from fedge.dashboard.views import job_detail

    if database_url.startswith("sqlite:///"):
        path = Path(database_url[len("sqlite:///") :])
        if not path.is_file():
            raise ConfigError(f"no coordinator database at {path}: check --config/--database")
    store = Store(database_url)
    try:
        return job_detail(store, RoundStats(store.engine), job_id)
    finally:
        store.close()


def fetch_job_detail(
    ops_url: str,
    job_id: str,
    *,
    ca: Path,
    token: str | None = None,
    cert: tuple[Path, Path] | None = None,
) -> JobDetail:
    """The job's numbers from the coordinator's ops listener (the dashboard's JSON)."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{ops_url.rstrip('/')}/dashboard/api/jobs/{job_id}"
    try:
        context = ssl.create_default_context(cafile=str(ca))
        if cert is not None:
            context.load_cert_chain(cert[0], cert[1])
        response = httpx.get(url, headers=headers, verify=context, timeout=30.0)
    except (httpx.HTTPError, OSError) as exc:
        raise UnavailableError(f"cannot reach the ops listener at {ops_url}: {exc}") from None
    if response.status_code == 404:
        raise UnknownNameError(f"no job {job_id!r} at {ops_url}")
    if response.status_code != 200:
        raise UnavailableError(
            f"{url} answered {response.status_code}: {response.text[:200]} (the ops token or an "
            "admin certificate is needed)"
        )
    return JobDetail.model_validate_json(response.content)


@click.command("report")
@click.argument("job_id")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="Directory for JOB-report.png and JOB-report.html.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["both", "png", "html"]),
    default="both",
    show_default=True,
    help="Which files to write.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True),
    help="Read the coordinator's database named in its coordinator.toml.",
)
@click.option(
    "--database",
    "database_url",
    default=None,
    help="Read this coordinator database (SQLAlchemy URL).",
)
@click.option(
    "--ops-url",
    default=None,
    envvar="FEDGE_OPS_URL",
    help="Or fetch from the coordinator's ops listener, e.g. https://127.0.0.1:9443.",
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="With --ops-url: the ops token file (ops.token beside its config).",
)
@click.option(
    "--pki",
    "pki_dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="FEDGE_PKI",
    help="With --ops-url: the fleet PKI (its CA; and --name's admin certificate "
    "when there is no --token-file).",
)
@click.option("--name", default="admin", show_default=True, help="Admin certificate in --pki.")
def report_command(
    job_id: str,
    out_dir: str,
    fmt: str,
    config_path: str | None,
    database_url: str | None,
    ops_url: str | None,
    token_file: str | None,
    pki_dir: str | None,
    name: str,
) -> None:
    """Write a PNG and a self-contained HTML summary of job JOB_ID's rounds.

    Rounds on a time line, accuracy and loss, ε spent against its limit, participation and
    (with secure aggregation) survivors per round.
    """
    sources = [x for x in (config_path, database_url, ops_url) if x is not None]
    if len(sources) != 1:
        raise ConfigError("give exactly one of --config, --database and --ops-url")
    if ops_url is not None:
        from fedge.identity import PkiPaths

        if pki_dir is None:
            raise ConfigError("--ops-url needs --pki (the fleet CA, and the admin certificate)")
        pki = PkiPaths(Path(pki_dir))
        token = Path(token_file).read_text().strip() if token_file else None
        cert = None if token else (pki.cert_for(name), pki.key_for(name))
        detail = fetch_job_detail(ops_url, job_id, ca=pki.ca_cert, token=token, cert=cert)
    else:
        if config_path is not None:
            from fedge.coordinator.config import load_coordinator_config

            database_url = load_coordinator_config(config_path).resolved_database_url()
        assert database_url is not None
        detail = read_job_detail(database_url, job_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = report_png(detail)
    written = []
    if fmt in ("both", "png"):
        written.append(out / f"{job_id}-report.png")
        written[-1].write_bytes(png)
    if fmt in ("both", "html"):
        written.append(out / f"{job_id}-report.html")
        written[-1].write_text(report_html(detail, png), encoding="utf-8")
    for path in written:
        click.echo(str(path))
