"""Serve predictions on the device from the model it helped train, with atomic hot swap.

A :class:`Predictor` holds one *served* model version at a time. :meth:`Predictor.load` builds the
new version completely off to the side -- fresh module, weights loaded, put in eval mode -- and
health-checks it (it loads; a smoke prediction has the right shape and finite outputs; and,
when a local holdout and a floor are configured, its accuracy reaches the floor). Only then is one
reference swapped, under a lock that writers share. Readers take that reference once per request
and never lock, so a request in flight finishes on the version it started with, and no request
ever sees a half-loaded model. A version that fails its health check raises
:class:`~fedge.errors.HealthCheckError` and the version being served stays.

The predictor remembers the last few good versions: :meth:`Predictor.rollback` returns to the
previous one (or to a named one, when the coordinator rolls back).

**Runtimes** (``runtime``, ``[serving] runtime`` in ``device.toml``): "torch" runs the task's
module; "onnxruntime" runs an ONNX graph of the version with onnxruntime -- for MLP tasks the
graph is written from the weights with the ``onnx`` helper API when the version loads, with no
tracing (:func:`fedge.tasks.export.onnx_from_weights`); other architectures are exported once by
torch. Load, health check, swap and rollback are the same code with either.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, NamedTuple, get_args

import numpy as np

from fedge.core.params import Params, load_into_module
from fedge.errors import (
    ConfigError,
    FedgeError,
    HealthCheckError,
    ProtocolError,
    UnavailableError,
    ValidationError,
)
from fedge.tasks import get_task

if TYPE_CHECKING:
    from fedge.tasks.base import Task

__all__ = [
    "RUNTIMES",
    "HealthCheck",
    "Prediction",
    "Predictor",
    "Runtime",
    "ServedModel",
    "runner_factory",
    "torch_runner",
]

Runner = Callable[[np.ndarray], np.ndarray]  # float32 rows -> float32 scores (logits)
Runtime = Literal["torch", "onnxruntime"]
RUNTIMES: tuple[str, ...] = get_args(Runtime)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HealthCheck:
    """What a model version must pass before it is served.

    The holdout is ``holdout()`` when given -- read at every check, so it is the device's
    current holdout (:meth:`fedge.device.store.LocalStore.holdout`) -- else the fixed
    ``holdout_x``/``holdout_y``. With a ``min_accuracy`` floor and fewer than
    ``min_holdout_rows`` holdout rows the accuracy check cannot be made: it is skipped, a
    warning is logged, and the served model says so (:attr:`ServedModel.skipped`).
    """

    smoke_rows: int = 4  # rows of the smoke prediction (holdout rows if given, else zeros)
    holdout_x: np.ndarray | None = None  # optional fixed local holdout features ...
    holdout_y: np.ndarray | None = None  # ... and labels
    min_accuracy: float | None = None  # accuracy floor on the holdout (None: no floor)
    # the current holdout (x, y), read at each check; overrides holdout_x / holdout_y
    holdout: Callable[[], tuple[np.ndarray, np.ndarray]] | None = None
    min_holdout_rows: int = 1  # fewer holdout rows: the accuracy check is skipped (warned)

    def current_holdout(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The holdout to check against now: (x, y), or (None, None) without one."""
        if self.holdout is not None:
            x, y = self.holdout()
            return (x, y) if len(y) else (None, None)
        if self.holdout_x is None or self.holdout_y is None or not len(self.holdout_y):
            return None, None
        return self.holdout_x, self.holdout_y


@dataclass(frozen=True)
class ServedModel:
    """One loaded, health-checked model version; never changed once published."""

    version: str
    run: Runner
    loaded_at: float
    holdout_accuracy: float | None = None
    skipped: str = ""  # a check that could not be made, and why ("" : none)


class Prediction(NamedTuple):
    """Predicted class per row, and the model version that answered."""

    predictions: np.ndarray
    version: str


def torch_runner(task: Task, params: Params) -> Runner:
    """A runner over a fresh ``task.build_model()`` holding ``params`` (eval mode, no grad)."""
    import torch

    model = task.build_model()
    load_into_module(model, params)
    model.eval()

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = model(torch.from_numpy(x)).numpy()
        return out

    return run


def runner_factory(runtime: str) -> Callable[[Task, Params], Runner]:
    """The ``make_runner`` of a runtime ("torch" or "onnxruntime")."""
    if runtime == "torch":
        return torch_runner
    if runtime == "onnxruntime":
        from fedge.tasks.export import onnx_make_runner

        return onnx_make_runner
    raise ConfigError(f"unknown serving runtime {runtime!r}; use one of {', '.join(RUNTIMES)}")


