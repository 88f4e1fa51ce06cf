"""The simulator: thousands of virtual devices in one process, vectorised."""

from fedge.simulation.config import SimulationConfig, load_config
from fedge.simulation.engine import Simulation
from fedge.simulation.history import History, RoundRecord

__all__ = ["History", "RoundRecord", "Simulation", "SimulationConfig", "load_config"]
