"""Connected cars: car-following physics (IDM) producing per-car driving telemetry.

Each car follows a lead vehicle under the Intelligent Driver Model (Treiber, Hennecke & Helbing
2000, "Congested traffic states in empirical observations and microscopic simulations", Phys.
Rev. E 62, 1805):

    dv/dt = a·[1 − (v/v₀)⁴ − (s*(v, Δv)/s)²],   s* = s₀ + max(0, v·T + v·Δv / (2√(a·b)))

with gap s to the leader, approach rate Δv = v − v_leader, and the driver's own desired speed
v₀ (road limit × a personal factor), time headway T, maximum acceleration a, comfortable
deceleration b and jam distance s₀. Drivers differ: aggressive ones keep short headways
(T ≈ 0.8 s) and accelerate hard; cautious ones keep 2 s. Drivers are sometimes **distracted**
(a Poisson process of 0.5–2.5 s lapses, more often for some drivers) and hold their previous
acceleration: that late reaction, with a leader who brakes hard now and then, is what makes harsh
braking and unsafe headways.

**Road type** sets the speed limit, how often the leader changes speed or brakes hard, and the
curvature that the steering follows (urban 50 km/h, rural 80, highway 120). **Weather** sets
tyre–road friction μ (dry 0.8, rain 0.5, snow 0.25), which caps braking at μ·g, and drivers adapt
(longer headway, lower speed). Each region has its own weather and road mix.

The telemetry (10 Hz) is what a car logs: speed, longitudinal acceleration, steering-wheel angle
(road curvature × wheelbase × steering ratio, plus the driver's lane-keeping corrections), brake
pedal, radar headway distance and relative speed, each with sensor noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["ROADS", "WEATHER", "Telemetry", "TrafficConfig", "simulate_traffic"]

ROADS = ("urban", "rural", "highway")
WEATHER = ("dry", "rain", "snow")
_LIMIT = np.array([13.9, 22.2, 33.3])  # m/s
_HARD_BRAKE_RATE = np.array([1 / 25, 1 / 45, 1 / 80])  # leader emergency stops per second
_CURVATURE_SD = np.array([0.02, 0.004, 0.001])  # 1/m
_FRICTION = np.array([0.8, 0.5, 0.25])
_HEADWAY_FACTOR = np.array([1.0, 1.2, 1.5])
_SPEED_FACTOR = np.array([1.0, 0.9, 0.75])
G = 9.81
RADAR_RANGE_M = 150.0


@dataclass(frozen=True)
class TrafficConfig:
    """Fleet shape (defaults: 4 regions × 25 cars, one 8-minute trip each, 10 Hz)."""

    regions: int = 4
    cars_per_region: int = 25
    trip_s: float = 480.0
    dt: float = 0.1


@dataclass(frozen=True)
class Telemetry:
    """One car's log: one row per sample (``dt`` apart), as the car records it."""

    car: int
    region: int
    dt: float
    speed: NDArray[np.float64]  # m/s
    accel: NDArray[np.float64]  # m/s², longitudinal
    steering: NDArray[np.float64]  # steering-wheel angle, degrees
    brake: NDArray[np.float64]  # pedal, 0..1
    headway: NDArray[np.float64]  # radar distance to the vehicle ahead, m (RADAR_RANGE_M: none)
    relative_speed: NDArray[np.float64]  # leader speed − own speed, m/s
    road: NDArray[np.int64]  # index into ROADS
    weather: NDArray[np.int64]  # index into WEATHER


