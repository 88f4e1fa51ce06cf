"""The process supervisor leaves nothing behind; the proxy forwards, cuts and restores."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from pathlib import Path

import pytest

from fedge.demo import Supervisor, TcpProxy
from fedge.errors import FedgeError


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie still answers kill(0); check its state
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"


@pytest.mark.integration
def test_stop_all_leaves_no_process_even_with_children(tmp_path: Path) -> None:
    code = "import subprocess,sys,time; subprocess.Popen([sys.executable,'-c','import time; time.sleep(60)']); print('up', flush=True); time.sleep(60)"
    with Supervisor(tmp_path) as sup:
        p = sup.start("parent", [sys.executable, "-c", code])
        sup.wait_until(lambda: "up" in p.tail(), timeout=30, what="child start")
        pid = p.pid
        assert pid is not None and p.alive
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    assert _gone(pid)
    for child in children:
        assert _gone(int(child))


@pytest.mark.integration
def test_a_grandchild_that_ignores_sigterm_is_killed_after_its_parent_exits(
    tmp_path: Path,
) -> None:
    """The child exits on SIGTERM but what it started does not: the group is still killed."""
    grandchild = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"
    code = (
        "import subprocess,sys,time; "
        f"subprocess.Popen([sys.executable,'-c',{grandchild!r}]); print('up', flush=True); "
        "time.sleep(60)"
    )
    sup = Supervisor(tmp_path)
    p = sup.start("parent", [sys.executable, "-c", code])
    sup.wait_until(lambda: "up" in p.tail(), timeout=30, what="child start")
    assert p.pid is not None
    children = Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()
    assert len(children) == 1
    sup.stop_all(timeout=1.0)
    assert _gone(p.pid) and _gone(int(children[0]))
    assert not p.group_alive()


@pytest.mark.integration
def test_sigterm_ignored_gets_killed(tmp_path: Path) -> None:
    code = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    sup = Supervisor(tmp_path)
    p = sup.start("stubborn", [sys.executable, "-c", code])
    sup.wait_until(lambda: "up" in p.tail(), timeout=30, what="start")
    assert p.stop(timeout=1.0) is not None
    assert not p.alive


@pytest.mark.integration
def test_wait_until_reports_a_crashed_child(tmp_path: Path) -> None:
    sup = Supervisor(tmp_path)
    sup.start("crash", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])
    with pytest.raises(FedgeError, match=r"(?s)crash exited with 3.*boom"):
        sup.wait_until(lambda: False, timeout=20, what="never")
    sup.stop_all()


def _echo_server() -> tuple[socket.socket, int]:
    srv = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            threading.Thread(
                target=lambda c=conn: [c.sendall(d) for d in iter(lambda: c.recv(1024), b"")],
                daemon=True,
            ).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv, srv.getsockname()[1]


@pytest.mark.integration
def test_proxy_forwards_cuts_and_restores() -> None:
    srv, port = _echo_server()
    proxy = TcpProxy("127.0.0.1", port)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c:
            c.sendall(b"hello")
            assert c.recv(16) == b"hello"
            proxy.cut()
            time.sleep(0.3)
            with pytest.raises(OSError):
                c.sendall(b"x" * 10)
                if not c.recv(16):
                    raise ConnectionResetError("closed")
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c2:
            c2.settimeout(2)
            try:  # refused while cut: closed without data, or reset
                c2.sendall(b"again")
                assert c2.recv(16) == b""
            except ConnectionResetError:
                pass
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as c3:
            c3.sendall(b"back")
            assert c3.recv(16) == b"back"
        # the client→server bytes are counted before their echo comes back; the echo's own
        # count may still be in flight when recv returns
        assert proxy.bytes_forwarded >= len(b"hello") + len(b"back")
    finally:
        proxy.close()
        srv.close()


@pytest.mark.integration
def test_sigterm_to_the_parent_stops_its_children(tmp_path: Path) -> None:
    """A supervising process killed with SIGTERM (e.g. by `timeout`) still stops its children."""
    import signal
    import subprocess

    code = (
        "import sys, time\n"
        "from fedge.demo import Supervisor\n"
        f"sup = Supervisor({str(tmp_path)!r})\n"
        "p = sup.start('child', [sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\n"
        "with sup:\n"
        "    time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) == 128 + signal.SIGTERM
    deadline = time.monotonic() + 10
    while not _gone(child_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(child_pid)
