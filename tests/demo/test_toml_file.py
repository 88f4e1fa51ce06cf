"""The role configs a local federation writes read back unchanged."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedge.demo.toml_file import write_toml


def test_configs_read_back_unchanged(tmp_path: Path) -> None:
    top = {"id": "dev-a-0", "port": 0, "tick": 0.25, "limit": float("inf"), "on": False}
    sections = {
        "pki": {"ca": str(tmp_path / 'odd "dir" \\ name' / "ca.crt")},
        "data": {"labels": {"kind": "demo", "site": "a"}, "rows": 250},
    }
    path = write_toml(tmp_path / "device.toml", top, sections)
    assert tomllib.loads(path.read_text(encoding="utf-8")) == {**top, **sections}
