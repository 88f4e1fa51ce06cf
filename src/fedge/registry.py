"""A small name → factory registry, used for tasks, strategies and partitioners.

Names are what users write in config files. Third-party packages can add entries through the
entry-point group given to the registry (for example ``fedge.tasks``); they are loaded lazily
the first time a name is not found among the built-in ones.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from fedge.errors import ConfigError, UnknownNameError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps config names to objects of one kind (``kind`` is used in error messages)."""

    def __init__(self, kind: str, entry_point_group: str | None = None) -> None:
        self.kind = kind
        self._group = entry_point_group
        self._items: dict[str, T] = {}
        self._entry_points_loaded = entry_point_group is None

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a name can be registered only once."""

        def decorate(obj: T) -> T:
            self.add(name, obj)
            return obj

        return decorate

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` under ``name`` (lower-case, no spaces)."""
        key = name.strip().lower()
        if not key or " " in key:
            raise ConfigError(f"invalid {self.kind} name {name!r}: use a non-empty word")
        if key in self._items and self._items[key] is not obj:
            raise ConfigError(f"{self.kind} {key!r} is already registered; pick another name")
        self._items[key] = obj

    def get(self, name: str) -> T:
        """Return the object registered as ``name`` or raise :class:`UnknownNameError`."""
        key = name.strip().lower()
        if key not in self._items:
            self._load_entry_points()
        if key not in self._items:
            known = sorted(self._items)
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}. Known {self.kind}s: {', '.join(known)}.{hint}"
            )
        return self._items[key]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.strip().lower() in self.names()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self._group is None:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self._group):
            if ep.name.lower() not in self._items:
                self.add(ep.name, ep.load())
