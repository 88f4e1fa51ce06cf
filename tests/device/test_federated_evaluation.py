"""The device's half of federated evaluation: the received model on local data, before training.

Against a real GatewayService in process (the builders of test_device_agent): a plain round's
update carries the evaluation, equal to the reference evaluation of the task's model on the
device's examples; a DP round's carries none; a device keeping a holdout evaluates on it.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fedge.aggregation.evaluation import EVAL_KEYS, EvaluationSums, parse_eval_meta
from fedge.core.params import Params, to_torch
from fedge.core.serde import decode_arrays, decode_params
from fedge.device.evaluation import evaluate_locally
from fedge.simulation.evaluate import evaluate
from fedge.tasks import get_task
from fedge.transport.messages import PrivacyPlan

from .test_device_agent import TASK, agent, gateway, model  # noqa: F401 -- the fixture


def reference(params: Params, x: np.ndarray, y: np.ndarray) -> EvaluationSums:
    """The simulator's evaluation (fedge.simulation.evaluate), as sums."""
    task = get_task(TASK)
    ev = evaluate(task, task.build_model(), to_torch(params, copy=True), torch.from_numpy(x),
                  torch.from_numpy(y))  # fmt: skip
    n = ev.num_examples
    return EvaluationSums(n, ev.accuracy * n, ev.loss * n, 1)


def sent_updates(link: object) -> list[dict[str, str]]:
    """The metadata of every update payload the device sent."""
    out = []
    for message in link.sent:  # type: ignore[attr-defined]
        if message.startswith(b"POST") or message.startswith(b"GET") or message.startswith(b"{"):
            continue
        _, meta = decode_arrays(message, allowed_dtypes=frozenset({"F32"}))
        out.append(meta)
    return out


def test_local_evaluation_equals_the_simulators(model: tuple[bytes, str]) -> None:  # noqa: F811
    params, _ = decode_params(model[0])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2500, 64)).astype(np.float32)  # over two batches of 1024 and a rest
    y = rng.integers(0, 10, size=2500)
    got = evaluate_locally(get_task(TASK), params, x, y)
    want = reference(params, x, y)
    assert got is not None and (got.examples, got.devices) == (2500, 1)
    assert got.correct == pytest.approx(want.correct, abs=1e-6)
    assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-5)
    assert evaluate_locally(get_task(TASK), params, x[:0], y[:0]) is None


def test_a_plain_round_reports_the_received_models_evaluation(
    tmp_path: Path,
    model: tuple[bytes, str],  # noqa: F811
) -> None:
    service = gateway(tmp_path, model, quota=2)
    devices = [agent(tmp_path, service, i) for i in (0, 1)]
    for device, _ in devices:
        device.step()
        assert device.stats.delivered == 1
    params, _ = decode_params(model[0])
    expected = EvaluationSums()
    for device, link in devices:
        (meta,) = sent_updates(link)
        x, y = device.store.examples()
        want = reference(params, x, y)  # the model it received, not the one it trained
        got = parse_eval_meta(meta)
        assert got is not None and got.examples == len(y) == want.examples
        assert got.correct == pytest.approx(want.correct, abs=1e-6)
        assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-5)
        expected += got
    service.close_due_rounds()
    (item,) = service.outbox.due(time.time())
    _, meta = decode_arrays(item.payload, allowed_dtypes=frozenset({"F32"}))
    assert parse_eval_meta(meta, partial=True, contributors=2) == dataclasses.replace(
        expected, correct=pytest.approx(expected.correct), loss_sum=pytest.approx(expected.loss_sum)
    )


def test_a_dp_round_or_a_device_that_opts_out_reports_none(
    tmp_path: Path,
    model: tuple[bytes, str],  # noqa: F811
) -> None:
    dp = gateway(tmp_path / "dp", model, privacy=PrivacyPlan(mode="central", clip_norm=0.5))
    device, link = agent(tmp_path / "dp", dp, 0)
    device.step()
    assert device.stats.delivered == 1  # the gateway took it: it carries no evaluation
    assert not any(k in meta for meta in sent_updates(link) for k in EVAL_KEYS)
    plain = gateway(tmp_path / "plain", model)
    quiet, quiet_link = agent(tmp_path / "plain", plain, 1)
    quiet.federated_evaluation = False
    quiet.step()
    assert quiet.stats.delivered == 1
    assert not any(k in meta for meta in sent_updates(quiet_link) for k in EVAL_KEYS)


def test_a_device_with_a_holdout_evaluates_on_it(
    tmp_path: Path,
    model: tuple[bytes, str],  # noqa: F811
) -> None:
    service = gateway(tmp_path, model, quota=1)
    device, link = agent(tmp_path, service, 2)
    rng = np.random.default_rng(5)
    hx, hy = rng.normal(size=(37, 64)).astype(np.float32), rng.integers(0, 10, size=37)
    device.holdout = lambda: (hx, hy)
    device.step()
    (meta,) = sent_updates(link)
    got = parse_eval_meta(meta)
    params, _ = decode_params(model[0])
    assert got is not None and got.examples == 37
    assert got.correct == pytest.approx(reference(params, hx, hy).correct, abs=1e-6)
