"""Real processes on real sockets, shared by the tests (through conftest.py) and the benchmarks:
a free port, a child with its output in a log, waiting until it answers HTTP, stopping it.

Standard library only: the benchmarks' helper processes import it too, and must not pay for (or
depend on) the test suite's packages.
"""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ProcessExited(RuntimeError):
    """The child ended before its URL answered."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(argv: list[str], log: Path, **popen: Any) -> subprocess.Popen:
    """Start argv with stdout and stderr appended to log; the child keeps its own handle."""
    with open(log, "ab") as fh:
        return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, **popen)


def http_status(url: str, timeout: float = 1.0) -> int:
    """The status of a GET, error statuses included; OSError when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except http.client.HTTPException as e:  # a server still starting may cut the answer short
        raise ConnectionError(str(e)) from e


def wait_http(
    url: str, proc: subprocess.Popen, timeout: float = 120, log: Path | None = None, *, status: int | None = None
) -> None:
    """Poll url until it answers: any status below 500, or exactly `status` when given.

    Raises ProcessExited (with the end of log, if given) when the child dies first, TimeoutError
    when it stays silent."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise ProcessExited(f"process exited with {proc.returncode} before {url} answered\n{detail}")
        try:
            got = http_status(url)
            if (got < 500) if status is None else (got == status):
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


def stop(proc: subprocess.Popen, timeout: float = 30) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it takes longer than timeout."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll ``check`` until it returns something true (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")
