"""One process per spool: an exclusive ``flock`` on a lock file beside what it protects.

The spool's open segment belongs to the process writing it; a second ``serve`` or ``db replay``
on the same spool would take that segment and lose records. So whoever writes or drains a spool
holds ``<spool_dir>/tokenabacus.lock`` (and ``<usage.jsonl>.lock`` for the JSONL file it appends
to, which it rotates) for as long as it runs. The kernel drops the lock when the process dies,
even by SIGKILL, so a crash never leaves a stale lock behind. The holder writes its pid into the
file so a refused process can name it.

Several workers sharing one data dir (not built yet) fit the same rule: each worker would take
a spool subdirectory of its own (``<spool_dir>/worker-N/``) and hold that directory's lock, and
replay would drain every subdirectory whose lock it can take.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from pathlib import Path

LOCK_NAME = "tokenabacus.lock"


class InUse(Exception):
    """Another live process holds the lock."""


# Locks this process holds, by lock file: flock conflicts between two descriptors of one
# process too, so taking a held lock again must reuse it.
_held: dict[Path, int] = {}


def lock_files(spool: Path, jsonl: Path | None, data_dir: Path | None = None) -> list[tuple[Path, str]]:
    """The lock files a process that writes this spool (and the JSONL file it appends to, if
    any) must hold, each with the name an operator knows the place by: ``data_dir`` when the
    spool is the data dir's own (no spool dir of its own was configured)."""
    spool_name = f"data dir {data_dir}" if data_dir is not None else f"spool dir {spool}"
    out = [(spool / LOCK_NAME, spool_name)]
    if jsonl is not None:
        out.append((jsonl.with_name(jsonl.name + ".lock"), f"JSONL file {jsonl}"))
    return out


def acquire(path: Path) -> None:
    """Take the lock at ``path`` (creating its directory), or raise InUse naming the holder."""
    path = path.absolute()
    if path in _held:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise InUse(pid) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _held[path] = fd


def release(path: Path) -> None:
    fd = _held.pop(path.absolute(), None)
    if fd is not None:
        os.close(fd)  # closing the last descriptor drops the flock


def holder(spool: Path) -> str:
    """The name the gateway writing ``spool`` holds database leases by (alerts, reports): its host
    and spool. Only one live process holds a spool, so a gateway restarted after a crash is the
    same holder and takes its leases back at once instead of waiting for them to expire."""
    digest = hashlib.sha256(str(spool.resolve()).encode()).hexdigest()[:16]
    return f"{socket.gethostname()[:80]}:{digest}"


def hold(spool: Path, jsonl: Path | None, data_dir: Path | None = None) -> None:
    """Take every lock of ``lock_files``, all or none; InUse names the place and the holder."""
    taken: list[Path] = []
    try:
        for path, what in lock_files(spool, jsonl, data_dir):
            if path.absolute() in _held:
                continue
            try:
                acquire(path)
            except InUse as e:
                raise InUse(f"{what} is in use by another tokenabacus process (pid {e})") from None
            taken.append(path)
    except BaseException:
        for p in taken:
            release(p)
        raise
