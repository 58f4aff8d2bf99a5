"""The transactional outbox: every notification is written in the transaction of the
audit event it reports, and a worker delivers it at least once.

INTERFACE SKELETON (issue 14): the types below are the contract between the outbox,
its worker and the sinks (webhooks, Slack). The implementation lands with the outbox.

* :class:`~server.audit.AuditWriter` calls :meth:`Outbox.enqueue` for every event it
  records, in the same session and transaction: one ``outbox`` row per sink whose
  :meth:`Sink.wants` says yes, keyed ``"<event id>.<sink name>"`` (the idempotency key).
* The worker claims due rows with a lease, calls :meth:`Sink.deliver`, and marks them
  delivered, or schedules a retry with backoff, or (after the last attempt, or on a
  permanent failure) marks them dead: kept and shown by ``jit-ssh admin outbox``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Delivery", "DeliveryFailed", "Sink"]


@dataclass(frozen=True)
class Delivery:
    """One outbox message as a sink receives it."""

    #: The idempotency key: ``"<audit event id>.<sink name>"``; the same on every retry.
    key: str
    sink: str
    #: The audit event as recorded: ``{"id", "type", "at", "actor", "request_id", "data"}``.
    event: dict[str, object]
    #: 1 on the first try.
    attempt: int


class DeliveryFailed(Exception):
    """A sink could not deliver. ``permanent``: retrying cannot help (the message is
    marked dead at once); ``retry_after``: the receiver asked for this many seconds
    (HTTP 429 ``Retry-After``), else the worker's backoff decides."""

    def __init__(
        self, message: str, *, permanent: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.retry_after = retry_after


class Sink(Protocol):
    """Where notifications go: one webhook URL, Slack's channel messages, Slack's DMs."""

    #: Unique and stable: part of every idempotency key. "webhook:<name>", "slack.channel",
    #: "slack.dm".
    name: str

    def wants(self, event_type: str) -> bool:
        """Whether an event of this type is queued for this sink (decided at enqueue)."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Deliver once; return on success, raise :class:`DeliveryFailed` otherwise. Called
        outside any database transaction; a sink that needs the database opens its own."""
        ...
