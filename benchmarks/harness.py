"""The machinery every benchmark scenario shares: CPU pinning, child processes, wrk runs and their
parsing, CPU accounting, and the report (table, verdicts, exit status).

A scenario takes `parser()`, adds its own options, and calls `run(parse(ap), measure, judge)`:
`measure(bench)` starts its targets and calls `bench.load(...)` on each; `judge(bench)` turns
`bench.runs` into verdicts. Exit status: 0 ok, 1 errors or non-2xx answers seen, 2 wrk missing or
a target failed to start, 3 targets missed (only with --check), 130 interrupted.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyspy

# The process and file helpers are shared with the test suite (tests/procs.py, tests/assets.py).
# Scenarios run as plain scripts, so that folder joins the import path (after the scenario's own, so
# nothing there can shadow a benchmark module), as pytest adds it for the tests.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))

from procs import ProcessExited, free_port, spawn, stop, wait_http  # noqa: E402

__all__ = ["Bench", "Load", "Run", "Startup", "Target", "Verdict", "free_port", "http", "parse", "parser", "run"]


class Startup(Exception):
    """A target could not be started: the run ends with status 2."""


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------
def child_setup(cpus: set[int] | None) -> Callable[[], None]:
    """preexec_fn: pin the child (before it starts any thread) and let it die with us."""

    def setup() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        except OSError:
            pass

    return setup


class Procs:
    """Every child we start; stopped in reverse order on exit, error or Ctrl-C."""

    def __init__(self) -> None:
        self.items: list[tuple[str, subprocess.Popen]] = []

    def start(
        self, name: str, argv: list[str], log: Path, cpus: set[int] | None, env: dict[str, str] | None = None
    ) -> subprocess.Popen:
        # A session of its own: Ctrl-C reaches us alone, and we stop the children in order.
        p = spawn(argv, log, stdin=subprocess.DEVNULL, preexec_fn=child_setup(cpus), start_new_session=True, env=env)
        self.items.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 15.0) -> None:
        stop(p, timeout)

    def stop_all(self) -> None:
        for _, p in reversed(self.items):
            try:
                self.stop(p)
            except Exception:
                pass
        self.items.clear()


def http(
    method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 5.0
) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def tail(log: Path, n: int = 30) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


def wait_ready(name: str, url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    try:
        wait_http(url, proc, timeout, status=200)
    except ProcessExited:
        raise Startup(f"{name} exited with status {proc.returncode} before answering {url}:\n" + tail(log)) from None
    except TimeoutError:
        raise Startup(f"{name} did not answer 200 on {url} within {timeout:.0f}s:\n" + tail(log)) from None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


@dataclass(frozen=True)
class Target:
    """A running server under load: its name in the table, base URL, process and log."""

    name: str
    base: str
    proc: subprocess.Popen
    log: Path


# --------------------------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------------------------
LUA = r"""
wrk.method = "POST"
wrk.body = [==[%(body)s]==]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %(key)s"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
"""


# --unique-prompts: every request carries a different prompt, so nothing on the counting path
# (tokenizer caches included) can profit from seeing the same text again.
LUA_UNIQUE = r"""
local words = {"鲜花", "蛋糕", "spring", "sale", "折扣", "限时", "gift", "感恩", "妈妈", "love", "2026",
               "🎁", "免费配送", "members", "会员", "カーネーション", "thank-you", "限量", "bouquet", "¥199"}
