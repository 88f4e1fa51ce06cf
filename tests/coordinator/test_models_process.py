"""A real coordinator process signs versions; ``fedge models`` drives the registry over mTLS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedge.core.params import ParamSpec
from fedge.core.serde import decode_params, encode_arrays
from fedge.identity.signing import ReleaseVerifyKey
from fedge.tasks import get_task
from fedge.tasks.export import import_weights, onnx_runner
from fedge.transport import messages as m
from fedge.transport.client import FedgeClient
from fedge.transport.releases import check_release

from .test_process import _admin, _start, _stop, _wait, fleet, register_devices  # noqa: F401 -- the fixture

pytestmark = pytest.mark.integration


def test_signed_versions_and_the_models_cli(fleet: Path) -> None:  # noqa: F811
    text = (fleet / "coordinator.toml").read_text()  # a top-level key goes before [pki]
    (fleet / "coordinator.toml").write_text('release_key = "pki/release.key"\n' + text)
    proc, url = _start(fleet)
    try:
        _admin(
            fleet,
            url,
            "jobs",
            "create",
            "--job-name",
            "digits",
            "--task",
            "digits_mlp",
            "--rounds",
            "1",
            "--devices-per-round",
            "2",
            "--min-devices",
            "2",
            "--over-selection",
            "1.0",
        )
        pki = fleet / "pki"
        pub = ReleaseVerifyKey.load(pki / "release.pub")
        gw = FedgeClient(
            url, ca=pki / "ca.crt", cert=pki / "issued/gw-a.crt", key=pki / "issued/gw-a.key"
        )
        with gw:

            def assigned() -> list[m.RoundAssignment]:
                req = m.GatewayCheckIn(
                    gateway_id="gw-a",
                    site="s1",
                    nonce=m.new_nonce(),
                    online_devices=2,
                    eligible_devices=2,
                )
                return gw.gateway_checkin(req).assignments

            a = _wait(assigned, "an assignment")[0]  # type: ignore[index]
            initial = a.model_sha256
            model = gw.model(initial)
            check_release(pub, initial, model, gw.release(initial))  # over mTLS
            params, _ = decode_params(model)
            spec = ParamSpec.of(params)
            sums = {
                n: np.full(s, 0.01, np.float64)
                for n, s in zip(spec.names, spec.shapes, strict=True)
            }
            meta = {
                "kind": "partial",
                "job": "digits",
                "round": str(a.round),
                "gateway": "gw-a",
                "site": "s1",
                "nonce": m.new_nonce(),
                "total_weight": "20.0",
                "num_accepted": "2",
                "contributors": json.dumps(["d1", "d2"]),
                "rejected": "[]",
                # the two devices' federated evaluation of the initial model: 30 of 40 right
                "eval_examples": "40",
                "eval_correct": "30.0",
                "eval_loss_sum": "48.0",
                "eval_devices": "2",
            }
            register_devices(gw, fleet / "pki", "d1", "d2")
            assert gw.submit_partial("digits", a.round, encode_arrays(sums, meta)).accepted
            _wait(lambda: "completed" in _admin(fleet, url, "jobs", "list"), "the job to end")
            listed = _admin(fleet, url, "models", "list", "digits")
            assert "production" in listed and "candidate" in listed
            assert "0.7500 (2 dev, 40 ex)" in listed  # the initial model's federated evaluation
            admin = FedgeClient(
                url, ca=pki / "ca.crt", cert=pki / "issued/admin.crt", key=pki / "issued/admin.key"
            )
            with admin:
                job_v1 = admin.get_job("digits").rounds[0].model_sha256
            assert job_v1 is not None
            check_release(pub, job_v1, gw.model(job_v1), gw.release(job_v1))
        shown = json.loads(_admin(fleet, url, "models", "show", job_v1))
        assert shown["status"] == "production" and shown["signed"]
        assert shown["parent_sha256"] == initial and shown["version"] == "digits/r1"
        assert shown["federated"] is None  # no round has started from it yet
        first = json.loads(_admin(fleet, url, "models", "show", initial))
        assert first["federated"] == {"accuracy": 0.75, "loss": 1.2, "examples": 40, "devices": 2}
        diff = _admin(fleet, url, "models", "diff", initial, job_v1)
        assert "L2 distance" in diff and "B (digits/r1) has no federated evaluation yet" in diff
        assert "production" in _admin(fleet, url, "models", "promote", initial)
        assert "digits/r1" in _admin(fleet, url, "models", "rollback", "digits")
        out = fleet / "export"
        _admin(fleet, url, "models", "export", "digits/r1", "--out", str(out), "--onnx")
        task_name, weights, meta_out = import_weights((out / "model.safetensors").read_bytes())
        assert task_name == "digits_mlp" and meta_out["version"] == "digits/r1"
        x = np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)
        import torch

        from fedge.core.params import load_into_module

        module = get_task("digits_mlp").build_model().eval()
        load_into_module(module, weights)
        with torch.inference_mode():
            expected = module(torch.from_numpy(x)).numpy()
        got = onnx_runner((out / "model.onnx").read_bytes())(x)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    finally:
        assert _stop(proc) == 0
