"""The built Lambda artifact, run the way Lambda runs it.

:class:`RuntimeApi` stands in for the Lambda Runtime API (the documented
``/2018-06-01/runtime/...`` endpoints): it hands out the invocations a test queues and
records what the function answers. :func:`start_function` starts a function from
``.aws-sam/build`` under Lambda's runtime interface client (``awslambdaric``) on Python 3.12,
with the function's code and the built layer mounted read-only at their places (``/opt``
becomes the layer, as on Lambda) in a mount namespace of its own, and nothing else on the
path but a stand-in of the runtime's own packages (``.lambda-runtime``: awslambdaric and an
older boto3 that the layer's must shadow).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / ".aws-sam" / "build"
RUNTIME = ROOT / ".lambda-runtime"
PREFIX = "/2018-06-01/runtime"


@dataclass
class Answer:
    request_id: str
    kind: str  # "response" or "error"
    body: Any


@dataclass
class RuntimeApi:
    """A local stand-in for the Lambda Runtime API."""

    function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:celery-ondemand"
    timeout_seconds: float = 30.0
    """The function's timeout: each invocation's deadline is this far off."""
    pending: queue.Queue[tuple[str, dict[str, Any]]] = field(default_factory=queue.Queue)
    answers: queue.Queue[Answer] = field(default_factory=queue.Queue)
    init_errors: list[Any] = field(default_factory=list)
    first_poll_at: float | None = None
    """``time.perf_counter()`` when the function first asked for work: its init is done."""

    def __post_init__(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404, {})
                if api.first_poll_at is None:
                    api.first_poll_at = time.perf_counter()
                request_id, event = api.pending.get()  # long-polls, as the real API does
                deadline = int((time.time() + api.timeout_seconds) * 1000)
                self._reply(200, event, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(deadline),
                    "Lambda-Runtime-Invoked-Function-Arn": api.function_arn,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-"
                                               f"{uuid.uuid4().hex[:24]};Sampled=0"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                parsed = json.loads(body) if body else None
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts[:2] == ["init", "error"]:
                    api.init_errors.append(parsed)
                elif len(parts) == 3 and parts[0] == "invocation":
                    api.answers.put(Answer(parts[1], parts[2], parsed))
                else:
                    return self._reply(404, {})
                self._reply(202, {"status": "OK"})

            def _reply(self, code: int, body: Any, headers: Mapping[str, str] = {}) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def invoke(self, event: dict[str, Any], timeout: float = 120) -> Answer:
        """Queue one invocation and wait for the function's answer."""
        request_id = str(uuid.uuid4())
        self.pending.put((request_id, event))
        answer = self.answers.get(timeout=timeout)
        assert answer.request_id == request_id
        return answer

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def lambda_python() -> str | None:
    """Python 3.12, the function's runtime: as ``make`` found it, else on PATH."""
    found = os.environ.get("ONDEMAND_LAMBDA_PYTHON") or shutil.which("python3.12")
    return found or None


def missing() -> str | None:
    """Why the built artifact cannot run here, or None."""
    if lambda_python() is None:
        return "no Python 3.12 (the Lambda runtime)"
    if not (BUILD / "template.yaml").exists():
        return "no built artifact: run `make build`"
    if not (RUNTIME / "awslambdaric").exists():
        return "no runtime stand-in: run `make test` (it installs .lambda-runtime)"
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot make a mount namespace: {probe.stderr.decode().strip()}"
    return None


def start_function(function: str, api: RuntimeApi, environment: Mapping[str, str],
                   log: Path, layer: Path = BUILD / "LibraryLayer") -> subprocess.Popen[bytes]:
    """Start the built ``function`` (its logical id) under awslambdaric, as Lambda does."""
    task = BUILD / function
    python = lambda_python()
    assert python is not None
    handler = _built_handler(function)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "en_US.UTF-8", "TZ": ":UTC",
        "LAMBDA_TASK_ROOT": str(task), "LAMBDA_RUNTIME_DIR": str(RUNTIME),
        "_HANDLER": handler, "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_RUNTIME_API": api.address,
        "AWS_LAMBDA_FUNCTION_NAME": "celery-ondemand-autoscaler",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
        "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/celery-ondemand-autoscaler",
        "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/28/[$LATEST]0123456789abcdef",
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        # Lambda's order: the function, the layer, then the runtime's own packages.
        "PYTHONPATH": os.pathsep.join([str(task), "/opt/python", str(RUNTIME)]),
        **environment}
    with log.open("wb") as out:
        return subprocess.Popen(_in_lambda_layout(task, [python, "-S", "-m", "awslambdaric",
                                                         handler], layer),
                                env=env, stdout=out, stderr=subprocess.STDOUT)


def run_in_lambda_layout(function: str, code: str, layer: Path = BUILD / "LibraryLayer",
                         environment: Mapping[str, str] | None = None) -> str:
    """Run Python ``code`` with the function's code and the layer where Lambda puts them
    (read-only), and nothing else on the path; returns what it printed."""
    task = BUILD / function
    python = lambda_python()
    assert python is not None
    env = {"PATH": "/usr/bin:/bin", "LAMBDA_TASK_ROOT": str(task),
           "PYTHONPATH": os.pathsep.join([str(task), "/opt/python", str(RUNTIME)]),
           **(environment or {})}
    done = subprocess.run(_in_lambda_layout(task, [python, "-S", "-c", code], layer), env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _in_lambda_layout(task: Path, command: list[str], layer: Path) -> list[str]:
    """``command`` in a mount namespace where /opt is the layer and the function's
    directory is read-only, as on Lambda."""
    script = ('mount --bind -o ro "$1" /opt && mount --bind -o ro "$2" "$2" && cd "$2" && '
              'shift 2 && exec "$@"')
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            str(layer), str(task), *command]


def _built_handler(function: str) -> str:
    """The function's ``Handler`` as the built template declares it."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    template = yaml.load((BUILD / "template.yaml").read_text(), Loader=Loader)
    return str(template["Resources"][function]["Properties"]["Handler"])
