"""The simulator: rounds of federated learning over virtual devices in one process.

Each round (McMahan et al. 2017, Algorithm 1): choose ``devices_per_round`` devices uniformly
without replacement, train them from the current global model (in chunks, vectorised), stream
their updates into the strategy's aggregator, apply the server optimizer, evaluate. The maths is
the same code a networked round uses; only the transport is missing.

With a ``[privacy]`` section (:mod:`fedge.simulation.privacy`) devices are Poisson-sampled (unless
``sampling = "fixed"``) and a private aggregator replaces the weighted mean: clipped, unweighted
and noised (central DP-FedAvg; local DP; or distributed DP under secure aggregation). The
accountant reports ε after every round, and the run stops before a round that would pass
``max_epsilon``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fedge.aggregation import WeightedMeanAccumulator, make_strategy
from fedge.aggregation.base import ServerState, Update
from fedge.core.params import ParamSpec, from_module, to_torch
from fedge.data.partition import Partition, make_partition
from fedge.errors import AggregationError, ConfigError
from fedge.simulation.config import SimulationConfig
from fedge.simulation.evaluate import Evaluation, evaluate
from fedge.simulation.history import History, RoundRecord
from fedge.simulation.privacy import RoundAggregator, SimulationPrivacy
from fedge.simulation.secure import SecureRoundAggregator
from fedge.simulation.vectorized import VectorizedTrainer
from fedge.tasks import get_task
from fedge.training import LocalTrainingConfig, device_rng, train_local

__all__ = ["Simulation", "auto_chunk_size", "device_id"]

log = logging.getLogger(__name__)

_CHUNK_MEMORY_BUDGET = 128 * 1024 * 1024  # bytes of per-device training state per chunk
_MAX_CHUNK = 512
_MULTITHREAD_PARAMS = 1_000_000  # below this, torch's intra-op threads cost more than they give


def device_id(index: int) -> str:
    """The id of virtual device ``index``."""
    return f"device-{index:05d}"


def auto_chunk_size(num_params: int, batch_size: int | None, num_features: int) -> int:
    """Devices per chunk so params, grads, momentum, deltas and a batch fit the budget."""
    per_device = 4 * (4 * num_params + (batch_size or 64) * num_features)
    return int(max(1, min(_MAX_CHUNK, _CHUNK_MEMORY_BUDGET // per_device)))


@dataclass(frozen=True)
class _RoundUpdates:
    accumulator: WeightedMeanAccumulator | RoundAggregator | SecureRoundAggregator
    train_loss: float


class Simulation:
    """A configured federation of virtual devices; :meth:`run` trains it round by round."""

    def __init__(self, config: SimulationConfig, *, partition: Partition | None = None) -> None:
        """Build the federation; ``partition`` replaces the configured partitioner if given."""
        self.config = config
        self.task = get_task(config.task)
        train, test = self.task.load_data()
        part_cfg = config.partition
        options: dict[str, Any] = dict(part_cfg.options)
        if part_cfg.name == "natural":
            options["keys"] = train.keys
        if partition is None:
            partition = make_partition(
                part_cfg.name,
                train.y,
                part_cfg.devices,
                rng=np.random.default_rng([config.seed, 0xDA7A]),
                **options,
            )
        elif partition.num_devices < config.simulation.devices_per_round:
            raise ConfigError(
                f"the partition has {partition.num_devices} devices but "
                f"simulation.devices_per_round is {config.simulation.devices_per_round}: "
                "lower devices_per_round or pass a larger partition"
            )
        self.partition: Partition = partition
        strategy_options: dict[str, Any] = dict(config.strategy.options)
        self.strategy = make_strategy(config.strategy.name, **strategy_options)
        torch.manual_seed(config.seed)
        self.model = self.task.build_model()
        initial = from_module(self.model)
        self.spec = ParamSpec.of(initial)
        self.state: ServerState = self.strategy.init(initial)
        # A copy: tasks cache their datasets per process, and no Simulation may alter the cache.
        self.train_x = torch.from_numpy(np.array(train.x, order="C", copy=True))
        self.train_y = torch.from_numpy(np.ascontiguousarray(train.y))
        self._train_np = train
        self.test_x = torch.from_numpy(np.ascontiguousarray(test.x))
        self.test_y = torch.from_numpy(np.ascontiguousarray(test.y))
        sim = config.simulation
        self.client_config: LocalTrainingConfig = config.client.training()
        self.chunk_size = (
            auto_chunk_size(self.spec.size, config.client.batch_size, self.task.num_features)
            if sim.chunk_size == "auto"
            else sim.chunk_size
        )
        self.trainer = VectorizedTrainer(self.task) if sim.backend == "vectorized" else None
        if sim.threads == "auto":
            threads = 1 if self.spec.size < _MULTITHREAD_PARAMS else max(1, torch.get_num_threads())
        else:
            threads = sim.threads
        torch.set_num_threads(threads)
        self.privacy: SimulationPrivacy | None = None
        if config.privacy.mode != "none":
            self.privacy = SimulationPrivacy(
                config.privacy,
                rounds=config.rounds,
                devices_per_round=sim.devices_per_round,
                fleet_size=self.partition.num_devices,
                sampling="poisson" if config.sampling == "poisson" else "fixed_size",
                spec=self.spec,
                seed=config.seed,
            )

    # -- one round ------------------------------------------------------------------------
    def select(self, round_number: int) -> np.ndarray:
        """The devices taking part in a round, sorted: K of N uniformly, or Poisson with q = K/N."""
        n, k = self.partition.num_devices, self.config.simulation.devices_per_round
        if self.config.sampling == "poisson":
            rng = np.random.default_rng([self.config.seed, round_number, 0x9015])
            return np.flatnonzero(rng.random(n) < k / n)
        rng = np.random.default_rng([self.config.seed, round_number, 0x5E1EC7])
        return np.sort(rng.choice(n, size=k, replace=False))

    def _chunks(self, devices: np.ndarray) -> Iterator[np.ndarray]:
        for start in range(0, len(devices), self.chunk_size):
            yield devices[start : start + self.chunk_size]

    def _train(self, round_number: int, devices: np.ndarray) -> _RoundUpdates:
        plan = self.strategy.client_plan(self.state)
        cfg = self.client_config.with_plan(
            proximal_mu=plan.proximal_mu, single_full_batch_step=plan.single_full_batch_step
        )
        acc: WeightedMeanAccumulator | RoundAggregator | SecureRoundAggregator
        secure = self.config.secure_aggregation
        if self.privacy is not None:
            acc = self.privacy.new_round(round_number)
        elif secure.enabled:
            acc = SecureRoundAggregator(
                self.spec,
                clip=secure.clip,
                max_weight=float(self.partition.sizes.max()),
                bits=secure.bits,
                gateways=secure.gateways,
                dropout_rate=secure.dropout_rate,
                dropout_phase=secure.dropout_phase,
                seed=self.config.seed,
                round_number=round_number,
                neighbours=secure.neighbours,
                threshold=secure.threshold,
            )
        else:
            acc = WeightedMeanAccumulator(self.spec)
        losses: list[float] = []
        weights: list[float] = []
        global_t = to_torch(self.state.params)
        for chunk in self._chunks(devices):
            rngs = [device_rng(self.config.seed, round_number, int(d)) for d in chunk]
            ids = [device_id(int(d)) for d in chunk]
            if self.trainer is not None:
                result = self.trainer.train(
                    global_t,
                    self.train_x,
                    self.train_y,
                    [self.partition[int(d)] for d in chunk],
                    cfg,
                    rngs,
                )
                stacked = {k: v.numpy() for k, v in result.deltas.items()}
                acc.add_stacked(ids, stacked, result.num_examples.astype(np.float64))
                losses.extend(result.losses.tolist())
                weights.extend(result.num_examples.tolist())
            else:
                for d, rng, ident in zip(chunk, rngs, ids, strict=True):
                    sub = self._train_np.subset(self.partition[int(d)])
                    local = train_local(self.task, self.state.params, sub.x, sub.y, cfg, rng)
                    acc.add(Update(ident, local.delta, local.num_examples))
                    losses.append(local.loss)
                    weights.append(local.num_examples)
        train_loss = float(np.average(losses, weights=weights)) if losses else float("nan")
        return _RoundUpdates(acc, train_loss)

    def _evaluate_devices(self, devices: np.ndarray) -> Evaluation | None:
        if len(devices) == 0:
            return None
        params = to_torch(self.state.params)
        loss_sum = correct = 0.0
        count = 0
        for chunk in self._chunks(devices):  # one chunk's examples at a time: memory stays flat
            index = torch.from_numpy(np.concatenate([self.partition[int(d)] for d in chunk]))
            part = evaluate(self.task, self.model, params, self.train_x[index], self.train_y[index])
            loss_sum += part.loss * part.num_examples
            correct += part.accuracy * part.num_examples
            count += part.num_examples
        if count == 0:
            return None
        return Evaluation(loss_sum / count, correct / count, count)

    def run_round(self, round_number: int) -> RoundRecord:
        """Run round ``round_number`` (1-based) and return its record."""
        start = time.perf_counter()
        devices = self.select(round_number)
        updates = self._train(round_number, devices)
        acc = updates.accumulator
        for ident, reason in acc.rejected:
            log.warning("round %d: update from %s rejected: %s", round_number, ident, reason)
        try:
            aggregate = acc.result()
            self.state = self.strategy.step(self.state, aggregate)
        except AggregationError as exc:
            log.error("round %d skipped, the global model is unchanged: %s", round_number, exc)
        sim = self.config.simulation
        central: Evaluation | None = None
        if round_number % sim.eval_every == 0 or round_number == self.config.rounds:
            params = to_torch(self.state.params)
            central = evaluate(self.task, self.model, params, self.test_x, self.test_y)
        fed = self._evaluate_devices(devices) if sim.federated_eval else None
        epsilon, extra = None, {}
        if isinstance(acc, SecureRoundAggregator):
            extra = dict(acc.stats)
        elif self.privacy is not None:
            assert not isinstance(acc, WeightedMeanAccumulator)
            extra = {"clip_norm": acc.clip_norm, "noise_stddev": acc.noise_stddev}
            epsilon = self.privacy.finish_round(acc)
        return RoundRecord(
            round=round_number,
            accuracy=None if central is None else central.accuracy,
            loss=None if central is None else central.loss,
            federated_accuracy=None if fed is None else fed.accuracy,
            federated_loss=None if fed is None else fed.loss,
            train_loss=updates.train_loss,
            participants=acc.num_accepted,
            rejected=len(acc.rejected),
            seconds=time.perf_counter() - start,
            epsilon=epsilon,
            balanced_accuracy=None if central is None else central.balanced_accuracy,
            recall=None if central is None else central.recall_list(),
            extra=extra,
        )

    # -- a whole run ----------------------------------------------------------------------
    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Run every round; call ``on_round`` after each; stop at the target accuracy or budget."""
        history = History(config=self.config.to_dict())
        target = self.config.simulation.target_accuracy
        for r in range(1, self.config.rounds + 1):
            check = None if self.privacy is None else self.privacy.check_budget()
            if check is not None and not check.allowed:
                history.stopped_reason = check.message
                log.warning("%s", check.message)
                break
            record = self.run_round(r)
            history.records.append(record)
            if on_round is not None:
                on_round(record)
            if target is not None and record.accuracy is not None and record.accuracy >= target:
                history.stopped_reason = f"reached target accuracy {target} in round {r}"
                break
        return history
