"""Certificate issuing at fleet scale (issue 5, scale limits): one call per certificate against
one ``issue_many`` for the whole fleet, in the same run.

Each ``issue()`` call reads and rewrites the inventory (it must: another ``fedge pki`` command may
run in between), so N separate calls cost O(N²) inventory bytes; ``issue_many`` (what ``fedge
pki issue device NAME...`` and the demo and benchmarks use) reads and writes it once and syncs
the files together: O(N). Printed: total seconds, ms per certificate in the first and last tenth
(flat = linear), and the ratio.

    python benchmarks/bench_pki.py [--n 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, table

from fedge.identity import Role
from fedge.identity.pki import CertificateRequest, init_pki, issue, issue_many


def _requests(n: int) -> list[CertificateRequest]:
    return [CertificateRequest(Role.DEVICE, f"dev-{i:05d}", f"site-{i % 4}") for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="certificates to issue")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-pki-"))
    requests = _requests(args.n)

    one = init_pki(root / "one-by-one", "bench")
    per: list[float] = []
    start = time.perf_counter()
    for r in requests:
        t = time.perf_counter()
        issue(one.directory, r.role, r.name, site=r.site)
        per.append(time.perf_counter() - t)
    separate = time.perf_counter() - start

    many = init_pki(root / "batch", "bench")
    start = time.perf_counter()
    issue_many(many.directory, requests)
    batch = time.perf_counter() - start

    # the batch's own growth: 1/10 of the fleet against the whole fleet, ms per certificate
    small = init_pki(root / "small", "bench")
    start = time.perf_counter()
    issue_many(small.directory, requests[: max(1, args.n // 10)])
    small_s = time.perf_counter() - start

    tenth = max(1, args.n // 10)
    result = {
        "n": args.n,
        "separate_calls_s": round(separate, 2),
        "separate_first_tenth_ms": round(1e3 * sum(per[:tenth]) / tenth, 2),
        "separate_last_tenth_ms": round(1e3 * sum(per[-tenth:]) / tenth, 2),
        "issue_many_s": round(batch, 2),
        "issue_many_ms_per_cert": round(1e3 * batch / args.n, 2),
        "issue_many_tenth_ms_per_cert": round(1e3 * small_s / tenth, 2),
        "speedup": round(separate / batch, 1),
    }
    rows = [
        ["separate issue() calls", f"{separate:.2f}",
         f"{result['separate_first_tenth_ms']} → {result['separate_last_tenth_ms']}"],
        ["one issue_many()", f"{batch:.2f}",
         f"{result['issue_many_tenth_ms_per_cert']} (n/10) → {result['issue_many_ms_per_cert']} (n)"],
    ]  # fmt: skip
    print(table(["how", f"seconds for {args.n}", "ms per certificate"], rows))
    print(f"issue_many is {result['speedup']}x faster than {args.n} separate calls")
    out = RESULTS / "pki_issue.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
