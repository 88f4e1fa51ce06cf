"""Observability and governance: tracing, metrics, structured logs and the audit log.

Each concern is its own module (import it directly); this package re-exports nothing, so that
importing one of them never pulls in the others' dependencies.
"""

__all__: list[str] = []
