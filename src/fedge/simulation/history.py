"""Per-round records of a simulation and the files written with ``--out``."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["History", "RoundRecord", "plot_series", "pyplot", "style_round_axes"]


@dataclass(frozen=True)
class RoundRecord:
    """What happened in one round. Accuracy/loss are centralised (held-out test set)."""

    round: int
    accuracy: float | None  # centralised test accuracy of the new global model
    loss: float | None  # centralised test loss
    federated_accuracy: float | None  # the new model on the participants' local data
    federated_loss: float | None
    train_loss: float  # mean local training loss reported by participants
    participants: int  # updates accepted into the aggregate
    rejected: int  # updates refused (non-finite, mis-shaped...)
    seconds: float  # wall time of the round, evaluation included
    epsilon: float | None = None  # privacy spent so far (when differential privacy is on)
    # Tasks with per-class recall (``Task.class_recall``), on the same held-out test set:
    balanced_accuracy: float | None = None  # mean recall over the classes (macro recall)
    recall: list[float | None] | None = None  # recall of each class, in label order
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; NaN becomes null."""
        out = asdict(self)
        for k, v in out.items():
            if isinstance(v, float) and not math.isfinite(v):
                out[k] = None
        return out


@dataclass
class History:
    """All rounds of a run plus the configuration that produced them."""

    config: dict[str, Any]
    records: list[RoundRecord] = field(default_factory=list)
    stopped_reason: str | None = None

    @property
    def final(self) -> RoundRecord:
        """The last round's record."""
        return self.records[-1]

    def write(self, out_dir: str | Path, *, plot: bool = True) -> list[Path]:
        """Write history.json, history.csv and (if ``plot``) history.png; return the paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rows = [r.to_dict() for r in self.records]
        json_path = out / "history.json"
        json_path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        (out / "config.json").write_text(json.dumps(self.config, indent=2) + "\n", encoding="utf-8")
        csv_path = out / "history.csv"
        fields = [k for k in RoundRecord.__dataclass_fields__ if k not in ("extra", "recall")]
        classes = max((len(r.recall) for r in self.records if r.recall is not None), default=0)
        fields += [f"recall_{c}" for c in range(classes)]  # one column per class
        with csv_path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                recall = row.get("recall") or []
                writer.writerow(row | {f"recall_{c}": v for c, v in enumerate(recall)})
        paths = [json_path, csv_path]
        if plot and rows:
            paths.append(self.plot(out / "history.png"))
        return paths

    def plot(self, path: str | Path) -> Path:
        """A PNG of accuracy (and balanced accuracy) and loss per round."""
        plt = pyplot()
        rounds = [r.round for r in self.records]
        fig, (ax_acc, ax_loss) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
        for attr, label, ax in (
            ("accuracy", "centralised (test set)", ax_acc),
            ("balanced_accuracy", "balanced accuracy (test set)", ax_acc),
            ("federated_accuracy", "federated (devices)", ax_acc),
            ("loss", "centralised (test set)", ax_loss),
            ("federated_loss", "federated (devices)", ax_loss),
            ("train_loss", "local training", ax_loss),
        ):
            plot_series(ax, rounds, [getattr(r, attr) for r in self.records], label)
        style_round_axes(ax_acc, "accuracy", "Accuracy")
        style_round_axes(ax_loss, "loss", "Loss")
        title = f"{self.config.get('task', '')} · {self.config.get('strategy', {}).get('name', '')}"
        fig.suptitle(title)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return Path(path)


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_series(
    ax: Any, rounds: Sequence[int], values: Sequence[float | None], label: str, **style: Any
) -> None:
    """Plot one per-round series on ``ax``, skipping rounds without a finite value."""
    pts = [
        (x, v) for x, v in zip(rounds, values, strict=True) if v is not None and math.isfinite(v)
    ]
    if pts:
        ax.plot(*zip(*pts, strict=True), marker="o", markersize=3, label=label, **style)


def style_round_axes(ax: Any, ylabel: str, title: str) -> None:
    """Rounds on the x axis (whole numbers), a light grid, the legend when there is one."""
    from matplotlib.ticker import MaxNLocator

    ax.set(xlabel="round", ylabel=ylabel, title=title)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
