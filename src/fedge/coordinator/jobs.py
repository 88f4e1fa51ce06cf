"""One job's live state on the coordinator: task, strategy, server state, privacy, checkpoints.

:class:`JobRuntime` turns a :class:`~fedge.transport.messages.JobSpec` into the objects a round
needs and back into artifacts:

- ``create`` validates the spec (task, strategy and its options, the ``[privacy]`` table),
  initialises the model (seeded when the spec says so), and stores model + checkpoint 0;
- ``restore`` rebuilds it from the latest checkpoint after a restart (params *and* optimizer
  state, and the privacy accountant advanced by the committed rounds);
- ``mean_delta`` turns a round's summed partials into the mean delta the server optimizer takes:
  example-weighted without DP; with central DP the sum of clipped, unweighted updates plus
  N(0, (z·C)²) over the planned K devices (DP-FedAvg, McMahan et al. 2018, arXiv:1710.06963);
  with local DP the plain mean of the devices' already-noised updates; with distributed DP the
  securely summed integer shares, which already carry the noise, × γ / K
  (:mod:`fedge.coordinator.distributed`).

Distributed DP needs secure aggregation, and secure aggregation over the network is combined with
distributed DP only (central DP would show the coordinator the un-noised sum). Adaptive clipping
(needs the clipped count from the devices) is refused at job creation for now.

The accountant samples the most devices a round can hand tasks to (K × over-selection, at most
the fleet), not K: over-selected devices' updates reach the sum too.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fedge.aggregation import ServerState, Strategy, WeightedMeanAccumulator, make_strategy
from fedge.coordinator.secure_setup import SecureSettings
from fedge.core.params import Params, ParamSpec
from fedge.core.serde import decode_arrays, decode_params, encode_arrays, encode_params
from fedge.errors import AggregationError, ConfigError, PrivacyError, ValidationError
from fedge.privacy import (
    PrivacyConfig,
    PrivacyPlan,
    check_next_round,
    dp_fedavg_mean_tree,
    load_privacy_config,
    plan_privacy,
    secure_generator,
)
from fedge.tasks import Task, get_task
from fedge.transport import messages as m

if TYPE_CHECKING:
    from fedge.coordinator.artifacts import ArtifactStore
    from fedge.simulation.evaluate import Evaluation

__all__ = ["JobRuntime", "decode_opt_state", "encode_opt_state", "validate_spec"]

log = logging.getLogger(__name__)


def validate_spec(spec: m.JobSpec) -> tuple[Task, Strategy, PrivacyConfig]:
    """The task, strategy and privacy config of ``spec``; ValidationError saying what is wrong."""
    try:
        task = get_task(spec.task)
        strategy = make_strategy(spec.strategy.name, **spec.strategy.options)
        privacy = load_privacy_config(spec.privacy)
    except ConfigError as exc:
        raise ValidationError(f"job {spec.name!r}: {exc}") from None
    if privacy.mode == "distributed" and spec.secure_aggregation is None:
        raise ValidationError(
            f"job {spec.name!r}: privacy.mode = 'distributed' adds each device's share of the "
            "noise under secure aggregation: add a secure_aggregation table (it may be "
            "empty) or use privacy.mode = 'central'"
        )
    if spec.secure_aggregation is not None:
        from fedge.coordinator.secure_setup import check_secagg_settings

        if privacy.mode == "none":
            check_secagg_settings(spec.secure_aggregation)
        elif privacy.mode != "distributed":
            raise ValidationError(
                f"job {spec.name!r}: with secure aggregation use privacy.mode = 'distributed' "
                f"(each device adds its share of the noise before masking), not "
                f"{privacy.mode!r}"
            )
        if spec.devices_per_round < 3:
            raise ValidationError(
                f"job {spec.name!r}: secure aggregation needs at least 3 devices per round"
            )
    if privacy.adaptive_clipping is not None:
        raise ValidationError(
            f"job {spec.name!r}: adaptive clipping is not supported over the network yet; "
            "remove [privacy.adaptive_clipping] and set clip_norm"
        )
    from fedge.coordinator.selection import round_target

    most = round_target(spec.devices_per_round, spec.over_selection)
    if spec.min_devices > most:
        raise ValidationError(
            f"job {spec.name!r}: min_devices = {spec.min_devices} can never be met when a round "
            f"hands out at most {most} tasks; lower min_devices or raise devices_per_round"
        )
    return task, strategy, privacy


def encode_opt_state(opt_state: Any) -> bytes:
    """Optimizer state ``{slot: Params}`` as one tensor payload (``slot/name`` keys)."""
    flat = {f"{slot}/{name}": arr for slot, tree in opt_state.items() for name, arr in tree.items()}
    return encode_arrays(flat, {"kind": "opt_state"})


def decode_opt_state(data: bytes) -> dict[str, Params]:
    """Inverse of :func:`encode_opt_state`."""
    arrays, _ = decode_arrays(data)
    out: dict[str, Params] = {}
    for key, arr in arrays.items():
        slot, _, name = key.partition("/")
        out.setdefault(slot, {})[name] = arr.astype(np.float32, copy=False)
    return out


@dataclass
class JobRuntime:
    """What the coordinator keeps in memory for a running or paused job."""

    spec: m.JobSpec
    task: Task
    strategy: Strategy
    privacy: PrivacyConfig
    state: ServerState
    model_sha256: str
    fleet_size: int
    job_state: str = "running"
    privacy_plan: PrivacyPlan | None = None
    _epsilon_cost_cache: tuple[int, float] | None = None
    consecutive_abandoned: int = 0
    _eval: Any = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.privacy.mode != "none":
            from fedge.coordinator.selection import round_target

            try:
                self.privacy_plan = plan_privacy(
                    self.privacy,
                    rounds=self.spec.rounds,
                    devices_per_round=self.spec.devices_per_round,
                    fleet_size=max(self.fleet_size, self.spec.devices_per_round),
                    sampling="fixed_size",
                    dim=self.param_spec.size,
                    min_devices=self.spec.min_devices,
                    sampled_per_round=round_target(
                        self.spec.devices_per_round, self.spec.over_selection
                    ),
                )
            except (ConfigError, PrivacyError) as exc:
                raise ValidationError(f"job {self.spec.name!r}: [privacy] {exc}") from None
            if self.privacy_plan.accountant is not None and self.state.round:
                self.privacy_plan.accountant.step(self.state.round)

    @property
    def id(self) -> str:
        """The job id (its spec's name)."""
        return self.spec.name

    @property
    def param_spec(self) -> ParamSpec:
        """Names and shapes of the model."""
        return ParamSpec.of(self.state.params)

    @property
    def committed(self) -> int:
        """Rounds committed so far."""
        return self.state.round

    @staticmethod
    def initial_params(task: Task, seed: int | None) -> Params:
        """A fresh model's parameters (torch's global RNG is left untouched)."""
        import torch

        from fedge.core.params import from_module

        with torch.random.fork_rng(devices=[]):
            if seed is not None:
                torch.manual_seed(seed)
            return from_module(task.build_model())

    def model_payload(self, params: Params) -> bytes:
        """The published bytes of a model version (its sha256 is its name)."""
        return encode_params(params, {"kind": "model", "job": self.id, "task": self.task.name})

    def params_of(self, payload: bytes) -> Params:
        """Decode a model payload of this job."""
        params, _ = decode_params(payload, self.param_spec, max_bytes=len(payload))
        return params

    def training_plan(self) -> m.TrainingPlan:
        """The client optimizer for this round, with the strategy's asks folded in."""
        plan = self.spec.plan
        asks = self.strategy.client_plan(self.state)
        updates: dict[str, Any] = {}
        if asks.proximal_mu and not plan.proximal_mu:
            updates["proximal_mu"] = asks.proximal_mu
        if asks.single_full_batch_step:
            updates.update(epochs=1, batch_size=None)
        return plan.model_copy(update=updates) if updates else plan

    def device_privacy(self) -> m.PrivacyPlan:
        """What each device must do to its update before it leaves."""
        p = self.privacy_plan
        if p is None:
            return m.PrivacyPlan()
        local = p.noise_multiplier if p.mode == "local" else None
        d = p.distributed
        return m.PrivacyPlan(
            mode=p.mode,
            clip_norm=p.clip_norm,
            local_noise_multiplier=local,
            epsilon_cost=self.round_epsilon_cost(),
            granularity=d.granularity if d else None,
            noise_stddev=d.per_device_stddev if d else None,
            rounding_bound=d.l2_sensitivity if d else None,
        )

    def secure_settings(self) -> SecureSettings:
        """This job's SecAgg+ settings (under distributed DP: range and bits from the noise)."""
        from fedge.coordinator.distributed import distributed_settings
        from fedge.coordinator.selection import round_target

        raw = self.spec.secure_aggregation
        if raw is None:
            raise ValidationError(f"job {self.id!r} has no secure_aggregation")
        p = self.privacy_plan
        if p is None or p.distributed is None:
            return SecureSettings.parse(raw)
        most = round_target(self.spec.devices_per_round, self.spec.over_selection)
        return distributed_settings(raw, p.distributed, most)

    def round_epsilon_cost(self) -> float:
        """ε the next round adds to the job's total: what a device's ledger is charged.

        The increments over all rounds add up to the job's ε, so a device that took part in
        every round has spent exactly the job's guarantee in its own ledger.
        """
        p = self.privacy_plan
        if p is None or p.accountant is None:
            return 0.0
        done = p.accountant.rounds
        cached = self._epsilon_cost_cache
        if cached is not None and cached[0] == done:
            return cached[1]
        before = p.accountant.epsilon() if done else 0.0
        cost = max(0.0, float(p.accountant.epsilon_after(done + 1)) - float(before))
        self._epsilon_cost_cache = (done, cost)
        return cost

    def update_weight(self, num_examples: int) -> int:
        """How much one device's update weighs in the sum: its examples, or 1 under DP."""
        return num_examples if self.privacy_plan is None else 1

    def budget_left(self) -> str | None:
        """None when one more round fits the privacy budget, else why it does not."""
        p = self.privacy_plan
        if p is None or p.accountant is None or p.max_epsilon is None:
            return None
        check = check_next_round(p.accountant, p.max_epsilon)
        return None if check.allowed else check.message

    def mean_delta(self, acc: WeightedMeanAccumulator) -> Params:
        """The round's mean delta from the summed partials (see the module docstring)."""
        p = self.privacy_plan
        if p is None:
            return acc.result().mean_delta
        if acc.num_accepted == 0:
            raise AggregationError("no update was accepted; the round cannot be aggregated")
        if p.mode == "central":
            return dp_fedavg_mean_tree(
                acc.weighted_sum,
                p.devices_per_round,
                p.clip_norm,
                p.update_noise_multiplier,
                secure_generator(),
            )
        if p.distributed is not None:
            from fedge.coordinator.distributed import distributed_mean

            if acc.num_accepted < p.distributed.devices:
                raise AggregationError(
                    f"only {acc.num_accepted} devices' noise is in the sum, the noise was "
                    f"planned for at least {p.distributed.devices}: the round is not committed"
                )
            return distributed_mean(acc.weighted_sum, p.distributed, p.devices_per_round)
        return {n: (a / acc.num_accepted).astype(np.float32) for n, a in acc.weighted_sum.items()}

    def spend_privacy(self) -> float | None:
        """Account one more committed round; ε so far (None without DP)."""
        p = self.privacy_plan
        if p is None or p.accountant is None:
            return None
        return float(p.accountant.step())

    def evaluate(self, params: Params) -> Evaluation:
        """Loss and accuracy of ``params`` on the task's held-out test split."""
        import torch

        from fedge.core.params import to_torch
        from fedge.simulation.evaluate import evaluate

        if self._eval is None:
            _, test = self.task.load_data()
            model = self.task.build_model()
            self._eval = (model, torch.from_numpy(test.x), torch.from_numpy(test.y))
        model, x, y = self._eval
        return evaluate(self.task, model, to_torch(params, copy=True), x, y)

    @classmethod
    def create(
        cls, spec: m.JobSpec, artifacts: ArtifactStore, fleet_size: int
    ) -> tuple[JobRuntime, bytes, bytes]:
        """A new job and the payloads of its initial model and optimizer state (to store)."""
        task, strategy, privacy = validate_spec(spec)
        state = strategy.init(cls.initial_params(task, spec.seed))
        rt = cls(spec, task, strategy, privacy, state, "", fleet_size)
        if spec.secure_aggregation is not None:
            rt.secure_settings()  # refuse a table the noise plan cannot serve now, not later
        p = rt.privacy_plan
        if p is not None and p.distributed is not None and p.accountant is not None:
            d = p.distributed
            log.info(
                "job %s: distributed DP: each device adds N_Z(0, %.4g²) on a grid of %g (clip %g), "
                "planned for %d survivors (min_devices; fewer abandon the round): z = %.3g on the "
                "sum, ε after %d rounds = %.4g at δ = %.3g",
                spec.name, d.per_device_stddev, d.granularity, p.clip_norm, d.devices,
                d.effective_noise_multiplier, spec.rounds, p.accountant.epsilon_after(spec.rounds),
                p.delta,
            )  # fmt: skip
        model = rt.model_payload(state.params)
        rt.model_sha256 = artifacts.put(model)
        opt = encode_opt_state(state.opt_state)
        artifacts.put(opt)
        return rt, model, opt

    @classmethod
    def restore(
        cls,
        spec: m.JobSpec,
        artifacts: ArtifactStore,
        params_sha256: str,
        opt_sha256: str,
        step: int,
        fleet_size: int,
    ) -> JobRuntime:
        """Rebuild a job from its latest checkpoint."""
        task, strategy, privacy = validate_spec(spec)
        payload = artifacts.get(params_sha256)
        params, _ = decode_params(payload, max_bytes=len(payload))
        state = ServerState(params, step, decode_opt_state(artifacts.get(opt_sha256)))
        return cls(spec, task, strategy, privacy, state, params_sha256, fleet_size)
