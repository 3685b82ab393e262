"""A JSON document over HTTP, as a user's monitoring reads cwod's status API."""

from __future__ import annotations

import json
import urllib.request
from typing import Any


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        decoded: dict[str, Any] = json.loads(response.read())
        return decoded
