"""Privacy layer costs: vectorised clipping and noise against per-item loops, and accountants.

Prints one table. Baselines are measured in the same run:

* ``clip_rows`` on a (devices, params) matrix of MNIST-2NN-sized updates (199,210 parameters)
  against clipping the same rows one at a time with ``clip_update``;
* the vectorised discrete Gaussian sampler against a scalar rejection loop (Canonne et al. 2020,
  Algorithm 3, one coordinate at a time), per million samples;
* RDP against PLD for the ``examples/mnist_dp.toml`` setting (50 of 1,000 devices, 50 rounds,
  δ = 1/1000^1.1): ε for the same z and the time to compute it, plus the z that Poisson and
  fixed-size selection each need for ε = 4.

The utility-versus-privacy figure of issue 4 needs the simulator's ``[privacy]`` hook and is not
measured here yet.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable

import numpy as np

from fedge.privacy import (
    PrivacyAccountant,
    calibrate_noise_multiplier,
    clip_rows,
    clip_update,
    default_delta,
    discrete_gaussian,
    secure_generator,
)

logging.getLogger("absl").setLevel(logging.ERROR)
PARAMS_2NN = 784 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10


def _time(fn: Callable[[], object], repeat: int = 3) -> float:
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _scalar_discrete_gaussian(n: int, sigma: float, rng: np.random.Generator) -> list[int]:
    t = math.floor(sigma) + 1
    p = -math.expm1(-1.0 / t)
    out: list[int] = []
    while len(out) < n:
        y = int(rng.geometric(p)) - int(rng.geometric(p))
        if rng.random() < math.exp(-((abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2)):
            out.append(y)
    return out


def main() -> None:
    rng = secure_generator()
    rows: list[tuple[str, float, float]] = []

    m = rng.normal(size=(100, PARAMS_2NN)).astype(np.float32)
    vec = _time(lambda: clip_rows(m, 1.0))
    loop = _time(lambda: [clip_update(r, 1.0) for r in m])
    rows.append(("clip 100 x 2NN updates (s)", vec, loop))

    n_small = 50_000
    vec = _time(lambda: discrete_gaussian(1_000_000, 30.0, rng))
    loop = _time(lambda: _scalar_discrete_gaussian(n_small, 30.0, rng), 1) * 1_000_000 / n_small
    rows.append(("discrete Gaussian, 1e6 samples (s)", vec, loop))

    print(f"{'operation':40s} {'fedge':>10s} {'baseline':>10s} {'speed-up':>9s}")
    for name, ours, base in rows:
        print(f"{name:40s} {ours:10.4f} {base:10.4f} {base / ours:8.1f}x")

    n, k, rounds = 1000, 50, 50
    delta = default_delta(n)
    print(f"\naccounting: {k} of {n} devices, {rounds} rounds, δ = {delta:.3g}")
    print(f"{'accountant':24s} {'z':>6s} {'epsilon':>9s} {'seconds':>8s}")
    for kind, sampling in (("rdp", "poisson"), ("pld", "poisson"), ("rdp", "fixed_size")):
        for z in (0.8, 1.2):
            t = time.perf_counter()
            acc = PrivacyAccountant(
                z, k / n, delta, "pld" if kind == "pld" else "rdp",
                sampling="fixed_size" if sampling == "fixed_size" else "poisson", fleet_size=n,
            )  # fmt: skip
            eps = acc.epsilon_after(rounds)
            print(f"{kind + '/' + sampling:24s} {z:6.2f} {eps:9.3f} {time.perf_counter() - t:8.3f}")
    z_p = calibrate_noise_multiplier(4.0, delta, rounds, k, n)
    z_f = calibrate_noise_multiplier(4.0, delta, rounds, k, n, sampling="fixed_size")
    print(f"\nz for ε = 4: Poisson selection {z_p:.3f}, fixed-size selection {z_f:.3f}")


if __name__ == "__main__":
    main()
