"""Exceptions raised by streamproc.

    StreamprocError
    ├── ConfigError          a setting is missing or malformed
    │   ├── StoreRefused     Redis refused the credentials or its TLS certificate is not trusted
    │   └── BrokerRefused    Kafka refused the credentials or the mechanism, or its TLS
    │                        certificate is not trusted
    ├── StoreError           Redis failed a command: an error reply, bad data
    │   └── StoreUnavailable Redis cannot answer now: unreachable, timed out, loading, read-only,
    │                        failing over or out of memory (retriable)
    ├── BrokerError          the broker refused a request or could not be reached (retriable)
    ├── ReplayError          a replay could not finish
    ├── BackfillError        a backfill cannot start, resume or finish
    ├── DemoError            a demo process could not start or died
    ├── BadQuery             a query parameter the exporter's API cannot serve (HTTP 400)
    ├── InvalidEvent         one message breaks the event contract (goes to the dead-letter topic)
    ├── TopicsChanged        the broker's topics no longer match what the worker read (a broker
    │                        that lost its data, a topic recreated with another partition count)
    └── DevStackError        the embedded broker or Redis could not be started or reached
        └── DevStackTimeout  a component started but did not answer in time (retriable)

Transient errors set the class attribute ``retriable = True``.
"""

from __future__ import annotations


class StreamprocError(Exception):
    """Root of every error streamproc raises on purpose."""

    retriable = False


class ConfigError(StreamprocError):
    """A setting is missing or malformed."""


class StoreRefused(ConfigError):
    """Redis refused the password (or user), or its TLS certificate is not trusted: a setting to
    fix, not an outage to wait out."""


class BrokerRefused(ConfigError):
    """Kafka refused the SASL credentials or mechanism, or its TLS certificate is not trusted:
    a setting to fix, not an outage to wait out."""


class StoreError(StreamprocError):
    """Redis failed a command. The store (``streamproc.store``) raises it, and only it, for every
    error redis-py raises, which is its ``__cause__``.

    Attributes:
        kind: the name of redis-py's error (``ResponseError``, ``ConnectionError``, ...), which
            logs, metric labels and the exporter's status show, as they did before the mapping.
    """

    def __init__(self, detail: str, *, kind: str) -> None:
        super().__init__(detail)
        self.kind = kind


class StoreUnavailable(StoreError):
    """Redis cannot answer now (unreachable, timed out, loading, read-only, failing over, out of
    memory): worth waiting for, as the worker, the exporter and the replay do."""

    retriable = True


class BrokerError(StreamprocError):
    """The broker refused a request or could not be reached."""

    retriable = True


class Fenced(StreamprocError):
    """This worker may no longer own the partition it was writing (its consumer-group membership
    lapsed while it was stalled): the write is dropped, and its batch is read again by the
    partition's owner."""


class ReplayError(StreamprocError):
    """A replay could not finish."""


class BackfillError(StreamprocError):
    """A backfill cannot start, resume or finish."""


class DemoError(StreamprocError):
    """A demo process could not start or died."""


class BadQuery(StreamprocError):
    """A query parameter the API cannot serve; the message says which and why."""


class InvalidEvent(StreamprocError):
    """A message that does not satisfy the event contract.

    Attributes:
        reason: stable, machine-readable code (``missing_field``, ``future_time``, ...).
        field: the offending field as a JSON path (``$.items[0].quantity``), or None.
        detail: a human-readable explanation.
    """

    def __init__(self, reason: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.field = field


class TopicsChanged(StreamprocError):
    """The input or state topics changed under a running worker: its state no longer matches
    them, so it stops rather than count on (``streamproc worker`` exits with EXIT_CODE)."""

    EXIT_CODE = 75  # EX_TEMPFAIL: a restart creates what is missing or says what to repair


class DevStackError(StreamprocError):
    """The embedded broker or Redis could not be started, stopped or reached."""


class DevStackTimeout(DevStackError):
    """A component was started but did not answer within its deadline."""

    retriable = True
