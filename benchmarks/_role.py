"""``python benchmarks/_role.py KEEP_ALIVE_S ARGS...``: ``fedge ARGS`` with another uvicorn keep-alive.

An experiment hook for ``bench_network_load.py --keep-alive``: fedge's servers use uvicorn's
default ``timeout_keep_alive`` (5 s), which this wrapper replaces before running the ordinary
``fedge`` command line, so the role code itself is unchanged.
"""

from __future__ import annotations

import sys

import uvicorn

_KEEP_ALIVE = float(sys.argv.pop(1))
_init = uvicorn.Config.__init__


def _config_init(self: uvicorn.Config, *args: object, **kwargs: object) -> None:
    kwargs.setdefault("timeout_keep_alive", _KEEP_ALIVE)
    _init(self, *args, **kwargs)  # type: ignore[arg-type]


uvicorn.Config.__init__ = _config_init  # type: ignore[method-assign]

from fedge.cli import main  # noqa: E402

main()
