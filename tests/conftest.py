"""Real processes on real sockets: the gateway is started as `tokenabacus serve`, upstreams as
`python -m llama_cpp.server`, and clients are the openai SDK.

Process helpers live in procs.py and file lookups in assets.py (the benchmarks share both); they
are re-exported here for the test files that import them from conftest. Nothing here looks for
a model or tokenizer file until a test asks for one.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from openai import OpenAI

from assets import gguf_path, qwen_dir
from procs import free_port, spawn, stop, wait_http
from tokenabacus.ledger.store import Store

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "tokenabacus"
TIKTOKEN_DIR = ROOT / ".cache" / "tiktoken"  # a path in the checkout: nothing to look up
EMBEDDED = "smollm2-135m-instruct"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def __getattr__(name: str) -> Path:
    """GGUF and QWEN_DIR for test files that still import the constants: found when imported."""
    if name == "GGUF":
        return gguf_path()
    if name == "QWEN_DIR":
        return qwen_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def service_available(host: str, port: int, what: str) -> None:
    """Skip without the service, except under CI where a missing service is a failure."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return
    except OSError:
        if IN_CI:
            pytest.fail(f"{what} is not reachable on {host}:{port} under CI")
        pytest.skip(f"{what} is not running on {host}:{port}")


# The database names may be changed (TOKENABACUS_TEST_PG_DB, TOKENABACUS_TEST_MARIADB_DB) so two
# test runs on one machine do not drop each other's tables.
DATABASES = {
    "sqlite": None,
    "postgresql": (
        f"postgresql+psycopg://postgres@127.0.0.1:5432/{os.environ.get('TOKENABACUS_TEST_PG_DB', 'test')}",
        5432,
        "PostgreSQL",
    ),
    "mariadb": (
        f"mysql+pymysql://root@127.0.0.1:3306/{os.environ.get('TOKENABACUS_TEST_MARIADB_DB', 'test')}",
        3306,
        "MariaDB",
    ),
}


def drop_ledger(url: str) -> None:
    """Remove the ledger's tables and migration history: a clean database for the next test."""
    from sqlalchemy import create_engine, text

    from tokenabacus.ledger.schema import metadata

    engine = create_engine(url)
    try:
        metadata.drop_all(engine)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    finally:
        engine.dispose()


@pytest.fixture(params=sorted(DATABASES))
def db_url(request, tmp_path):
    """Each ledger database in turn: SQLite in a temporary folder, the local PostgreSQL and MariaDB."""
    spec = DATABASES[request.param]
    if spec is None:
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    url, port, name = spec
    service_available("127.0.0.1", port, name)
    drop_ledger(url)
    yield url
    drop_ledger(url)


class GatewayProc:
    def __init__(
        self, data_dir: Path, config: dict | None = None, args: list[str] | None = None, env: dict | None = None
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.config_path: Path | None = None
        self.config = config
        if config is not None:
            self.config_path = data_dir.parent / f"{data_dir.name}.yaml"
            self.config_path.write_text(yaml.safe_dump(config, allow_unicode=True))
        self.admin_key = "sk-admin-" + os.urandom(24).hex()  # strong: a weak one is refused at start
        self.env = {**os.environ, "TOKENABACUS_ADMIN_KEY": self.admin_key, **(env or {})}
        self.args = args or []
        self.log = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen | None = None

    def common(self) -> list[str]:
        out = ["--data-dir", str(self.data_dir)]
        if self.config_path:
            out += ["--config", str(self.config_path)]
        return out

    def start(self) -> GatewayProc:
        cmd = [str(BIN), "serve", "--port", str(self.port), *self.common(), *self.args]
        self.proc = spawn(cmd, self.log, env=self.env)
        wait_http(f"http://127.0.0.1:{self.port}/health", self.proc, log=self.log)
        return self

    def stop(self) -> None:
        if self.proc:
            stop(self.proc, 30)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run([str(BIN), *args, *self.common()], capture_output=True, text=True, env=self.env, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"tokenabacus {' '.join(args)} failed ({r.returncode}): {r.stderr}")
        return r

    def create_key(self, user: str = "alice", project: str = "campaign-2024", department: str = "marketing") -> str:
        out = self.cli("keys", "create", "--user", user, "--project", project, "--department", department, "--json")
        return json.loads(out.stdout)["key"]

    def stream_and_leave(self, key: str, body: dict, events: int) -> str:
        """Start a streamed request, read ``events`` SSE events, then close the connection as a
        client that goes away mid-stream; returns the request id."""
        seen = 0
        with httpx.stream(
            "POST",
            f"{self.base_url}/chat/completions",
            json=body,
            timeout=120,
            headers={"Authorization": f"Bearer {key}"},
        ) as r:
            request_id = r.headers["x-request-id"]
            for line in r.iter_lines():
                if line.startswith("data: "):
                    seen += 1
                    if seen == events:
                        break  # leaving the block closes the connection
        return request_id

    def client(self, key: str, **kw) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=key, max_retries=0, **kw)

    def store(self) -> Store:
        url = ((self.config or {}).get("ledger") or {}).get("url")
        return Store(url or f"sqlite:///{self.data_dir / 'ledger.db'}")

    def record(self, request_id: str, timeout: float = 10.0) -> dict:
        """The ledger row of a request, once the background writer has moved it."""
        store = self.store()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                from sqlalchemy import select

                from tokenabacus.ledger.schema import usage_records as t

                with store.engine.connect() as c:
                    row = c.execute(select(t).where(t.c.request_id == request_id)).first()
                if row is not None:
                    return dict(row._mapping)
                time.sleep(0.05)
        finally:
            store.close()
        raise AssertionError(f"record {request_id} not in the ledger after {timeout}s")


