"""Where privacy noise comes from: fresh secret seeds in production, marked seeds in simulation.

Every noise function in :mod:`fedge.privacy` takes its generator as an argument (rule 2 of the
style guide). In a real deployment that generator must come from :func:`secure_generator`: a
``numpy.random.Generator`` over PCG64DXSM seeded with 256 fresh bits from the operating system's
CSPRNG (:mod:`secrets`). Make a new one for every round, so no two rounds share generator state.

Caveat, stated plainly: PCG64DXSM is a fast statistical generator, not a cryptographic stream
cipher. The seed is secret and never reused, which removes the "fixed global seed" failure; an
attacker who could observe many raw noise samples of one round could in principle learn that
round's state. fedge never releases raw noise samples (they are always added to clipped updates or
sums), and re-seeds every round.

The simulator may want reproducible noise. :func:`simulation_generator` returns a
:class:`SeededForSimulation` generator (a ``Generator`` subclass, so it can be passed anywhere) and
emits :class:`InsecureRandomnessWarning`; :func:`is_secure` tells the two apart, so a production
path can refuse a seeded generator.
"""

from __future__ import annotations

import secrets
import warnings

import numpy as np

__all__ = [
    "InsecureRandomnessWarning",
    "SeededForSimulation",
    "is_secure",
    "secure_generator",
    "simulation_generator",
]

_SEED_BITS = 256


class InsecureRandomnessWarning(UserWarning):
    """Privacy noise is drawn from a seeded, reproducible generator: fine for simulation only."""


class SeededForSimulation(np.random.Generator):
    """A generator built from a known seed: reproducible, therefore NOT private."""

    seed: int

    def __init__(self, seed: int) -> None:
        super().__init__(np.random.PCG64DXSM(np.random.SeedSequence(seed)))
        self.seed = seed


def secure_generator() -> np.random.Generator:
    """A generator seeded with 256 fresh bits from the OS CSPRNG; make one per round."""
    entropy = secrets.randbits(_SEED_BITS)
    return np.random.Generator(np.random.PCG64DXSM(np.random.SeedSequence(entropy)))


def simulation_generator(seed: int) -> SeededForSimulation:
    """A reproducible generator for simulations; warns that its noise gives no real privacy."""
    warnings.warn(
        f"privacy noise is seeded for simulation (seed={seed}): reproducible and NOT secure; "
        "never use a seeded generator for a production run",
        InsecureRandomnessWarning,
        stacklevel=2,
    )
    return SeededForSimulation(seed)


def is_secure(rng: np.random.Generator) -> bool:
    """False for generators made by :func:`simulation_generator`."""
    return not isinstance(rng, SeededForSimulation)
