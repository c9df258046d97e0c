"""The delivery ledger in a DynamoDB table (AWS): one item per key, one item per uncertain request.

Standard library only at import time: ``infra/secure_defaults.py`` reads the table layout and the IAM actions from
here at synthesis, and the local runs read them back from the synthesized template.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from metering.ledger import (
    COMPLETED,
    IN_PROGRESS,
    IN_PROGRESS_S,
    RETENTION_S,
    UNCERTAIN,
    Claim,
    UncertainRequest,
)

KEY_ATTRIBUTE = "id"
"""Partition key (string) of the ledger table: the metering key."""
TTL_ATTRIBUTE = "expiration"
"""Epoch seconds after which DynamoDB may delete the record (the table's TTL attribute)."""
DYNAMODB_ACTIONS = (
    "dynamodb:PutItem",  # claim (conditional put)
    "dynamodb:GetItem",  # read a record whose claim failed without returning it
    "dynamodb:BatchGetItem",  # which keys are delivered already (before a chunk is claimed), uncertain requests
    "dynamodb:BatchWriteItem",  # settle, mark uncertain
    "dynamodb:UpdateItem",  # lease an uncertain request (conditional)
    "dynamodb:DeleteItem",  # release a claim, or an uncertain key, only in the state it was left in (conditional)
)
"""Every DynamoDB call DynamoDbLedger makes, as IAM actions: no scans, no queries, no other table."""

# An uncertain request is an item of the same table; no metering key starts with this.
_REQUEST_PREFIX = "uncertain-request:"
_REQUEST = "REQUEST"
# A key can be claimed when nobody has it, or when its claim was abandoned.
_CLAIMABLE = f"attribute_not_exists({KEY_ATTRIBUTE}) OR (#status = :in_progress AND in_progress_expiry < :now)"


def _conditional_failure(error: Exception) -> bool:
    response: dict[str, Any] = getattr(error, "response", {}) or {}
    return bool(response.get("Error", {}).get("Code") == "ConditionalCheckFailedException")


class DynamoDbLedger:
    """The ledger in a DynamoDB table (partition key KEY_ATTRIBUTE, TTL attribute TTL_ATTRIBUTE).

    An uncertain request's lines are stored gzip-compressed in a binary attribute (a chunk of hundreds of lines
    stays far below DynamoDB's 400 KB item limit).
    """

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
        outcome = {None: claim.claimed, COMPLETED: claim.delivered, UNCERTAIN: claim.uncertain}
        for key, status in zip(keys, self._parallel(lambda key: self._claim_one(key, now), list(keys)), strict=True):
            outcome.get(status, claim.in_flight).add(key)
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
            if not _conditional_failure(error):
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
            for key in dict.fromkeys(keys)  # a batch must not name a key twice
        )

    def delivered(self, keys: Collection[str]) -> set[str]:
        """The keys recorded as COMPLETED: BatchGetItem, 100 keys a request, several requests at a time."""
        return {key for key, item in self._items(keys).items() if item.get("status", {}).get("S") == COMPLETED}

    def release(self, keys: Collection[str]) -> None:
        """Delete the claims (only while IN_PROGRESS) so the next try can claim the keys."""
        self._parallel(lambda key: self._delete_if(key, IN_PROGRESS), list(dict.fromkeys(keys)))

    def mark_uncertain(self, request: UncertainRequest) -> None:
        """The request item first (a key never points at a missing request), then the keys as UNCERTAIN."""
        expiry = str(int(self._clock() + self._retention_s))
        self._dynamodb.put_item(
            TableName=self._table,
            Item={
                KEY_ATTRIBUTE: {"S": _REQUEST_PREFIX + request.request_id},
                "status": {"S": _REQUEST},
                "body": {"B": gzip.compress(request.to_json().encode(), compresslevel=6)},
                "lease_expiry": {"N": "0"},
                TTL_ATTRIBUTE: {"N": expiry},
            },
        )
        self._write_batches(
            {
                "PutRequest": {
                    "Item": {
                        KEY_ATTRIBUTE: {"S": key},
                        "status": {"S": UNCERTAIN},
                        "request": {"S": request.request_id},
                        TTL_ATTRIBUTE: {"N": expiry},
                    }
                }
            }
            for key in request.keys
        )

    def uncertain_requests(self, keys: Collection[str]) -> list[UncertainRequest]:
        """Two BatchGetItem rounds: the keys (which request holds each), then the requests."""
        request_ids = list(
            dict.fromkeys(
                item["request"]["S"]
                for item in self._items(keys).values()
                if item.get("status", {}).get("S") == UNCERTAIN and "request" in item
            )
        )
        if not request_ids:
            return []
        items = self._items([_REQUEST_PREFIX + request_id for request_id in request_ids], body=True)
        records = []
        for request_id in request_ids:
            item = items.get(_REQUEST_PREFIX + request_id)
            if item is not None:
                body = item["body"]["B"]
                records.append(UncertainRequest.from_json(gzip.decompress(bytes(body))))
        return records

    def lease_uncertain(self, request_id: str) -> bool:
        """A conditional update of the request item: won only when it exists and no live lease holds it."""
        from botocore.exceptions import ClientError

        now = int(self._clock())
        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={KEY_ATTRIBUTE: {"S": _REQUEST_PREFIX + request_id}},
                UpdateExpression="SET lease_expiry = :until",
                ConditionExpression=f"attribute_exists({KEY_ATTRIBUTE}) AND lease_expiry < :now",
                ExpressionAttributeValues={
                    ":until": {"N": str(now + int(self._in_progress_s))},
                    ":now": {"N": str(now)},
                },
            )
        except ClientError as error:
            if _conditional_failure(error):
                return False
            raise
        return True

    def unlease_uncertain(self, request_id: str) -> None:
        """Set the lease's expiry to 0 (never creating the item)."""
        from botocore.exceptions import ClientError

        try:
            self._dynamodb.update_item(
                TableName=self._table,
                Key={KEY_ATTRIBUTE: {"S": _REQUEST_PREFIX + request_id}},
                UpdateExpression="SET lease_expiry = :zero",
                ConditionExpression=f"attribute_exists({KEY_ATTRIBUTE})",
                ExpressionAttributeValues={":zero": {"N": "0"}},
            )
        except ClientError as error:
            if not _conditional_failure(error):
                raise

    def resolve_uncertain(self, request: UncertainRequest, *, stored: bool) -> None:
        """Settle (when stored), then delete the keys still UNCERTAIN for this request, then the request item.

        Not one transaction: a resolver that dies half-way leaves the request with its keys, and the next resolver
        asks again and reaches the same decision (settling and deleting are idempotent)."""
        if stored:
            self.settle(request.stored_keys)
        self._parallel(lambda key: self._delete_if(key, UNCERTAIN, request.request_id), list(request.keys))
        self._dynamodb.delete_item(
            TableName=self._table, Key={KEY_ATTRIBUTE: {"S": _REQUEST_PREFIX + request.request_id}}
        )

    def _delete_if(self, key: str, status: str, request_id: str | None = None) -> None:
        """Delete the key's item only while it is in ``status`` (and held by ``request_id``)."""
        from botocore.exceptions import ClientError

        condition = "#status = :status"
        values = {":status": {"S": status}}
        if request_id is not None:
            condition += " AND #request = :request"
            values[":request"] = {"S": request_id}
        names = {"#status": "status", **({"#request": "request"} if request_id is not None else {})}
        try:
            self._dynamodb.delete_item(
                TableName=self._table,
                Key={KEY_ATTRIBUTE: {"S": key}},
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as error:
            if not _conditional_failure(error):
                raise

    def _items(self, keys: Collection[str], *, body: bool = False) -> dict[str, dict[str, Any]]:
        """The items of ``keys`` that exist (status and request only, unless ``body``), 100 keys a request."""
        unique = list(dict.fromkeys(keys))
        batches = [unique[start : start + 100] for start in range(0, len(unique), 100)]
        found: dict[str, dict[str, Any]] = {}
        for items in self._parallel(lambda batch: self._read_batch(batch, body), batches):
            found.update(items)
        return found

    def _read_batch(self, keys: list[str], body: bool) -> dict[str, dict[str, Any]]:
        names = {"#key": KEY_ATTRIBUTE, "#status": "status", "#request": "request"}
        projection = "#key, #status, #request"
        if body:
            names["#body"] = "body"
            projection += ", #body"
        request: dict[str, Any] = {
            self._table: {
                "Keys": [{KEY_ATTRIBUTE: {"S": key}} for key in keys],
                "ProjectionExpression": projection,
                "ExpressionAttributeNames": names,
                "ConsistentRead": True,
            }
        }
        found: dict[str, dict[str, Any]] = {}
        for attempt in range(8):
            response = self._dynamodb.batch_get_item(RequestItems=request)
            for item in response.get("Responses", {}).get(self._table, []):
                found[item[KEY_ATTRIBUTE]["S"]] = item
            request = response.get("UnprocessedKeys") or {}
            if not request:
                return found
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off before the unprocessed rest
        raise RuntimeError(f"DynamoDB kept {len(request[self._table]['Keys'])} ledger reads unprocessed")

    def _parallel(self, work: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """``work`` over ``items`` on up to ``parallelism`` threads, results in order."""
        if len(items) <= 1:
            return [work(item) for item in items]
        with ThreadPoolExecutor(max_workers=min(self._parallelism, len(items))) as pool:
            return list(pool.map(work, items))

    def _write_batches(self, requests: Iterable[dict[str, Any]]) -> None:
        """BatchWriteItem, 25 requests a call, several calls at a time (a log file settles thousands of events)."""
        pending = list(requests)
        self._parallel(self._write_batch, [pending[start : start + 25] for start in range(0, len(pending), 25)])

    def _write_batch(self, batch: list[dict[str, Any]]) -> None:
        for attempt in range(8):
            unprocessed = self._dynamodb.batch_write_item(RequestItems={self._table: batch}).get("UnprocessedItems", {})
            batch = unprocessed.get(self._table, [])
            if not batch:
                return
            time.sleep(min(2.0, 0.05 * 2**attempt))  # throttled: back off before the unprocessed rest
        raise RuntimeError(f"DynamoDB kept {len(batch)} ledger writes unprocessed")