class LlamaServer:
    def __init__(self, tmp: Path, alias: str = "smol", api_key: str | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = tmp / f"llama-server-{self.port}.log"
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(gguf_path()),
            "--model_alias",
            alias,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            "4096",
            "--verbose",
            "false",
        ]
        if api_key:
            cmd += ["--api_key", api_key]
        self.proc = spawn(cmd, self.log)
        wait_http(f"http://127.0.0.1:{self.port}/v1/models", self.proc, log=self.log)

    def stop(self) -> None:
        stop(self.proc, 20)


@pytest.fixture(scope="session")
def llama_upstream(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("llama"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def rogue_upstream():
    """tests/rogue_upstream.py: an upstream that misbehaves as its model name says."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(Path(__file__).parent / "rogue_upstream.py"), "--port", str(port)])
    wait_http(f"http://127.0.0.1:{port}/v1/models", proc)
    yield f"http://127.0.0.1:{port}/v1"
    stop(proc, 10)


@pytest.fixture(scope="session")
def embedded_gw(tmp_path_factory):
    gw = GatewayProc(tmp_path_factory.mktemp("embedded") / "data").start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def embedded_key(embedded_gw):
    return embedded_gw.create_key()


def upstream_models(base_url: str) -> list[dict]:
    """One real llama.cpp server behind several model entries, one per metering setup."""
    return [
        {
            "name": "smol-gguf",
            "engine": "upstream",
            "base_url": base_url,
            "upstream_model": "smol",
            "tokenizer": {"type": "gguf", "path": str(gguf_path())},
        },
        {
            "name": "qwen-hf",
            "engine": "upstream",
            "base_url": base_url,
            "upstream_model": "smol",
            "tokenizer": {"type": "hf", "path": str(qwen_dir())},
        },
        {"name": "smol-bare", "engine": "upstream", "base_url": base_url, "upstream_model": "smol"},
        {
            "name": "gpt-4o-mini",
            "engine": "upstream",
            "base_url": base_url,
            "upstream_model": "smol",
            "tokenizer": {"type": "tiktoken", "path": str(TIKTOKEN_DIR / "o200k_base.tiktoken")},
        },
        {
            "name": "smol-billed-upstream",
            "engine": "upstream",
            "base_url": base_url,
            "upstream_model": "smol",
            "tokenizer": {"type": "gguf", "path": str(gguf_path())},
            "bill": "upstream",
        },
    ]


@pytest.fixture(scope="session")
def upstream_gw(tmp_path_factory, llama_upstream):
    gw = GatewayProc(
        tmp_path_factory.mktemp("upstream") / "data", {"models": upstream_models(llama_upstream.base_url)}
    ).start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def upstream_key(upstream_gw):
    return upstream_gw.create_key(user="bob", project="search", department="rnd")
