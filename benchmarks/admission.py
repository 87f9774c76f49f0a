#!/usr/bin/env python3
"""What does admission cost? The same gateway as benchmarks/overhead.py, loaded three times:

  no limits     no quota applies to the caller
  memory        three applicable quotas (user per day, project per month, global in total) and a
                per-minute rate limit on every request; counters in the gateway process
  redis         the same limits with counters in Redis (redis.url; atomic scripts, one round trip
                to reserve and one to settle per request)

The limits are far above what the run uses, so every request is admitted and pays the full cost
of judging, reserving and settling. Target (issue): with limits, requests/s stays within 15% of
the run without them.

    python benchmarks/admission.py                 # full run
    python benchmarks/admission.py --smoke         # CI: short runs that prove the script works
    python benchmarks/admission.py --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import os
import sys

import harness
import targets
from harness import Bench, Verdict

KEEP_TARGET = 0.85  # req/s with limits >= 85% of the run without

LIMITS = """governance:
  quotas:
    - {user: bench, tokens: 1000000000000, period: day}
    - {project: bench, tokens: 1000000000000, period: month}
    - {global: true, tokens: 1000000000000000, period: total}
  rate_limits:
    - {user: bench, rpm: 1000000000}
"""


def measure(bench: Bench) -> None:
    tokenizer_dir = targets.qwen_dir()
    upstream = targets.start_upstream(bench)
    prefix = f"bench-{os.urandom(4).hex()}:"
    scenarios = [
        ("no limits", ""),
        ("memory", LIMITS),
        ("redis", LIMITS + f"redis: {{url: {bench.args.redis_url}, prefix: '{prefix}'}}\n"),
    ]
    for name, extra in scenarios:
        gateway = targets.Gateway(bench)
        gateway.name = name
        gateway.data = bench.tmp / f"data-{name.replace(' ', '-')}"
        gateway.configure(upstream, tokenizer_dir, extra)
        load = bench.chat_load(targets.BODY, gateway.create_key())
        target = gateway.start()
        bench.load(target, load, upstream)
        gateway.stop(target)


def judge(bench: Bench) -> list[Verdict]:
    hi = f"c{bench.args.connections}"
    by = {(r.target, r.load.split()[0]): r for r in bench.runs}
    base = by[("no limits", hi)].rps
    out = []
    for name in ("memory", "redis"):
        ratio = by[(name, hi)].rps / base if base else 0.0
        out.append(
            Verdict(
                f"{name} limits req/s / no limits req/s at {hi}: {ratio:.2f} (target >= {KEEP_TARGET:.2f})",
                ratio >= KEEP_TARGET,
            )
        )
    return out


def main() -> int:
    ap = harness.parser("Measure what quota and rate-limit admission costs per request, with wrk.")
    targets.add_gateway_options(ap)
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/0", help="Redis for the redis scenario.")
    return harness.run(harness.parse(ap), measure, judge)


if __name__ == "__main__":
    sys.exit(main())
