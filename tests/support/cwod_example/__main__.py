"""``python -m tests.support.cwod_example``: the program's service, with cwod's HTTP API.

The API address comes from ``API_ADDRESS`` (``host:port``), since a shared machine cannot
give every run port 8000; unset, it is cwod's default, ``('', 8000)``.
"""

from __future__ import annotations

import logging
import os

from . import ExampleOnDemand, celery_app


def api_address() -> tuple[str, int]:
    host, _, port = os.environ.get("API_ADDRESS", ":8000").rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)

    ExampleOnDemand(celery_app, api_server_address=api_address()).run()