def simulate_traffic(config: TrafficConfig, rng: np.random.Generator) -> list[Telemetry]:
    """Simulate every car of the fleet at once (vectorised over cars); one log per car."""
    c = config
    n = c.regions * c.cars_per_region
    steps = round(c.trip_s / c.dt)
    region = np.repeat(np.arange(c.regions), c.cars_per_region)
    weather_mix = rng.dirichlet([4.0, 1.5, 0.7], size=c.regions)
    road_mix = rng.dirichlet([2.0, 1.5, 1.5], size=c.regions)
    weather = np.array([rng.choice(3, p=weather_mix[r]) for r in region])
    # Driver parameters (IDM): aggressive ↔ cautious.
    time_headway = rng.uniform(0.7, 2.0, n) * _HEADWAY_FACTOR[weather]
    a_max = rng.uniform(0.8, 2.5, n)
    b_comf = rng.uniform(1.5, 3.5, n)
    s0 = rng.uniform(1.5, 3.0, n)
    speed_factor = rng.uniform(0.9, 1.2, n) * _SPEED_FACTOR[weather]
    lapse_rate = rng.uniform(0.01, 0.12, n)  # distractions per second
    steer_noise = rng.uniform(0.5, 3.0, n)  # degrees of lane-keeping correction
    mu_g = _FRICTION[weather] * G
    # Road segments of 1–3 minutes, drawn from the region's mix.
    seg_len = round(rng.uniform(60, 180) / c.dt)
    road = np.empty((steps, n), dtype=np.int64)
    for start in range(0, steps, seg_len):
        road[start : start + seg_len] = [rng.choice(3, p=road_mix[r]) for r in region]
    v = _LIMIT[road[0]] * speed_factor * 0.8
    v_lead = v.copy()
    gap = v * time_headway + s0 + 5.0
    lead_target = v_lead.copy()
    accel = np.zeros(n)
    lapse_left = np.zeros(n)
    lead_brake = np.zeros(n)  # > 0 while the leader brakes hard, m/s²
    curvature = np.zeros(n)
    log = {k: np.empty((steps, n)) for k in ("v", "a", "gap", "dv", "steer")}
    for k in range(steps):
        limit = _LIMIT[road[k]]
        # Leader: cruise toward a target speed; sometimes stop hard.
        change = rng.random(n) < c.dt / 20.0
        lead_target = np.where(change, limit * rng.uniform(0.55, 1.05, n), lead_target)
        emergency = (rng.random(n) < _HARD_BRAKE_RATE[road[k]] * c.dt) & (lead_brake == 0)
        lead_brake = np.where(emergency, np.minimum(rng.uniform(4.0, 8.0, n), mu_g), lead_brake)
        lead_target = np.where(emergency, v_lead * rng.uniform(0.0, 0.5, n), lead_target)
        lead_acc = np.clip(0.5 * (lead_target - v_lead), -2.0, 1.5)
        lead_acc = np.where(lead_brake > 0, -lead_brake, lead_acc)
        v_lead = np.maximum(v_lead + lead_acc * c.dt, 0.0)
        lead_brake = np.where(v_lead <= lead_target + 0.1, 0.0, lead_brake)
        # Follower: IDM, unless distracted (then the previous acceleration is held).
        v0 = np.maximum(limit * speed_factor, 1.0)
        dv = v - v_lead
        s_star = s0 + np.maximum(0.0, v * time_headway + v * dv / (2 * np.sqrt(a_max * b_comf)))
        idm = a_max * (1 - (v / v0) ** 4 - (s_star / np.maximum(gap, 0.1)) ** 2)
        start_lapse = (lapse_left <= 0) & (rng.random(n) < lapse_rate * c.dt)
        lapse_left = np.where(start_lapse, rng.uniform(0.5, 2.5, n), lapse_left - c.dt)
        accel = np.where(lapse_left > 0, np.maximum(accel, -0.5), idm)
        accel = np.clip(accel, -mu_g, 3.0)
        v = np.maximum(v + accel * c.dt, 0.0)
        gap = gap + (v_lead - v) * c.dt
        crash = gap < 0.5  # not modelled: the car stops behind the leader
        v = np.where(crash, np.minimum(v, v_lead), v)
        gap = np.maximum(gap, 0.5)
        curvature += -0.05 * curvature * c.dt + _CURVATURE_SD[road[k]] * np.sqrt(
            c.dt
        ) * 0.3 * rng.standard_normal(n)
        log["v"][k], log["a"][k], log["gap"][k], log["dv"][k] = v, accel, gap, v_lead - v
        log["steer"][k] = np.degrees(curvature * 2.7 * 15.0)  # wheelbase 2.7 m, ratio 15:1
    out = []
    for i in range(n):
        gap_i = log["gap"][:, i] + rng.normal(0, 0.3, steps)
        out.append(
            Telemetry(
                car=i,
                region=int(region[i]),
                dt=c.dt,
                speed=np.maximum(log["v"][:, i] + rng.normal(0, 0.1, steps), 0.0),
                accel=log["a"][:, i] + rng.normal(0, 0.15, steps),
                steering=log["steer"][:, i] + rng.normal(0, steer_noise[i], steps),
                brake=np.clip(-log["a"][:, i] / mu_g[i], 0.0, 1.0) * (log["a"][:, i] < -0.3),
                headway=np.where(gap_i > RADAR_RANGE_M, RADAR_RANGE_M, np.maximum(gap_i, 0.0)),
                relative_speed=log["dv"][:, i] + rng.normal(0, 0.1, steps),
                road=road[:, i].copy(),
                weather=np.full(steps, weather[i], dtype=np.int64),
            )
        )
    return out
