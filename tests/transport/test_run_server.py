"""``run_server`` in a real process: serves mutual TLS, and SIGTERM stops it gracefully."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fedge.identity import PkiPaths
from fedge.transport.client import FedgeClient

from .conftest import Fleet

pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fedge.identity import PeerVerifier
    from fedge.transport.api import build_app
    from fedge.transport.server import ServerTls, run_server

    class Devices:
        def checkin(self, peer, request): raise NotImplementedError
        def model(self, peer, sha256): return b"model"
        def submit_update(self, peer, job, r, payload): raise NotImplementedError

    pki = Path(sys.argv[1])
    app = build_app(device=Devices(), uplink=None, admin=None,
                    verifier=PeerVerifier(pki / "ca.crt", pki / "crl.pem"))
    tls = ServerTls(pki / "ca.crt", pki / "issued/gw-a.crt", pki / "issued/gw-a.key")
    run_server(app, "127.0.0.1", 0, tls, access_log=False,
               on_started=lambda port: print(port, flush=True))
    print("stopped cleanly", flush=True)
    """
)


def test_run_server_serves_and_stops_on_sigterm(fleet: Fleet, tmp_path: Path) -> None:
    pki: PkiPaths = fleet.pki
    script = tmp_path / "serve.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(pki.directory)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        client = FedgeClient(
            f"https://localhost:{port}", ca=pki.ca_cert, cert=pki.cert_for("dev-1"),
            key=pki.key_for("dev-1"), timeout=10.0,
        )  # fmt: skip
        with client:
            assert client.health().status == "ok"
            assert client.model("a" * 64) == b"model"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped cleanly" in out
