"""The servers a benchmark puts under load.

  upstream    a canned OpenAI-compatible server (aiohttp, fixed chat.completion with usage)
  bare proxy  an aiohttp pass-through (one shared ClientSession) in front of it: the floor for any
              Python proxy
  tokenabacus `tokenabacus serve` in front of it, with its ledger checked after a graceful stop

The first two run as children of this file (`targets.py upstream PORT`, `targets.py proxy PORT
UPSTREAM_PORT`), so a scenario's own imports never load aiohttp into them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from harness import Bench, Startup, Target, free_port

MODEL = "bench-model"
BODY = {
    "model": MODEL,
    "messages": [{"role": "user", "content": "写一段母亲节促销文案"}],
    "max_tokens": 32,
}  # at least the canned reply's 20: an upstream generates no more than asked
REPLY_TEXT = "母亲节特惠：全场鲜花礼盒八折，感恩有您，爱要说出口！"
CANNED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1700000000,
    "model": MODEL,
    "system_fingerprint": None,
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY_TEXT},
            "logprobs": None,
            "finish_reason": "length",
        }
    ],
    "usage": {"prompt_tokens": 14, "completion_tokens": 20, "total_tokens": 34},  # what the Qwen tokenizer counts
}


# --------------------------------------------------------------------------------------------
# The children: canned upstream and bare proxy
# --------------------------------------------------------------------------------------------
def new_loop():
    try:
        import uvloop  # the gateway runs on uvloop; give the helpers the same loop

        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover
        import asyncio

        return asyncio.new_event_loop()


def run_upstream(port: int) -> None:
    from aiohttp import web

    chat = json.dumps(CANNED, ensure_ascii=False).encode()
    models = json.dumps(
        {"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}]}
    ).encode()

    async def chat_completions(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=chat, content_type="application/json")

    async def list_models(_: web.Request) -> web.Response:
        return web.Response(body=models, content_type="application/json")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", list_models)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=new_loop())


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
        async with request.app["session"].request(
            request.method, base + request.path, data=body or None, headers={"Content-Type": "application/json"}
        ) as r:
            raw = await r.read()
            return web.Response(body=raw, status=r.status, content_type="application/json")

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/health", health)
    app.router.add_route("*", "/v1/{tail:.*}", forward)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=new_loop())


def start_upstream(bench: Bench) -> Target:
    """The canned upstream, on wrk's CPU: it stands for a remote server, not for the cost measured."""
    port = free_port()
    return bench.start(
        "upstream",
        [sys.executable, str(Path(__file__).resolve()), "upstream", str(port)],
        f"http://127.0.0.1:{port}",
        "/v1/models",
        "upstream.log",
        side=True,
    )


def start_proxy(bench: Bench, upstream: Target) -> Target:
    port, upstream_port = free_port(), upstream.base.rsplit(":", 1)[1]
    return bench.start(
        "bare proxy",
        [sys.executable, str(Path(__file__).resolve()), "proxy", str(port), upstream_port],
        f"http://127.0.0.1:{port}",
        "/health",
        "proxy.log",
    )


# --------------------------------------------------------------------------------------------
# tokenabacus
# --------------------------------------------------------------------------------------------
def add_gateway_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--metering",
        choices=["tokenizer", "upstream"],
        default="tokenizer",
        help="tokenizer (default): count locally with the Qwen tokenizer; upstream: no tokenizer "
        "configured, so records carry the upstream's usage (ledger still on).",
    )
    ap.add_argument(
        "--flush-interval-ms",
        type=float,
        metavar="MS",
        help="Diagnostic: set ledger.flush_interval_ms in the gateway's config (default: the gateway's own).",
    )


def qwen_dir() -> str:
    from assets import qwen_dir  # tests/assets.py: importable once harness has set the path

    try:
        return str(qwen_dir())
    except LookupError as e:
        raise Startup(str(e)) from None


def tokenabacus_bin() -> str:
    venv_bin, root = Path(sys.executable).parent, Path(__file__).resolve().parent.parent
    for cand in (venv_bin / "tokenabacus", root / ".venv" / "bin" / "tokenabacus"):
        if cand.is_file():
            return str(cand)
    found = shutil.which("tokenabacus")
    if not found:
        raise Startup("the tokenabacus command is not installed (make install)")
    return found


