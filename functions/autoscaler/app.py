"""The scheduled autoscaler Lambda: wiring only (see ``celery_ondemand.aws_lambda``)."""

from celery_ondemand.aws_lambda import autoscaler_handler as handler

__all__ = ["handler"]
