"""Poisoned values (a byte count of 20 or 5,000 digits, text, an itemId holding NUL) quarantine or filter their own
entry in every parser and never spoil the file, message or body around them."""

from __future__ import annotations

import gzip
import json
from typing import Any

import pytest

from metering.line import MeteredDownload
from metering.outcomes import OutcomeTally, Reason, Skip
from minio_relay.body import parse_body
from minio_relay.webhook import Webhook, WebhookRequest, meter_entries
from s3_audit.cloudtrail import classify, record_from_object
from s3_audit.envelopes import InlineRecord, work_in_message
from s3_audit.ingest import meter_records
from s3_audit.log_file import read_log_records
from tests.events import load_event

HUGE = "9" * 5_000  # past Python's 4,300-digit int-from-str limit
POISONED_BYTES = [HUGE, f'"{HUGE}"', "99999999999999999999", '"99999999999999999999"', "1e400", '"12 KB"', "16384.5"]
MARKER = "__BYTES__"


def cloudtrail_record(index: int, size: str = "16384") -> str:
    """A presigned GetObject record as JSON text with ``size`` written verbatim as its byte count."""
    record: dict[str, Any] = load_event("cloudtrail/presigned_get")
    record["eventID"] = f"00000000-0000-4000-8000-{index:012d}"
    record["requestID"] = f"POISONTEST{index:06d}"  # one S3 request per record: the same ID is metered once
    record["requestParameters"]["itemId"] = f"item-{index}"
    record["additionalEventData"]["bytesTransferredOut"] = MARKER
    return json.dumps(record).replace(f'"{MARKER}"', size)


def log_file(records: list[str]) -> bytes:
    return gzip.compress(('{"Records":[' + ",".join(records) + "]}").encode(), compresslevel=1)


def outcomes(records: list[Any]) -> tuple[list[str], OutcomeTally]:
    batch = meter_records(records)
    return [download.item_id for download in batch.downloads], batch.tally


@pytest.mark.parametrize("size", POISONED_BYTES)
def test_cloudtrail_log_file_quarantines_only_the_poisoned_record(size: str) -> None:
    data = log_file([cloudtrail_record(0), cloudtrail_record(1, size), cloudtrail_record(2)])

    items, tally = outcomes(list(read_log_records([data])))

    assert items == ["item-0", "item-2"]
    assert dict(tally.quarantined) == {Reason.INVALID_BYTES.value: 1}


def test_cloudtrail_log_file_filters_an_item_id_with_nul() -> None:
    poisoned = cloudtrail_record(1).replace('"item-1"', '"item\\u0000-1"')
    data = log_file([cloudtrail_record(0), poisoned, cloudtrail_record(2)])

    items, tally = outcomes(list(read_log_records([data])))

    assert items == ["item-0", "item-2"]
    assert dict(tally.filtered) == {Reason.INVALID_ITEM_ID.value: 1}


@pytest.mark.parametrize("size", POISONED_BYTES)
def test_eventbridge_inline_record_with_a_poisoned_byte_count_is_quarantined(size: str) -> None:
    event = load_event("envelopes/eventbridge_api_call")
    event["detail"]["additionalEventData"]["bytesTransferredOut"] = MARKER
    body = json.dumps(event).replace(f'"{MARKER}"', size)

    (item,) = work_in_message(body)

    assert isinstance(item, InlineRecord)
    record = record_from_object(item.record)
    assert not isinstance(record, Skip)
    outcome = classify(record)
    assert isinstance(outcome, Skip)
    assert (outcome.kind, outcome.reason) == ("quarantined", Reason.INVALID_BYTES)


def minio_entry(index: int, tx: str = "1024", item: str = "") -> str:
    entry: dict[str, Any] = load_event("minio/get_object_presigned")
    entry["requestID"] = f"18A3B0C2D4E5F6{index:02d}"
    entry["requestQuery"]["itemId"] = item or f"item-{index}"
    entry["api"]["tx"] = MARKER
    return json.dumps(entry).replace(f'"{MARKER}"', tx)


def meter_body(body: bytes) -> tuple[list[str], OutcomeTally]:
    tally = OutcomeTally()
    downloads: list[MeteredDownload] = meter_entries(parse_body(body), tally)
    return [download.item_id for download in downloads], tally


@pytest.mark.parametrize("tx", POISONED_BYTES)
@pytest.mark.parametrize("form", ["ndjson", "array"])
def test_minio_body_quarantines_only_the_poisoned_entry(tx: str, form: str) -> None:
    entries = [minio_entry(0), minio_entry(1, tx), minio_entry(2)]
    body = ("\n".join(entries) if form == "ndjson" else "[" + ",".join(entries) + "]").encode()

    items, tally = meter_body(body)

    assert items == ["item-0", "item-2"]
    assert dict(tally.quarantined) == {Reason.INVALID_BYTES.value: 1}


@pytest.mark.parametrize("tx", POISONED_BYTES)
def test_minio_single_entry_with_a_poisoned_byte_count_is_accepted_and_quarantined(tx: str) -> None:
    # A 400 would make MinIO re-send the body for ever; the entry is quarantined and MinIO gets 200.
    webhook = Webhook(token=lambda: "Bearer a-webhook-token-of-32-characters", sink=lambda downloads: None)
    request = WebhookRequest(
        "POST",
        "/auditlogs/processor",
        {"authorization": "Bearer a-webhook-token-of-32-characters"},
        minio_entry(1, tx).encode(),
    )

    response = webhook.handle(request)

    assert response.status == 200
    assert response.document == {"entries": 1, "metered": 0, "filtered": 0, "quarantined": 1}


@pytest.mark.parametrize("control", ["\\u0000", "\\u001f", "\\u007f", "\\n"])
def test_minio_item_id_with_a_control_character_is_filtered(control: str) -> None:
    poisoned = minio_entry(1).replace('"item-1"', f'"item{control}-1"')
    body = "\n".join([minio_entry(0), poisoned, minio_entry(2)]).encode()

    items, tally = meter_body(body)

    assert items == ["item-0", "item-2"]
    assert dict(tally.filtered) == {Reason.INVALID_ITEM_ID.value: 1}
