"""Every error celery-ondemand raises on purpose, under one root.

Callers catch :class:`OnDemandError` to tell our clear, already-explained failures from bugs.
Messages never contain a broker password: URLs are sanitized before they are formatted in.
"""

from __future__ import annotations


class OnDemandError(Exception):
    """Root of every error celery-ondemand raises on purpose."""


class ConfigError(OnDemandError, ValueError):
    """A setting is missing, malformed or impossible; the message names it."""


class UnknownDeployment(ConfigError):
    """An invocation named a deployment its stack does not list (or named none)."""


class UnknownBroker(ConfigError):
    """The broker URL's scheme is not one we can observe."""


class BrokerUnavailable(OnDemandError):
    """The broker could not be reached or refused us; nothing was observed."""


class BrokerAuthFailed(BrokerUnavailable):
    """The broker answered but refused our credentials."""


class StateError(OnDemandError):
    """The state store could not be read or written."""


class LeaseLost(OnDemandError):
    """Another tick holds this deployment's lease: this one must not act."""


class ScalerError(OnDemandError):
    """A scaling target could not be read or changed (the message names the target)."""


class ScaleInHeld(ScalerError):
    """A scale-in was not carried out because a busy worker could not be shielded first
    (not matched to its task or instance, or the protection call failed)."""
