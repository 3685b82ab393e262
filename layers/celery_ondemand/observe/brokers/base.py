"""The one interface every broker implements: how deep are these queues?

The base class does the shared work (checking the connection, de-duplicating names, turning
driver errors into :class:`~celery_ondemand.errors.BrokerUnavailable` with the password
masked); a broker module fills in :meth:`BrokerProbe._depths` and nothing else.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from kombu import Connection
from kombu.exceptions import OperationalError

from ...errors import BrokerAuthFailed, BrokerUnavailable
from ...urls import safe_url


@dataclass(frozen=True)
class QueueDepth:
    """What the broker itself knows of one queue.

    ``ready`` counts messages waiting to be delivered; the other fields are None where the
    broker cannot tell (see each broker module's docstring for what it fills in).
    """

    ready: int
    consumers: int | None = None
    in_flight: int | None = None
    delayed: int | None = None
    oldest_published_at: float | None = None
    missing: bool = False
    foreign: int = 0
    """Messages read while peeking that are not Celery task messages (Redis only)."""
    unreadable: str | None = None
    """Why the broker could not tell this queue's depth although the queue exists (a
    gap for the targets serving it, never an empty queue)."""


class BrokerProbe(ABC):
    """Reads queue depths from one broker over a kombu connection the caller owns."""

    supports_workers: ClassVar[bool] = True
    """Whether workers on this broker send events and answer control commands."""

    auth_error_words: ClassVar[tuple[str, ...]] = ()
    """Words in a driver's error that mean our credentials were refused."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.unattributed = 0
        """Messages the last read found unacknowledged but could not attribute to a
        queue within its bounds (Redis): a gap in the read."""

    @property
    def url(self) -> str:
        """The broker URL with its password masked: the only form we ever print."""
        return safe_url(self.connection.as_uri(include_password=True))

    def check(self) -> None:
        """Connect now, so an unreachable broker fails fast with a clear error."""
        with self.errors("connecting to"):
            self._check()

    def depths(self, queues: Sequence[str], *,
               held_by_workers: int | None = None) -> dict[str, QueueDepth]:
        """The depth of each queue, by name, read in as few round trips as the broker allows.

        ``held_by_workers`` is how many tasks the live workers said they hold (running,
        reserved, scheduled, rate-limited), where known: a broker that keeps one count
        of unacknowledged messages for all queues (Redis) reads them no further when the
        workers account for all of them.
        """
        names = list(dict.fromkeys(queues))
        self.unattributed = 0
        if not names:
            return {}
        with self.errors("reading queue depths from"):
            return self._depths(names, held_by_workers)

    @contextmanager
    def errors(self, doing: str) -> Iterator[None]:
        """Turn the driver's failures into our own errors, naming what we were doing.

        Only the driver's own error classes are translated: a bug in our code stays a bug.
        """
        try:
            yield
        except self.driver_errors() as exc:
            reason = str(exc) or type(exc).__name__
            password = self.connection.password
            if password:
                reason = reason.replace(str(password), "**")
            message = f"{doing} {self.url}: {reason}"
            lowered = reason.lower()
            if any(word in lowered for word in self.auth_error_words):
                raise BrokerAuthFailed(f"credentials refused {message}") from exc
            if isinstance(exc, TimeoutError) or "timeout" in lowered or "timed out" in lowered:
                raise BrokerUnavailable(f"timed out {message}") from exc
            raise BrokerUnavailable(f"failed {message}") from exc

    def driver_errors(self) -> tuple[type[BaseException], ...]:
        """The exception classes the broker's driver raises for a broker-side failure."""
        connection = self.connection
        return (*connection.connection_errors, *connection.channel_errors, OSError,
                OperationalError)

    def _check(self) -> None:
        self.connection.ensure_connection(max_retries=0)

    @abstractmethod
    def _depths(self, queues: list[str], held_by_workers: int | None) -> dict[str, QueueDepth]:
        """Read every queue's depth; ``queues`` holds each name once."""
