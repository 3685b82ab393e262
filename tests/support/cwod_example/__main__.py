"""``python -m tests.support.cwod_example``: the example's service.

As cwod's, but the API address comes from ``API_ADDRESS`` (``host:port``): a shared machine
cannot give every run port 8000. Unset, it is cwod's default, ``('', 8000)``.
"""

from __future__ import annotations

import logging
import os

from . import MyCeleryWorkerOnDemand, celery_app


def api_address() -> tuple[str, int]:
    host, _, port = os.environ.get("API_ADDRESS", ":8000").rpartition(":")
    return host, int(port)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)

    cbod = MyCeleryWorkerOnDemand(celery_app, api_server_address=api_address())
    cbod.run()
