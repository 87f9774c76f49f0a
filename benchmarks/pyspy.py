"""--profile: sample the gateway with py-spy during a run and summarise where its time went."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path


def start(pid: int, seconds: int, out: str, preexec_fn: Callable[[], None]) -> subprocess.Popen | None:
    """Record pid's stacks into out (collapsed, all threads) during a run of `seconds`."""
    venv_spy = Path(sys.executable).parent / "py-spy"
    spy = shutil.which("py-spy") or (str(venv_spy) if venv_spy.is_file() else None)
    if spy is None:
        print("--profile: py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    # Sample all but the last two seconds of the run.
    argv = [
        spy,
        "record",
        "-p",
        str(pid),
        "-d",
        str(max(1, seconds - 2)),
        "-f",
        "raw",
        "-r",
        "200",
        "-t",
        "--nonblocking",
        "-o",
        out,
    ]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, preexec_fn=preexec_fn)


def finish(p: subprocess.Popen, out: str, notes: list[str], top: int = 15) -> None:
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
    lines = [
        f"profile ({out}): {main:,} busy samples of the event-loop thread; other threads busy for "
        + (", ".join(f"{k} {v:,}" for k, v in sorted(others.items(), key=lambda x: -x[1])) or "0")
        + " samples",
        "  self %  function (event-loop thread; 'Runner.run' = time inside uvloop/httptools C code)",
    ]
    lines += [f"  {100 * c / main:6.1f}  {f}" for f, c in sorted(own.items(), key=lambda x: -x[1])[:top]]
    lines += ["  incl %  function"]
    skip = (
        "typer/",
        "click/",
        "uvicorn/main.py",
        "uvicorn/server.py",
        "uvicorn/_compat.py",
        "asyncio/runners.py",
        "cli/main.py",
        "cli/serve.py",
        "<module>",
    )
    hot = [(f, c) for f, c in sorted(incl.items(), key=lambda x: -x[1]) if not any(k in f for k in skip)]
    lines += [f"  {100 * c / main:6.1f}  {f}" for f, c in hot[: top * 2]]
    notes.append("\n".join(lines))
