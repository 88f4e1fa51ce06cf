"""Privacy accounting over rounds with Google's ``dp_accounting`` (RDP and PLD).

The unit protected is a *device* (user-level DP): everything one device contributes in a round is
one clipped update, so one round of DP-FedAvg is one sampled Gaussian query with noise multiplier z
(McMahan et al. 2018, arXiv:1710.06963). Rounds compose; ε is reported for the job's δ.

Two accountants, both from ``dp_accounting``:

- ``"rdp"``: Rényi DP (Mironov 2017, arXiv:1702.07476) with amplification by Poisson sampling
  (Mironov, Talwar, Zhang 2019, arXiv:1908.10530), converted to (ε, δ) with the improved
  conversion of Balle et al. 2020 (arXiv:1905.09982). Fast; ε is an upper bound.
- ``"pld"``: privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022,
  arXiv:2207.04380). Tighter, slower.

How devices are sampled matters, and the accountant must match it (``sampling``):

- ``"poisson"``: every device joins a round independently with probability q = K/N, so the number
  of participants varies around K. This is what DP-FedAvg's analysis assumes and what the
  fixed-denominator mean (divide by K, not by the count) is built for. Neighbouring relation:
  add/remove one device. Supported by both accountants. **This is the recommended selection
  whenever DP is on.**
- ``"fixed_size"``: a uniformly random set of exactly K of N devices each round -- what the fedge
  simulator's selector does today. The valid amplification result for it is sampling without
  replacement under the *replace-one* relation (Wang, Balle, Kasiviswanathan 2019,
  arXiv:1808.00087; ``dp_accounting.SampledWithoutReplacementDpEvent``, RDP only). Replacing one
  device moves the clipped sum by up to 2C, so the Gaussian's multiplier relative to that
  sensitivity is z/2, and ε is much larger than Poisson's for the same z. Reporting Poisson ε for a
  fixed-size selection would be wrong (it is a common mistake: Lebeda et al. 2024,
  arXiv:2405.20769), so fedge never does it silently.

Adaptive clipping (Andrew et al. 2021, arXiv:1905.03871) adds a second Gaussian query per round --
the noisy count of unclipped updates, std σ_b, sensitivity ½. Pass ``clip_count_stddev=σ_b`` and the
accountant composes both queries of the round (for RDP as a ``ComposedDpEvent`` inside the sampling
event; for PLD as the one Gaussian with multiplier (z⁻² + (2σ_b)⁻²)^(−½), which is exactly the same
mechanism since both queries see the same sample).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import NDArray

from fedge.errors import ConfigError

if TYPE_CHECKING:  # dp_accounting (and scipy under it) take ~1 s to import: only when accounting
    import dp_accounting
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

__all__ = [
    "PLD_DISCRETIZATION",
    "AccountantKind",
    "PrivacyAccountant",
    "Sampling",
    "classic_rdp_to_epsilon",
    "local_epsilon",
    "round_event",
]

AccountantKind = Literal["rdp", "pld"]
Sampling = Literal["poisson", "fixed_size"]
# PLD grid step. dp_accounting's default is 1e-4; its discretization is pessimistic (ε stays an
# upper bound), and 1e-3 is ~10x faster while moving ε by ~1e-5 on the reference cases.
PLD_DISCRETIZATION = 1e-3


def _validate(
    noise_multiplier: float,
    sampling_rate: float,
    sampling: str,
    fleet_size: int | None,
    clip_count_stddev: float | None,
) -> None:
    if not (math.isfinite(noise_multiplier) and noise_multiplier >= 0):
        raise ConfigError(f"noise_multiplier must be a finite number >= 0, got {noise_multiplier}")
    if not 0.0 < sampling_rate <= 1.0:
        raise ConfigError(
            f"sampling_rate must be in (0, 1] (devices per round / fleet size), got {sampling_rate}"
        )
    if sampling not in ("poisson", "fixed_size"):
        raise ConfigError(f"sampling must be 'poisson' or 'fixed_size', got {sampling!r}")
    if sampling == "fixed_size" and (fleet_size is None or fleet_size < 1):
        raise ConfigError("sampling='fixed_size' needs fleet_size (the number of devices N >= 1)")
    if clip_count_stddev is not None and not clip_count_stddev > 0:
        raise ConfigError(f"clip_count_stddev must be > 0 when given, got {clip_count_stddev}")


def round_event(
    noise_multiplier: float,
    sampling_rate: float,
    *,
    sampling: Sampling = "poisson",
    fleet_size: int | None = None,
    clip_count_stddev: float | None = None,
) -> dp_accounting.DpEvent:
    """The ``DpEvent`` of one round: sampled Gaussian sum (+ adaptive-clipping count query)."""
    import dp_accounting

    _validate(noise_multiplier, sampling_rate, sampling, fleet_size, clip_count_stddev)
    scale = 0.5 if sampling == "fixed_size" else 1.0  # replace-one doubles the sensitivity
    queries: list[dp_accounting.DpEvent] = [dp_accounting.GaussianDpEvent(noise_multiplier * scale)]
    if clip_count_stddev is not None:
        queries.append(dp_accounting.GaussianDpEvent(2.0 * clip_count_stddev * scale))
    inner = queries[0] if len(queries) == 1 else dp_accounting.ComposedDpEvent(queries)
    if sampling == "fixed_size":
        assert fleet_size is not None
        k = max(1, round(sampling_rate * fleet_size))
        return dp_accounting.SampledWithoutReplacementDpEvent(fleet_size, k, inner)
    if sampling_rate == 1.0:
        return inner
    return dp_accounting.PoissonSampledDpEvent(sampling_rate, inner)


def classic_rdp_to_epsilon(
    orders: Sequence[float] | NDArray[np.float64],
    rdp: Sequence[float] | NDArray[np.float64],
    delta: float,
) -> float:
    """Mironov's (2017, Prop. 3) conversion min_α rdp(α) + log(1/δ)/(α−1), as in Abadi et al."""
    o = np.asarray(orders, dtype=np.float64)
    r = np.asarray(rdp, dtype=np.float64)
    keep = o > 1
    return float(np.min(r[keep] + math.log(1.0 / delta) / (o[keep] - 1.0)))


