"""A click group whose subcommands are imported only when they run.

``fedge gateway`` must not pay for what ``fedge simulate`` needs: importing every subcommand
up front pulled torch (~200 MiB resident, seconds of start-up) into every role process, even
a gateway that only sums arrays. :class:`LazyGroup` knows each subcommand by name and the
``module:attribute`` that defines it, and imports that module when the command is looked up
(running it, or ``fedge NAME --help``); ``fedge --help`` still lists them all, importing each
to read its one-line help. A subcommand whose module cannot be imported is left out, as an
optional part that is not installed.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

__all__ = ["LazyGroup"]


class LazyGroup(click.Group):
    """A group with eager commands (``add_command``) and lazy ones (``lazy_commands``)."""

    def __init__(
        self, *args: Any, lazy_commands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_commands = dict(lazy_commands or {})  # name -> "module:attribute"

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command name, eager and lazy, sorted (nothing is imported)."""
        return sorted(set(super().list_commands(ctx)) | set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, importing its module first if it is a lazy one."""
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in self.lazy_commands:
            return command
        module, _, attr = self.lazy_commands[cmd_name].partition(":")
        try:
            command = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):  # an optional part that is not importable
            return None
        if not isinstance(command, click.Command):
            raise TypeError(f"{module}:{attr} is not a click command")
        self.add_command(command, cmd_name)
        return command