class Gateway:
    """`tokenabacus serve` with one worker, spool with fsync, SQLite ledger writer and JSONL sink,
    configured from --metering and --flush-interval-ms; checked after a graceful stop."""

    name = "tokenabacus"

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.bin = tokenabacus_bin()  # before anything starts: a missing command fails the run at once
        self.data = bench.tmp / "data"
        self.config = bench.tmp / "tokenabacus.yaml"

    def configure(self, upstream: Target, tokenizer_dir: str, extra: str = "") -> None:
        """One model in front of upstream, and `extra` (YAML) for what a scenario adds."""
        args = self.bench.args
        self.config.write_text(
            "models:\n"
            f"  - name: {MODEL}\n"
            "    engine: upstream\n"
            f"    base_url: {upstream.base}/v1\n"
            + (
                f"    tokenizer: {{type: hf, path: {json.dumps(tokenizer_dir)}}}\n"
                if args.metering == "tokenizer"
                else ""
            )
            + (
                f"ledger: {{flush_interval_ms: {args.flush_interval_ms}}}\n"
                if args.flush_interval_ms is not None
                else ""
            )
            + extra,
            encoding="utf-8",
        )
        if args.flush_interval_ms is not None:
            self.bench.settings.append(f"ledger.flush_interval_ms={args.flush_interval_ms:g}")

    def create_key(self, user: str = "bench", project: str = "bench") -> str:
        k = subprocess.run(
            [
                self.bin,
                "keys",
                "create",
                "--user",
                user,
                "--project",
                project,
                "--data-dir",
                str(self.data),
                "--config",
                str(self.config),
                "--json",
            ],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if k.returncode != 0:
            raise Startup(f"tokenabacus keys create failed ({k.returncode}): {k.stderr.strip()}")
        return json.loads(k.stdout.strip().splitlines()[-1])["key"]

    def start(self) -> Target:
        port = free_port()
        return self.bench.start(
            self.name,
            [self.bin, "serve", "--port", str(port), "--data-dir", str(self.data), "--config", str(self.config)],
            f"http://127.0.0.1:{port}",
            "/health",
            "tokenabacus.log",
        )

    def stop(self, target: Target) -> None:
        """Stop gracefully (the final drain moves every spooled record), then check the exit status,
        the log, and that the ledger holds a record for every measured request."""
        bench, problems = self.bench, self.bench.problems
        bench.procs.stop(target.proc, timeout=40)
        if target.proc.returncode not in (0, -signal.SIGTERM):
            problems.append(f"tokenabacus exited with status {target.proc.returncode} on SIGTERM")
        log_text = target.log.read_text(errors="replace")
        bad_lines = [
            ln
            for ln in log_text.splitlines()
            if any(w in ln for w in (" ERROR ", " CRITICAL ", "Traceback", " WARNING "))
        ]
        if bad_lines:
            problems.append(f"tokenabacus logged {len(bad_lines)} warning/error lines, first: {bad_lines[0][:300]}")
        jsonl = self.data / "usage.jsonl"
        recs = jsonl.read_bytes().count(b"\n") if jsonl.exists() else 0
        sent = sum(r.requests for r in bench.runs if r.target == target.name)
        bench.notes.append(
            f"ledger: {recs:,} records in usage.jsonl after shutdown; wrk counted {sent:,} completed "
            f"measured requests (plus warm-up and one check request)"
        )
        if recs < sent:
            problems.append(f"ledger has {recs} records but wrk completed {sent} measured requests")
        if recs:
            with jsonl.open("rb") as fh:
                first = json.loads(fh.readline())
            expected = bench.args.metering
            if first.get("usage_source") != expected:
                problems.append(f"ledger record usage_source is {first.get('usage_source')!r}, expected {expected!r}")


if __name__ == "__main__":
    role, port, *rest = sys.argv[1:]
    if role == "upstream":
        run_upstream(int(port))
    elif role == "proxy":
        run_proxy(int(port), int(rest[0]))
    else:
        sys.exit(f"unknown role {role!r}: upstream PORT or proxy PORT UPSTREAM_PORT")
