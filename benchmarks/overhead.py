#!/usr/bin/env python3
"""How much does tokenabacus cost per request? One run, three targets (benchmarks/targets.py),
measured with `wrk`:

  upstream    a canned OpenAI-compatible server (aiohttp, fixed chat.completion with usage)
  tokenabacus `tokenabacus serve` in front of it: one worker, the Qwen tokenizer counting prompt
              and completion tokens, spool with fsync, SQLite ledger writer and JSONL sink on
  bare proxy  an aiohttp pass-through (one shared ClientSession) in front of the same upstream:
              the floor for any Python proxy

Each target is loaded twice: at fixed concurrency (default -t1 -c32 -d10s) for throughput, and at
light load (-t1 -c1) for the latency a request pays. Targets (issue): tokenabacus keeps >= 50% of
the bare proxy's requests/s, and its light-load p50 adds < 2 ms over the upstream's.

    python benchmarks/overhead.py                 # full run (about 70 s)
    python benchmarks/overhead.py --smoke         # CI: -d2s runs, proves the script works (about 20 s)
    python benchmarks/overhead.py --unique-prompts  # a different prompt in every request
    python benchmarks/overhead.py --markdown      # the table as markdown

On a machine with 2+ CPUs the upstream and wrk share the last CPU and the target under test gets
the others (--no-pin to let the scheduler decide). Exit status: 0 ok, 1 errors or non-2xx answers
seen, 2 wrk missing or a target failed to start, 3 targets missed (only with --check).
"""

from __future__ import annotations

import sys

import harness
import targets
from harness import Bench, Verdict

RPS_TARGET = 0.50  # tokenabacus req/s >= 50% of the bare proxy's
ADDED_P50_TARGET_MS = 2.0  # tokenabacus p50 - upstream p50 at light load < 2 ms


def measure(bench: Bench) -> None:
    tokenizer_dir = targets.qwen_dir()  # found even with --metering upstream, as before
    gateway = targets.Gateway(bench)
    upstream = targets.start_upstream(bench)
    gateway.configure(upstream, tokenizer_dir)
    load = bench.chat_load(targets.BODY, gateway.create_key())

    bench.load(upstream, load)
    tokenabacus = gateway.start()
    bench.load(tokenabacus, load, upstream, profile=True)
    gateway.stop(tokenabacus)  # before the proxy starts on the same CPUs
    bench.load(targets.start_proxy(bench, upstream), load, upstream)


def judge(bench: Bench) -> list[Verdict]:
    by = {(r.target, r.load.split()[0]): r for r in bench.runs}
    hi = f"c{bench.args.connections}"
    proxy_rps = by[("bare proxy", hi)].rps
    ratio = by[("tokenabacus", hi)].rps / proxy_rps if proxy_rps else 0.0
    added = by[("tokenabacus", "c1")].p50_ms - by[("upstream", "c1")].p50_ms
    added_proxy = by[("bare proxy", "c1")].p50_ms - by[("upstream", "c1")].p50_ms
    return [
        Verdict(
            f"tokenabacus req/s / bare proxy req/s at {hi}: {ratio:.2f} (target >= {RPS_TARGET:.2f})",
            ratio >= RPS_TARGET,
        ),
        Verdict(
            f"tokenabacus p50 - upstream p50 at c1: {added:+.2f} ms (target < {ADDED_P50_TARGET_MS:.0f} ms)",
            added < ADDED_P50_TARGET_MS,
            f"   (bare proxy adds {added_proxy:+.2f} ms)",
        ),
    ]


def main() -> int:
    ap = harness.parser("Measure tokenabacus's per-request overhead with wrk.")
    targets.add_gateway_options(ap)
    return harness.run(harness.parse(ap), measure, judge)


if __name__ == "__main__":
    sys.exit(main())
