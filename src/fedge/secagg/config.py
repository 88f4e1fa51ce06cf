"""Secure-aggregation parameters that are safe by construction.

:class:`SecAggConfig` is what a user writes (clip range, bits, expected dropout rate, tolerated
corrupt fraction, optionally an explicit neighbour count ``k`` and threshold ``t``);
:meth:`SecAggConfig.resolve` turns it into :class:`SessionParams` for ``n`` devices, or refuses.

Graph and threshold follow SecAgg+ (Bell et al. 2020, arXiv:2009.00727, §3–4): every device is
joined to ``k`` others in a Harary graph H(k, n) on a random permutation of the devices, and its
secrets are Shamir-shared among those ``k`` neighbours with threshold ``t``. We choose the
smallest even ``k`` (or the complete graph, which is SecAgg of Bonawitz et al. 2017) such that,
with the security parameter σ and the correctness parameter η:

* ``t > k/2`` always (so the server can never collect both kinds of share of one device from
  honest neighbours, given that each honest device answers only one unmask request);
* **privacy**: ``n · P[corrupt neighbours ≥ t] ≤ 2^-σ`` with ``⌊γn⌋`` corrupt devices
  (hypergeometric tail), and — for a sparse graph — ``n · P[k/2 consecutive ring positions are
  all dropped or corrupt] ≤ 2^-σ``, which keeps the honest survivors connected so the server
  cannot learn the sum of a sub-group;
* **correctness**: ``n · P[Binomial(k, δ) > k - t] ≤ 2^-η``, the chance that some neighbourhood
  falls below ``t`` so the round must be abandoned. When even the complete graph misses it (small
  ``n``), the complete graph is used and the residual probability is reported.

Quantisation: values clipped to ``[lo, hi]`` map to integers ``0..levels``; the sum of ``n`` of
them must stay below ``2^bits``, i.e. ``n · levels < 2^bits``, or the modular sum wraps. A config
that could overflow is refused with the numbers that make it unsafe.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from fedge.errors import SecAggConfigError

__all__ = ["MAX_VECTOR_LENGTH", "SecAggConfig", "SessionParams", "derive_graph_parameters"]

MAX_VECTOR_LENGTH = 50_000_000
_MAX_FLOAT_LEVELS = 2**52  # keep dequantisation exact in float64


@dataclass(frozen=True)
class SessionParams:
    """Everything the devices, relays and coordinator of one round agree on."""

    n: int  # devices selected for the round
    neighbours: int  # k; n - 1 means the complete graph (plain SecAgg)
    threshold: int  # t, Shamir reconstruction threshold, > k/2
    bits: int  # arithmetic modulo 2^bits
    levels: int  # quantisation levels per device; n * levels < 2^bits
    clip_lo: float
    clip_hi: float
    length: int  # vector length L
    clip_inputs: bool = True  # clip out-of-range inputs (True) or refuse them (False)
    # log2 P[round abandoned] at the expected dropout rate (informative; not sent, not compared)
    log2_failure: float = field(default=float("-inf"), compare=False)

    @property
    def complete(self) -> bool:
        """True when every device neighbours every other one (SecAgg, Bonawitz et al. 2017)."""
        return self.neighbours >= self.n - 1

    @property
    def step(self) -> float:
        """Width of one quantisation step."""
        return (self.clip_hi - self.clip_lo) / self.levels

    def to_dict(self) -> dict[str, object]:
        """JSON-able form, carried in the signed round setup."""
        return {
            "n": self.n,
            "neighbours": self.neighbours,
            "threshold": self.threshold,
            "bits": self.bits,
            "levels": self.levels,
            "clip_lo": self.clip_lo,
            "clip_hi": self.clip_hi,
            "length": self.length,
            "clip_inputs": self.clip_inputs,
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> SessionParams:
        """Parse :meth:`to_dict`, re-checking every safety rule."""
        try:
            params = cls(
                n=_as_int(data["n"]),
                neighbours=_as_int(data["neighbours"]),
                threshold=_as_int(data["threshold"]),
                bits=_as_int(data["bits"]),
                levels=_as_int(data["levels"]),
                clip_lo=float(data["clip_lo"]),  # type: ignore[arg-type]
                clip_hi=float(data["clip_hi"]),  # type: ignore[arg-type]
                length=_as_int(data["length"]),
                clip_inputs=bool(data["clip_inputs"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SecAggConfigError(f"malformed session parameters: {exc}") from None
        params.check()
        return params

    def check(self) -> None:
        """Refuse unsafe or inconsistent parameters (threshold, overflow, sizes)."""
        if self.n < 3:
            raise SecAggConfigError(
                f"secure aggregation needs at least 3 devices, got {self.n}: with two, each "
                "device could subtract its own input from the sum"
            )
        k, t = self.neighbours, self.threshold
        if not 2 <= k <= self.n - 1:
            raise SecAggConfigError(f"neighbours k={k} must be in [2, n-1={self.n - 1}]")
        if k < self.n - 1 and k % 2:
            raise SecAggConfigError(f"neighbours k={k} must be even for a Harary graph (or n-1)")
        if not k / 2 < t <= k:
            raise SecAggConfigError(
                f"threshold t={t} must satisfy k/2 < t <= k (k={k}): with t <= k/2 a server "
                "could gather a device's self-mask and key shares from disjoint neighbours"
            )
        if not 2 <= self.bits <= 64:
            raise SecAggConfigError(f"bits={self.bits} must be in [2, 64]")
        if self.levels < 1 or self.n * self.levels >= 2**self.bits:
            raise SecAggConfigError(
                f"overflow: n·levels = {self.n}·{self.levels} = {self.n * self.levels} is not "
                f"below the modulus 2^{self.bits}; the modular sum could wrap. Use more bits, "
                "fewer levels or fewer devices per round"
            )
        if not (math.isfinite(self.clip_lo) and math.isfinite(self.clip_hi)):
            raise SecAggConfigError("clip range must be finite")
        if not self.clip_lo < self.clip_hi:
            raise SecAggConfigError(f"clip range [{self.clip_lo}, {self.clip_hi}] is empty")
        if not 1 <= self.length <= MAX_VECTOR_LENGTH:
            raise SecAggConfigError(f"vector length {self.length} not in [1, {MAX_VECTOR_LENGTH}]")


def _as_int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


@dataclass(frozen=True)
class SecAggConfig:
    """User-facing secure-aggregation settings (validated; see the module docstring)."""

    clip_range: tuple[float, float] = (-1.0, 1.0)  # each coordinate is clipped to this range
    bits: int = 32  # modulus 2^bits; 32 → uint32 vectors, up to 64 → uint64
    levels: int | None = None  # quantisation levels per device; None: (2^bits - 1) // n
    neighbours: int | None = None  # k; None: derived from n, dropout and corruption
    threshold: int | None = None  # t; None: derived (must be given together with k)
    dropout_rate: float = 0.1  # expected fraction of devices that vanish during a round
    corrupt_fraction: float = 0.05  # fraction of devices that may collude with the server
    security_bits: int = 40  # σ: privacy failure probability ≤ 2^-σ
    correctness_bits: int = 20  # η: target for P[round abandoned] ≤ 2^-η
    clip_inputs: bool = True  # clip out-of-range values; False refuses them

    def __post_init__(self) -> None:
        lo, hi = self.clip_range
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise SecAggConfigError(f"clip_range {self.clip_range} must be finite with lo < hi")
        if not 2 <= self.bits <= 64:
            raise SecAggConfigError(f"bits={self.bits} must be in [2, 64]")
        if not 0.0 <= self.dropout_rate < 0.5:
            raise SecAggConfigError(
                f"dropout_rate={self.dropout_rate} must be in [0, 0.5): at half the devices gone "
                "no threshold above k/2 can be met"
            )
        if not 0.0 <= self.corrupt_fraction < 0.5:
            raise SecAggConfigError(f"corrupt_fraction={self.corrupt_fraction} must be in [0, 0.5)")
        if (self.neighbours is None) != (self.threshold is None):
            raise SecAggConfigError("give both neighbours and threshold, or neither (derived)")
        if self.security_bits < 1 or self.correctness_bits < 1:
            raise SecAggConfigError("security_bits and correctness_bits must be positive")

    def resolve(self, n: int, length: int) -> SessionParams:
        """Session parameters for ``n`` devices and vectors of ``length``, or a refusal."""
        if n < 3:
            raise SecAggConfigError(f"secure aggregation needs at least 3 devices, got {n}")
        if self.neighbours is None or self.threshold is None:
            k, t, log2_fail = derive_graph_parameters(
                n, self.dropout_rate, self.corrupt_fraction, self.security_bits,
                self.correctness_bits,
            )  # fmt: skip
        else:
            k, t = min(self.neighbours, n - 1), self.threshold
            log2_fail = _check_explicit(n, k, t, self)
        levels = (
            self.levels
            if self.levels is not None
            else min((2**self.bits - 1) // n, _MAX_FLOAT_LEVELS)
        )
        params = SessionParams(
            n=n, neighbours=k, threshold=t, bits=self.bits, levels=levels,
            clip_lo=float(self.clip_range[0]), clip_hi=float(self.clip_range[1]),
            length=length, clip_inputs=self.clip_inputs, log2_failure=log2_fail,
        )  # fmt: skip
        params.check()
        if params.levels < 2:
            raise SecAggConfigError(
                f"{self.bits} bits leave fewer than 2 quantisation levels for {n} devices; "
                "raise bits"
            )
        return params


# ---------------------------------------------------------------------------------------------
# Tail bounds (log domain, natural log)


def _log_comb(a: int, b: int) -> float:
    return math.lgamma(a + 1) - math.lgamma(b + 1) - math.lgamma(a - b + 1)


def _log_sum_exp(terms: list[float]) -> float:
    finite = [x for x in terms if x != float("-inf")]
    if not finite:
        return float("-inf")
    top = max(finite)
    return top + math.log(sum(math.exp(x - top) for x in finite))


def _log_binom_tail(k: int, p: float, m: int) -> float:
    """log P[Binomial(k, p) >= m]."""
    if m <= 0:
        return 0.0
    if m > k or p == 0.0:
        return float("-inf")
    lp, lq = math.log(p), math.log1p(-p)
    return _log_sum_exp([_log_comb(k, i) + i * lp + (k - i) * lq for i in range(m, k + 1)])


def _log_hypergeom_tail(population: int, marked: int, draws: int, m: int) -> float:
    """log P[X >= m] for X marked items among ``draws`` taken without replacement."""
    hi = min(marked, draws)
    if m <= 0:
        return 0.0
    if m > hi:
        return float("-inf")
    total = _log_comb(population, draws)
    return _log_sum_exp(
        [
            _log_comb(marked, i) + _log_comb(population - marked, draws - i) - total
            for i in range(m, hi + 1)
            if draws - i <= population - marked
        ]
    )


def _log_window_all_bad(n: int, bad: int, width: int) -> float:
    """log P[a given window of ``width`` ring positions holds only bad devices]."""
    if width > bad:
        return float("-inf")
    return sum(math.log((bad - i) / (n - i)) for i in range(width))


def _security_failure(n: int, k: int, t: int, dropout: float, corrupt: float) -> tuple[float, str]:
    """(log P[privacy failure], explanation) for the graph H(k, n) and threshold t."""
    corrupt_count = math.floor(corrupt * n)
    log_n = math.log(n)
    log_corrupt = log_n + _log_hypergeom_tail(n - 1, corrupt_count, k, t)
    why = f"{corrupt_count} corrupt devices reach t={t} shares of a neighbour"
    if k >= n - 1:
        return log_corrupt, why
    bad = min(n, math.ceil((dropout + corrupt) * n))
    log_gap = log_n + _log_window_all_bad(n, bad, k // 2)
    if log_gap > log_corrupt:
        return log_gap, f"{bad} dropped or corrupt devices can cut the k={k} graph apart"
    return log_corrupt, why


def _correctness_log2(n: int, k: int, t: int, dropout: float) -> float:
    return (math.log(n) + _log_binom_tail(k, dropout, k - t + 1)) / math.log(2)


def _check_explicit(n: int, k: int, t: int, config: SecAggConfig) -> float:
    if not k / 2 < t <= k:
        raise SecAggConfigError(
            f"threshold t={t} must satisfy k/2 < t <= k (k={k}): with t <= k/2 a server could "
            "gather a device's self-mask and key shares from disjoint neighbours"
        )
    log_fail, why = _security_failure(n, k, t, config.dropout_rate, config.corrupt_fraction)
    if log_fail / math.log(2) > -config.security_bits:
        raise SecAggConfigError(
            f"unsafe k={k}, t={t} for n={n}: {why} with probability "
            f"2^{log_fail / math.log(2):.1f} > 2^-{config.security_bits}; raise k and t"
        )
    return _correctness_log2(n, k, t, config.dropout_rate)


@functools.lru_cache(maxsize=256)
def derive_graph_parameters(
    n: int, dropout: float, corrupt: float, security_bits: int = 40, correctness_bits: int = 20
) -> tuple[int, int, float]:
    """``(k, t, log2 P[abandon])``: the sparsest safe SecAgg+ graph for ``n`` devices."""
    sigma = -security_bits * math.log(2)
    log_n = math.log(n)
    corrupt_count = math.floor(corrupt * n)
    candidates = [*range(2, n - 1, 2), n - 1]
    best: tuple[int, int, float] | None = None
    for k in candidates:
        t = k // 2 + 1
        while t <= k and log_n + _log_hypergeom_tail(n - 1, corrupt_count, k, t) > sigma:
            t += 1
        if t > k or _security_failure(n, k, t, dropout, corrupt)[0] > sigma:
            continue
        fail = _correctness_log2(n, k, t, dropout)
        if fail <= -correctness_bits:
            return k, t, fail
        if best is None or fail < best[2]:
            best = (k, t, fail)
    if best is None:
        raise SecAggConfigError(
            f"no safe graph for n={n} with corrupt_fraction={corrupt}: "
            f"{corrupt_count} colluding devices could reach any threshold above k/2; "
            "lower corrupt_fraction or add devices"
        )
    return best
