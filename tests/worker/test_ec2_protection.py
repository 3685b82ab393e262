"""EC2 Auto Scaling protection from the worker's side: instance id from an IMDSv2 stand-in
(a local HTTP server speaking the documented token protocol), the group on moto."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import boto3
import pytest
from moto import mock_aws

from celery_ondemand.worker.protection import Ec2Protection
from tests.support.aws import auto_scaling_group, fake_credentials


@pytest.fixture
def imds() -> Iterator[tuple[str, list[str]]]:
    """IMDSv2: PUT /latest/api/token, then GET metadata with that token only."""
    instance: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_PUT(self) -> None:
            self._reply(200, "token-123")

        def do_GET(self) -> None:
            if self.headers.get("X-aws-ec2-metadata-token") != "token-123":
                self._reply(401, "")
            elif self.path == "/latest/meta-data/placement/region":
                self._reply(200, "us-east-1")
            else:
                self._reply(200, instance[0])

        def _reply(self, code: int, body: str) -> None:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", instance
    server.shutdown()
    server.server_close()


def test_the_instance_protects_itself_in_its_group(imds: tuple[str, list[str]],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    url, instance = imds
    fake_credentials(monkeypatch)
    with mock_aws():
        autoscaling = boto3.client("autoscaling", region_name="us-east-1")
        ids = auto_scaling_group(autoscaling, boto3.client("ec2", region_name="us-east-1"),
                                 desired=2)
        instance.append(ids[0])
        protection = Ec2Protection(imds=url, client=autoscaling)
        assert protection.info() == {"platform": "ec2", "instance_id": ids[0],
                                     "auto_scaling_group": "workers"}

        def protected() -> bool:
            found = autoscaling.describe_auto_scaling_instances(InstanceIds=[ids[0]])
            return bool(found["AutoScalingInstances"][0]["ProtectedFromScaleIn"])

        protection.set(True, 60)
        assert protected()
        protection.set(False, 60)
        assert not protected()


def test_the_region_comes_from_the_instance_when_the_environment_names_none(
        imds: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    """An EC2 instance's environment sets no AWS_REGION: boto3 alone would refuse to make
    a client (NoRegionError) and the worker would run unprotected."""
    url, instance = imds
    fake_credentials(monkeypatch)
    with mock_aws():
        autoscaling = boto3.client("autoscaling", region_name="us-east-1")
        ids = auto_scaling_group(autoscaling, boto3.client("ec2", region_name="us-east-1"),
                                 desired=1)
        instance.append(ids[0])
        for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
            monkeypatch.delenv(name, raising=False)
        protection = Ec2Protection(imds=url)
        assert protection.client.meta.region_name == "us-east-1"
        protection.set(True, 60)
        found = autoscaling.describe_auto_scaling_instances(InstanceIds=[ids[0]])
        assert found["AutoScalingInstances"][0]["ProtectedFromScaleIn"] is True
