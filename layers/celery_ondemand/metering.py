"""Measure what a tick uses, for :mod:`celery_ondemand.cost`: one real tick of a deployment,
reported the way the Lambda reports it, with nothing acted on.

The tick reads the real broker and decides as usual; its targets get no scaler (nothing is
scaled), and its state goes to a DynamoDB table on an in-process moto (never the
deployment's own table), where each call's capacity units are counted by DynamoDB's rules
from the items written and read. What it prints (log lines and EMF) is captured, counted in
bytes, and its metric streams named. Needs moto (``pip install 'celery-ondemand[demo]'``).
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from .config import Settings
from .cost import TickUsage, metric_streams, read_units, write_units
from .errors import ConfigError
from .observe import Observer
from .tick import Ticker, TickResult

TABLE = "ondemand-metering"


@dataclass
class _Units:
    write: float = 0.0
    read: float = 0.0
    calls: list[str] = field(default_factory=list)


@dataclass
class Metered:
    """A measured tick: its usage and its result."""

    usage: TickUsage
    result: TickResult


class Meter:
    """Ticks a deployment, measuring each; a context manager (moto runs while it is open)."""

    def __init__(self, settings: Settings, broker_url: str) -> None:
        self.settings = replace(settings, state_file=None, state_table=TABLE)
        self.broker_url = broker_url
        self._stack = contextlib.ExitStack()
        self.ticker: Ticker | None = None
        self.units = _Units()

    def __enter__(self) -> Meter:
        try:
            from moto import mock_aws
        except ImportError as exc:
            raise ConfigError("measuring a tick needs moto: pip install "
                              "'celery-ondemand[demo]'") from exc
        import boto3

        from .remember.dynamodb import DynamoDBStateStore, create_table

        for name, value in {"AWS_ACCESS_KEY_ID": "metering", "AWS_SECRET_ACCESS_KEY": "metering",
                            "AWS_DEFAULT_REGION": "us-east-1"}.items():
            self._stack.enter_context(_environment(name, value))
        self._stack.enter_context(_environment("AWS_ENDPOINT_URL", None))
        self._stack.enter_context(mock_aws())
        client = boto3.client("dynamodb", region_name="us-east-1")
        create_table(client, TABLE)
        client.meta.events.register("before-parameter-build.dynamodb.*", self._on_write)
        client.meta.events.register("after-call.dynamodb.*", self._on_read)
        self.ticker = Ticker(self.settings, observer=Observer(
            self.broker_url, transport_options=self.settings.broker_transport_options),
                             store=DynamoDBStateStore(TABLE, client), scalers={})
        return self

    def __exit__(self, *exc: object) -> None:
        if self.ticker is not None:
            self.ticker.close()
        self._stack.close()

    def _on_write(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.units.write += write_units(model.name, params)
        self.units.calls.append(model.name)

    def _on_read(self, model: Any, parsed: dict[str, Any], **_: Any) -> None:
        # The store reads consistently (a lease-guarded memory must be the latest).
        self.units.read += read_units(model.name, {"ConsistentRead": True}, parsed)

    def tick(self) -> Metered:
        """One tick, reported as the Lambda reports it, measured."""
        from .aws_lambda import logger, report_tick

        assert self.ticker is not None, "use Meter as a context manager"
        self.units = _Units()
        printed = io.StringIO()
        handler: Any = logger.registered_handler
        previous = handler.setStream(printed)
        try:
            with contextlib.redirect_stdout(printed):
                began = time.monotonic()
                result = self.ticker.tick()
                self.ticker.release_lease()  # as each invocation does
                seconds = time.monotonic() - began
                report_tick(result, self.settings, seconds)
        finally:
            handler.setStream(previous)
        output = printed.getvalue()
        usage = TickUsage(seconds=seconds, write_units=self.units.write,
                          read_units=self.units.read, log_bytes=len(output.encode()),
                          metric_streams=len(metric_streams(output.splitlines())))
        return Metered(usage, result)


@contextlib.contextmanager
def _environment(name: str, value: str | None) -> Iterator[None]:
    before = os.environ.get(name)
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
