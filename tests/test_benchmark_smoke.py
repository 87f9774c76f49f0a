"""The overhead benchmark runs end to end (a smoke run: figures are not checked here; they are
measured by hand and recorded in benchmarks/RESULTS.md)."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import IN_CI, ROOT, service_available


def test_overhead_benchmark_smoke():
    if shutil.which("wrk") is None:
        if IN_CI:
            pytest.fail("wrk is not installed under CI (.ci/run installs it)")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "overhead.py"), "--smoke", "--markdown"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for target in ("upstream", "tokenabacus", "bare proxy"):
        assert f"| {target} | c32 |" in r.stdout
    assert "INVALID" not in r.stdout and "not valid" not in r.stdout


def test_admission_benchmark_smoke():
    if shutil.which("wrk") is None:
        if IN_CI:
            pytest.fail("wrk is not installed under CI (.ci/run installs it)")
        pytest.skip("wrk is not installed (apt-get install -y wrk)")
    service_available("127.0.0.1", 6379, "Redis")
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "admission.py"), "--smoke", "--markdown"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for target in ("no limits", "memory", "redis"):
        assert f"| {target} | c32 |" in r.stdout
    assert "INVALID" not in r.stdout and "not valid" not in r.stdout


def test_reports_benchmark_smoke(tmp_path):
    """20,000 records through the real writer and the three timed reports (SQLite)."""
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "reports.py"), "--records", "20000", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    for what in ("ingest through the writer", "report chargeback", "report top", "report peaks", "report drift"):
        assert what in r.stdout
