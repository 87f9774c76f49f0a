"""Which sinks and observers the settings ask for: the ledger's writer hands every record that
reached the database to these sinks (ledger/sinks.py holds the protocol and the JSONL file); a
durable observer (Kafka) is a backlog among them, delivered by a runner of its own."""

from __future__ import annotations

from pathlib import Path

from tokenabacus.config import Settings
from tokenabacus.ledger.sinks import Sink
from tokenabacus.observe.backlog import Backlog, Runner
from tokenabacus.observe.jsonl import JsonlSink

OBSERVERS_DIR = "observers"


def backlog_path(settings: Settings, name: str) -> Path:
    """Where records wait for the observer ``name`` (observe/backlog.py)."""
    return settings.spool_path / OBSERVERS_DIR / name


def build_sinks(settings: Settings) -> list[Sink]:
    """The sinks the settings ask for; `serve` (build_outputs) and `db replay` both use this, so
    every record reaches every sink whichever of them moves it. A durable observer (Kafka) is a
    backlog here: its records wait on disk until the gateway's runner delivers them."""
    return _sinks(settings)[0]


def build_outputs(settings: Settings) -> tuple[list[Sink], list[Runner]]:
    """The sinks, and a runner per durable observer the settings enable, over the very backlog
    its sink fills."""
    sinks, kafka = _sinks(settings)
    runners: list[Runner] = []
    if kafka is not None:
        # aiokafka is imported only when a Kafka observer is configured
        from tokenabacus.observe.kafka import KafkaConsumer

        k = settings.sinks.kafka
        runners.append(Runner(KafkaConsumer(k), kafka, retry_max_s=k.retry_max_s))
    return sinks, runners


def _sinks(settings: Settings) -> tuple[list[Sink], Backlog | None]:
    sinks: list[Sink] = []
    j = settings.sinks.jsonl
    if j.enabled:
        sinks.append(JsonlSink(settings.jsonl_path, j.rotate_bytes, j.rotate_daily, j.keep))
    kafka = None
    if settings.sinks.kafka.enabled:
        kafka = Backlog(backlog_path(settings, "kafka"))
        sinks.append(kafka)
    return sinks, kafka
