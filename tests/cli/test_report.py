"""``fedge report``: PNG and HTML of a job a real coordinator service ran (SQLite database)."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import matplotlib.image
import pytest
from click.testing import CliRunner
from tests.coordinator.helpers import ADMIN, Clock, make_service, run_plain_round, spec

from fedge.cli.main import cli
from fedge.cli.report import report_html, report_png
from fedge.coordinator import CoordinatorService
from fedge.dashboard.views import JobDetail
from fedge.errors import ConfigError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def ran(tmp_path: Path) -> CoordinatorService:
    """Job ``digits``: round 1 committed with four devices, round 2 abandoned (nobody came)."""
    clock = Clock()
    svc = make_service(tmp_path, clock)
    svc.admin.create_job(ADMIN, spec(rounds=3))
    run_plain_round(svc, clock, 1)  # round 1 commits, round 2 opens
    clock.now += 500
    svc.tick()  # round 2: nobody took it before its deadline
    rounds = svc.admin.get_job(ADMIN, "digits").rounds
    assert [r.state for r in rounds[:2]] == ["committed", "abandoned"]
    return svc


def test_report_writes_png_and_html_with_the_jobs_numbers(
    ran: CoordinatorService, tmp_path: Path
) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(
        cli, ["report", "digits", "--database", ran.store.url, "--out", str(out)]
    )
    assert result.exit_code == 0, result.output + repr(result.exception)
    png, page = out / "digits-report.png", out / "digits-report.html"
    assert result.stdout.split() == [str(png), str(page)]
    assert png.read_bytes().startswith(PNG_MAGIC)
    assert matplotlib.image.imread(png).shape[:2] == (800, 1200)
    text = page.read_text()
    first = ran.admin.get_job(ADMIN, "digits").rounds[0]
    assert first.accuracy is not None and first.loss is not None
    assert f"{first.accuracy:.4f}" in text and f"{first.loss:.4f}" in text
    assert re.search(r"<th>rounds committed</th><td>1 of 3</td>", text)
    assert '<td class="committed">committed</td>' in text
    assert '<td class="abandoned">abandoned</td>' in text
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', text)
    assert embedded is not None and base64.b64decode(embedded[1]).startswith(PNG_MAGIC)
    assert "http://" not in text and "https://" not in text  # self-contained


def test_report_formats_and_sources(ran: CoordinatorService, tmp_path: Path) -> None:
    config = tmp_path / "coordinator.toml"
    config.write_text('database_url = "sqlite:///coord.db"\n')
    args = ["report", "digits", "--config", str(config), "--out", str(tmp_path), "--format"]
    result = CliRunner().invoke(cli, [*args, "html"])
    assert result.exit_code == 0 and (tmp_path / "digits-report.html").is_file()
    assert not (tmp_path / "digits-report.png").exists()
    result = CliRunner().invoke(cli, ["report", "digits", "--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
    assert "exactly one of --config, --database and --ops-url" in str(result.exception)


def test_secure_aggregation_survivors_and_escaping() -> None:
    rounds = [
        {"round": 1, "state": "committed", "participants": 5, "gateways_reported": 2,
         "accuracy": 0.8, "loss": 0.5, "epsilon": 1.5, "reason": "", "started_at": 10.0,
         "ended_at": 20.0, "secagg": {"expected": 6, "joined": 6, "survivors": 5,
                                      "abandoned": False, "reason": ""}},
        {"round": 2, "state": "abandoned", "participants": 0, "gateways_reported": 0,
         "accuracy": None, "loss": None, "epsilon": None, "reason": "<script>x</script>",
         "started_at": 21.0, "ended_at": 30.0, "secagg": {"expected": 6, "joined": 2,
                                                          "survivors": 0, "abandoned": True,
                                                          "reason": "too few"}},
    ]  # fmt: skip
    detail = JobDetail.model_validate(
        {
            "job": {"id": "j", "task": "digits_mlp", "state": "running", "rounds_wanted": 5,
                    "rounds_committed": 1, "current_round": 2, "created_at": 0.0},
            "secure_aggregation": True,
            "rounds": rounds,
            "privacy": {"mode": "central", "spent": 1.5, "limit": 4.0, "limit_kind": "max_epsilon"},
            "received_bytes": 1000,
            "device_direct_bytes": 4000,
        }
    )  # fmt: skip
    png = report_png(detail)
    assert matplotlib.image.imread(io.BytesIO(png)).shape[:2] == (800, 1200)
    page = report_html(detail, png)
    assert "<td>5/6</td>" in page and "<td>0/6</td>" in page  # survivors of handed out
    assert "1.500 of 4 (max_epsilon)" in page and "3,000 saved by gateways" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
