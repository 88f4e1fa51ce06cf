"""The ``fedge`` command line (also ``python -m fedge``)."""

from fedge.cli.main import cli, main

__all__ = ["cli", "main"]
