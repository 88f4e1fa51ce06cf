"""Serving with either runtime (``[serving] runtime``): torch or onnxruntime answer alike, pass and
fail the same health checks, hot swap and roll back the same way, in process and over HTTP."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from fedge.core.params import Params, from_module
from fedge.device.config import ServingConfig
from fedge.device.follower import ProductionFollower
from fedge.device.predictor import RUNTIMES, HealthCheck, Predictor, runner_factory
from fedge.device.serving import start_endpoint
from fedge.errors import ConfigError, HealthCheckError
from fedge.tasks import get_task

from .test_predictor import TASK, biased_params


@pytest.mark.parametrize("name", ["digits_mlp", "maintenance", "wearables", "mnist_cnn"])
def test_onnxruntime_predicts_what_torch_predicts(name: str) -> None:
    task = get_task(name)
    torch.manual_seed(4)
    params = from_module(task.build_model())
    on_torch, on_onnx = Predictor(name), Predictor(name, runtime="onnxruntime")
    on_torch.load("v1", params)
    on_onnx.load("v1", params)
    x = np.random.default_rng(5).normal(size=(40, task.num_features)).astype(np.float32)
    scores_torch, _ = on_torch.scores(x)
    scores_onnx, version = on_onnx.scores(x)
    np.testing.assert_allclose(scores_onnx, scores_torch, rtol=1e-4, atol=1e-5)
    assert version == "v1" and on_onnx.runtime == "onnxruntime"
    np.testing.assert_array_equal(on_onnx.predict(x).predictions, on_torch.predict(x).predictions)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_health_checks_swaps_and_rollbacks_behave_the_same(runtime: str) -> None:
    rng = np.random.default_rng(6)
    holdout_x, holdout_y = rng.normal(size=(20, 64)).astype(np.float32), np.full(20, 3)
    health = HealthCheck(holdout_x=holdout_x, holdout_y=holdout_y, min_accuracy=0.9)
    predictor = Predictor(TASK, health, runtime=runtime)
    assert predictor.load("good", biased_params(3)).holdout_accuracy == 1.0
    nan = biased_params(3)
    nan[next(iter(nan))][0, 0] = np.nan
    with pytest.raises(HealthCheckError, match="not finite") as not_finite:
        predictor.load("nan", nan)
    with pytest.raises(HealthCheckError, match="below the floor") as worse:
        predictor.load("worse", biased_params(4))
    wrong = {k: v[..., :1] for k, v in from_module(get_task(TASK).build_model()).items()}
    with pytest.raises(HealthCheckError, match="does not load") as shape:
        predictor.load("shape", wrong)
    assert [e.value.check for e in (not_finite, worse, shape)] == ["smoke", "accuracy", "load"]
    assert predictor.version == "good" and predictor.versions == ["good"]
    free = Predictor(TASK, runtime=runtime, keep=3)
    for k in range(4):
        free.load(f"v{k}", biased_params(k))
    assert free.versions == ["v1", "v2", "v3"]
    assert free.rollback().version == "v2"
    assert free.predict(np.zeros(64)).predictions.tolist() == [2]
    assert free.rollback("v1").version == "v1"
    predictions, version = free.predict(np.zeros(64))
    assert (predictions.tolist(), version) == ([1], "v1")


def test_an_unknown_runtime_is_refused_in_config_and_in_code() -> None:
    assert ServingConfig(job="j", runtime="onnxruntime").runtime == "onnxruntime"
    assert ServingConfig(job="j").runtime == "torch"
    with pytest.raises(ValueError, match="runtime"):
        ServingConfig(job="j", runtime="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown serving runtime"):
        runner_factory("tensorrt")


def test_an_onnxruntime_device_follows_promotion_and_rollback(tmp_path: Path) -> None:
    """The real follower, against a real coordinator service, on an onnxruntime predictor."""
    from tests.coordinator.helpers import ADMIN
    from tests.coordinator.test_production_follow import DirectLink
    from tests.coordinator.test_registry import add_version
    from tests.coordinator.test_releases import KEY, commit_one_round, signed_service

    svc = signed_service(tmp_path)
    _, v1 = commit_one_round(svc)
    link = DirectLink(svc)
    predictor = Predictor("digits_mlp", runtime="onnxruntime")
    reference = Predictor("digits_mlp")
    follower = ProductionFollower(link, predictor, "digits", KEY.public_key())
    x = np.random.default_rng(7).normal(size=(16, 64)).astype(np.float32)
    assert follower.sync() == "digits/r1"
    acc = svc.admin.get_model(ADMIN, v1).metrics["accuracy"]
    v2 = add_version(svc, v1, 2, acc + 0.01, 1.5)  # the gate promotes it
    assert follower.sync() == "digits/r2" and link.downloads == 2
    reference.load("digits/r2", _params(svc, v2))
    np.testing.assert_allclose(predictor.scores(x)[0], reference.scores(x)[0], rtol=1e-4, atol=1e-5)
    svc.admin.rollback_model(ADMIN, "digits")
    assert follower.sync() == "digits/r1" and link.downloads == 2  # kept: no download
    assert predictor.predict(x).version == "digits/r1"
    link.tamper = True
    add_version(svc, v1, 3, acc + 0.02, 1.02)
    assert follower.sync() == "digits/r1"  # the tampered r3 is refused; r1 stays
    assert predictor.predict(x).version == "digits/r1"


def _params(svc: object, sha: str) -> Params:
    from tests.coordinator.helpers import model_params

    return model_params(svc, sha)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_http_hot_swap_under_concurrent_clients_fails_no_request(runtime: str) -> None:
    """Four clients POST /predict on loopback while versions swap 60 times (and roll back).

    Version ``vK`` predicts class ``K % 10`` on every row: an answer from a half-loaded model
    would predict something else. Every answer must succeed, name a version that was loaded,
    and predict that version's class. The swaps wait for answers in between, so requests and
    swaps interleave; no timing is asserted.
    """
    predictor = Predictor(TASK, keep=2, runtime=runtime)
    weights = [biased_params(k % 10) for k in range(61)]
    predictor.load("v0", weights[0])
    loaded = {"v0"}
    stop = threading.Event()
    lock = threading.Lock()
    answers: list[tuple[str, list[int]]] = []
    failures: list[str] = []
    rows = np.random.default_rng(8).normal(size=(8, 64)).round(4).tolist()

    def client_loop() -> None:
        with httpx.Client(base_url=endpoint.url, timeout=30) as client:
            for _ in range(5000):  # bounded; stops as soon as the swaps are over
                if stop.is_set():
                    return
                try:
                    response = client.post("/predict", json={"inputs": rows})
                    body = response.json()
                    ok = response.status_code == 200
                except (httpx.HTTPError, ValueError) as exc:
                    ok, body = False, {"detail": repr(exc)}
                with lock:
                    if ok:
                        answers.append((body["version"], body["predictions"]))
                    else:
                        failures.append(str(body))

    def answered() -> int:
        with lock:
            return len(answers) + len(failures)

    def wait_for_answers(more_than: int) -> None:
        waited = threading.Event()
        for _ in range(1000):  # at most ~10 s; then swap anyway
            if answered() > more_than:
                return
            waited.wait(0.01)

    with start_endpoint(predictor) as endpoint:
        clients = [threading.Thread(target=client_loop) for _ in range(4)]
        for t in clients:
            t.start()
        for k in range(1, 61):
            wait_for_answers(answered() + 2)
            with lock:
                loaded.add(f"v{k}")  # before the swap: an answer may come right after it
            predictor.load(f"v{k}", weights[k])
            if k % 15 == 0:
                predictor.rollback()  # back to v{k-1}, then forward again
                predictor.load(f"v{k}", weights[k])
        wait_for_answers(answered() + 8)
        stop.set()
        for t in clients:
            t.join()
    assert failures == []
    assert len(answers) > 60
    assert {version for version, _ in answers} <= loaded
    wrong = [(v, p) for v, p in answers if p != [int(v[1:]) % 10] * len(rows)]
    assert wrong == []
    assert len({version for version, _ in answers}) > 1  # the answers did span swaps
