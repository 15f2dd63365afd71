"""Streaming generator events into Kafka: `produce(...)` and `python -m fluxo_dev.streaming produce`."""

from .producer import event_files, produce

__all__ = ["event_files", "produce"]
