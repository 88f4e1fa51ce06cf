"""``python -m fedge`` runs the ``fedge`` command line."""

from fedge.cli import main

main()
