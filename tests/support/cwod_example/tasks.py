from __future__ import annotations

from .celery_app import celery_app


@celery_app.task
def add(x: int, y: int) -> int:
    return x + y


@celery_app.task
def diff(x: int, y: int) -> int:
    return x - y
