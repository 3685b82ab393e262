"""The status Function URL: wiring only (see ``celery_ondemand.aws_lambda``)."""

from celery_ondemand.aws_lambda import status_handler as handler

__all__ = ["handler"]
