"""Fixtures for identity tests: a fresh fleet PKI (and a foreign one) in a temporary directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedge.identity import PkiPaths, init_pki


@pytest.fixture
def pki(tmp_path: Path) -> PkiPaths:
    """A freshly initialised fleet PKI named 'acme'."""
    return init_pki(tmp_path / "pki", "acme", validity_days=30)


@pytest.fixture
def other_pki(tmp_path: Path) -> PkiPaths:
    """A second, unrelated fleet CA (same fleet name, different key)."""
    return init_pki(tmp_path / "other", "acme", validity_days=30)
