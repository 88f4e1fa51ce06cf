"""Privacy: the layer's costs (clipping, noise, accountants) and utility against privacy.

First the cost tables. Baselines are measured in the same run:

* ``clip_rows`` on a (devices, params) matrix of MNIST-2NN-sized updates (199,210 parameters)
  against clipping the same rows one at a time with ``clip_update``;
* the vectorised discrete Gaussian sampler against a scalar rejection loop (Canonne et al. 2020,
  Algorithm 3, one coordinate at a time), per million samples;
* RDP against PLD for a 1,000-device fleet (50 devices per round, 50 rounds,
  δ = 1/1000^1.1): ε for the same z and the time to compute it, plus the z that Poisson and
  fixed-size selection each need for ε = 4.

Then the utility-versus-privacy figure of issue 4 (``--skip-utility`` to leave it out): MNIST 2NN
(MNIST-5000: 4,000 training digits, 4 per device) on 1,000 simulated devices, K = 100 per round,
E = 5, B = 10, client lr 0.1, clip C = 0.5 (about the median update norm), 50 rounds,
δ = 1/1000^1.1, RDP accountant, ε ∈ {1, 2, 4, 8}, against the same run without DP:

* central DP (DP-FedAvg, Poisson selection) for the server optimizers of ``--strategies``: FedAvg
  (server lr 1) and FedAdam (server lr 0.01) by default, FedAvgM (server lr 0.3, momentum 0.9) on
  request; the learning rates were picked from a small sweep at ε = 2 and 8;
* distributed DP (Kairouz et al. 2021) with the first strategy: discrete Gaussian noise on each
  device, summed by real SecAgg+ sessions (``fedge.secagg.run_secure_sum``); exactly K devices per
  round (fixed-size selection, accounted without replacement), so it needs a larger z for the same
  ε. The slow part (the secure sum and the discrete Gaussian sampler on 100 × 199,210 values per
  round); ``--skip-distributed`` leaves it out.

Writes ``benchmarks/results/privacy_utility.png`` and ``.json``; two worker processes.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

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

try:
    from _common import RESULTS, table
except ImportError:  # imported as benchmarks.bench_privacy
    from benchmarks._common import RESULTS, table

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


def cost_tables() -> None:
    """The clipping, sampler and accountant tables (the first part of this benchmark)."""
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


# -- utility against privacy ---------------------------------------------------------------
FLEET, PER_ROUND, ROUNDS, CLIP = 1000, 100, 50, 0.5
EPSILONS = (1.0, 2.0, 4.0, 8.0)
STRATEGIES = {  # name -> config overrides of the server optimizer
    "fedavg": {"strategy.name": "fedavg"},
    "fedadam": {"strategy.name": "fedadam", "strategy.server_lr": 0.01},
    "fedavgm": {"strategy.name": "fedavgm", "strategy.server_lr": 0.3},
}
DEFAULT_STRATEGIES = "fedavg,fedadam"  # fedavgm (worst at ε = 1) with --strategies


Job = tuple[str, float | None, int, str]  # strategy, target ε (None: no DP), rounds, DP mode


def _overrides(strategy: str, epsilon: float | None, rounds: int, mode: str) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task": "mnist_2nn",
        "rounds": rounds,
        "seed": 42,
        "partition.devices": FLEET,
        "simulation.devices_per_round": PER_ROUND,
        "simulation.federated_eval": False,
        "client.epochs": 5,
        "client.batch_size": 10,
        "client.lr": 0.1,
        **STRATEGIES[strategy],
    }
    if epsilon is not None:
        out |= {
            "privacy.mode": mode,
            "privacy.target_epsilon": epsilon,
            "privacy.clip_norm": CLIP,
        }
        if mode == "distributed":  # noise planned for exactly K devices in each secure sum
            out["simulation.sampling"] = "fixed"
    return out


def run_one(job: Job) -> dict[str, Any]:
    """One simulation (in a worker process): accuracy per round, z, ε, time."""
    strategy, epsilon, rounds, mode = job
    logging.getLogger("absl").setLevel(logging.ERROR)
    logging.getLogger("fedge").setLevel(logging.ERROR)
    from fedge.simulation import Simulation, load_config

    start = time.perf_counter()
    sim = Simulation(load_config(None, _overrides(strategy, epsilon, rounds, mode)))
    history = sim.run()
    accs = [r.accuracy for r in history.records if r.accuracy is not None]
    plan = sim.privacy.plan if sim.privacy is not None else None
    return {
        "strategy": strategy,
        "mode": "none" if epsilon is None else mode,
        "target_epsilon": epsilon,
        "effective_noise_multiplier": plan.accountant.noise_multiplier
        if plan and plan.accountant
        else 0.0,
        "per_device_stddev": plan.distributed.per_device_stddev
        if plan and plan.distributed
        else None,
        "noise_multiplier": plan.noise_multiplier if plan else 0.0,
        "delta": plan.delta if plan else None,
        "epsilon": history.records[-1].epsilon,
        "accuracy": accs,
        "final": accs[-1],
        "last5": sum(accs[-5:]) / len(accs[-5:]),
        "mean_participants": sum(r.participants for r in history.records) / len(accs),
        "seconds": time.perf_counter() - start,
    }


def _run_all(jobs: list[Job]) -> list[dict[str, Any]]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        return list(pool.map(run_one, jobs))


def _plot(runs: list[dict[str, Any]], path: Path, show: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_e, ax_r) = plt.subplots(1, 2, figsize=(11.5, 4.4), constrained_layout=True)
    central = [r for r in runs if r["mode"] != "distributed"]
    for i, name in enumerate(dict.fromkeys(r["strategy"] for r in central)):
        mine = [r for r in central if r["strategy"] == name]
        base = next(r for r in mine if r["target_epsilon"] is None)
        private = [r for r in mine if r["target_epsilon"] is not None]
        color = f"C{i}"
        ax_e.plot([r["target_epsilon"] for r in private], [r["last5"] for r in private], "o-",
                  color=color, label=f"{name}: central DP")  # fmt: skip
        ax_e.axhline(base["last5"], color=color, ls="--", lw=1, label=f"{name}: no DP")
    dist = [r for r in runs if r["mode"] == "distributed"]
    if dist:
        ax_e.plot([r["target_epsilon"] for r in dist], [r["last5"] for r in dist], "s:",
                  color="C0", label=f"{dist[0]['strategy']}: distributed DP (SecAgg+)")  # fmt: skip
    ax_e.set(xscale="log", xlabel="ε  (δ = 1/n^1.1, n = 1,000)",
             ylabel="test accuracy (mean of last 5 rounds)", title="Utility against privacy")  # fmt: skip
    ax_e.set_xticks(list(EPSILONS), [f"{e:g}" for e in EPSILONS])
    ax_e.minorticks_off()
    for run in (r for r in central if r["strategy"] == show):
        eps = run["target_epsilon"]
        label = "no DP" if eps is None else f"ε = {eps:g} (z = {run['noise_multiplier']:.2f})"
        ax_r.plot(range(1, len(run["accuracy"]) + 1), run["accuracy"], label=label)
    ax_r.set(xlabel="round", ylabel="test accuracy", title=f"{show}: accuracy per round")
    for ax in (ax_e, ax_r):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        f"MNIST 2NN · {FLEET} devices, {PER_ROUND}/round · E=5, B=10 · C = {CLIP:g} · central DP: "
        "DP-FedAvg, Poisson selection; distributed DP: fixed-size selection"
    )
    fig.savefig(path, dpi=110)
    plt.close(fig)


def utility_vs_privacy(strategies: list[str], rounds: int, distributed: bool) -> dict[str, Any]:
    """No DP and ε ∈ EPSILONS per server optimizer; print the tables, save plot and numbers."""
    jobs: list[Job] = (
        [(strategies[0], e, rounds, "distributed") for e in EPSILONS] if distributed else []
    )  # the slowest jobs first, so the two workers finish together
    jobs += [(s, e, rounds, "central") for s in strategies for e in (None, *EPSILONS)]
    started = time.perf_counter()
    runs = _run_all(jobs)
    delta = next(r["delta"] for r in runs if r["delta"] is not None)
    print(
        f"\nutility against privacy: MNIST 2NN, {FLEET} devices, {PER_ROUND}/round Poisson, "
        f"{rounds} rounds, E=5, B=10, client lr 0.1, C={CLIP:g}, δ = {delta:.3g}, RDP accountant;"
        " accuracy = mean test accuracy of the last 5 rounds (final round in brackets)"
    )
    rows = []
    for name in strategies:
        mine = [r for r in runs if r["strategy"] == name and r["mode"] != "distributed"]
        base = mine[0]
        label = name + "".join(f" {k.split('.')[-1]}={v}" for k, v in STRATEGIES[name].items()
                               if k != "strategy.name")  # fmt: skip
        for run in mine:
            eps = run["target_epsilon"]
            rows.append([
                label if eps is None else "",
                "no DP" if eps is None else f"{eps:g}",
                "–" if eps is None else f"{run['noise_multiplier']:.3f}",
                "–" if eps is None else f"{run['noise_multiplier'] * CLIP / PER_ROUND:.2e}",
                "–" if run["epsilon"] is None else f"{run['epsilon']:.3f}",
                f"{run['last5']:.4f} ({run['final']:.4f})",
                "–" if eps is None else f"{(run['last5'] - base['last5']) * 100:+.1f} pts",
                f"{run['seconds']:.0f}",
            ])  # fmt: skip
    print(table(
        ["server optimizer", "ε target", "z", "noise sd of mean", "ε reached", "accuracy",
         "cost vs no DP", "s"], rows,
    ))  # fmt: skip
    dist = [r for r in runs if r["mode"] == "distributed"]
    if dist:
        base = next(r for r in runs if r["strategy"] == strategies[0] and r["mode"] == "none")
        central = {r["target_epsilon"]: r for r in runs
                   if r["strategy"] == strategies[0] and r["mode"] == "central"}  # fmt: skip
        print(
            f"\ndistributed DP (Kairouz et al. 2021) through SecAgg+ (run_secure_sum), "
            f"{strategies[0]}: exactly {PER_ROUND} devices per round (fixed-size selection, "
            "accounted without replacement), discrete Gaussian per device on a grid of C/1000"
        )
        print(table(
            ["ε target", "z (fixed-size)", "σ per device (grid steps)", "effective z",
             "ε reached", "accuracy", "cost vs no DP", "central at same ε", "s"],
            [[f"{r['target_epsilon']:g}", f"{r['noise_multiplier']:.3f}",
              f"{r['per_device_stddev']:.1f}", f"{r['effective_noise_multiplier']:.3f}",
              f"{r['epsilon']:.3f}", f"{r['last5']:.4f} ({r['final']:.4f})",
              f"{(r['last5'] - base['last5']) * 100:+.1f} pts",
              f"{central[r['target_epsilon']]['last5']:.4f}", f"{r['seconds']:.0f}"]
             for r in dist],
        ))  # fmt: skip
    out = RESULTS
    out.mkdir(parents=True, exist_ok=True)
    _plot(runs, out / "privacy_utility.png", strategies[0])
    (out / "privacy_utility.json").write_text(json.dumps(runs, indent=2) + "\n")
    print(
        f"\nwrote {out / 'privacy_utility.png'} and privacy_utility.json "
        f"({time.perf_counter() - started:.0f} s for {len(jobs)} runs on 2 workers)"
    )
    return {"runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--skip-costs", action="store_true", help="skip the cost tables")
    parser.add_argument("--skip-utility", action="store_true", help="skip the utility figure")
    parser.add_argument(
        "--strategies", default=DEFAULT_STRATEGIES, help="server optimizers, comma-separated"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument(
        "--skip-distributed", action="store_true", help="no distributed-DP runs (the slow part)"
    )
    args = parser.parse_args()
    if not args.skip_costs:
        cost_tables()
    if not args.skip_utility:
        names = [n.strip() for n in args.strategies.split(",") if n.strip()]
        unknown = sorted(set(names) - set(STRATEGIES))
        if unknown:
            parser.error(f"unknown strategies {unknown}; choose from {sorted(STRATEGIES)}")
        utility_vs_privacy(names, args.rounds, not args.skip_distributed)


if __name__ == "__main__":
    main()
