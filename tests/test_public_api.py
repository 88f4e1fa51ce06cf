"""Every public module declares ``__all__`` and everything in it exists."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import fedge

MODULES = sorted(
    m.name
    for m in pkgutil.walk_packages(fedge.__path__, "fedge.")
    if not m.name.split(".")[-1].startswith("_") and m.name != "fedge.__main__"
)


@pytest.mark.parametrize("name", MODULES)
def test_module_declares_all(name: str) -> None:
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    for symbol in exported:
        assert hasattr(module, symbol), f"{name}.__all__ names missing {symbol!r}"
