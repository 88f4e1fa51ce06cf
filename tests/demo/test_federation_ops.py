"""What ``fedge demo --keep`` prints about the ops listeners (learned from the processes' logs)."""

from __future__ import annotations

from pathlib import Path

from fedge.demo.federation import LocalFederation


def test_metrics_lines_name_each_role_and_the_token(tmp_path: Path) -> None:
    fed = LocalFederation(tmp_path)
    assert fed.metrics_lines() == []  # nothing started: nothing to scrape
    fed.coordinator_ops_url = "https://127.0.0.1:9443"
    fed.gateway_ops_urls = {"site-a": "https://127.0.0.1:9444"}
    lines = fed.metrics_lines()
    assert lines[0] == "metrics      https://127.0.0.1:9443/metrics  (coordinator)"
    assert lines[1] == "metrics      https://127.0.0.1:9444/metrics  (gw-site-a)"
    assert str(tmp_path / "ops.token") in lines[2]
    assert f"--cacert {tmp_path / 'pki' / 'ca.crt'}" in lines[2]
