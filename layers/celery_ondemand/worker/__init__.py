"""The worker side: settings the autoscaler relies on, and a bootstep that cooperates.

>>> from celery_ondemand.worker import install
>>> install(app, queues=["emails"])          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable

from celery import Celery

from .bootstep import OnDemandStep, ondemand_drain
from .settings import Config, configure


def install(app: Celery, queues: Iterable[str] = (), config: Config | None = None
            ) -> list[str]:
    """Apply the settings and add the bootstep; returns the settings kept as you set them."""
    kept = configure(app, queues, config)
    app.steps["worker"].add(OnDemandStep)
    return kept


__all__ = ["Config", "OnDemandStep", "configure", "install", "ondemand_drain"]