local n = 0
request = function()
  n = n + 1
  local parts = {}
  for i = 1, 6 do parts[i] = words[math.random(#words)] end
  local body = string.format('{"model":"MODEL","messages":[{"role":"user",' ..
                             '"content":"写一段母亲节促销文案 #%d：%s"}],"max_tokens":32}',
                             n, table.concat(parts, " "))
  return wrk.format("POST", nil, nil, body)
end
"""


@dataclass(frozen=True)
class Load:
    """What wrk sends (its Lua script), and the same request as sent once by hand first."""

    script: Path
    body: bytes
    headers: dict[str, str]
    path: str = "/v1/chat/completions"


@dataclass
class Run:
    target: str
    load: str  # "c32" style label
    requests: int = 0
    rps: float = 0.0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    non2xx: int = 0
    sock_errors: int = 0
    target_cpu: float = float("nan")  # % of one core over the run
    upstream_cpu: float = float("nan")
    raw: dict = field(default_factory=dict)

    @property
    def bad(self) -> bool:
        return self.non2xx > 0 or self.sock_errors > 0 or self.requests == 0


def wrk(url: str, script: Path, threads: int, conns: int, seconds: int, cpus: set[int] | None) -> dict:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script), url]
    p = subprocess.run(
        argv, check=False, capture_output=True, text=True, preexec_fn=child_setup(cpus), timeout=seconds + 60
    )
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :])
    raise RuntimeError(f"wrk failed (status {p.returncode}): {p.stderr.strip() or p.stdout.strip()}")


def measure_wrk(
    target: str,
    load: str,
    url: str,
    script: Path,
    threads: int,
    conns: int,
    seconds: int,
    wrk_cpus: set[int] | None,
    pids: tuple[int, int | None],
) -> Run:
    target_pid, upstream_pid = pids
    c0 = cpu_seconds(target_pid)
    u0 = cpu_seconds(upstream_pid) if upstream_pid else float("nan")
    t0 = time.monotonic()
    w = wrk(url, script, threads, conns, seconds, wrk_cpus)
    wall = time.monotonic() - t0
    r = Run(target, load, raw=w)
    r.requests = w["requests"]
    r.rps = w["requests"] / (w["duration_us"] / 1e6) if w["duration_us"] else 0.0
    r.p50_ms, r.p99_ms = w["p50_us"] / 1000, w["p99_us"] / 1000
    r.non2xx = w["status"]
    r.sock_errors = w["connect"] + w["read"] + w["write"] + w["timeout"]
    r.target_cpu = 100 * (cpu_seconds(target_pid) - c0) / wall
    if upstream_pid:
        r.upstream_cpu = 100 * (cpu_seconds(upstream_pid) - u0) / wall
    return r


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
def fmt_table(runs: list[Run], markdown: bool) -> str:
    head = ["target", "load", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors", "target CPU %", "upstream CPU %"]
    rows = []
    for r in runs:
        rows.append(
            [
                r.target,
                r.load,
                f"{r.rps:,.0f}",
                f"{r.p50_ms:.2f}",
                f"{r.p99_ms:.2f}",
                str(r.non2xx),
                str(r.sock_errors),
                f"{r.target_cpu:.0f}",
                "-" if r.upstream_cpu != r.upstream_cpu else f"{r.upstream_cpu:.0f}",
            ]
        )
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(row) for row in rows])


@dataclass(frozen=True)
class Verdict:
    """One target of the scenario: `claim` (figure and target), met or not, and an aside after it."""

    claim: str
    ok: bool
    aside: str = ""


# --------------------------------------------------------------------------------------------
# A run
# --------------------------------------------------------------------------------------------
def parser(description: str) -> argparse.ArgumentParser:
    """The options every scenario takes; a scenario adds its own."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--duration", type=int, default=10, help="Seconds per measured wrk run (default 10).")
    ap.add_argument("--connections", type=int, default=32, help="Concurrency of the throughput run (default 32).")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1).")
    ap.add_argument("--warmup", type=int, default=2, help="Seconds of unmeasured load per target first (default 2).")
    ap.add_argument("--smoke", action="store_true", help="Very short runs (2 s) to prove the script works.")
    ap.add_argument("--markdown", action="store_true", help="Print the table as markdown.")
    ap.add_argument("--no-pin", action="store_true", help="Do not pin processes to CPUs.")
    ap.add_argument(
        "--unique-prompts",
        action="store_true",
        help="Send a different prompt with every request (random words and a counter).",
    )
    ap.add_argument("--check", action="store_true", help="Exit 3 when a target is missed.")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary directory (config, ledger, logs).")
    ap.add_argument(
        "--profile",
        metavar="FILE",
        help="Sample the gateway with py-spy during its throughput run; "
        "write collapsed stacks to FILE and print the hottest functions.",
    )
    return ap


def parse(ap: argparse.ArgumentParser) -> argparse.Namespace:
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.warmup = 2, 1
    if args.duration < 1 or args.connections < 2 or args.threads < 1 or args.connections < args.threads:
        ap.error("--duration and --threads must be >= 1, --connections >= 2 and >= --threads")
    return args


