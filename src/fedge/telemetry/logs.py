"""Structured logs: human-readable lines by default, JSON lines with ``fedge --log-format json``.

Every record is stamped, in the thread that logs it, with what is known of the work it belongs
to: the job and round (context variables set with :func:`round_context` by the code that runs a
round's work: the coordinator's driver, the gateway's and the device's round handling, and the API
app for ``/jobs/{job}/rounds/{r}/…`` requests) and the current OpenTelemetry span's trace and span
ids (a round has them whether or not tracing is on: :mod:`fedge.telemetry.tracing`, so every
line of a round carries its job, round and trace id). The text format is the one fedge always
had, with ``[job=… round=… trace=… span=…]`` appended when any is known::

    2026-12-03 19:40:01,123 INFO fedge.coordinator.driver: job j round 2 committed … [job=j round=2 trace=4bf9… span=00f0…]

The JSON format is one object per line with ``time`` (ISO 8601, UTC), ``level``, ``logger``,
``message`` and, when known, ``job``, ``round``, ``trace_id``, ``span_id`` (and ``exception``)::

    {"time": "2026-12-03T19:40:01.123+00:00", "level": "INFO", "logger": "fedge.coordinator.driver",
     "message": "job j round 2 committed …", "job": "j", "round": 2, "trace_id": "4bf9…", …}
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any, Literal

from opentelemetry import trace

from fedge.errors import ConfigError

__all__ = [
    "LOG_FORMATS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "configure_logging",
    "current_round",
    "round_context",
]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_JOB: ContextVar[str | None] = ContextVar("fedge_job", default=None)
_ROUND: ContextVar[int | None] = ContextVar("fedge_round", default=None)


@contextmanager
def round_context(job_id: str | None, round_number: int | None = None) -> Iterator[None]:
    """Stamp every log record of this thread (or task) inside the block with job and round."""
    job_token, round_token = _JOB.set(job_id), _ROUND.set(round_number)
    try:
        yield
    finally:
        _ROUND.reset(round_token)
        _JOB.reset(job_token)


def current_round() -> tuple[str | None, int | None]:
    """The job and round set by the innermost :func:`round_context`, if any."""
    return _JOB.get(), _ROUND.get()


class ContextFilter(logging.Filter):
    """Adds ``job``, ``round``, ``trace_id`` and ``span_id`` (or None) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Stamp the record; never drops one."""
        record.job, record.round = _JOB.get(), _ROUND.get()
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
            record.span_id = format(ctx.span_id, "016x")
        else:
            record.trace_id = record.span_id = None
        return True


_FIELDS = ("job", "round", "trace_id", "span_id")
_TEXT_KEYS = {"job": "job", "round": "round", "trace_id": "trace", "span_id": "span"}


def _known(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k in _FIELDS if (v := getattr(record, k, None)) is not None}


class TextFormatter(logging.Formatter):
    """fedge's human-readable line, with the known job, round, trace and span appended."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        """The classic line plus `` [job=… round=… trace=… span=…]`` when any is known."""
        line = super().format(record)
        known = _known(record)
        if not known:
            return line
        tags = " ".join(f"{_TEXT_KEYS[k]}={v}" for k, v in known.items())
        head, sep, rest = line.partition("\n")  # keep a traceback below the tagged line
        return f"{head} [{tags}]{sep}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc)."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        out: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_known(record),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_logging(
    level: str = "warning",
    log_format: Literal["text", "json"] = "text",
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send the process's logs to stderr (or ``stream``) at ``level`` in ``log_format``.

    Like :func:`logging.basicConfig`, it leaves a root logger that already has handlers alone
    (e.g. pytest's capture); returns the handler it made.
    """
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"log format {log_format!r}: expected one of {LOG_FORMATS}")
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    return handler
