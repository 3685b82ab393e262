"""``celery -A proj ondemand status|tick``: the app's own broker and queues, as Flower adds
``celery flower`` (through the ``celery.commands`` entry point)."""

from __future__ import annotations

import json
import sys

import click
from celery import Celery

from .cli import render_decisions, render_table
from .config import Settings, TargetConfig, load_settings
from .errors import OnDemandError
from .observe import Observer
from .service import CeleryWorkerOnDemand
from .tick import Ticker, store_for


def _app(ctx: click.Context) -> Celery:
    app: Celery = ctx.obj.app
    return app


def _fail(exc: OnDemandError) -> None:
    click.echo(f"celery ondemand: error: {exc}", err=True)
    sys.exit(2)


@click.group(name="ondemand")
def ondemand() -> None:
    """celery-ondemand: observe this app's queues and workers, and decide their count."""


@ondemand.command()
@click.option("--queue", "queues", multiple=True, help="a queue to read (repeatable)")
@click.option("--json", "as_json", is_flag=True, help='{"queues": ..., "workers": ...}')
@click.pass_context
def status(ctx: click.Context, queues: tuple[str, ...], as_json: bool) -> None:
    """Observe the app's broker once."""
    app = _app(ctx)
    names = list(queues) or CeleryWorkerOnDemand.queue_names_of(app)
    try:
        with Observer(app=app) as observer:
            observation = observer.observe(names)
    except OnDemandError as exc:
        _fail(exc)
    click.echo(json.dumps(observation.serializer(), indent=2) if as_json
               else render_table(observation))


@ondemand.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="targets and policy (default: one target per queue of the app, dry run)")
@click.option("--dry-run", is_flag=True, help="decide, act on nothing")
@click.option("--json", "as_json", is_flag=True, help='{"status": ..., "decisions": [...]}')
@click.pass_context
def tick(ctx: click.Context, config_path: str | None, dry_run: bool, as_json: bool) -> None:
    """Observe and decide once (and act, with a --config naming the targets)."""
    app = _app(ctx)
    try:
        if config_path:
            settings = load_settings(config_path)
            ticker = Ticker(settings, observer=Observer(app=app),
                            store=None if dry_run else store_for(settings))
        else:  # no targets named: a dry look at one target per queue, counted as observed
            dry_run = True
            settings = Settings(broker_url=str(app.conf.broker_url), targets=tuple(
                TargetConfig(name=q, queues=(q,), scaler="none")
                for q in CeleryWorkerOnDemand.queue_names_of(app)))
            ticker = Ticker(settings, observer=Observer(app=app), scalers={})
        try:
            result = ticker.tick(dry_run=dry_run)
        finally:
            ticker.close()
    except OnDemandError as exc:
        _fail(exc)
    if as_json:
        click.echo(json.dumps(result.serializer(), indent=2))
    else:
        if result.observation is not None:
            click.echo(render_table(result.observation) + "\n")
        click.echo(render_decisions(result.decisions, result.applied))
    if not result.ok:
        for error in [result.error, *result.target_errors.values()]:
            if error:
                click.echo(f"celery ondemand: error: {error}", err=True)
        sys.exit(2)