class Predictor:
    """The device's served model: ``load`` (health-checked hot swap), ``predict``, ``rollback``."""

    def __init__(
        self,
        task_name: str,
        health: HealthCheck | None = None,
        *,
        keep: int = 3,
        runtime: str = "torch",
        make_runner: Callable[[Task, Params], Runner] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep < 2:
            raise ValueError("keep at least 2 versions, or there is nothing to roll back to")
        self.task = get_task(task_name)
        self.health = health or HealthCheck()
        self.runtime = runtime  # what runs the versions (make_runner, when given, decides)
        self._keep = keep
        self._make_runner = make_runner or runner_factory(runtime)
        self._clock = clock
        self._current: ServedModel | None = None  # the one reference readers take
        self._good: list[ServedModel] = []  # previous good versions, oldest first (current last)
        self._lock = threading.Lock()  # serialises writers (load / rollback); readers never lock
        self.refused: list[tuple[str, str]] = []  # (version, reason) of versions refused

    @property
    def version(self) -> str | None:
        """The version being served, or None before the first successful load."""
        current = self._current
        return current.version if current else None

    @property
    def versions(self) -> list[str]:
        """The good versions kept for rollback, oldest first; the last one is served."""
        return [m.version for m in self._good]

    def current(self) -> ServedModel:
        """The served model; :class:`UnavailableError` before any version has loaded."""
        current = self._current
        if current is None:
            raise UnavailableError("no model version is loaded on this device yet; retry later")
        return current

    def load(self, version: str, params: Params) -> ServedModel:
        """Build, health-check and then atomically serve ``version``; refuse it if it fails."""
        try:
            candidate = self._check(version, self._make_runner(self.task, params))
        except HealthCheckError as exc:
            self.refused.append((version, str(exc)))
            raise
        except (FedgeError, RuntimeError, ValueError) as exc:  # shape mismatch, torch errors
            self.refused.append((version, str(exc)))
            raise HealthCheckError(
                f"model version {version} does not load into task {self.task.name}: {exc};"
                " keeping the version being served",
                check="load",
            ) from exc
        with self._lock:
            self._good = [m for m in self._good if m.version != version]
            self._good.append(candidate)
            del self._good[: -self._keep]
            self._current = candidate  # the swap: one reference assignment
        return candidate

    def rollback(self, to: str | None = None) -> ServedModel:
        """Serve the previous good version (or the kept version ``to``); drop the newer ones."""
        with self._lock:
            names = [m.version for m in self._good]
            if to is None:
                if len(self._good) < 2:
                    raise ProtocolError("no previous good model version to roll back to")
                index = len(self._good) - 2
            elif to in names:
                index = names.index(to)
            else:
                raise ProtocolError(
                    f"model version {to} is not kept on this device (kept: {names}); load it first"
                )
            del self._good[index + 1 :]
            self._current = self._good[-1]
            return self._current

    def predict(self, batch: np.ndarray) -> Prediction:
        """Predicted classes for a batch (rows of ``num_features``) and the version that answered."""
        served = self.current()  # taken once: the whole request runs on this version
        scores = served.run(self._rows(batch))
        return Prediction(np.asarray(scores.argmax(axis=-1), dtype=np.int64), served.version)

    def scores(self, batch: np.ndarray) -> tuple[np.ndarray, str]:
        """The model's raw outputs (logits) for a batch, and the version that answered."""
        served = self.current()
        return served.run(self._rows(batch)), served.version

    def _rows(self, batch: np.ndarray) -> np.ndarray:
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.task.num_features:
            raise ValidationError(
                f"a batch is rows of {self.task.num_features} features for task"
                f" {self.task.name}; got shape {tuple(np.shape(batch))}"
            )
        return np.ascontiguousarray(x)

    def _check(self, version: str, run: Runner) -> ServedModel:
        h = self.health
        n, f, k = max(1, h.smoke_rows), self.task.num_features, self.task.num_classes
        hx, hy = h.current_holdout()
        smoke = (
            np.asarray(hx[:n], dtype=np.float32)
            if hx is not None
            else np.zeros((n, f), dtype=np.float32)
        )
        out = np.asarray(run(np.ascontiguousarray(smoke)))
        if out.shape != (len(smoke), k):
            raise HealthCheckError(
                f"model version {version}: smoke prediction has shape {out.shape}, expected"
                f" {(len(smoke), k)}; keeping the version being served",
                check="smoke",
            )
        if not np.all(np.isfinite(out)):
            raise HealthCheckError(
                f"model version {version}: smoke prediction is not finite (NaN/Inf);"
                " keeping the version being served",
                check="smoke",
            )
        accuracy, skipped = None, ""
        rows = 0 if hy is None else len(hy)
        if h.min_accuracy is not None and rows < max(1, h.min_holdout_rows):
            skipped = (
                f"accuracy check skipped: the local holdout has {rows} row(s), fewer than the"
                f" {max(1, h.min_holdout_rows)} it needs, so the floor {h.min_accuracy:.4f} was"
                " not checked"
            )
            log.warning("model version %s: %s", version, skipped)
        elif hx is not None and hy is not None:
            x = np.ascontiguousarray(hx, dtype=np.float32)
            accuracy = float(np.mean(run(x).argmax(axis=-1) == np.asarray(hy)))
            if h.min_accuracy is not None and accuracy < h.min_accuracy:
                raise HealthCheckError(
                    f"model version {version}: holdout accuracy {accuracy:.4f} (on {rows} rows)"
                    f" is below the floor {h.min_accuracy:.4f}; keeping the version being served",
                    check="accuracy",
                )
        return ServedModel(version, run, self._clock(), accuracy, skipped)