class Bench:
    """One run: the options, the CPU layout, a temporary folder, the children, and what was seen."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        cpus = sorted(os.sched_getaffinity(0))
        self.ncpu = len(cpus)
        self.pin = not args.no_pin and self.ncpu >= 2
        self.side_cpus = {cpus[-1]} if self.pin else None  # upstream + wrk
        self.target_cpus = set(cpus[:-1]) if self.pin else None  # the target under test
        self.tmp = Path(tempfile.mkdtemp(prefix="tokenabacus-bench-"))
        self.procs = Procs()
        self.runs: list[Run] = []
        self.problems: list[str] = []  # any problem makes the figures invalid (exit 1)
        self.notes: list[str] = []
        self.settings: list[str] = []  # non-default settings of the targets, for the report's header
        self.measuring = False

    def machine(self) -> str:
        return f"machine: {self.ncpu} CPUs; " + (
            f"target on CPU {sorted(self.target_cpus)}, upstream + wrk on CPU {sorted(self.side_cpus)}"
            if self.pin
            else "no CPU pinning"
        )

    def start(
        self,
        name: str,
        argv: list[str],
        base: str,
        ready: str,
        log: str,
        side: bool = False,
        env: dict[str, str] | None = None,
    ) -> Target:
        """Start a server on the target CPUs (on wrk's when side) and wait until GET base+ready is 200.

        log is a file name in the run's folder (kept with --keep)."""
        if not self.procs.items:  # the prerequisites are settled: say where things will run
            print(self.machine(), file=sys.stderr)
        path = self.tmp / log
        proc = self.procs.start(name, argv, path, self.side_cpus if side else self.target_cpus, env)
        wait_ready(name, base + ready, proc, path)
        return Target(name, base, proc, path)

    def chat_load(self, body: dict, key: str) -> Load:
        """A load of chat requests with this body and key (varied per request with --unique-prompts)."""
        script = self.tmp / "chat.lua"
        lua = LUA % {"body": json.dumps(body, ensure_ascii=False), "key": key}
        if self.args.unique_prompts:
            lua += LUA_UNIQUE.replace("MODEL", body["model"])
        script.write_text(lua, encoding="utf-8")
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        return Load(script, json.dumps(body, ensure_ascii=False).encode(), headers)

    def load(self, target: Target, load: Load, upstream: Target | None = None, profile: bool = False) -> None:
        """Check one answer, warm up, then measure at --connections and at light load (c1).

        upstream's CPU is accounted too; profile samples target with py-spy when --profile is on."""
        if not self.measuring:  # the set-up is over
            print("measuring", file=sys.stderr)
            self.measuring = True
        args, name = self.args, target.name
        pid, upstream_pid = target.proc.pid, upstream.proc.pid if upstream else None
        url = target.base + load.path
        status, raw = http("POST", url, load.body, load.headers, timeout=30)
        if status != 200:
            self.problems.append(f"{name}: the first request answered HTTP {status}: {raw[:300]!r}")
        else:
            usage = json.loads(raw).get("usage") or {}
            if not usage.get("prompt_tokens") or not usage.get("completion_tokens"):
                self.problems.append(f"{name}: answer without usage: {raw[:300]!r}")
        if args.warmup:
            w = wrk(url, load.script, args.threads, args.connections, args.warmup, self.side_cpus)
            if w["status"] or w["connect"] + w["read"] + w["write"] + w["timeout"]:
                self.problems.append(
                    f"{name} warm-up: {w['status']} non-2xx answers, socket errors: connect "
                    f"{w['connect']}, read {w['read']}, write {w['write']}, timeout {w['timeout']}"
                )
        for label, threads, conns in ((f"c{args.connections}", args.threads, args.connections), ("c1 (light)", 1, 1)):
            print(f"  {name:<12} -t{threads} -c{conns} -d{args.duration}s ...", file=sys.stderr, flush=True)
            spy = None
            if args.profile and profile and conns == args.connections:
                spy = pyspy.start(pid, args.duration, args.profile, child_setup(self.side_cpus))
            r = measure_wrk(
                name, label, url, load.script, threads, conns, args.duration, self.side_cpus, (pid, upstream_pid)
            )
            self.runs.append(r)
            if spy is not None:
                pyspy.finish(spy, args.profile, self.notes)
            if r.bad:
                self.problems.append(
                    f"{name} {label}: {r.non2xx} non-2xx answers, {r.sock_errors} socket errors "
                    f"(connect {r.raw['connect']}, read {r.raw['read']}, write {r.raw['write']}, "
                    f"timeout {r.raw['timeout']}) out of {r.requests} requests"
                )

    def close(self) -> None:
        self.procs.stop_all()
        if self.args.keep:
            print(f"kept {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def report(self, verdicts: list[Verdict]) -> int:
        """Print the table, the verdicts, the notes and any problems; the exit status."""
        args = self.args
        mode = ", ".join(
            [
                ("smoke" if args.smoke else "full") + " run",
                *(["unique prompts"] if args.unique_prompts else []),
                *self.settings,
            ]
        )
        print()
        print(
            f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s and -t1 -c1 -d{args.duration}s ({mode}, "
            f"{self.ncpu} CPUs{', pinned' if self.pin else ''})"
        )
        print(fmt_table(self.runs, args.markdown))
        print()
        bullet = "- " if args.markdown else ""
        for v in verdicts:
            met = "INVALID (errors, see below)" if self.problems else ("MET" if v.ok else "MISSED")
            print(f"{bullet}{v.claim}: {met}{v.aside}")
        for n in self.notes:
            print(f"{bullet}{n}")
        if self.problems:
            # On stdout with the table (so a saved report carries it) and on stderr.
            block = ["", "!" * 78, "ERRORS DURING THE BENCHMARK: the figures above are not valid"]
            block += [f"  * {p}" for p in self.problems] + ["!" * 78]
            print("\n".join(block))
            print("\n".join(block), file=sys.stderr)
            return 1
        if args.check and not all(v.ok for v in verdicts):
            return 3
        return 0


def run(args: argparse.Namespace, measure: Callable[[Bench], None], judge: Callable[[Bench], list[Verdict]]) -> int:
    """Measure, always stop every child, then judge and report; the exit status."""
    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    # SIGTERM (e.g. CI cancelling) unwinds like Ctrl-C so the finally block stops the children.
    def on_term(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)

    bench = Bench(args)
    try:
        measure(bench)
    except Startup as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        bench.close()
    return bench.report(judge(bench))
