"""Email over SMTP with the standard library, run in a worker thread so the event loop never blocks.

Plain-text body (render_text) and optional attachments: scheduled reports attach their CSV/XLSX files.
A 4xx SMTP reply or a dropped connection is retried; a 5xx reply (bad login, refused sender) is not.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

import aiohttp

from tokenabacus.config.channels import EmailConfig

from .base import NotifyError, deliver, scrub
from .message import Message, render_text


def _one_line(text: str) -> str:
    return " ".join(text.split())


class EmailNotifier:
    def __init__(self, config: EmailConfig, session: aiohttp.ClientSession | None = None):
        del session  # accepted for a uniform constructor; SMTP needs no HTTP session
        self._config = config
        self._password = config.password.get_secret_value() if config.password else None
        self._secrets = [self._password] if self._password else []

    @property
    def name(self) -> str:
        return self._config.name

    def __repr__(self) -> str:
        cfg = self._config
        return f"EmailNotifier(name={cfg.name!r}, host={cfg.host!r}, port={cfg.effective_port()}, to={cfg.to!r})"

    def build(self, message: Message) -> EmailMessage:
        cfg = self._config
        email = EmailMessage()
        email["Subject"] = _one_line(cfg.subject_prefix + message.title)
        email["From"] = cfg.from_addr
        email["To"] = ", ".join(cfg.to)
        email["Date"] = formatdate(usegmt=True)
        # An explicit domain: make_msgid() alone looks up this host's FQDN, which can stall on DNS.
        domain = parseaddr(cfg.from_addr)[1].rpartition("@")[2]
        # Every attempt of one alert keeps its Message-ID, so a mailbox can tell a repeat.
        key = message.idempotency_key
        email["Message-ID"] = f"<{key}@{domain}>" if key else make_msgid(domain=domain)
        email.set_content(render_text(message))
        for attachment in message.attachments:
            maintype, subtype = attachment.mime_type.split("/")
            email.add_attachment(attachment.content, maintype=maintype, subtype=subtype, filename=attachment.filename)
        return email

    async def send(self, message: Message) -> None:
        email = self.build(message)
        await deliver(self.name, lambda: asyncio.to_thread(self._send_blocking, email), self._config.retry_policy())

    async def attempt(self, message: Message) -> None:
        await asyncio.to_thread(self._send_blocking, self.build(message))

    def _fail(self, reason: str, retryable: bool) -> NotifyError:
        return NotifyError(self.name, scrub(reason, self._secrets), retryable=retryable)

    def _send_blocking(self, email: EmailMessage) -> None:
        cfg = self._config
        host, port, timeout = cfg.host, cfg.effective_port(), cfg.timeout_s
        try:
            smtp = (
                smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
                if cfg.security == "ssl"
                else smtplib.SMTP(host, port, timeout=timeout)
            )
            with smtp:
                if cfg.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.username is not None and self._password is not None:
                    smtp.login(cfg.username, self._password)
                refused = smtp.send_message(
                    email, from_addr=parseaddr(cfg.from_addr)[1], to_addrs=[parseaddr(a)[1] for a in cfg.to]
                )
        except smtplib.SMTPResponseException as exc:
            detail = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else exc.smtp_error
            raise self._fail(f"SMTP {exc.smtp_code}: {detail}", 400 <= exc.smtp_code < 500) from None
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            temporary = all(400 <= code < 500 for code in codes)
            raise self._fail(f"all recipients refused: {sorted(exc.recipients)}", temporary) from None
        except smtplib.SMTPNotSupportedError as exc:
            raise self._fail(f"server does not support a required extension: {exc}", False) from None
        except ssl.SSLCertVerificationError as exc:
            raise self._fail(f"TLS certificate rejected: {exc.verify_message}", False) from None
        except smtplib.SMTPServerDisconnected as exc:
            raise self._fail(f"server disconnected: {exc}", True) from None
        except OSError as exc:  # connection refused, timeout, TLS handshake: the network, so try again
            raise self._fail(f"network error: {type(exc).__name__}: {exc}", True) from None
        if refused:
            # Delivered to the others: retrying would send them duplicates, so report without retry.
            raise self._fail(f"delivered, but refused for {sorted(refused)}", False)
