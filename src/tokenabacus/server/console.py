"""The web console's pages: sign-in, sign-out, the page shell and its static files.

Everything the pages show comes from the /admin API (the CLI's code path): a signed-in browser
calls it with its session cookie instead of a bearer key (``signed_in``, used by the admin app's
authentication), and sends the session's CSRF token in ``X-CSRF-Token`` with anything that is not
a read. The sign-in form is guarded by a double-submitted token of its own, so no other site can
sign a browser in as someone else.
"""

from __future__ import annotations

import asyncio
import hmac
import html
import secrets
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs

from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from tokenabacus.governance.access import check_key_ip
from tokenabacus.governance.errors import Forbidden
from tokenabacus.governance.keys import ADMIN, VIEWER, Identity, hash_key
from tokenabacus.ledger.sessions import Session, Sessions

if TYPE_CHECKING:
    from tokenabacus.server.state import Gateway

COOKIE = "tokenabacus_session"
LOGIN_COOKIE = "tokenabacus_signin"
CSRF_HEADER = b"x-csrf-token"
ROLES = (ADMIN, VIEWER)  # members call /v1; the console is for those who read the spend
ERRORS = ("bad_key", "role", "csrf", "expired", "signed_out", "address", "locked")
MAX_FORM = 8192
READS = ("GET", "HEAD", "OPTIONS")
STATIC = "/console/static"
# The pages load nothing from elsewhere and run no inline script; ECharts sets inline styles.
HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def _package_dir(name: str) -> Path:
    return Path(str(resources.files("tokenabacus.console") / name))


def _cookie(scope: Scope, name: str) -> str | None:
    for k, v in scope["headers"]:
        if k == b"cookie":
            found = cookie_parser(v.decode("latin-1")).get(name)
            if found:
                return found
    return None


async def _form_body(request: Request) -> bytes | None:
    """A form's body, or None past MAX_FORM bytes (read no further: a form is small)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            return None
    return body


class Console:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.config = gw.settings.console
        self._sessions: Sessions | None = None

    @property
    def sessions(self) -> Sessions:
        if self._sessions is None:  # the store opens when the gateway starts
            self._sessions = Sessions(self.gw.store.db, int(self.config.session_hours * 3600))
        return self._sessions

    async def signed_in(self, scope: Scope) -> tuple[Identity, Session] | None:
        """The identity a request's session cookie acts as, while the session and its key live."""
        token = _cookie(scope, COOKIE)
        if not token:
            return None
        session = await asyncio.to_thread(self.sessions.get, token)
        if session is None:
            return None
        ident = self.gw.keys.holder(session.key_hash)
        if ident is None or ident.role not in ROLES:
            return None
        return ident, session

    @staticmethod
    def csrf_ok(scope: Scope, session: Session) -> bool:
        """Reads need nothing; anything else must carry the session's token in a header, which
        another site's form or image cannot set."""
        if scope["method"] in READS:
            return True
        sent = next((v for k, v in scope["headers"] if k == CSRF_HEADER), b"")
        return hmac.compare_digest(sent, session.csrf.encode())

    # Pages -------------------------------------------------------------------------------------
    def _page(self, name: str, status: int = 200, **values: str) -> HTMLResponse:
        text = (_package_dir("templates") / name).read_text(encoding="utf-8")
        values.setdefault("static", STATIC)
        for k, v in values.items():
            text = text.replace("{{" + k + "}}", html.escape(v, quote=True))
        return HTMLResponse(text, status, headers=HEADERS)

    def _cookie_headers(self, resp: Response, name: str, value: str, max_age: int, path: str = "/") -> None:
        resp.set_cookie(
            name,
            value,
            max_age=max_age,
            path=path,
            httponly=True,
            samesite="strict",
            secure=self.config.secure_cookies,
        )

    def _login_page(self, error: str = "", status: int = 200, headers: dict[str, str] | None = None) -> Response:
        token = secrets.token_urlsafe(24)
        resp = self._page("login.html", status, csrf=token, error=error if error in ERRORS else "")
        resp.headers.update(headers or {})
        self._cookie_headers(resp, LOGIN_COOKIE, token, 3600, "/console")
        return resp

    async def index(self, request: Request) -> Response:
        found = await self.signed_in(request.scope)
        if found is None:
            expired = _cookie(request.scope, COOKIE) is not None
            return RedirectResponse("/console/login" + ("?e=expired" if expired else ""), 303, headers=HEADERS)
        _, session = found
        return self._page("index.html", csrf=session.csrf, tz=self.gw.settings.governance.timezone)

    async def login_form(self, request: Request) -> Response:
        if await self.signed_in(request.scope) is not None:
            return RedirectResponse("/console/", 303, headers=HEADERS)
        return self._login_page(request.query_params.get("e", ""))

    async def login(self, request: Request) -> Response:
        body = await _form_body(request)
        if body is None:
            return self._login_page("bad_key", 413)
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        expected = _cookie(request.scope, LOGIN_COOKIE) or ""
        if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
            return self._login_page("csrf", 403)
        key = form.get("key", "").strip()
        ip = self.gw.caller_ip(request.scope)
        if key:
            locked = self.gw.auth.refusal("console", ip, key)  # before the key is looked up
            if locked is not None:
                return self._login_page("locked", 429, locked.headers)
        ident = await self.gw.keys.identify(key) if key else None
        if ident is None:
            if key and self.gw.keys.revoked_key_id(key) is None:
                self.gw.auth.failed("console", ip, key)
            return self._login_page("bad_key", 401)
        if ident.role not in ROLES:
            return self._login_page("role", 403)
        if ident.allow_ips is not None:
            try:
                check_key_ip(ident, ip)
            except Forbidden:
                return self._login_page("address", 403)
        token, _ = await asyncio.to_thread(self.sessions.open, hash_key(key), ident.key_id)
        resp = RedirectResponse("/console/", 303, headers=HEADERS)
        self._cookie_headers(resp, COOKIE, token, int(self.config.session_hours * 3600))
        resp.delete_cookie(LOGIN_COOKIE, path="/console")
        return resp

    async def logout(self, request: Request) -> Response:
        body = await _form_body(request) or b""
        form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        token = _cookie(request.scope, COOKIE)
        session = await asyncio.to_thread(self.sessions.get, token) if token else None
        if session is not None:
            if not hmac.compare_digest(form.get("csrf", "").encode(), session.csrf.encode()):
                return Response("sign-out needs the page's CSRF token\n", 403, media_type="text/plain")
            await asyncio.to_thread(self.sessions.close, token or "")
        resp = RedirectResponse("/console/login?e=signed_out", 303, headers=HEADERS)
        resp.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return resp

    def routes(self) -> list[BaseRoute]:
        async def home(_: Request) -> Response:
            return RedirectResponse("/console/", 308)

        return [
            Route("/console", home, methods=["GET"]),
            Route("/console/", self.index, methods=["GET"]),
            Route("/console/login", self.login_form, methods=["GET"]),
            Route("/console/login", self.login, methods=["POST"]),
            Route("/console/logout", self.logout, methods=["POST"]),
            Mount(STATIC, app=StaticFiles(directory=_package_dir("static"), check_dir=False), name="console-static"),
        ]
