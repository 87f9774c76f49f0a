"""Screenshots of the web console for the README: docs/screenshots/<page>-<lang>.png.

Starts a gateway on a fresh ledger filled by `tokenabacus demo seed` (in a temporary folder), signs
in with the admin key in headless Chromium (Debian's, driven by Playwright), and saves the main
pages (overview, board, request log, one request, quotas) in English and in Chinese.

  python scripts/screenshots.py [--out docs/screenshots] [--records 40000]
  python scripts/screenshots.py --url http://127.0.0.1:8000 --key sk-...   (a running gateway)

Needs /usr/bin/chromium (make install-test installs it) and fonts-noto-cjk for the Chinese pages.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent / "tokenabacus"
CHROMIUM = "/usr/bin/chromium"
ZONE = "Asia/Shanghai"
VIEWPORT = {"width": 1280, "height": 800}
PAGES = ["overview", "board", "requests", "request", "quotas", "login"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def demo_gateway(records: int):
    """A gateway on a demo-seeded ledger in a temporary folder; yields (base URL, admin key)."""
    with tempfile.TemporaryDirectory(prefix="tokenabacus-shots-") as tmp:
        data, config = Path(tmp) / "data", Path(tmp) / "tokenabacus.yaml"
        config.write_text(f"governance:\n  timezone: {ZONE}\n", encoding="utf-8")
        admin = "sk-admin-" + secrets.token_hex(12)
        env = {**os.environ, "TOKENABACUS_ADMIN_KEY": admin}
        common = ["--config", str(config), "--data-dir", str(data)]
        seeded = subprocess.run(
            [str(BIN), "demo", "seed", "--records", str(records), *common], env=env, capture_output=True, text=True
        )
        if seeded.returncode != 0:
            sys.exit(f"tokenabacus demo seed failed: {seeded.stderr.strip()}")
        port = free_port()
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115 - closed below
        proc = subprocess.Popen([str(BIN), "serve", "--port", str(port), *common], env=env, stdout=log, stderr=log)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    sys.exit("the gateway did not start:\n" + (Path(tmp) / "serve.log").read_text(errors="replace"))
                time.sleep(0.2)
            yield base, admin
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def settle(page) -> None:
    """Wait until every section has loaded and the charts have drawn."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('.loading')", timeout=30_000)
    page.wait_for_timeout(400)  # ECharts' entry animation


def shoot(base: str, key: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    saved: list[Path] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        try:
            for lang in ("en", "zh"):
                ctx = browser.new_context(viewport=VIEWPORT, locale="zh-CN" if lang == "zh" else "en-US")
                page = ctx.new_page()
                page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
                page.on(
                    "console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None
                )
                page.goto(f"{base}/console/login")
                page.evaluate("lang => localStorage.setItem('tokenabacus.lang', lang)", lang)
                page.reload()
                page.screenshot(path=out / f"login-{lang}.png")
                saved.append(out / f"login-{lang}.png")
                page.fill("input[name=key]", key)
                page.click("button[type=submit]")
                page.wait_for_url("**/console/**")
                for name in PAGES[:-1]:
                    if name == "request":
                        page.goto(f"{base}/console/#/requests?status=ok")  # a complete record
                        settle(page)
                        page.click("table[data-table=requests] tbody tr >> nth=0")
                    else:
                        page.goto(f"{base}/console/#/{name}")
                    settle(page)
                    path = out / f"{name}-{lang}.png"
                    # The request log runs long: its first screenful says what it is.
                    page.screenshot(path=path, full_page=name != "requests")
                    saved.append(path)
                ctx.close()
        finally:
            browser.close()
    if errors:
        sys.exit("the console logged errors:\n" + "\n".join(errors))
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshots")
    ap.add_argument("--records", type=int, default=40_000, help="demo records to seed")
    ap.add_argument("--url", help="a running gateway instead of a fresh demo one")
    ap.add_argument("--key", help="the admin (or viewer) key for --url")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists() or shutil.which("tokenabacus", path=str(BIN.parent)) is None:
        sys.exit(f"screenshots need {CHROMIUM} and {BIN} (make install-test)")
    if args.url:
        if not args.key:
            sys.exit("--url needs --key")
        saved = shoot(args.url.rstrip("/"), args.key, args.out)
    else:
        with demo_gateway(args.records) as (base, key):
            saved = shoot(base, key, args.out)
    for path in saved:
        print(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
