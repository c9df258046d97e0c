"""The delivery ledger: which metering keys OGC RS already has, so nothing is sent twice.

OGC RS does not deduplicate, while SQS, CloudTrail and MinIO all deliver at least once. Before lines are
sent their keys are *claimed* (a conditional write that only one sender can win); once OGC RS has answered
for them they are *settled*; if sending fails they are *released* for the next try. A claim left behind by a
crashed sender expires after ``in_progress_s``, so the input is retried rather than lost.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

# The table layout and the IAM actions of DynamoDbLedger, defined here once: infra/secure_defaults.py creates the
# table and grants the actions from these (it imports this module at synthesis time: standard library only), and
# the local runs read them back from the synthesized template.
KEY_ATTRIBUTE = "id"
"""Partition key (string) of the ledger table: the metering key."""
TTL_ATTRIBUTE = "expiration"
"""Epoch seconds after which DynamoDB may delete the record (the table's TTL attribute)."""
DYNAMODB_ACTIONS = (
    "dynamodb:PutItem",  # claim (conditional put)
    "dynamodb:GetItem",  # read a record whose claim failed without returning it
    "dynamodb:BatchGetItem",  # which keys are delivered already (before a chunk is claimed)
    "dynamodb:BatchWriteItem",  # settle and release
)
"""Every DynamoDB call DynamoDbLedger makes, as IAM actions: no scans, no queries, no other table."""

# Keys are kept this long after delivery: re-sent MinIO bodies, redelivered SQS messages and replays of
# CloudTrail logs inside this window send nothing twice.
RETENTION_S = 30 * 24 * 3600
# A claim not settled within this time is considered abandoned (longer than any function timeout).
IN_PROGRESS_S = 15 * 60

IN_PROGRESS = "IN_PROGRESS"
COMPLETED = "COMPLETED"
# A key can be claimed when nobody has it, or when its claim was abandoned.
_CLAIMABLE = f"attribute_not_exists({KEY_ATTRIBUTE}) OR (#status = :in_progress AND in_progress_expiry < :now)"


@dataclass(slots=True)
class Claim:
    """The outcome of claiming keys: ours to send, already delivered, or being sent by someone else now."""

    claimed: set[str] = field(default_factory=set)
    delivered: set[str] = field(default_factory=set)
    in_flight: set[str] = field(default_factory=set)


class DeliveryLedger(Protocol):
    """Records which keys were delivered to OGC RS."""

    def claim(self, keys: Collection[str]) -> Claim:
        """Claim keys for sending; a key already delivered or claimed by a live sender is not claimed."""
        ...

    def settle(self, keys: Collection[str]) -> None:
        """Record keys as delivered (stored, or refused for good) for the retention window, claimed or not."""
        ...

    def delivered(self, keys: Collection[str]) -> set[str]:
        """Which of ``keys`` are recorded as delivered; reads only."""
        ...

    def release(self, keys: Collection[str]) -> None:
        """Give claimed keys back after a failed send, so a later try can claim them."""
        ...


class SqliteLedger:
    """A ledger in a SQLite file (shared by the standalone server's workers) or in memory (one process)."""

    def __init__(
        self,
        path: str = ":memory:",
        *,
        retention_s: float = RETENTION_S,
        in_progress_s: float = IN_PROGRESS_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Workers of the standalone server share the file: wait for each other's short transactions.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        if path != ":memory:":
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS delivery_ledger"
            " (key TEXT PRIMARY KEY, status TEXT NOT NULL, expires REAL NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS delivery_ledger_expires ON delivery_ledger (expires)")
        self._lock = threading.Lock()
        self._retention_s = retention_s
        self._in_progress_s = in_progress_s
        self._clock = clock
        self._claims = 0

    def claim(self, keys: Collection[str]) -> Claim:
        """Claim keys in one transaction; an expired record counts as absent."""
        claim = Claim()
        now = self._clock()
        with self._lock, self._transaction():
            for key in keys:
                row = self._db.execute("SELECT status, expires FROM delivery_ledger WHERE key = ?", (key,)).fetchone()
                if row is None or row[1] < now:
                    self._db.execute(
                        "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?)",
                        (key, IN_PROGRESS, now + self._in_progress_s),
                    )
                    claim.claimed.add(key)
                elif row[0] == COMPLETED:
                    claim.delivered.add(key)
                else:
                    claim.in_flight.add(key)
            self._claims += 1
            if self._claims % 1000 == 0:  # keep the file from growing past the retention window
                self._db.execute("DELETE FROM delivery_ledger WHERE expires < ?", (now,))
        return claim

    def settle(self, keys: Collection[str]) -> None:
        """Keep the keys as delivered for the retention window."""
        expires = self._clock() + self._retention_s
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO delivery_ledger VALUES (?, ?, ?)", [(key, COMPLETED, expires) for key in keys]
            )

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys recorded as delivered and not expired."""
        now = self._clock()
        found: set[str] = set()
        with self._lock:
            for key in keys:
                row = self._db.execute("SELECT status, expires FROM delivery_ledger WHERE key = ?", (key,)).fetchone()
                if row is not None and row[0] == COMPLETED and row[1] >= now:
                    found.add(key)
        return found

    def release(self, keys: Collection[str]) -> None:
        """Forget claims that were not delivered."""
        with self._lock, self._transaction():
            self._db.executemany(
                "DELETE FROM delivery_ledger WHERE key = ? AND status = ?", [(key, IN_PROGRESS) for key in keys]
            )

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


class DynamoDbLedger:
    """The ledger in a DynamoDB table (partition key KEY_ATTRIBUTE, TTL attribute TTL_ATTRIBUTE)."""

    def __init__(
        self,
        table_name: str,
        dynamodb: Any,
        *,
        retention_s: float = RETENTION_S,
        in_progress_s: float = IN_PROGRESS_S,
        clock: Callable[[], float] = time.time,
        parallelism: int = 8,
    ) -> None:
        self._table = table_name
        self._dynamodb = dynamodb
        self._retention_s = retention_s
        self._in_progress_s = in_progress_s
        self._clock = clock
        self._parallelism = parallelism

    def claim(self, keys: Collection[str]) -> Claim:
        """One conditional write per key (in parallel): only a new key, or an abandoned claim, is won."""
        claim = Claim()
        now = int(self._clock())
        with ThreadPoolExecutor(max_workers=max(1, min(self._parallelism, len(keys)))) as pool:
            for key, status in zip(keys, pool.map(lambda key: self._claim_one(key, now), keys), strict=True):
                {None: claim.claimed, COMPLETED: claim.delivered}.get(status, claim.in_flight).add(key)
        return claim

    def _claim_one(self, key: str, now: int) -> str | None:
        """None when claimed, else the status of the record that stopped the claim."""
        from botocore.exceptions import ClientError

        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    KEY_ATTRIBUTE: {"S": key},
                    "status": {"S": IN_PROGRESS},
                    "in_progress_expiry": {"N": str(now + int(self._in_progress_s))},
                    TTL_ATTRIBUTE: {"N": str(now + int(self._retention_s))},
                },
                ConditionExpression=_CLAIMABLE,
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":in_progress": {"S": IN_PROGRESS}, ":now": {"N": str(now)}},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            response: dict[str, Any] = dict(error.response)
            item: dict[str, Any] = response.get("Item") or self._read(key)
            return str(item.get("status", {}).get("S", IN_PROGRESS)) if item else IN_PROGRESS
        return None

    def _read(self, key: str) -> dict[str, Any]:
        item: dict[str, Any] = self._dynamodb.get_item(
            TableName=self._table, Key={KEY_ATTRIBUTE: {"S": key}}, ConsistentRead=True
        ).get("Item", {})
        return item

    def settle(self, keys: Collection[str]) -> None:
        """Write the keys as COMPLETED with the retention TTL (batched, 25 per request)."""
        expiry = str(int(self._clock() + self._retention_s))
        self._write_batches(
            {
                "PutRequest": {
                    "Item": {KEY_ATTRIBUTE: {"S": key}, "status": {"S": COMPLETED}, TTL_ATTRIBUTE: {"N": expiry}}
                }
            }
            for key in keys
        )

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys recorded as COMPLETED: BatchGetItem, 100 keys a request, several requests at a time."""
        unique = list(dict.fromkeys(keys))
        batches = [unique[start : start + 100] for start in range(0, len(unique), 100)]
        found: set[str] = set()
        if not batches:
            return found
        with ThreadPoolExecutor(max_workers=min(self._parallelism, len(batches))) as pool:
            for completed in pool.map(self._completed_among, batches):
                found.update(completed)
        return found

    def _completed_among(self, keys: list[str]) -> set[str]:
        request: dict[str, Any] = {
            self._table: {
                "Keys": [{KEY_ATTRIBUTE: {"S": key}} for key in keys],
                "ProjectionExpression": "#key, #status",
                "ExpressionAttributeNames": {"#key": KEY_ATTRIBUTE, "#status": "status"},
            }
        }
        found: set[str] = set()
        for attempt in range(8):
            response = self._dynamodb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self._table, []):
                if item.get("status", {}).get("S") == COMPLETED:
                    found.add(item[KEY_ATTRIBUTE]["S"])
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off before the unprocessed rest
        raise RuntimeError(f"DynamoDB kept {len(request[self._table]['Keys'])} ledger reads unprocessed")

    def release(self, keys: Collection[str]) -> None:
        """Delete the claims so the next try can claim the keys."""
        self._write_batches({"DeleteRequest": {"Key": {KEY_ATTRIBUTE: {"S": key}}}} for key in keys)

    def _write_batches(self, requests: Iterable[dict[str, Any]]) -> None:
        """BatchWriteItem, 25 requests a call, several calls at a time (a log file settles thousands of events)."""
        pending = list(requests)
        batches = [pending[start : start + 25] for start in range(0, len(pending), 25)]
        if len(batches) == 1:
            self._write_batch(batches[0])
        elif batches:
            with ThreadPoolExecutor(max_workers=min(self._parallelism, len(batches))) as pool:
                list(pool.map(self._write_batch, batches))

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(8):
            unprocessed = self._dynamodb.batch_write_item(RequestItems={self._table: batch}).get("UnprocessedItems", {})
            batch = unprocessed.get(self._table, [])
            if not batch:
                return
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off before the unprocessed rest
        raise RuntimeError(f"DynamoDB kept {len(batch)} ledger writes unprocessed")
