"""Which sinks and observers the settings ask for: the ledger's writer hands every record that
reached the database to these sinks (ledger/sinks.py holds the protocol and the JSONL file); a
durable observer (Kafka) is a backlog among them, delivered by a runner of its own."""

from __future__ import annotations

from pathlib import Path

from tokenabacus.config import Settings
from tokenabacus.ledger.sinks import JsonlSink, Sink
from tokenabacus.observe.backlog import Backlog, Runner

OBSERVERS_DIR = "observers"


def backlog_path(settings: Settings, name: str) -> Path:
    """Where records wait for the observer ``name`` (observe/backlog.py)."""
    return settings.spool_path / OBSERVERS_DIR / name


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks the settings ask for; `serve` and `db replay` both use this, so every record
    reaches every sink whichever of them moves it. A durable observer (Kafka) is a backlog here:
    its records wait on disk until the gateway's runner delivers them."""
    sinks: list[Sink] = []
    j = settings.sinks.jsonl
    if j.enabled:
        sinks.append(JsonlSink(settings.jsonl_path, j.rotate_bytes, j.rotate_daily, j.keep))
    if settings.sinks.kafka.enabled:
        sinks.append(Backlog(backlog_path(settings, "kafka")))
    return sinks


def build_observers(settings: Settings, sinks: list[Sink]) -> list[Runner]:
    """A runner per durable observer the settings enable, over the backlog its sink fills."""
    out: list[Runner] = []
    k = settings.sinks.kafka
    if k.enabled:
        # aiokafka is imported only when a Kafka observer is configured
        from tokenabacus.observe.kafka import KafkaConsumer

        backlog = next(s for s in sinks if isinstance(s, Backlog) and s.root.name == "kafka")
        out.append(Runner(KafkaConsumer(k), backlog, retry_max_s=k.retry_max_s))
    return out
