"""s3_audit delivers a log file as it reads it, a window of ``batchMaxLines`` downloads at a time, against moto S3,
the reference OGC RS and a delivery ledger: a retry resumes after the windows delivered, a file damaged part-way
keeps what was delivered, a request repeated windows apart is one line."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError

from metering.errors import DeliveryError
from metering.ledger import SqliteLedger
from metering.ogc_rs import DeliveryReport, OgcRsClient, SettledCallback
from s3_audit.handler import handler
from testbed.reference_rs import ReferenceOgcRs
from testbed.samples import cloudtrail_log_file
from tests.events import load_event
from tests.helpers import client_for
from tests.integration.test_s3_audit_handler import CONTEXT, line, record, request_id_for, s3, stored, use
from tests.unit.test_envelopes import BUCKET, KEY

__all__ = ["s3"]  # the fixture, imported for the tests below
SQS_EVENT = load_event("envelopes/sqs_s3_notification")
MIB = 1 << 20


def records(count: int, prefix: str = "w") -> list[dict[str, Any]]:
    return [record(f"{prefix}-{index}", f"{prefix}-e{index}") for index in range(count)]


def lines_of(count: int, prefix: str = "w") -> list[str]:
    return sorted(line(f"{prefix}-{index}") for index in range(count))


class Recording:
    """The OGC RS client, recording each delivery's size and how many bytes of the log file had been read by then."""

    def __init__(self, sink: OgcRsClient, read: list[int], fail_on_call: int | None = None) -> None:
        self.sink = sink
        self.batch_max_lines = sink.batch_max_lines
        self.read = read
        self.fail_on_call = fail_on_call
        self.calls: list[tuple[int, int]] = []  # (lines, bytes read so far)

    def deliver(self, lines: Sequence[str], on_settled: SettledCallback | None = None) -> DeliveryReport:
        self.calls.append((len(lines), self.read[0]))
        if self.fail_on_call == len(self.calls):
            raise DeliveryError("OGC RS answered 503 after retries")
        return self.sink.deliver(lines, on_settled)


class CountingS3:
    """moto's S3 client, counting the bytes of object bodies the function has pulled so far."""

    def __init__(self, s3: Any) -> None:
        self.s3 = s3
        self.read = [0]

    def get_object(self, **parameters: Any) -> dict[str, Any]:
        response: dict[str, Any] = self.s3.get_object(**parameters)
        body, read = response["Body"], self.read

        class Counted:
            def iter_chunks(self, size: int) -> Iterator[bytes]:
                for chunk in body.iter_chunks(size):
                    read[0] += len(chunk)
                    yield chunk

            def close(self) -> None:
                body.close()

        return {**response, "Body": Counted()}


def plain_log_file(values: list[dict[str, Any]]) -> bytes:
    """A log file as plain JSON (no gzip): the bytes read are the bytes decoded."""
    return json.dumps({"Records": values}).encode()


def test_the_lines_of_a_file_go_out_while_it_is_still_being_read(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    body = plain_log_file(records(3000))  # ~6 MB: the reader hands records out every 512 KiB
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=body)
    counting = CountingS3(s3)
    sink = Recording(client_for(reference_rs, batch_max_lines=200), counting.read)
    use(monkeypatch, counting, sink, SqliteLedger())

    response = handler(SQS_EVENT, CONTEXT)

    assert response == {"batchItemFailures": []}
    assert stored(reference_rs) == lines_of(3000)
    assert [size for size, _ in sink.calls] == [200] * 15  # one window of batchMaxLines downloads per delivery
    first_read, last_read = sink.calls[0][1], sink.calls[-1][1]
    assert first_read < len(body) // 4, sink.calls  # the first window left before a quarter of the file was read
    assert last_read == len(body)


def test_a_retry_resumes_after_the_windows_delivered_and_sends_nothing_twice(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_log_file(records(10)))
    ledger = SqliteLedger()
    client = client_for(reference_rs, batch_max_lines=3)
    use(monkeypatch, s3, Recording(client, [0], fail_on_call=3), ledger)

    with pytest.raises(BatchProcessingError):  # the batch's one message failed: SQS delivers it again
        handler(SQS_EVENT, CONTEXT)
    assert len(stored(reference_rs)) == 6  # two windows of three went out before OGC RS failed
    requests_before = len(reference_rs.requests_log)

    retry = Recording(client, [0])
    use(monkeypatch, s3, retry, ledger)
    assert handler(SQS_EVENT, CONTEXT) == {"batchItemFailures": []}

    assert stored(reference_rs) == lines_of(10)
    # The first two windows are found in the ledger: only the third (3 lines) and the last (1) are sent.
    assert [size for size, _ in retry.calls] == [3, 1]
    assert len(reference_rs.requests_log) - requests_before == 2


def test_a_file_damaged_after_several_windows_keeps_them_and_is_quarantined_once(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    whole = gzip.compress(json.dumps({"Records": records(400)}).encode(), compresslevel=1)
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=whole[: len(whole) * 3 // 4])
    ledger = SqliteLedger()
    use(monkeypatch, s3, client_for(reference_rs, batch_max_lines=25), ledger)
    event = load_event("envelopes/s3_notification")

    response = handler(event, CONTEXT)

    delivered = stored(reference_rs)
    assert response["quarantined"] == {"bad_gzip": 1}
    assert response["metered"] == response["delivered"] == len(delivered)
    assert 100 < len(delivered) < 400  # several windows, and the records of the damaged part are not invented
    assert set(delivered) <= set(lines_of(400))
    # Redelivered (SQS at least once): the same windows are found delivered, nothing is sent again.
    again = handler(event, CONTEXT)
    assert (again["delivered"], again["already_delivered"]) == (0, len(delivered))
    assert stored(reference_rs) == delivered


def test_a_request_repeated_windows_apart_is_filtered_as_a_duplicate(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    values = records(7)
    values.append(values[1])  # CloudTrail repeats an event (same eventID and request) later in the file
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_log_file(values))
    use(monkeypatch, s3, client_for(reference_rs, batch_max_lines=2))  # no ledger: the file's own set decides

    response = handler(load_event("envelopes/s3_notification"), CONTEXT)

    assert stored(reference_rs) == lines_of(7)
    assert (response["metered"], response["filtered"]) == (7, {"duplicate_event": 1})


def test_requests_another_input_is_delivering_fail_the_message_after_the_rest_is_delivered(
    monkeypatch: pytest.MonkeyPatch, s3: Any, reference_rs: ReferenceOgcRs
) -> None:
    s3.put_object(Bucket=BUCKET, Key=KEY, Body=cloudtrail_log_file(records(9)))
    ledger = SqliteLedger()
    held = f"s3-request:stac-assets-prod/{request_id_for('w-e4')}"
    assert ledger.claim([held]).claimed == {held}  # an EventBridge event of the same request, being delivered
    use(monkeypatch, s3, client_for(reference_rs, batch_max_lines=2), ledger)

    with pytest.raises(BatchProcessingError, match="being delivered by another"):
        handler(SQS_EVENT, CONTEXT)

    assert stored(reference_rs) == sorted(set(lines_of(9)) - {line("w-4")})
    ledger.release([held])  # that sender gave up: the retry delivers the request, and only it
    assert handler(SQS_EVENT, CONTEXT) == {"batchItemFailures": []}
    assert stored(reference_rs) == lines_of(9)
