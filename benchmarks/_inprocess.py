"""In-process scenarios (no Kafka): per-record and batched scoring, streamad vs River."""

from __future__ import annotations

NAMES: list[str] = []


def scenarios(args) -> dict:
    return {}
