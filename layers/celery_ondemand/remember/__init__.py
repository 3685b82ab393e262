"""Remember: the lease, each target's memory and the decision history, between ticks."""

from .base import SCHEMA_VERSION, StateStore
from .dynamodb import DynamoDBStateStore
from .sqlite import SQLiteStateStore

__all__ = ["SCHEMA_VERSION", "DynamoDBStateStore", "SQLiteStateStore", "StateStore"]
