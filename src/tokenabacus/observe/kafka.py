"""Usage events to a Kafka topic: the consumer the observe runner (observe/backlog.py) feeds from
the ``kafka`` backlog.

Each record goes out as the line the ledger wrote (JSON with the contract's names), keyed by its
``request_id`` so a topic consumer can dedupe and a request's record always lands on the same
partition. ``deliver`` returns only once the broker acknowledged every record (acks=all); any
failure raises, and the runner sends the whole file again later: at least once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import BrokerResponseError, IncompatibleBrokerVersion  # type: ignore[import-untyped]
from aiokafka.helpers import create_ssl_context  # type: ignore[import-untyped]

from tokenabacus.config import KafkaSinkConfig

log = logging.getLogger(__name__)

# Close enough to batch a backlog file's records, far below anything a reader of the topic notices.
LINGER_MS = 5
# aiokafka's default (100 ms) logs a connection error ten times a second while a broker is down.
RETRY_BACKOFF_MS = 500
# Shutdown waits at most this long for a producer to flush what it still holds.
CLOSE_TIMEOUT_S = 5.0


class KafkaConsumer:
    """The ``Consumer`` of observe/backlog.py for ``sinks.kafka``."""

    name = "kafka"

    def __init__(self, cfg: KafkaSinkConfig) -> None:
        self.cfg = cfg
        self._producer: AIOKafkaProducer | None = None
        # Whether the broker hands out producer ids: unknown until one answered.
        self._idempotent: bool | None = None

    async def start(self) -> None:
        """Connect (raises while no broker answers; the runner retries)."""
        await self._open()

    async def deliver(self, lines: Sequence[bytes]) -> None:
        producer = self._producer or await self._open()
        sent: list[asyncio.Future] = []
        try:
            unkeyed = 0
            for line in lines:
                key = _key(line)
                unkeyed += key is None
                fut = await producer.send(self.cfg.topic, line, key=key)
                fut.add_done_callback(_retrieve)
                sent.append(fut)
            if unkeyed:  # never the record itself: it may name users and projects
                log.warning("kafka: %d records without a request_id sent without a key", unkeyed)
            await asyncio.gather(*sent)
        except Exception:
            # A producer that failed once (broker restarted, its sequence numbers now unknown
            # there) is not trusted again: the next attempt starts a fresh one.
            await self._discard(self.cfg.request_timeout_s)
            raise

    async def close(self) -> None:
        await self._discard(CLOSE_TIMEOUT_S)

    def _new(self, idempotent: bool) -> AIOKafkaProducer:
        c = self.cfg
        tls = c.security_protocol in ("SSL", "SASL_SSL")
        return AIOKafkaProducer(
            bootstrap_servers=c.bootstrap_servers,
            client_id=c.client_id,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=LINGER_MS,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            compression_type=c.compression,
            request_timeout_ms=int(c.request_timeout_s * 1000),
            security_protocol=c.security_protocol,
            ssl_context=create_ssl_context() if tls else None,
            sasl_mechanism=c.sasl_mechanism or "PLAIN",
            sasl_plain_username=c.username,
            sasl_plain_password=c.password,
        )

    async def _open(self) -> AIOKafkaProducer:
        if self._idempotent is not False:
            producer = self._new(idempotent=True)
            try:
                await self._start(producer)
            except (BrokerResponseError, IncompatibleBrokerVersion) as e:
                # Connected, but the broker refused a producer id (no InitProducerId, a partial
                # implementation, no IdempotentWrite right): acks=all alone. A retried batch may
                # then be written twice, which at-least-once allows and request_id dedupes.
                log.warning("kafka: broker refused an idempotent producer (%s); using acks=all alone", type(e).__name__)
                self._idempotent = False
            else:
                self._idempotent = True
                self._producer = producer
                return producer
        producer = self._new(idempotent=False)
        await self._start(producer)
        self._producer = producer
        return producer

    async def _start(self, producer: AIOKafkaProducer) -> None:
        try:
            # Bounded: aiokafka waits for a producer id as long as the broker stays unreachable.
            await asyncio.wait_for(producer.start(), self.cfg.request_timeout_s)
        except BaseException:
            await _stop(producer, CLOSE_TIMEOUT_S)
            raise

    async def _discard(self, timeout: float) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await _stop(producer, timeout)


async def _stop(producer: AIOKafkaProducer, timeout: float) -> None:
    # The producer is being given up on: its own errors no longer matter.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(producer.stop(), timeout)


def _key(line: bytes) -> bytes | None:
    """The record's request_id as the message key (None for a line that has none)."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    rid = record.get("request_id") if isinstance(record, dict) else None
    return rid.encode() if isinstance(rid, str) else None


def _retrieve(fut: asyncio.Future) -> None:
    # Mark a failed send's error as seen: after the first failure the rest are not awaited, and
    # asyncio would log each as "exception was never retrieved".
    if not fut.cancelled():
        fut.exception()
