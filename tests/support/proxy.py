"""A TCP proxy on 127.0.0.1 that can slow a broker down or cut its connections.

Every byte between the observer and the real broker passes through it; ``delay`` is added
before each forwarded chunk (``hold_until`` makes one request wait for another), and
:meth:`cut` closes every open connection at once (a dropped network path), while new
connections are refused until :meth:`heal`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class Proxy:
    def __init__(self, target_port: int, delay: float = 0.0) -> None:
        self.target_port = target_port
        self.delay = delay
        self.hold_until: dict[bytes, tuple[bytes, float]] = {}
        """A request containing a key (a Redis command, say) waits until one containing
        the value's marker has been forwarded, and the value's seconds more: the order in
        which two connections' requests reach the broker, made certain."""
        self._forwarded: dict[bytes, threading.Event] = {}
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(64)
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.broken = False
        self.first_request_at: float | None = None
        """``time.perf_counter()`` when a client first sent the broker something."""
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.stopped.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            if self.broken:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self.lock:
                self.sockets += [client, upstream]
            for source, sink, request in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pipe, args=(source, sink, request),
                                 daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, request: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if request and self.first_request_at is None:
                    self.first_request_at = time.perf_counter()
                if self.delay:
                    time.sleep(self.delay)
                if request:
                    for key, (after, seconds) in self.hold_until.items():
                        if key in chunk and self._event(after).wait(timeout=10):
                            time.sleep(seconds)
                sink.sendall(chunk)
                if request:
                    for after, _ in self.hold_until.values():
                        if after in chunk:
                            self._event(after).set()
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()

    def _event(self, marker: bytes) -> threading.Event:
        with self.lock:
            return self._forwarded.setdefault(marker, threading.Event())

    def cut(self) -> None:
        """Drop every connection now and refuse new ones."""
        self.broken = True
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self.sockets.clear()

    def heal(self) -> None:
        self.broken = False

    def close(self) -> None:
        self.stopped.set()
        self.cut()
        self.server.close()