class PrivacyAccountant:
    """ε(δ) of a job after each round: ``step()`` per round, ``epsilon()`` for the running total.

    The only state is the number of rounds run, so a checkpoint stores ``rounds`` and a resumed
    job calls ``step(rounds)`` once. ``noise_multiplier`` is the multiplier of the update sum (with
    adaptive clipping, z_Δ; see :func:`fedge.privacy.clipping.update_noise_multiplier`).
    """

    def __init__(
        self,
        noise_multiplier: float,
        sampling_rate: float,
        delta: float,
        kind: AccountantKind = "rdp",
        *,
        sampling: Sampling = "poisson",
        fleet_size: int | None = None,
        clip_count_stddev: float | None = None,
        pld_discretization: float = PLD_DISCRETIZATION,
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ConfigError(f"delta must be in (0, 1) (e.g. 1/N^1.1 for N devices), got {delta}")
        if kind not in ("rdp", "pld"):
            raise ConfigError(f"accountant must be 'rdp' or 'pld', got {kind!r}")
        if kind == "pld" and sampling == "fixed_size":
            raise ConfigError(
                "dp_accounting's PLD accountant has no sampling-without-replacement event: with "
                "fixed-size device selection use accountant = 'rdp' (or select devices by "
                "Poisson sampling)"
            )
        self.noise_multiplier = noise_multiplier
        self.sampling_rate = sampling_rate
        self.delta = delta
        self.kind: AccountantKind = kind
        self.sampling: Sampling = sampling
        self.fleet_size = fleet_size
        self.clip_count_stddev = clip_count_stddev
        self.pld_discretization = pld_discretization
        self.event = round_event(
            noise_multiplier,
            sampling_rate,
            sampling=sampling,
            fleet_size=fleet_size,
            clip_count_stddev=clip_count_stddev,
        )
        self._rounds = 0
        self._cache: dict[int, float] = {0: 0.0}
        self._rdp_one: tuple[NDArray[np.float64], NDArray[np.float64]] | None = None
        self._pld_one: pld_lib.PrivacyLossDistribution | None = None

    @property
    def rounds(self) -> int:
        """Rounds accounted so far."""
        return self._rounds

    @property
    def effective_noise_multiplier(self) -> float:
        """One Gaussian's multiplier equal to this round's queries (with the count query)."""
        z = self.noise_multiplier
        if self.clip_count_stddev is None or z == 0:
            return z
        return float((z**-2 + (2.0 * self.clip_count_stddev) ** -2) ** -0.5)

    def step(self, rounds: int = 1) -> float:
        """Account for ``rounds`` more rounds; returns ε after them."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        self._rounds += rounds
        return self.epsilon()

    def epsilon(self) -> float:
        """ε for this accountant's δ after the rounds accounted so far."""
        return self.epsilon_after(self._rounds)

    def epsilon_after(self, rounds: int) -> float:
        """ε for this accountant's δ after ``rounds`` rounds in total (state unchanged)."""
        if rounds < 0:
            raise ValueError(f"rounds must be >= 0, got {rounds}")
        if rounds not in self._cache:
            self._cache[rounds] = self._compute(rounds)
        return self._cache[rounds]

    def rdp_curve(
        self, rounds: int | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(orders, RDP values) after ``rounds`` (default: so far); RDP accountant only."""
        if self.kind != "rdp":
            raise ConfigError("rdp_curve() needs kind='rdp'")
        orders, one = self._rdp_round()
        return orders, one * (self._rounds if rounds is None else rounds)

    def _rdp_round(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        import dp_accounting
        from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

        if self._rdp_one is None:
            relation = (
                dp_accounting.NeighboringRelation.REPLACE_ONE
                if self.sampling == "fixed_size"
                else dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
            )
            acc = rdp_lib.RdpAccountant(neighboring_relation=relation)
            acc.compose(self.event)
            self._rdp_one = (np.asarray(acc.orders, np.float64), np.asarray(acc.rdp, np.float64))
        return self._rdp_one

    def _compute(self, rounds: int) -> float:
        from dp_accounting.pld import privacy_loss_distribution as pld_lib
        from dp_accounting.rdp import rdp_privacy_accountant as rdp_lib

        if self.noise_multiplier == 0:
            return math.inf
        if self.kind == "rdp":
            orders, one = self._rdp_round()
            return float(rdp_lib.compute_epsilon(orders, one * rounds, self.delta)[0])
        if self._pld_one is None:
            self._pld_one = pld_lib.from_gaussian_mechanism(
                standard_deviation=self.effective_noise_multiplier,
                value_discretization_interval=self.pld_discretization,
                sampling_prob=self.sampling_rate,
            )
        return float(self._pld_one.self_compose(rounds).get_epsilon_for_delta(self.delta))


def local_epsilon(
    local_noise_multiplier: float, rounds: int, delta: float, kind: AccountantKind = "rdp"
) -> float:
    """ε of local DP after a device took part in ``rounds`` rounds (no sampling amplification).

    Under local DP the adversary sees the device's own noised update, and any two updates of norm
    ≤ C differ by up to 2C: each round is a Gaussian mechanism with multiplier z_local/2.
    """
    if not local_noise_multiplier > 0:
        raise ConfigError(f"local noise_multiplier must be > 0, got {local_noise_multiplier}")
    return PrivacyAccountant(local_noise_multiplier / 2.0, 1.0, delta, kind).epsilon_after(rounds)
