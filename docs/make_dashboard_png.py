"""Take docs/dashboard.png: run ``fedge demo --keep``, open its dashboard in headless Chromium.

Usage (Debian's chromium and the playwright package, as for the browser test)::

    .venv/bin/python docs/make_dashboard_png.py [--out docs/dashboard.png] [-- DEMO OPTIONS]

The demo runs to its end with its own defaults (or the options after ``--``); the page is opened
with the login link the demo prints, and the screenshot is taken once every round shows on the
timeline. Then the demo is stopped with Ctrl-C (SIGINT), as a person would.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
_DASHBOARD = re.compile(r"dashboard\s+(https://\S+)")


def main() -> None:
    """Run the demo, take the screenshot, stop the demo."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/dashboard.png", help="where the PNG goes")
    parser.add_argument("demo", nargs="*", help="options for fedge demo (after --)")
    args = parser.parse_args()
    from playwright.sync_api import expect, sync_playwright

    workdir = tempfile.mkdtemp(prefix="fedge-dashboard-png-")
    argv = [str(Path(sys.executable).with_name("fedge")), "demo", "--keep", "--workdir", workdir]
    demo = subprocess.Popen([*argv, *args.demo], stderr=subprocess.PIPE, text=True)
    assert demo.stderr is not None
    url = None
    try:
        for line in demo.stderr:
            sys.stderr.write(line)
            found = _DASHBOARD.search(line)
            url = found.group(1) if found else url
            if "--keep" in line:
                break
        else:
            raise SystemExit("the demo ended before it was kept running; see its output above")
        if url is None:
            raise SystemExit("the demo printed no dashboard URL")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_context(
                ignore_https_errors=True, viewport={"width": 1400, "height": 900}
            ).new_page()
            page.goto(url)
            expect(page.locator('[data-testid="round-bar"]').first).to_be_visible(timeout=30_000)
            expect(page.locator('[data-testid="model-row"]').first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(2500)  # one more poll: every section drawn from the same data
            page.screenshot(path=args.out, full_page=True)
            browser.close()
        print(f"wrote {args.out}")
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=120)


if __name__ == "__main__":
    main()
