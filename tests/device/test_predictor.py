"""The on-device predictor: health-checked load, atomic hot swap under load, rollback, endpoint."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from tests.transport.nodelay import server_sockets_nodelay

from fedge.core.params import Params, from_module
from fedge.device.predictor import HealthCheck, Predictor
from fedge.device.serving import start_endpoint
from fedge.errors import (
    ConfigError,
    HealthCheckError,
    ProtocolError,
    UnavailableError,
    ValidationError,
)
from fedge.tasks import get_task

TASK = "digits_mlp"


def biased_params(label: int) -> Params:
    """Weights whose every prediction is ``label``: zero weights, a bias only on that class."""
    task = get_task(TASK)
    params = from_module(task.build_model())
    names = list(params)
    out = {k: np.zeros_like(v) for k, v in params.items()}
    out[names[-1]][label] = 10.0  # the last layer's bias
    return out


def test_predict_before_any_load_is_unavailable() -> None:
    predictor = Predictor(TASK)
    with pytest.raises(UnavailableError):
        predictor.predict(np.zeros((1, 64)))


def test_load_predict_and_version() -> None:
    predictor = Predictor(TASK)
    predictor.load("v1", biased_params(3))
    result = predictor.predict(np.random.default_rng(0).normal(size=(5, 64)))
    assert result.version == "v1"
    assert result.predictions.tolist() == [3] * 5
    assert predictor.predict(np.zeros(64)).predictions.shape == (1,)  # one row
    with pytest.raises(ValidationError):
        predictor.predict(np.zeros((2, 63)))


def test_failed_health_checks_keep_the_last_good_version() -> None:
    task = get_task(TASK)
    rng = np.random.default_rng(1)
    holdout_x = rng.normal(size=(20, 64)).astype(np.float32)
    holdout_y = np.full(20, 3)
    health = HealthCheck(holdout_x=holdout_x, holdout_y=holdout_y, min_accuracy=0.9)
    predictor = Predictor(TASK, health)
    good = predictor.load("good", biased_params(3))
    assert good.holdout_accuracy == 1.0

    nan = biased_params(3)
    nan[next(iter(nan))][0, 0] = np.nan
    with pytest.raises(HealthCheckError, match="not finite"):
        predictor.load("nan", nan)
    with pytest.raises(HealthCheckError, match="below the floor"):
        predictor.load("worse", biased_params(4))
    wrong_shape = {k: v[..., :1] for k, v in from_module(task.build_model()).items()}
    with pytest.raises(HealthCheckError, match="does not load"):
        predictor.load("shape", wrong_shape)

    assert predictor.version == "good"
    assert predictor.predict(holdout_x).version == "good"
    assert [v for v, _ in predictor.refused] == ["nan", "worse", "shape"]
    assert predictor.versions == ["good"]


def test_rollback_to_previous_and_to_named_version() -> None:
    predictor = Predictor(TASK, keep=3)
    with pytest.raises(ProtocolError):
        predictor.rollback()
    for i in range(4):
        predictor.load(f"v{i}", biased_params(i))
    assert predictor.versions == ["v1", "v2", "v3"]  # keeps 3
    assert predictor.rollback().version == "v2"
    assert predictor.predict(np.zeros(64)).predictions.tolist() == [2]
    assert predictor.versions == ["v1", "v2"]
    with pytest.raises(ProtocolError, match="not kept"):
        predictor.rollback("v0")
    assert predictor.rollback("v1").version == "v1"
    assert predictor.predict(np.zeros(64)).version == "v1"
    with pytest.raises(ProtocolError):
        predictor.rollback()


def test_hot_swap_under_concurrent_prediction_never_fails_or_mixes_versions() -> None:
    """Eight threads predict while versions swap 50 times: every answer is one complete version.

    Version ``vK`` predicts class ``K % 10`` on every row; a half-loaded model (some layers of one
    version, some of another) would predict something else or fail.
    """
    predictor = Predictor(TASK, keep=2)
    predictor.load("v0", biased_params(0))
    weights = [biased_params(k % 10) for k in range(51)]
    stop = threading.Event()
    failures: list[BaseException] = []
    mismatches: list[tuple[str, list[int]]] = []
    answers = [0] * 8
    batch = np.random.default_rng(2).normal(size=(16, 64)).astype(np.float32)

    def reader(i: int) -> None:
        while not stop.is_set():
            try:
                predictions, version = predictor.predict(batch)
            except BaseException as exc:
                failures.append(exc)
                continue
            expected = int(version[1:]) % 10
            if predictions.tolist() != [expected] * len(batch):
                mismatches.append((version, predictions.tolist()))
            answers[i] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for k in range(1, 51):
        predictor.load(f"v{k}", weights[k])
        if k % 10 == 0:
            predictor.rollback()
            predictor.load(f"v{k}", weights[k])
    stop.set()
    for t in threads:
        t.join()
    assert failures == []
    assert mismatches == []
    assert all(n > 0 for n in answers)
    assert predictor.version == "v50"


def test_http_endpoint_predict_and_model() -> None:
    predictor = Predictor(TASK)
    endpoint = start_endpoint(predictor)
    client = httpx.Client(base_url=endpoint.url)
    assert client.get("/model").status_code == 503
    assert client.post("/predict", json={"inputs": [[0.0] * 64]}).status_code == 503
    predictor.load("v7", biased_params(7))
    response = client.post("/predict", json={"inputs": [[0.0] * 64, [1.0] * 64]})
    assert response.status_code == 200
    assert response.json() == {"predictions": [7, 7], "version": "v7"}
    assert client.post("/predict", json={"inputs": [[0.0] * 3]}).status_code == 422
    assert client.post("/predict", json={"inputs": []}).status_code == 422
    model = client.get("/model").json()
    assert model["version"] == "v7" and model["task"] == TASK
    client.close()
    endpoint.stop()


def test_endpoint_on_loopback_socket_and_refuses_other_hosts() -> None:
    predictor = Predictor(TASK)
    predictor.load("v1", biased_params(1))
    with pytest.raises(ConfigError):
        start_endpoint(predictor, host="0.0.0.0")
    with start_endpoint(predictor) as endpoint:
        response = httpx.post(f"{endpoint.url}/predict", json={"inputs": [[0.5] * 64]})
        assert response.json() == {"predictions": [1], "version": "v1"}
        predictor.load("v2", biased_params(2))
        assert httpx.get(f"{endpoint.url}/model").json()["version"] == "v2"


def test_endpoint_connections_have_nagle_off() -> None:
    """Nagle on the server socket made every answer wait ~40 ms for the client's delayed ACK:
    the endpoint's side of a kept-alive connection must have TCP_NODELAY set."""
    predictor = Predictor(TASK)
    predictor.load("v1", biased_params(1))
    with start_endpoint(predictor) as endpoint, httpx.Client(base_url=endpoint.url) as client:
        client.post("/predict", json={"inputs": [[0.5] * 64]}).raise_for_status()
        assert server_sockets_nodelay(endpoint._server) == [True]
