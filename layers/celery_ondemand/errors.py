"""Every error celery-ondemand raises on purpose, under one root.

Callers catch :class:`OnDemandError` to tell our clear, already-explained failures from bugs.
Messages never contain a broker password: URLs are sanitized before they are formatted in.
"""

from __future__ import annotations


class OnDemandError(Exception):
    """Root of every error celery-ondemand raises on purpose."""


class ConfigError(OnDemandError, ValueError):
    """A setting is missing, malformed or impossible; the message names it."""


class UnknownBroker(ConfigError):
    """The broker URL's scheme is not one we can observe."""


class BrokerUnavailable(OnDemandError):
    """The broker could not be reached or refused us; nothing was observed."""


class BrokerAuthFailed(BrokerUnavailable):
    """The broker answered but refused our credentials."""
