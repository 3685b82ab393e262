"""cwod's HTTP API: ``GET`` any path of ``api_server_address`` for ``cwod.serializer()``.

The JSON is cwod's ``{"queues": {...}, "workers": {...}}`` (with our extra keys), indented
as cwod's was. With ``api_basic_authorization`` set, a request must carry the header
``Authorization: Basic <that value>``, or it gets 401 and ``WWW-Authenticate: Basic``.
Each request is answered on a thread of its own, so a slow client blocks no other.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .errors import ConfigError

logger = logging.getLogger("CeleryWorkerOnDemand")


class APIHandler(BaseHTTPRequestHandler):
    """Answers one request with the service's status (cwod's handler, same constructor)."""

    def __init__(self, cwod: Any, *args: Any, **kwargs: Any) -> None:
        self.cwod = cwod
        super().__init__(*args, **kwargs)

    def has_permission(self) -> bool:
        """True when no authorization is asked for, or the request brings it; else 401."""
        expected = self.cwod.api_basic_authorization
        if not expected:
            return True
        given = self.headers.get("Authorization") or ""
        if hmac.compare_digest(given.encode(), f"Basic {expected}".encode()):
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", "Basic")
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def do_GET(self) -> None:
        if not self.has_permission():
            return
        body = json.dumps(self.cwod.serializer(), indent=2).encode("utf8")
        self.send_response(200)
        self.send_header("Content-type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("API %s: " + format, self.address_string(), *args)


class APIServer(threading.Thread):
    """Serves the API on ``cwod.api_server_address`` while the service runs."""

    def __init__(self, cwod: Any) -> None:
        super().__init__(name="APIServer", daemon=True)
        self.cwod = cwod
        self.httpd: ThreadingHTTPServer | None = None

    def bind(self) -> None:
        """Listen on the address now, so that one already in use fails the caller."""
        if self.httpd is not None:
            return
        address = tuple(self.cwod.api_server_address)
        handler = partial(self.cwod.APIHandler, self.cwod)
        try:
            self.httpd = ThreadingHTTPServer(address, handler)
        except OSError as exc:
            raise ConfigError(f"api_server_address {address!r}: cannot listen: "
                              f"{exc.strerror or exc}") from exc
        self.httpd.daemon_threads = True

    @property
    def server_address(self) -> tuple[str, int]:
        """Where it listens (the port chosen, for port 0); bind() first."""
        if self.httpd is None:
            raise RuntimeError("the API server is not listening yet")
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def run(self) -> None:
        self.bind()
        assert self.httpd is not None
        host, port = self.server_address
        logger.info("Running API HTTP server in %s:%s", host, port)
        self.httpd.serve_forever(poll_interval=0.5)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self.httpd is None:
            return
        if self.is_alive():
            self.httpd.shutdown()
        self.httpd.server_close()
