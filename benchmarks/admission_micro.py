#!/usr/bin/env python3
"""Admission alone, in process: microseconds per request for `Admission.admit` + `Admission.settle`
with the four limits of benchmarks/admission.py (user per day, project per month, global in total,
a per-minute rate limit) on in-process counters. No HTTP, no engine: the seam's own cost.

    python benchmarks/admission_micro.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from zoneinfo import ZoneInfo

import yaml

from admission import LIMITS
from tokenabacus.api.call import Call
from tokenabacus.config import GovernanceConfig
from tokenabacus.governance.admission import Admission
from tokenabacus.governance.counters import MemoryCounters
from tokenabacus.governance.keys import Identity
from tokenabacus.governance.quotas import LimitSet, config_limits
from tokenabacus.ledger.record import OK, start_record


async def run(n: int) -> float:
    g = GovernanceConfig.model_validate(yaml.safe_load(LIMITS)["governance"])
    tz = ZoneInfo("UTC")
    adm = Admission(MemoryCounters(), tz, 4096, {}, {})
    adm.limits = LimitSet(config_limits(g.declared_quotas()), [], tz)
    ident = Identity("key_bench", "bench", "bench", None)

    async def prompt_count() -> int:
        return 30

    t0 = time.perf_counter()
    for i in range(n):
        call = Call("chat", {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16})
        ticket = await adm.admit(f"req-{i}", ident, "m", "127.0.0.1", call, prompt_count)
        rec = start_record(model="m", prompt_tokens=30, completion_tokens=16)
        rec.key_id, rec.user, rec.project = ident.key_id, ident.user, ident.project
        rec.status = OK
        rec.finish()
        assert ticket is not None
        adm.settle(rec, ticket)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000)
    args = ap.parse_args()
    print(f"admission + settle, 4 limits, in-process counters: {asyncio.run(run(args.requests)):.1f} us per request")


if __name__ == "__main__":
    main()
