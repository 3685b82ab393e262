"""State in one DynamoDB table: what the Lambda remembers between invocations.

Items (``pk`` hash key, ``sk`` range key, all strings):

==============================  ===============  ==========================================
pk                              sk               attributes
==============================  ===============  ==========================================
``deployment#<name>``           ``lease``        ``owner``, ``expires_at``
``deployment#<name>``           ``target#<t>``   ``record`` (JSON memory), ``updated_at``
``deployment#<name>``           ``status``       ``record`` (zlib-compressed JSON, binary;
                                                 trimmed step by step past 390 KB)
``deployment#<name>#history``   ``<at>#<t>``     ``record`` (JSON decision), ``ttl``
``deployment#<name>#load#<t>``  ``<minute>``     the minute's sums (numbers), ``ttl``
==============================  ===============  ==========================================

Every item carries ``schema_version``. ``ttl`` is the table's TTL attribute: DynamoDB deletes
expired history by itself.

Load is one item per target per minute (``<minute>``: its epoch second, 12 digits, so
the range key sorts by time): about 200 bytes, so the ``UpdateItem ADD`` the Ticker makes
once a minute ends is one write unit (an hour bucket of 60 minutes would be 3-7 KB, and
every update of it billed 3-7 units: DynamoDB bills a write by the whole item's size). 28 days
are 40,320 items (~8 MB) per target; a forecast reads only the hour it needs of each past
day (28 small queries an hour), a replay reads a range (1 MB a page).

The lease is a conditional put; memory is written in one transaction with a condition
check on the lease, so a tick that lost its lease writes nothing.
The client honours boto3's own settings (``AWS_REGION``, ``AWS_ENDPOINT_URL``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextlib import suppress
from decimal import Decimal
from typing import Any

from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from ..decide import Decision, TargetMemory
from ..decide.load import NUMBERS, LoadMinute
from ..errors import LeaseLost, StateError
from .base import (
    SCHEMA_VERSION,
    StateStore,
    check_version,
    decode_memory,
    decode_status,
    encode_memory,
    fit_status,
)

DEFAULT_CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 3},
                               connect_timeout=3, read_timeout=5)
TTL_ATTRIBUTE = "ttl"
STATUS_BUDGET = 390 * 1024
"""Bytes of compressed status one item holds: DynamoDB's 400 KB item limit counts the
attribute names and keys too."""


class DynamoDBStateStore(StateStore):
    """A state store in the DynamoDB table ``table``."""

    def __init__(self, table: str, client: Any = None) -> None:
        self.table = table
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3

            self._client = boto3.client("dynamodb", config=DEFAULT_CLIENT_CONFIG)
        return self._client

    def _call(self, operation: str, **kwargs: Any) -> Any:
        """Call the client; a failure other than a failed condition is a StateError."""
        if operation != "transact_write_items":
            kwargs["TableName"] = self.table
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("ConditionalCheckFailedException", "TransactionCanceledException"):
                raise
            raise StateError(f"DynamoDB table {self.table}: {operation} failed: {exc}") from exc
        except BotoCoreError as exc:
            raise StateError(f"DynamoDB table {self.table}: {operation} failed: {exc}") from exc

    def acquire_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        try:
            self._call("put_item", Item={
                "pk": _s(_pk(deployment)), "sk": _s("lease"), "owner": _s(owner),
                "expires_at": _n(now + seconds), "schema_version": _n(SCHEMA_VERSION)},
                ConditionExpression="attribute_not_exists(pk) OR #owner = :owner "
                                    "OR expires_at < :now",
                ExpressionAttributeNames={"#owner": "owner"},
                ExpressionAttributeValues={":owner": _s(owner), ":now": _n(now)})
        except ClientError:
            return False
        return True

    def renew_lease(self, deployment: str, owner: str, now: float, seconds: float) -> bool:
        try:
            self._call("update_item", Key={"pk": _s(_pk(deployment)), "sk": _s("lease")},
                       UpdateExpression="SET expires_at = :expires",
                       ConditionExpression="#owner = :owner",
                       ExpressionAttributeNames={"#owner": "owner"},
                       ExpressionAttributeValues={":owner": _s(owner),
                                                  ":expires": _n(now + seconds)})
        except ClientError:
            return False
        return True

    def release_lease(self, deployment: str, owner: str) -> None:
        with suppress(ClientError):  # not ours any more: nothing to release
            self._call("delete_item", Key={"pk": _s(_pk(deployment)), "sk": _s("lease")},
                       ConditionExpression="#owner = :owner",
                       ExpressionAttributeNames={"#owner": "owner"},
                       ExpressionAttributeValues={":owner": _s(owner)})

    def load_memory(self, deployment: str) -> dict[str, TargetMemory]:
        memory: dict[str, TargetMemory] = {}
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :prefix)",
            "ExpressionAttributeValues": {":pk": _s(_pk(deployment)), ":prefix": _s("target#")},
            "ConsistentRead": True}
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", []):
                target = item["sk"]["S"].removeprefix("target#")
                memory[target] = decode_memory(item["record"]["S"], f"memory of {target}")
            if "LastEvaluatedKey" not in page:
                return memory
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save_memory(self, deployment: str, owner: str, now: float,
                    memory: Mapping[str, TargetMemory]) -> None:
        lease_check = {"ConditionCheck": {
            "TableName": self.table, "Key": {"pk": _s(_pk(deployment)), "sk": _s("lease")},
            "ConditionExpression": "#owner = :owner AND expires_at > :now",
            "ExpressionAttributeNames": {"#owner": "owner"},
            "ExpressionAttributeValues": {":owner": _s(owner), ":now": _n(now)}}}
        puts = [{"Put": {"TableName": self.table, "Item": {
            "pk": _s(_pk(deployment)), "sk": _s(f"target#{name}"),
            "record": _s(encode_memory(m)), "updated_at": _n(now),
            "schema_version": _n(SCHEMA_VERSION)}}} for name, m in memory.items()]
        # A transaction holds at most 100 items: the lease check plus 99 targets a batch.
        for start in range(0, max(len(puts), 1), 99):
            try:
                self._call("transact_write_items",
                           TransactItems=[lease_check, *puts[start:start + 99]])
            except ClientError as exc:
                reasons = [str(reason.get("Code", "")) for reason in
                           exc.response.get("CancellationReasons", [])]
                if reasons[:1] == ["ConditionalCheckFailed"]:
                    raise LeaseLost(f"deployment {deployment!r}: lease lost before saving "
                                    "memory") from exc
                # A conflict with another write, throttling: the lease may be ours still.
                raise StateError(f"DynamoDB table {self.table}: saving memory failed "
                                 f"({', '.join(r for r in reasons if r != 'None') or exc})"
                                 ) from exc

    def record(self, deployment: str, decisions: list[Decision], at: float) -> None:
        for decision in decisions:
            self._call("put_item", Item={
                "pk": _s(f"{_pk(deployment)}#history"),
                "sk": _s(f"{at:017.6f}#{decision.target}"),
                "record": _s(json.dumps(decision.serializer())),
                "at": _n(at), TTL_ATTRIBUTE: _n(self.expiry(at)),
                "schema_version": _n(SCHEMA_VERSION)})

    def history(self, deployment: str, limit: int = 100) -> list[dict[str, Any]]:
        page = self._call("query", KeyConditionExpression="pk = :pk",
                          ExpressionAttributeValues={":pk": _s(f"{_pk(deployment)}#history")},
                          ScanIndexForward=False, Limit=limit)
        entries = []
        for item in page.get("Items", []):
            check_version(int(item["schema_version"]["N"]), "history")
            entries.append({**json.loads(item["record"]["S"]), "at": float(item["at"]["N"]),
                            "expires_at": int(item[TTL_ATTRIBUTE]["N"])})
        return entries

    def add_load(self, deployment: str, loads: Mapping[str, LoadMinute]) -> None:
        for target, sample in loads.items():
            values = {f":{name}": _n(getattr(sample, name)) for name in NUMBERS}
            self._call("update_item",
                       Key={"pk": _s(_load_pk(deployment, target)),
                            "sk": _s(f"{sample.minute:012d}")},
                       UpdateExpression="ADD " + ", ".join(f"{n} :{n}" for n in NUMBERS)
                                        + " SET #ttl = :ttl, schema_version = :version",
                       ExpressionAttributeNames={"#ttl": TTL_ATTRIBUTE},
                       ExpressionAttributeValues={
                           **values, ":ttl": _n(self.load_expiry(sample.minute)),
                           ":version": _n(SCHEMA_VERSION)})

    def load_history(self, deployment: str, target: str, since: float,
                     until: float) -> list[LoadMinute]:
        first = int(since // 60 * 60)
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": {":pk": _s(_load_pk(deployment, target)),
                                          ":first": _s(f"{first:012d}"),
                                          ":last": _s(f"{int(until):012d}")}}
        minutes = []
        while True:
            page = self._call("query", **kwargs)
            for item in page.get("Items", []):
                check_version(int(item["schema_version"]["N"]), f"load of {target}")
                minutes.append(LoadMinute(int(item["sk"]["S"]), **{
                    name: _number(item, name) for name in NUMBERS}))
            if "LastEvaluatedKey" not in page:
                return minutes
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def save_status(self, deployment: str, status: dict[str, Any], at: float) -> None:
        """The status, trimmed step by step (:func:`fit_status`) if it would not fit an
        item."""
        blob, _ = fit_status(status, at, STATUS_BUDGET)
        if len(blob) > STATUS_BUDGET:
            raise StateError(f"deployment {deployment!r}: the status takes {len(blob)} bytes "
                             f"even without its workers' records (at most {STATUS_BUDGET} "
                             "fit a DynamoDB item): split the deployment")
        self._call("put_item", Item={
            "pk": _s(_pk(deployment)), "sk": _s("status"),
            "record": {"B": blob}, "schema_version": _n(SCHEMA_VERSION)})

    def load_status(self, deployment: str) -> dict[str, Any] | None:
        item = self._call("get_item", Key={"pk": _s(_pk(deployment)), "sk": _s("status")},
                          ConsistentRead=True).get("Item")
        return decode_status(item["record"]["B"]) if item else None


def create_table(client: Any, table: str) -> None:
    """Create the table as ``template.yaml`` declares it (for tests, the demo, moto)."""
    client.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                              {"AttributeName": "sk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                   {"AttributeName": "sk", "KeyType": "RANGE"}])
    client.get_waiter("table_exists").wait(TableName=table)
    client.update_time_to_live(TableName=table, TimeToLiveSpecification={
        "Enabled": True, "AttributeName": TTL_ATTRIBUTE})


def _pk(deployment: str) -> str:
    return f"deployment#{deployment}"


def _load_pk(deployment: str, target: str) -> str:
    return f"{_pk(deployment)}#load#{target}"


def _number(item: dict[str, Any], name: str) -> Any:
    value = float(item[name]["N"]) if name in item else 0.0
    return int(value) if name == "ticks" else value


def _s(value: str) -> dict[str, str]:
    return {"S": value}


def _n(value: float) -> dict[str, str]:
    return {"N": str(Decimal(str(value)))}
