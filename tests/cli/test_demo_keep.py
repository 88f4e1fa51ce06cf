"""`fedge demo --keep`: the federation, its dashboard and metrics stay up until Ctrl-C.

A real `fedge demo --keep` runs as a subprocess with no --workdir. The test reads the URLs it
prints, opens the dashboard through its login link and scrapes every /metrics with the ops
token as the printed curl line does, then sends SIGINT: the demo exits 0, every process it
started is gone and so is its throwaway work directory.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = re.compile(r"^dashboard +(https://127\.0\.0\.1:\d+/login\?token=\S+&next=/dashboard/)$")
METRICS = re.compile(r"^metrics +(https://127\.0\.0\.1:\d+/metrics) +\((\S+)\)$")
TOKEN = re.compile(r"^ops token +(\S+): curl --cacert (\S+) ")
WORKDIR = re.compile(r"logs in (\S+)/logs$")


def _gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as gone: it runs nothing)."""
    stat = Path(f"/proc/{pid}/stat")
    try:
        return stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):
        return True


def _processes_under(root: Path) -> dict[int, str]:
    """Every process whose command line names a path under ``root`` (the demo's children)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(root) in cmd:
            found[int(entry.name)] = cmd
    return found


def _sample(text: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (Prometheus text)."""
    return sum(
        float(s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


class _Output:
    """The demo's merged output, read line by line on a thread (the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stream = proc.stdout

        def pump() -> None:
            for line in stream:
                self._new.put(line.rstrip("\n"))
            self._new.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def until(self, pattern: str, timeout: float) -> str:
        """Read lines until one matches ``pattern``; returns it."""
        while True:
            try:
                line = self._new.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r}:\n" + self.text) from None
            if line is None:
                raise AssertionError(f"the demo ended before {pattern!r}:\n" + self.text)
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def rest(self, timeout: float) -> None:
        """Read what is left once the process has exited."""
        while (line := self._new.get(timeout=timeout)) is not None:
            self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def one(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """The last line read that matches ``pattern``."""
        found = [m for m in map(pattern.search, self.lines) if m]
        assert found, f"no line matching {pattern.pattern!r}:\n" + self.text
        return found[-1]


@pytest.mark.integration
@pytest.mark.slow
def test_keep_serves_dashboard_and_metrics_until_ctrl_c(tmp_path: Path) -> None:
    # no --workdir: the demo makes a throwaway one under TMPDIR (here tmp_path) and must remove it
    argv = ["demo", "--keep", "--rounds", "1", "--devices-per-site", "2", "--task", "digits_mlp"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "fedge", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "TMPDIR": str(tmp_path)},
    )
    out = _Output(proc)
    try:
        out.until(r"^ops token ", timeout=600)  # the last line --keep prints
        root = Path(out.one(WORKDIR).group(1))
        assert root.parent == tmp_path and root.name.startswith("fedge-demo-")
        assert "job completed: 1 rounds committed" in out.text
        assert f"Ctrl-C stops every process and removes {root}" in out.text
        children = _processes_under(root)
        # the coordinator, 2 gateways and 4 devices, each `fedge ROLE --config ROOT/…`
        assert len(children) == 7, children
        assert proc.poll() is None

        # the dashboard: the printed login link sets the session cookie, the page and its data
        # follow the job; the throwaway fleet CA signed the ops listener's certificate
        token_file, ca = map(Path, out.one(TOKEN).groups())
        assert ca == root / "pki" / "ca.crt" and token_file == root / "ops.token"
        tls = ssl.create_default_context(cafile=str(ca))
        login = out.one(DASHBOARD).group(1)
        with httpx.Client(verify=tls, timeout=30, follow_redirects=True) as browser:
            page = browser.get(login)
            assert page.status_code == 200 and page.url.path == "/dashboard/"
            assert "<title>fedge · coordinator dashboard</title>" in page.text
            jobs = browser.get(page.url.join("/dashboard/api/jobs")).json()
            assert [(j["id"], j["state"], j["rounds_committed"]) for j in jobs] == [
                ("demo", "completed", 1)
            ]

        # /metrics of the coordinator and each gateway, with the token as the curl line says
        metrics = [METRICS.search(line) for line in out.lines]
        scraped = {m.group(2): m.group(1) for m in metrics if m}
        assert set(scraped) == {"coordinator", "gw-site-a", "gw-site-b"}
        bearer = {"Authorization": f"Bearer {token_file.read_text().strip()}"}
        for who, url in scraped.items():
            assert httpx.get(url, verify=tls, timeout=30).status_code == 401  # no token: refused
            answer = httpx.get(url, headers=bearer, verify=tls, timeout=30)
            assert answer.status_code == 200, (who, answer.text)
            if who == "coordinator":
                assert _sample(answer.text, "fedge_rounds_committed_total", job="demo") == 1
            else:  # each gateway sees its site's 2 devices online
                site = who.removeprefix("gw-")
                assert _sample(answer.text, "fedge_devices_online", site=site) == 2

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=120) == 0, out.text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    out.rest(timeout=30)
    assert "stopping…" in out.text
    assert out.lines[-1] == "all processes stopped", out.text
    for pid, cmd in children.items():
        assert _gone(pid), cmd
    assert not root.exists(), sorted(p.name for p in root.iterdir())
