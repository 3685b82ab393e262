"""Act: one scaler per kind of target, found by the target's ``scaler:`` and built lazily.

``ecs``, ``asg`` and ``local`` are built in; ``package.module:ClassName`` names a user's
:class:`Scaler` subclass, or a ``CeleryWorkerOnDemand`` subclass whose ``UpWorker`` /
``DownWorker`` start and stop workers, cwod style.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ..config import TargetConfig
from ..errors import ConfigError
from ..imports import load_class
from .base import Capacity, Scaler
from .cwod import CwodScaler, DownWorker, UpWorker

SCALERS = {
    "ecs": "celery_ondemand.act.ecs:ECSScaler",
    "asg": "celery_ondemand.act.asg:ASGScaler",
    "local": "celery_ondemand.act.local:LocalScaler",
}


def scaler_for(target: TargetConfig, agent: Any = None, where: str = "scaler") -> Scaler:
    """Build the scaler a target names."""
    if target.scaler in SCALERS:
        module, name = SCALERS[target.scaler].split(":")
        builtin: type[Scaler] = getattr(import_module(module), name)
        return builtin(target)
    cls = load_class(target.scaler, object, where)
    if issubclass(cls, Scaler):
        return cls(target)
    up, down = getattr(cls, "UpWorker", None), getattr(cls, "DownWorker", None)
    if isinstance(up, type) and issubclass(up, UpWorker) and isinstance(down, type) \
            and issubclass(down, DownWorker):
        return CwodScaler(target, agent, up, down)
    raise ConfigError(f"{where}: {target.scaler!r} is neither a Scaler subclass nor a "
                      "class with UpWorker and DownWorker subclasses (cwod style)")


__all__ = ["SCALERS", "Capacity", "CwodScaler", "DownWorker", "Scaler", "UpWorker",
           "scaler_for"]
