"""Vibration physics of a rotating machine with rolling-element bearings, and its features.

The signal model follows the bearing-diagnostics literature (McFadden & Smith 1984, "Model for
the vibration produced by a single point defect in a rolling element bearing", J. Sound Vib.
96(1); Randall & Antoni 2011, "Rolling element bearing diagnostics — a tutorial", MSSP 25(2)):

- **Shaft-synchronous tones.** Residual or fault **imbalance** is a rotating centrifugal force
  m·e·ω², so its 1× (shaft frequency f_r) amplitude grows with the square of speed.
  **Misalignment** adds a dominant 2× component (and some 1×, 3×). A pump impeller adds its
  vane-pass tone at z·f_r.
- **Bearing defects.** Each time a rolling element passes a spall it strikes it, and the impulse
  rings the machine's structural resonance f_n (a few kHz) as a decaying sinusoid
  h(t) = exp(−2πζf_n t)·sin(2πf_n√(1−ζ²) t). The strikes repeat at the defect frequencies
  BPFO = (n/2)·f_r·(1 − (d/D)cos φ) for the outer race and BPFI = (n/2)·f_r·(1 + (d/D)cos φ) for
  the inner race (n balls of diameter d on pitch diameter D, contact angle φ), with 1–2 % random
  jitter from slip. An outer-race spall sits still in the load zone, so its strikes have equal
  strength; an inner-race spall rotates with the shaft through the load zone, so its strikes are
  amplitude-modulated at f_r (sidebands at BPFI ± f_r in the envelope spectrum).
- **Sensor.** Broadband noise, and a per-machine gain (mounting, sensitivity).

Features (:func:`vibration_features`) are what a condition-monitoring unit computes on the edge:
the 1×/2×/3× amplitudes, the envelope spectrum (demodulated resonance band) sampled on an order
grid (multiples of f_r, so defect frequencies sit at fixed orders whatever the speed), RMS,
kurtosis and crest factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "BEARINGS",
    "ENVELOPE_ORDERS",
    "VIBRATION_FEATURES",
    "BearingGeometry",
    "vibration_features",
    "vibration_window",
]

FloatArray = NDArray[np.float64]
ENVELOPE_ORDERS = np.arange(0.5, 12.5, 0.25)  # lower edges of the envelope-spectrum order bins
_ENVELOPE_BAND_HZ = (1_500.0, 5_500.0)  # demodulation band around the structural resonances
# The columns of :func:`vibration_features`, in order (select columns by name, not position).
VIBRATION_FEATURES = (
    "amp_1x",
    "amp_2x",
    "amp_3x",
    *(f"env_order_{o:.2f}" for o in ENVELOPE_ORDERS),
    "log_rms",
    "log_kurtosis",
    "crest_factor",
)


@dataclass(frozen=True)
class BearingGeometry:
    """Rolling-element bearing geometry; defect frequencies as multiples of shaft speed."""

    name: str
    balls: int
    ball_diameter: float  # d (any unit, same as pitch_diameter)
    pitch_diameter: float  # D
    contact_angle_deg: float = 0.0

    @property
    def _ratio(self) -> float:
        return (
            self.ball_diameter
            / self.pitch_diameter
            * math.cos(math.radians(self.contact_angle_deg))
        )

    @property
    def bpfo_order(self) -> float:
        """Ball-pass frequency, outer race, per shaft revolution: (n/2)(1 − (d/D)cos φ)."""
        return self.balls / 2 * (1 - self._ratio)

    @property
    def bpfi_order(self) -> float:
        """Ball-pass frequency, inner race, per shaft revolution: (n/2)(1 + (d/D)cos φ)."""
        return self.balls / 2 * (1 + self._ratio)


BEARINGS = (
    # The two bearings of the CWRU test rig (inches), and a larger deep-groove bearing (mm).
    BearingGeometry("SKF 6205-2RS JEM", 9, 0.3126, 1.537),
    BearingGeometry("NTN 6203-2RS", 8, 0.2656, 1.122),
    BearingGeometry("SKF 6206", 9, 9.525, 46.0),
)


def _ringing(fs: float, fn: float, zeta: float, length: int) -> FloatArray:
    t = np.arange(length) / fs
    out: FloatArray = np.exp(-2 * np.pi * zeta * fn * t) * np.sin(
        2 * np.pi * fn * math.sqrt(1 - zeta**2) * t
    )
    return out


def vibration_window(
    rng: np.random.Generator,
    *,
    fs: float,
    samples: int,
    shaft_hz: float,
    load: float,
    bearing: BearingGeometry,
    resonance_hz: float,
    damping: float,
    residual_imbalance: float,
    base_2x: float,
    vane_order: int,
    noise: float,
    gain: float,
    fault: str,
    severity: float,
) -> FloatArray:
    """One accelerometer window (m/s²) of a machine at ``shaft_hz`` under ``load`` ∈ [0, 1].

    ``fault`` is "healthy", "imbalance", "misalignment", "outer" or "inner"; ``severity`` ∈
    [0, 1] scales its signature (0: no defect).
    """
    t = (np.arange(samples) + rng.integers(0, 10 * samples)) / fs
    speed2 = (shaft_hz / 25.0) ** 2  # centrifugal forces scale with ω²
    s = severity
    a1 = (residual_imbalance + (1.5 * s if fault == "imbalance" else 0.0)) * speed2
    a1 += 0.4 * s if fault == "misalignment" else 0.0
    a2 = base_2x + (1.2 * s if fault == "misalignment" else 0.0)
    a3 = 0.3 * s if fault == "misalignment" else 0.02
    phases = rng.uniform(0, 2 * np.pi, size=4)
    w = 2 * np.pi * shaft_hz
    x = (
        a1 * np.sin(w * t + phases[0])
        + a2 * np.sin(2 * w * t + phases[1])
        + a3 * np.sin(3 * w * t + phases[2])
        + 0.15 * (0.5 + load) * np.sin(vane_order * w * t + phases[3])
    )
    if fault in ("outer", "inner") and s > 0:
        order = bearing.bpfo_order if fault == "outer" else bearing.bpfi_order
        period = 1.0 / (order * shaft_hz)
        count = int(samples / fs / period) + 2
        strikes = (
            t[0]
            + period * (np.arange(count) + rng.uniform(0, 1))
            + rng.normal(0, 0.015 * period, count)
        )
        strength = np.full(count, 4.0 * s * (0.5 + 0.5 * load))
        if fault == "inner":  # the spall rotates through the load zone once per revolution
            zone = 0.5 + 0.5 * np.cos(w * strikes + rng.uniform(0, 2 * np.pi))
            strength *= zone**1.5
        spikes = np.zeros(samples)
        pos = np.round((strikes - t[0]) * fs).astype(np.int64)
        ok = (pos >= 0) & (pos < samples)
        np.add.at(spikes, pos[ok], strength[ok])
        kernel = _ringing(fs, resonance_hz, damping, 160)
        x += np.convolve(spikes, kernel)[:samples]
    x += rng.normal(0.0, noise, samples)
    scaled: FloatArray = gain * x
    return scaled


def vibration_features(
    windows: FloatArray, fs: float, shaft_hz: FloatArray
) -> tuple[NDArray[np.float32], tuple[str, ...]]:
    """Edge features of vibration windows (rows) recorded at ``shaft_hz`` (one per row)."""
    w, n = windows.shape
    x = windows - windows.mean(axis=1, keepdims=True)
    df = fs / n
    spectrum = np.abs(np.fft.rfft(x * np.hanning(n), axis=1)) * (4.0 / n)
    rows = np.arange(w)
    harmonics = []
    for k in (1, 2, 3):
        centre = np.round(k * shaft_hz / df).astype(np.int64)
        near = np.stack([spectrum[rows, np.clip(centre + o, 0, n // 2)] for o in (-1, 0, 1)])
        harmonics.append(np.log10(near.max(axis=0) + 1e-4))
    # Envelope: keep the resonance band, take the analytic signal's magnitude, then its spectrum.
    full = np.fft.fft(x, axis=1)
    freqs = np.abs(np.fft.fftfreq(n, 1 / fs))
    band = (freqs >= _ENVELOPE_BAND_HZ[0]) & (freqs <= _ENVELOPE_BAND_HZ[1])
    analytic_gain = np.where(np.fft.fftfreq(n) > 0, 2.0, 0.0) * band
    envelope = np.abs(np.fft.ifft(full * analytic_gain, axis=1))
    envelope -= envelope.mean(axis=1, keepdims=True)
    env_spec = np.abs(np.fft.rfft(envelope * np.hanning(n), axis=1)) * (4.0 / n)
    orders = np.arange(env_spec.shape[1])[None, :] * df / shaft_hz[:, None]
    step = ENVELOPE_ORDERS[1] - ENVELOPE_ORDERS[0]
    bins = np.floor((orders - ENVELOPE_ORDERS[0]) / step).astype(np.int64)
    valid = (bins >= 0) & (bins < len(ENVELOPE_ORDERS))
    env_bins = np.zeros((w, len(ENVELOPE_ORDERS)))
    r_idx = np.broadcast_to(rows[:, None], bins.shape)
    np.maximum.at(env_bins, (r_idx[valid], bins[valid]), env_spec[valid])
    rms = np.sqrt((x**2).mean(axis=1))
    kurtosis = (x**4).mean(axis=1) / np.maximum(rms**4, 1e-12)
    crest = np.abs(x).max(axis=1) / np.maximum(rms, 1e-12)
    features = np.column_stack(
        [
            *harmonics,
            np.log10(env_bins + 1e-4),
            np.log10(rms + 1e-6),
            np.log(kurtosis),
            crest,
        ]
    ).astype(np.float32)
    return features, VIBRATION_FEATURES
