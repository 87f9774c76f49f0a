"""Copy the console's browser libraries from frontend/node_modules into the Python package.

`npm ci --prefix frontend` installs the pinned release that frontend/package-lock.json names (and
checks its checksum); this script copies the built files the pages load into
src/tokenabacus/console/static/vendor/, so the installed gateway serves them itself: no CDN, no
internet. Idempotent: a file already identical is left alone.

  python scripts/vendor_console.py
"""

from __future__ import annotations

import filecmp
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = ROOT / "frontend" / "node_modules"
VENDOR = ROOT / "src" / "tokenabacus" / "console" / "static" / "vendor"
# (package, file in the package, name under vendor/)
FILES = [
    ("echarts", "dist/echarts.min.js", "echarts.min.js"),
    ("echarts", "LICENSE", "echarts.LICENSE.txt"),
    ("echarts", "NOTICE", "echarts.NOTICE.txt"),
]


def pinned(package: str) -> str:
    """The version package-lock.json pins, so a stale node_modules is caught, not copied."""
    lock = json.loads((ROOT / "frontend" / "package-lock.json").read_text(encoding="utf-8"))
    return lock["packages"][f"node_modules/{package}"]["version"]


def fail(message: str) -> int:
    print(f"vendor_console: {message}", file=sys.stderr)
    return 1


def main() -> int:
    for package in sorted({p for p, _, _ in FILES}):
        meta = MODULES / package / "package.json"
        if not meta.is_file():
            return fail(f"{meta.relative_to(ROOT)} is missing: run `npm ci --prefix frontend` first")
        have, want = json.loads(meta.read_text(encoding="utf-8"))["version"], pinned(package)
        if have != want:
            return fail(f"{package} {have} is installed but the lock pins {want}: run `npm ci --prefix frontend`")
    VENDOR.mkdir(parents=True, exist_ok=True)
    copied = 0
    for package, name, target in FILES:
        src, dst = MODULES / package / name, VENDOR / target
        if not src.is_file():
            return fail(f"{src.relative_to(ROOT)} is missing: run `npm ci --prefix frontend`")
        if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
            continue
        tmp = dst.with_suffix(dst.suffix + ".tmp")
        shutil.copyfile(src, tmp)
        tmp.replace(dst)  # never a half-written file under the name the page loads
        copied += 1
    where = VENDOR.relative_to(ROOT)
    print(f"vendor_console: {copied} file(s) copied, {len(FILES) - copied} already current in {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
