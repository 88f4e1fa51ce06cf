"""The three edge use cases: physics-based fleet generators, public-data loaders, features.

- :mod:`~fedge.usecases.maintenance` (+ :mod:`~fedge.usecases.vibration`): rotating machines at
  sites; bearing defect frequencies, resonance, imbalance, misalignment, temperature.
- :mod:`~fedge.usecases.wearables`: patients' accelerometer, gyroscope and heart rate.
- :mod:`~fedge.usecases.traffic` (+ :mod:`~fedge.usecases.telemetry`): cars under the
  Intelligent Driver Model; windows labelled "harsh braking / unsafe headway ahead".
- Loaders for the public data sets users bring: :mod:`~fedge.usecases.uci_har`,
  :mod:`~fedge.usecases.cwru`, :mod:`~fedge.usecases.cmapss`, and the telemetry CSV layout;
  :mod:`~fedge.usecases.local` makes them ``fedge simulate`` tasks (a ``[data]`` section).
- Metrics for rare classes: per-class recall (:mod:`~fedge.usecases.metrics`,
  :mod:`~fedge.usecases.scores`) and, for a binary model read as a score, AUROC, PR-AUC and
  recall at a false-alarm rate (:mod:`~fedge.usecases.ranking`).
"""

from fedge.usecases.fleet import Fleet, split_fleet, standardize
from fedge.usecases.metrics import balanced_accuracy, confusion_matrix, per_class_recall

__all__ = [
    "Fleet",
    "balanced_accuracy",
    "confusion_matrix",
    "per_class_recall",
    "split_fleet",
    "standardize",
]
