"""The example configs parse, relative paths resolve, typos are refused with the setting's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.device.config import load_device_config
from fedge.errors import ConfigError
from fedge.gateway.config import load_gateway_config

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_examples_load() -> None:
    gw = load_gateway_config(EXAMPLES / "gateway.toml")
    assert gw.site == "site-a" and gw.pki.ca == EXAMPLES / "pki/ca.crt"
    dev = load_device_config(EXAMPLES / "device.toml")
    assert dev.site == gw.site and dev.state_dir == EXAMPLES / "state/dev-0"
    assert dev.eligibility.policy().min_examples == dev.eligibility.min_examples


def test_unknown_setting_refused(tmp_path: Path) -> None:
    path = tmp_path / "device.toml"
    path.write_text((EXAMPLES / "device.toml").read_text() + "\nprivacy_limt = 3\n")
    with pytest.raises(ConfigError, match="privacy_limt"):
        load_device_config(path)
