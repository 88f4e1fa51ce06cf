"""`fedge demo --usecase NAME` wiring, without processes: the federation and the job it would run.

Every use case deals its machines / patients / cars over the devices (natural partition), trains
with the class-balanced loss and ends with the per-class recall against the majority class. The
networked runs themselves are in tests/cli/test_demo_usecase.py (integration, slow).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from rich.console import Console

from fedge.cli.demo import USECASE_TASKS, demo_command


class _StopError(Exception):
    """Raised by the fake federation once the job is submitted: nothing more to look at."""


class _FakeAdmin:
    def __init__(self, seen: dict[str, Any]) -> None:
        self.seen = seen

    def __enter__(self) -> _FakeAdmin:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def create_job(self, spec: Any) -> Any:
        self.seen["spec"] = spec
        raise _StopError


class _FakeFederation:
    """Stands in for fedge.demo.federation.LocalFederation: records the plan, starts nothing."""

    seen: dict[str, Any]

    def __init__(self, root: Path, plan: Any) -> None:
        self.seen["plan"] = plan

    def __enter__(self) -> _FakeFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def admin_client(self) -> _FakeAdmin:
        return _FakeAdmin(self.seen)

    def __getattr__(self, name: str) -> Any:  # create_pki, start_coordinator, …: no-ops
        return lambda *args, **kwargs: f"({name})"


def _wiring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *argv: str) -> dict[str, Any]:
    import fedge.demo.federation

    seen: dict[str, Any] = {}
    monkeypatch.setattr(_FakeFederation, "seen", seen, raising=False)
    monkeypatch.setattr(fedge.demo.federation, "LocalFederation", _FakeFederation)
    result = CliRunner().invoke(demo_command, [*argv, "--workdir", str(tmp_path / "demo")])
    assert isinstance(result.exception, _StopError), result.output
    return seen


def test_maintenance_warning_is_a_usecase_of_the_demo() -> None:
    assert USECASE_TASKS["maintenance-warning"] == "maintenance_warning"
    result = CliRunner().invoke(demo_command, ["--help"])
    assert "maintenance-warning" in result.output


@pytest.mark.parametrize("usecase", sorted(USECASE_TASKS))
def test_usecase_deals_devices_and_balances_classes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, usecase: str
) -> None:
    seen = _wiring(monkeypatch, tmp_path, "--usecase", usecase, "--no-dp")
    plan, spec = seen["plan"], seen["spec"]
    task = USECASE_TASKS[usecase]
    assert plan.task == spec.task == task
    assert plan.partitioner == "natural"  # each device plays back its own machines / patients
    assert spec.plan.class_weighting == "balanced"
    assert spec.secure_aggregation is not None


def test_task_flag_of_a_usecase_task_splits_iid(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--task trains the same task with its windows split IID (and the unweighted plan)."""
    seen = _wiring(monkeypatch, tmp_path, "--task", "maintenance_warning", "--no-dp")
    assert seen["plan"].partitioner == "iid"
    assert seen["spec"].plan.class_weighting == "none"


def test_warning_summary_shows_recall_per_class_against_the_majority() -> None:
    """The summary line of `--usecase maintenance-warning`: both classes, then 'always normal'."""
    import torch

    from fedge.core.params import from_module
    from fedge.core.serde import encode_params
    from fedge.demo.report import show_recall
    from fedge.tasks import get_task

    torch.manual_seed(0)
    params = from_module(get_task("maintenance_warning").build_model())
    payload = encode_params(params)
    sha = hashlib.sha256(payload).hexdigest()

    class Admin(_FakeAdmin):
        def export_model(self, sha256: str) -> bytes:
            assert sha256 == sha
            return payload

    class Fed:
        def admin_client(self) -> Admin:
            return Admin({})

    console = Console(record=True, width=200)
    show_recall(Fed(), console, "maintenance_warning", sha)  # type: ignore[arg-type]
    text = console.export_text()
    assert "recall       normal " in text and " · fails_soon " in text
    assert "baseline     always 'normal': accuracy 0.9" in text
    assert "macro recall 0.500 (held-out devices)" in text
    assert np.isfinite(float(text.split("macro ")[1].split(" ")[0]))
