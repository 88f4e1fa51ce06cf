"""Shared fixtures for the privacy tests: seeded generators (tests are simulations)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from fedge.privacy.rng import SeededForSimulation

logging.getLogger("absl").setLevel(logging.ERROR)


@pytest.fixture
def rng() -> np.random.Generator:
    return SeededForSimulation(20240611)
