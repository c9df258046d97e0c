"""The fault drill: both flows through the real handlers under injected faults, then an exact reconciliation.

Run it as ``python -m testbed.fault_drill [--log-files N --bodies N --seed S ...]``. It starts a reference
OGC RS and an AWS emulator (moto server) set up like the stacks (log bucket -> S3 notification -> log-file
queue + DLQ, delivery queue + DLQ, the DynamoDB delivery ledger, Secrets Manager), generates CloudTrail log
files and MinIO bodies with the duplicates real systems produce, and drives them through ``s3_audit.handler``,
``minio_relay.handler.webhook`` and ``minio_relay.handler.deliver`` with Lambda's SQS semantics while OGC RS,
its token endpoint and SQS misbehave. Then faults stop, both DLQs are redriven, the queues drained, and the
lines OGC RS stored are compared, as a multiset, with the lines the generator knows it produced.

How a duplicate is attributed to the documented window (OGC RS stored a chunk, but its answer never reached
the client): the drill *measures* which answers were lost. The reference OGC RS records the job id and the
lines of every request it stored; the client's HTTP session records the job id of every answer it received.
A stored job whose id the client never saw is a lost answer. Each such request is one copy of its lines the
client could not know about, so it accounts for at most one extra copy of each of its lines. For every line:

    extra   = stored - expected                  (when positive)
    inside  = min(extra, copies of the line in stored-but-unanswered requests)
    outside = extra - inside                     (a copy stored although an answer had been received)

Exit status 0 only when nothing is lost, nothing unexpected is stored, no duplicate falls outside the
window, every poison line is refused and shows in the functions' ERROR logs, and both DLQs end empty.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import math
import os
import random
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO
from urllib.parse import quote_plus

import requests

from metering import env_names
from ogc_audit.redrive import redrive
from testbed.local_aws import (
    FUNCTION_LOGGER_FAMILIES,
    FlowResources,
    LambdaHandler,
    create_flow_resources,
    function_logs,
    local_aws,
    pump_queue,
)
from testbed.reference_rs import Fault, FaultKind, FaultPlan, JobRecord, ReferenceOgcRs
from testbed.samples import (
    MINIO_DEPLOYMENT,
    Download,
    Variant,
    cloudtrail_log_key,
    cloudtrail_record,
    minio_entry,
    random_download,
    utc,
    webhook_post,
)

_PREFIX = "ogc-drill"
WEBHOOK_TOKEN = "drill-webhook-token-5c1e"  # noqa: S105 - a throwaway token of the local drill
_START = utc("2025-10-27T10:00:00")
_POISON_PREFIX = "POISON-"
_EXECUTION_PATH = "/execution"

DEFAULT_FAULTS = "503=0.15,500=0.05,429=0.05,delay=0.05,drop=0.05,store_then_drop=0.03,unauthorized=0.05,redirect=0.03"
# A poisoned value stands in its JSON text for this marker: a 5,000-digit number cannot be written by json.dumps.
_HUGE_MARKER = "__HUGE_NUMBER__"
_HUGE_NUMBER = "9" * 5_000  # past Python's 4,300-digit int-from-str limit

# What the inputs hold besides metered downloads, roughly a day's mix: the weight of each kind of entry in a
# CloudTrail log file and in a MinIO audit batch.
_WEIGHTS_BY_FLOW: dict[Variant, tuple[int, int]] = {  # variant: (weight in aws_s3, weight in minio)
    Variant.PRESIGNED_GET: (60, 60),
    Variant.FAILED_403: (6, 5),
    Variant.FAILED_404: (4, 8),
    Variant.HEADER_SIGNED: (8, 10),
    Variant.HEAD_OBJECT: (10, 10),
    Variant.PUT_OBJECT: (5, 4),
    Variant.MISSING_USER: (4, 3),
    Variant.NON_UUID_USER: (3, 0),
}
_FLOW_COLUMN = {"aws_s3": 0, "minio": 1}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrillConfig:
    """Sizes, fault rates and the client's (deliberately short) retry budget and timeouts."""

    log_files: int = 40
    records_per_file: int = 50
    bodies: int = 60
    max_entries: int = 20
    poison_lines: int = 6
    seed: int = 20251027
    faults: str = DEFAULT_FAULTS
    """Process endpoint faults: ``kind=probability`` pairs; a number is a status, or delay, drop, ..."""
    token_503: float = 0.10
    token_redirect: float = 0.03
    """Share of token requests answered 307 to another path (never followed: a configuration error, retried)."""
    poisoned_values: int = 8
    """Entries with a poisoned value (5,000-digit or 20-digit byte count, text, an itemId with NUL), half per flow:
    each is quarantined or filtered alone, and the entries beside it are metered."""
    revocations: int = 3
    outage_s: float = 8.0
    """OGC RS answers only 503 mid-run until a message exhausts its receives and reaches a DLQ (at most this long)."""
    sqs_faults: float = 0.05
    """Share of the webhook's SendMessageBatch calls that fail (half before, half after SQS took the messages)."""
    lost_answers: float = 0.05
    """Share of 2xx webhook answers MinIO does not see, so it re-sends the body."""
    batch_max_lines: int = 20
    delay_s: float = 1.0
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 0.5
    retries: int = 2
    backoff_s: float = 0.01
    rounds: int = 8
    slow_s: float = 3.0
    """The slow phase: OGC RS stores each request on receipt and answers this long after (0: no slow phase)."""
    slow_log_files: int = 4
    slow_bodies: int = 6
    database: bool = True
    """The functions resolve uncertain requests through OGC RS's database (a Lambda in OGC RS's network, serve, the
    CLI); False: without it, by the grace period, counting possible duplicates."""
    grace_s: float = 2.0
    """Without the database: how long an uncertain request is left alone (900 s in production, scaled down here
    like every other timeout of the drill)."""

    def fault_table(self) -> list[tuple[Fault, float]]:
        """The process endpoint's fault mix as FaultPlan.randomize takes it."""
        table = []
        for part in filter(None, (item.strip() for item in self.faults.split(","))):
            name, _, probability = part.partition("=")
            name = name.strip()
            if name.isdigit():
                fault = Fault.with_status(int(name))
            elif name == FaultKind.DELAY:
                fault = Fault.delay(self.delay_s)
            else:
                fault = Fault.of(name)
            table.append((fault, float(probability)))
        return table

    def check(self) -> None:
        """Refuse a configuration whose delays would not outlast the client's read timeout."""
        if any(fault.kind is FaultKind.DELAY for fault, _ in self.fault_table()) and (
            self.delay_s <= self.read_timeout_s
        ):
            raise ValueError("delay_s must exceed read_timeout_s, or a delay is just a slow success")
        if 0 < self.slow_s <= self.read_timeout_s:
            raise ValueError("slow_s must exceed read_timeout_s: the slow phase answers after the client gave up")


# --------------------------------------------------------------------------------------------------
# Inputs and what the generator knows about them
# --------------------------------------------------------------------------------------------------


def expected_line(download: Download, backend: str) -> str:
    """The line a metered download must become, written from the generator's facts (docs/design.md, output line)."""
    return (
        f"{download.user_id}|{download.collection_id}|{download.item_id}|"
        f"{download.when:%Y-%m-%dT%H:%M:%SZ}|{download.size}|{backend}"
    )


@dataclass
class LogFile:
    """One CloudTrail log file to upload, and how CloudTrail/S3 repeat it."""

    key: str
    body: bytes
    copy_key: str | None = None
    """The same bytes written again under another key (CloudTrail re-delivering the file)."""
    notify_twice: bool = False
    """S3/SQS deliver the ObjectCreated notification twice."""


@dataclass
class DrillInputs:
    """Generated inputs and the expectations derived from the generator's own facts."""

    log_files: list[LogFile] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)
    expected: Counter[str] = field(default_factory=Counter)
    poison: set[str] = field(default_factory=set)
    poison_item_ids: set[str] = field(default_factory=set)
    records: int = 0
    repeated_events: int = 0
    repeated_across_files: int = 0
    entries: int = 0
    repeated_entries: int = 0
    poisoned_values: int = 0


def _pick(rng: random.Random, flow: str) -> Variant:
    """A kind of entry drawn with the weights of ``flow`` ("aws_s3" or "minio")."""
    column = _FLOW_COLUMN[flow]
    return rng.choices(list(_WEIGHTS_BY_FLOW), weights=[weights[column] for weights in _WEIGHTS_BY_FLOW.values()])[0]


def _poisoned(download: Download, number: int) -> Download:
    return replace(download, item_id=f"{_POISON_PREFIX}{number:03d}_{download.item_id}")


def generate_inputs(config: DrillConfig, rng: random.Random) -> DrillInputs:
    """Log files and MinIO bodies with repeated events, re-deliveries and poison lines; expectations alongside.

    The expected lines are written from the generator's own decisions (which variant, which repeats), never by
    running the code under test: a metered download is expected exactly once however often it is repeated.
    """
    generator = _Generator(config, rng)
    generator.log_files()
    generator.bodies()
    return generator.inputs


def generate_slow_inputs(config: DrillConfig, rng: random.Random) -> DrillInputs:
    """The inputs of the slow phase: log files and bodies of their own (no poison), named apart from the others."""
    if config.slow_s <= 0:
        return DrillInputs()
    sized = replace(config, log_files=config.slow_log_files, bodies=config.slow_bodies)
    generator = _Generator(replace(sized, poison_lines=0, poisoned_values=0), rng, tag="slow")
    generator.log_files()
    generator.bodies()
    return generator.inputs


class _Generator:
    """Draws the inputs from one RNG and notes, as it goes, which lines must reach OGC RS."""

    def __init__(self, config: DrillConfig, rng: random.Random, tag: str = "drill") -> None:
        self.config, self.rng, self.inputs, self.tag = config, rng, DrillInputs(), tag
        poison_in_s3 = config.poison_lines // 2 if config.log_files else 0
        poison_in_minio = config.poison_lines - poison_in_s3 if config.bodies else 0
        s3_slots = max(1, config.log_files * config.records_per_file)
        minio_slots = max(1, config.bodies)  # every body brings at least one new entry, almost surely
        self.s3_poison = set(rng.sample(range(s3_slots), min(poison_in_s3, s3_slots)))
        self.minio_poison = set(rng.sample(range(minio_slots), min(poison_in_minio, minio_slots)))
        poisoned_in_s3 = config.poisoned_values // 2 if config.log_files else 0
        self.s3_poisoned_values = set(rng.sample(range(s3_slots), min(poisoned_in_s3, s3_slots)))
        poisoned_in_minio = config.poisoned_values - poisoned_in_s3 if config.bodies else 0
        self.minio_poisoned_values = set(rng.sample(range(minio_slots), min(poisoned_in_minio, minio_slots)))

    def _poisoned_value(self, ids: dict[str, Any], sizes: dict[str, Any], size_key: str) -> None:
        """Spoil one value of a metered download in place; the entry must end filtered or quarantined."""
        self.inputs.poisoned_values += 1
        kind = self.rng.choice(["huge", "twenty_digits", "text", "nul_item"])
        if kind == "nul_item":
            ids["itemId"] = ids["itemId"] + "\x00"
        else:
            sizes[size_key] = {"huge": _HUGE_MARKER, "twenty_digits": 10**20, "text": "12 KB"}[kind]

    def _poisoned_record(self, when: datetime) -> dict[str, Any]:
        record = cloudtrail_record(random_download(self.rng, when), Variant.PRESIGNED_GET)
        self._poisoned_value(record["requestParameters"], record["additionalEventData"], "bytesTransferredOut")
        return record

    def _poisoned_entry(self) -> dict[str, Any]:
        entry = minio_entry(random_download(self.rng, _START), Variant.PRESIGNED_GET)
        self._poisoned_value(entry["requestQuery"], entry["api"], "tx")
        return entry

    def _download(self, when: datetime, backend: str, variant: Variant, poison: bool) -> tuple[Download, Variant]:
        """A download; a poison one is a valid presigned GET whose itemId OGC RS refuses."""
        download = random_download(self.rng, when)
        if poison:
            download = _poisoned(download, len(self.inputs.poison) + 1)
            self.inputs.poison.add(expected_line(download, backend))
            self.inputs.poison_item_ids.add(download.item_id)
            return download, Variant.PRESIGNED_GET
        if variant is Variant.PRESIGNED_GET:
            self.inputs.expected[expected_line(download, backend)] += 1
        return download, variant

    def log_files(self) -> None:
        """CloudTrail files every 5 minutes; some events twice in a file, some files written or notified twice."""
        config, rng, inputs = self.config, self.rng, self.inputs
        earlier: list[dict[str, Any]] = []  # records of earlier files, some of which CloudTrail repeats later
        for number in range(config.log_files):
            when = _START + timedelta(minutes=5 * number)
            records: list[dict[str, Any]] = []
            if earlier and rng.random() < 0.2:  # an event of an earlier file again, in this one (same eventID)
                records.append(rng.choice(earlier))
                inputs.repeated_across_files += 1
            for position in range(config.records_per_file):
                poison = number * config.records_per_file + position in self.s3_poison
                download, variant = self._download(when, "aws_s3", _pick(rng, "aws_s3"), poison)
                records.append(cloudtrail_record(download, variant, float_bytes=rng.random() < 0.3))
                if number * config.records_per_file + position in self.s3_poisoned_values:
                    records.append(self._poisoned_record(when))
                if rng.random() < 0.05:  # CloudTrail wrote the same event twice (same eventID) in the file
                    records.insert(rng.randrange(len(records) + 1), records[rng.randrange(len(records))])
                    inputs.repeated_events += 1
            inputs.records += len(records)
            earlier.extend(records)
            key = cloudtrail_log_key(when, f"{self.tag}{number:04d}")
            copy_key = cloudtrail_log_key(when, f"{self.tag}{number:04d}copy") if rng.random() < 0.1 else None
            text = json.dumps({"Records": records}).replace(f'"{_HUGE_MARKER}"', _HUGE_NUMBER)
            body = gzip.compress(text.encode())
            inputs.log_files.append(LogFile(key, body, copy_key=copy_key, notify_twice=rng.random() < 0.1))

    def bodies(self) -> None:
        """NDJSON bodies of 1..max_entries entries; entries repeated in a body or in a later one; bodies re-sent."""
        config, rng, inputs = self.config, self.rng, self.inputs
        earlier: list[dict[str, Any]] = []  # entries MinIO may send again inside a later body
        resent: list[tuple[int, bytes]] = []
        slot = 0
        inputs.bodies.append(b"{}\n")  # releases before 2024-03 probe the target with {} on start-up
        for _ in range(config.bodies):
            entries: list[dict[str, Any]] = []
            for _ in range(rng.randint(1, config.max_entries)):
                roll = rng.random()
                if earlier and roll < 0.05:  # an entry already sent in an earlier body (same requestID)
                    entries.append(rng.choice(earlier))
                elif entries and roll < 0.10:  # the same entry twice in one body
                    entries.append(rng.choice(entries))
                else:
                    download, variant = self._download(_START, "minio", _pick(rng, "minio"), slot in self.minio_poison)
                    entries.append(minio_entry(download, variant, legacy=rng.random() < 0.1))
                    if slot in self.minio_poisoned_values:
                        entries.append(self._poisoned_entry())
                    slot += 1
                    continue
                inputs.repeated_entries += 1
            inputs.entries += len(entries)
            earlier.extend(entries)
            body = b"".join(
                json.dumps(entry).replace(f'"{_HUGE_MARKER}"', _HUGE_NUMBER).encode() + b"\n" for entry in entries
            )
            inputs.bodies.append(body)
            if rng.random() < 0.1:  # sent again later (MinIO restarted with a persisted queue_dir)
                resent.append((len(inputs.bodies), body))
        for position, body in reversed(resent):
            inputs.bodies.insert(rng.randint(position, len(inputs.bodies)), body)


# --------------------------------------------------------------------------------------------------
# Witnesses: what OGC RS stored, and which answers the client received
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredBatch:
    """One request OGC RS stored: its job id, the fault applied to it and the lines it carried."""

    job_id: str
    fault: FaultKind
    lines: tuple[str, ...]


class _RecordingPlan(FaultPlan):
    """A FaultPlan that remembers, per server thread, the fault drawn for the request being handled."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__(seed)
        self._current = threading.local()
        self._count_lock = threading.Lock()
        self.started = 0

    def next_fault(self) -> Fault:
        """Draw as usual; remember the fault for this thread (the request is handled on it to the end)."""
        fault = super().next_fault()
        self._current.fault = fault
        with self._count_lock:
            self.started += 1
        return fault

    def current(self) -> Fault:
        """The fault of the request this thread is handling."""
        return getattr(self._current, "fault", Fault.ok())


class WitnessedOgcRs(ReferenceOgcRs):
    """The reference OGC RS, also recording every stored request with its job id and fault."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.faults: _RecordingPlan = _RecordingPlan(kwargs.get("fault_seed", 0))
        self.stored_batches: list[StoredBatch] = []
        self._witness_lock = threading.Lock()

    def _run_job(self, job_id: str, logs: Sequence[object]) -> tuple[JobRecord, int]:
        job, status = super()._run_job(job_id, logs)
        if job.status == "successful":
            batch = StoredBatch(job_id, self.faults.current().kind, tuple(str(line) for line in logs))
            with self._witness_lock:
                self.stored_batches.append(batch)
        return job, status

    def wait_idle(self, timeout_s: float = 15.0) -> bool:
        """Wait until every process request has ended (a delayed one stores after its client gave up)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                ended = sum(1 for record in self.requests_log if record.path.endswith(_EXECUTION_PATH))
            if ended >= self.faults.started:
                return True
            time.sleep(0.05)
        return False


class AnswerWitnessSession(requests.Session):
    """The client's HTTP session, noting the job id of every process answer that actually reached the client.

    urllib3 retries inside the adapter and hands back only the final response; a stored request is answered
    200 (never retried), so a job id seen here is a store the client knows about.
    """

    def __init__(self, base: requests.Session, received: set[str]) -> None:
        super().__init__()
        for prefix, adapter in base.adapters.items():
            self.mount(prefix, adapter)
        self._received = received

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        """Send; remember the job id of a successful process execution."""
        response = super().request(method, url, *args, **kwargs)
        if response.status_code in (200, 201) and str(url).endswith(_EXECUTION_PATH):
            with contextlib.suppress(ValueError, AttributeError):
                document = response.json()
                job_id = document.get("jobID") or document.get("jobId")
                if job_id:
                    self._received.add(str(job_id))
        return response


class _ErrorLogCapture(logging.Handler):
    """Keeps the text of every ERROR record of the functions, to find quarantined lines in them."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        extras = {name: value for name, value in vars(record).items() if name in ("line", "input", "server_message")}
        self.texts.append(f"{record.getMessage()} {json.dumps(extras, default=str)}")


@contextlib.contextmanager
def _function_logs(sink: TextIO) -> Iterator[_ErrorLogCapture]:
    """Send the functions' JSON logs to ``sink`` (the drill prints its own figures) and capture their ERRORs."""
    capture = _ErrorLogCapture()
    # metering: the OGC RS client logs lines refused by a request whose invocation then failed.
    loggers = [logging.getLogger(name) for name in FUNCTION_LOGGER_FAMILIES]
    for logger in loggers:
        logger.addHandler(capture)
    quiet = {name: logging.getLogger(name).level for name in ("urllib3", "botocore", "werkzeug")}
    for name in quiet:  # urllib3 warns on every retry: thousands of lines under this fault rate
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with function_logs(sink):
            yield capture
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
        for name, level in quiet.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------------------------------
# AWS resources and handler wiring
# --------------------------------------------------------------------------------------------------


def _create_resources(aws: Any, rs: ReferenceOgcRs, config: DrillConfig) -> FlowResources:
    """What the synthesized templates declare (queues, DLQs, ledger tables, log bucket notification, secrets) and
    one role per function with its template policies; the functions run under those roles."""
    return create_flow_resources(
        aws,
        prefix=_PREFIX,
        ogc_rs=rs,
        webhook_token=WEBHOOK_TOKEN,
        local_settings={env_names.BATCH_MAX_LINES: str(config.batch_max_lines)},  # smaller than the template's
    )


def _queue_names(resources: FlowResources) -> dict[str, str]:
    return {
        "log-files": resources.log_file_queue_url,
        "log-files-dlq": resources.log_file_dead_letter_url,
        "delivery": resources.delivery_queue_url,
        "delivery-dlq": resources.delivery_dead_letter_url,
    }


class FlakySqs:
    """The webhook's SQS client, failing some SendMessageBatch calls before or after SQS took the messages.

    A failure after the send is the nasty one: the webhook answers 503, MinIO re-sends the body, and the same
    lines sit in the delivery queue twice; the ledger must keep the second copy from reaching OGC RS.
    """

    def __init__(self, sqs: Any, rate: float, rng: random.Random) -> None:
        self._sqs = sqs
        self.rate = rate
        self._rng = rng
        self.failed_before = 0
        self.failed_after = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sqs, name)

    def send_message_batch(self, **kwargs: Any) -> Any:
        """SendMessageBatch, or a connection error as the network gives it."""
        from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

        roll = self._rng.random()
        if roll < self.rate / 2:
            self.failed_before += 1
            raise EndpointConnectionError(endpoint_url="https://sqs.us-east-1.amazonaws.com")
        response = self._sqs.send_message_batch(**kwargs)
        if roll < self.rate:
            self.failed_after += 1
            raise ReadTimeoutError(endpoint_url="https://sqs.us-east-1.amazonaws.com")
        return response


@dataclass
class Wiring:
    """The handlers' dependencies as the drill built them."""

    received_jobs: set[str]
    flaky_sqs: FlakySqs
    clients: list[Any]


def _patch(module: ModuleType, name: str, value: object, saved: list[tuple[ModuleType, str, object]]) -> None:
    saved.append((module, name, getattr(module, name)))
    setattr(module, name, value)


@contextlib.contextmanager
def _wired_handlers(
    config: DrillConfig, resources: FlowResources, rng: random.Random, rs: ReferenceOgcRs
) -> Iterator[Wiring]:
    """Give the real handlers a short-timeout OGC RS client, the DynamoDB ledger and a flaky SQS; undo after.

    Every client is made with the credentials of the function that uses it, so the template policies still apply.
    """
    from aws_lambda_powertools.utilities.parameters import base as powertools_parameters

    from metering.ledger import DynamoDbLedger
    from metering.ogc_rs import http_session
    from metering.ogc_rs_database import open_ogc_rs_database
    from metering.runtime import build_ogc_rs_client
    from metering.settings import OgcRsSettings
    from metering.uncertain import UncertainResolver
    from minio_relay import handler as minio_handler
    from s3_audit import handler as s3_handler

    # Powertools keeps one Secrets Manager client per process: a drill run earlier in this process left one
    # pointing at its (stopped) emulator.
    powertools_parameters.DEFAULT_PROVIDERS.pop("secrets", None)
    received: set[str] = set()
    databases: list[Any] = []
    timeout = (config.connect_timeout_s, config.read_timeout_s)

    def client(env: Mapping[str, str]) -> Any:
        # One client per function, as each Lambda function has its own process and token cache.
        session = AnswerWitnessSession(http_session(retries=config.retries, backoff_factor=config.backoff_s), received)
        return build_ogc_rs_client(OgcRsSettings.from_env(env), session=session, timeout=timeout)

    def resolver() -> UncertainResolver:
        # Each function its own, as each has its own process. Times scaled like the drill's timeouts: a request is
        # trusted NOT_STORED once older than an injected delay, and asked about again soon.
        database = open_ogc_rs_database(rs.database_url) if config.database else None
        if database is not None:
            databases.append(database)
        scaled = 5 * max(config.delay_s, config.read_timeout_s)  # a loaded machine serves the delayed late
        return UncertainResolver(database, grace_s=config.grace_s, not_stored_after_s=scaled, ask_again_s=0.5)

    def ledger(function: Any) -> DynamoDbLedger:
        return DynamoDbLedger(
            function.environment[env_names.IDEMPOTENCY_TABLE_NAME], function.session().client("dynamodb")
        )

    s3_audit, webhook, deliver = resources.s3_audit, resources.webhook, resources.deliver
    s3_client, minio_client = client(s3_audit.environment), client(deliver.environment)
    deliver_ledger = ledger(deliver)
    deps = s3_handler.Dependencies(
        s3=s3_audit.session().client("s3"), sink=s3_client, ledger=ledger(s3_audit), resolver=resolver()
    )
    deliver_resolver = resolver()
    flaky = FlakySqs(webhook.session().client("sqs"), config.sqs_faults, random.Random(rng.random()))  # noqa: S311
    saved: list[tuple[ModuleType, str, object]] = []
    minio_handler._webhook.cache_clear()  # built from the environment: must see the drill's queue and secret
    try:
        _patch(s3_handler, "dependencies", lambda: deps, saved)
        _patch(minio_handler, "deliver_client", lambda: minio_client, saved)
        _patch(minio_handler, "deliver_ledger", lambda: deliver_ledger, saved)
        _patch(minio_handler, "deliver_resolver", lambda: deliver_resolver, saved)
        _patch(minio_handler, "sqs_client", lambda: flaky, saved)
        yield Wiring(received, flaky, [s3_client, minio_client])
    finally:
        for module, name, value in reversed(saved):
            setattr(module, name, value)
        for database in databases:
            database.close()
        minio_handler._webhook.cache_clear()
        minio_handler._sqs_client.cache_clear()
        s3_handler.dependencies.cache_clear()
        powertools_parameters.DEFAULT_PROVIDERS.pop("secrets", None)


# --------------------------------------------------------------------------------------------------
# Driving the flows
# --------------------------------------------------------------------------------------------------


# MinIO's audit_webhook headers, as a current release sends them.
_MINIO_HEADERS = {
    "User-Agent": "MinIO (linux; amd64) madmin-go/3.0.70",
    "x-minio-version": "RELEASE.2025-09-07T16-13-09Z",
    "x-minio-deployment-id": MINIO_DEPLOYMENT,
}


def _s3_notification(bucket: str, key: str, size: int) -> str:
    """The S3 ObjectCreated notification SQS carries for a log file (key URL-encoded, ``+`` for spaces)."""
    record = {
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "us-east-1",
        "eventTime": "2025-10-27T10:15:02.123Z",
        "eventName": "ObjectCreated:Put",
        "s3": {
            "s3SchemaVersion": "1.0",
            "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
            "object": {"key": quote_plus(key, safe="/"), "size": size, "sequencer": "0068FF1A2B3C4D5E6F"},
        },
    }
    return json.dumps({"Records": [record]})


@dataclass
class FlowStats:
    """What driving the flows did, for the report."""

    uploads: int = 0
    extra_notifications: int = 0
    webhook_posts: int = 0
    webhook_statuses: Counter[str] = field(default_factory=Counter)
    minio_resends: int = 0
    s3_invocations: int = 0
    s3_failed_messages: int = 0
    deliver_invocations: int = 0
    deliver_failed_messages: int = 0
    function_errors: int = 0
    revocations: int = 0
    redriven: dict[str, int] = field(default_factory=lambda: {"log-files": 0, "delivery": 0})
    dlq_left: dict[str, int] = field(default_factory=dict)


class MinioSender:
    """MinIO's audit target: posts bodies, re-sends a body answered non-2xx, and one whose 2xx it missed."""

    def __init__(self, webhook: Any, rng: random.Random, stats: FlowStats, lost_answers: float) -> None:
        self._webhook = webhook
        self._rng = rng
        self._stats = stats
        self.lost_answers = lost_answers
        self.pending: deque[bytes] = deque()

    def post(self, limit: int) -> None:
        """Post up to ``limit`` pending bodies through the real webhook handler."""
        for _ in range(min(limit, len(self.pending))):
            body = self.pending.popleft()
            response = self._webhook.invoke(webhook_post(body, f"Bearer {WEBHOOK_TOKEN}", _MINIO_HEADERS))
            status = int(response["statusCode"])
            self._stats.webhook_posts += 1
            self._stats.webhook_statuses[str(status)] += 1
            if not 200 <= status <= 299 or self._rng.random() < self.lost_answers:
                self.pending.append(body)  # MinIO keeps the body and sends it again a few seconds later
                self._stats.minio_resends += 1


def _queue_depth(sqs: Any, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=[
            "ApproximateNumberOfMessages",
            "ApproximateNumberOfMessagesNotVisible",
            "ApproximateNumberOfMessagesDelayed",
        ],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def as_event_source(handler: LambdaHandler, stats: FlowStats) -> LambdaHandler:
    """``handler`` as Lambda's SQS event source sees it: a raised error fails every message of the batch.

    Powertools' BatchProcessor raises when *all* records of a batch failed (unless told otherwise); Lambda then
    counts a function error and returns the whole batch to the queue, which is what this wrapper reports.
    """

    def invoke(event: dict[str, Any], context: Any) -> Any:
        try:
            return handler(event, context)
        except Exception:
            stats.function_errors += 1
            return {"batchItemFailures": [{"itemIdentifier": record["messageId"]} for record in event["Records"]]}

    return invoke


class Driver:
    """Uploads log files, posts MinIO bodies and pumps both queues through the real handlers."""

    def __init__(
        self, *, aws: Any, resources: FlowResources, config: DrillConfig, sender: MinioSender, stats: FlowStats
    ) -> None:
        self.sqs, self.s3 = aws.client("sqs"), aws.client("s3")  # the harness's: CloudTrail, S3 and operators
        self.resources, self.names = resources, _queue_names(resources)
        self.config, self.sender, self.stats = config, sender, stats

    def upload(self, files: Sequence[LogFile]) -> None:
        """Write log files (and their re-deliveries) to the log bucket; S3 notifies the log-file queue."""
        for log_file in files:
            self.resources.put_log_file(self.s3, log_file.key, log_file.body)
            self.stats.uploads += 1
            if log_file.copy_key:
                self.resources.put_log_file(self.s3, log_file.copy_key, log_file.body)
                self.stats.uploads += 1
            if log_file.notify_twice:
                body = _s3_notification(self.resources.log_bucket, log_file.key, len(log_file.body))
                self.sqs.send_message(QueueUrl=self.names["log-files"], MessageBody=body)
                self.stats.extra_notifications += 1

    def pump(self) -> None:
        """One round of each function over whatever its queue shows now."""
        from minio_relay import handler as minio_handler
        from s3_audit import handler as s3_handler

        s3 = pump_queue(self.resources.s3_audit, as_event_source(s3_handler.handler, self.stats), max_rounds=5)
        self.stats.s3_invocations += s3.invocations
        self.stats.s3_failed_messages += s3.failed
        deliver = pump_queue(self.resources.deliver, as_event_source(minio_handler.deliver, self.stats), max_rounds=5)
        self.stats.deliver_invocations += deliver.invocations
        self.stats.deliver_failed_messages += deliver.failed

    def busy(self) -> bool:
        """Whether any message is still queued or in flight, or MinIO still holds bodies to send."""
        queued = sum(_queue_depth(self.sqs, self.names[name]) for name in ("log-files", "delivery"))
        return queued > 0 or bool(self.sender.pending)

    def drain(self, timeout_s: float = 120.0) -> None:
        """Post and pump until MinIO has nothing left and both queues are empty (in-flight messages included)."""
        deadline = time.monotonic() + timeout_s
        while self.busy():
            if time.monotonic() > deadline:
                raise TimeoutError("the queues did not drain; see the functions' logs")
            self.sender.post(limit=10)
            self.pump()
            time.sleep(0.1)  # messages in flight become visible again after the visibility timeout

    def run_for(self, seconds: float, until: Callable[[], int] | None = None) -> None:
        """Keep pumping for ``seconds`` or until ``until()`` is non-zero (an outage: receive after receive fails)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (until and until()):
            self.sender.post(limit=5)
            self.pump()
            time.sleep(0.1)

    def dead_letters(self) -> int:
        """Messages in both DLQs."""
        return sum(_queue_depth(self.sqs, self.names[f"{name}-dlq"]) for name in ("log-files", "delivery"))


def _fault_phase(driver: Driver, rs: WitnessedOgcRs, inputs: DrillInputs, config: DrillConfig) -> None:
    """Inputs arrive in rounds while faults fire; tokens are revoked now and then; one outage mid-run."""
    rounds = max(1, config.rounds)
    file_slice = math.ceil(len(inputs.log_files) / rounds)
    body_slice = math.ceil(len(inputs.bodies) / rounds)
    revoke_at = set(random.Random(config.seed).sample(range(rounds), min(config.revocations, rounds)))  # noqa: S311
    table = config.fault_table()
    for number in range(rounds):
        driver.upload(inputs.log_files[number * file_slice : (number + 1) * file_slice])
        driver.sender.pending.extend(inputs.bodies[number * body_slice : (number + 1) * body_slice])
        if number in revoke_at:
            rs.revoke_tokens()  # every cached token now gets 401: the clients must fetch new ones
            driver.stats.revocations += 1
        if number == rounds // 2 and config.outage_s > 0:
            rs.faults.randomize([(Fault.with_status(503), 1.0)])
            driver.run_for(config.outage_s, until=driver.dead_letters)
            rs.faults.randomize(table)
        driver.sender.post(limit=body_slice * 2)
        driver.pump()
    driver.drain()


def _recovery_phase(driver: Driver, rs: WitnessedOgcRs, wiring: Wiring) -> None:
    """Faults off, every DLQ message redriven to its queue, drained again (as ``ogc-audit redrive`` would)."""
    rs.faults.clear()
    rs.token_faults.clear()
    wiring.flaky_sqs.rate = 0.0
    driver.sender.lost_answers = 0.0
    driver.drain()
    for _ in range(3):  # a redriven message could in principle fail again; it must not, but look twice
        moved = 0
        for name in ("log-files", "delivery"):
            count = redrive(driver.sqs, driver.names[f"{name}-dlq"], driver.names[name])
            driver.stats.redriven[name] += count
            moved += count
        if not moved:
            break
        driver.drain()
    for name in ("log-files", "delivery"):
        driver.stats.dlq_left[name] = _queue_depth(driver.sqs, driver.names[f"{name}-dlq"])


def _slow_phase(driver: Driver, rs: WitnessedOgcRs, slow: DrillInputs, config: DrillConfig, wiring: Wiring) -> None:
    """A slow OGC RS: every request is stored on receipt and answered ``slow_s`` later, after the client's read
    timeout. Faults are off; what is not delivered meanwhile is redriven and drained with OGC RS fast again."""
    if not (slow.log_files or slow.bodies):
        return
    rs.answer_latency_s = config.slow_s
    try:
        driver.upload(slow.log_files)
        driver.sender.pending.extend(slow.bodies)
        driver.drain(timeout_s=max(120.0, 40 * config.slow_s))
    finally:
        rs.answer_latency_s = 0.0
    _recovery_phase(driver, rs, wiring)


def copies_per_line(expected: Counter[str], stored: Counter[str]) -> dict[str, int]:
    """How many rows each expected line produced, as ``{copies: lines}`` (``"0"``: lost, ``"1"``: exactly once)."""
    histogram = Counter(str(stored[line]) for line in expected)
    return dict(sorted(histogram.items(), key=lambda item: int(item[0])))


# --------------------------------------------------------------------------------------------------
# Reconciliation
# --------------------------------------------------------------------------------------------------


@dataclass
class DrillReport:
    """The figures of one drill run."""

    expected_lines: int = 0
    expected_distinct: int = 0
    poison_lines: int = 0
    stored_lines: int = 0
    delivered_distinct: int = 0
    lost: int = 0
    duplicated: int = 0
    duplicates_inside_window: int = 0
    duplicates_outside_window: int = 0
    window_requests: int = 0
    window_lines: int = 0
    window_by_fault: dict[str, int] = field(default_factory=dict)
    unexpected: int = 0
    copies_per_line: dict[str, int] = field(default_factory=dict)
    """Rows each expected line produced, ``{copies: lines}``; exactly once is ``{"1": expected_distinct}``."""
    slow_expected: int = 0
    slow_copies_per_line: dict[str, int] = field(default_factory=dict)
    """The same for the lines delivered while OGC RS answered after the client's read timeout."""
    slow_duplicated: int = 0
    slow_answer_s: float = 0.0
    database: bool = False
    """Whether the functions resolved uncertain requests through OGC RS's database (then no duplicate is allowed)."""
    poison_quarantined: int = 0
    poison_in_error_logs: int = 0
    poison_stored: int = 0
    redirects_followed: int = 0
    """Requests that reached the redirect target: must be 0 (a followed redirect loses lines or leaks secrets)."""
    faults_applied: dict[str, int] = field(default_factory=dict)
    token_faults_applied: int = 0
    requests_by_fault: dict[str, dict[str, int]] = field(default_factory=dict)
    process_requests: int = 0
    token_fetches: int = 0
    inputs: dict[str, int] = field(default_factory=dict)
    flows: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    ok: bool = False
    problems: list[str] = field(default_factory=list)
    samples: dict[str, list[str]] = field(default_factory=dict)


def reconcile(
    *,
    expected: Counter[str],
    poison: set[str],
    stored: Sequence[str],
    batches: Sequence[StoredBatch],
    received_jobs: set[str],
    error_texts: Sequence[str],
) -> DrillReport:
    """Compare stored with expected lines and attribute every extra copy to the window, or not (module doc)."""
    report = DrillReport(
        expected_lines=sum(expected.values()),
        expected_distinct=len(expected),
        poison_lines=len(poison),
        stored_lines=len(stored),
    )
    stored_count = Counter(stored)
    window_count: Counter[str] = Counter()
    for batch in batches:
        if batch.job_id in received_jobs:
            continue
        report.window_requests += 1
        report.window_lines += len(batch.lines)
        report.window_by_fault[batch.fault.value] = report.window_by_fault.get(batch.fault.value, 0) + 1
        window_count.update(batch.lines)
    lost, inside, outside, unexpected = [], 0, [], []
    for line, want in expected.items():
        have = stored_count[line]
        if have < want:
            lost.append(line)
            report.lost += want - have
        extra = max(0, have - want)
        report.duplicated += extra
        inside += min(extra, window_count[line])
        if extra > window_count[line]:
            outside.append(line)
            report.duplicates_outside_window += extra - window_count[line]
    for line, have in stored_count.items():
        if line not in expected:
            unexpected.append(line)
            report.unexpected += have
    report.duplicates_inside_window = inside
    report.copies_per_line = copies_per_line(expected, stored_count)
    report.delivered_distinct = sum(1 for line in expected if stored_count[line] > 0)
    report.poison_stored = sum(stored_count[line] for line in poison)
    report.poison_in_error_logs = sum(1 for line in poison if any(line in text for text in error_texts))
    report.poison_quarantined = sum(
        1 for line in poison if stored_count[line] == 0 and any(line in text for text in error_texts)
    )
    report.samples = {"lost": lost[:5], "outside_window": outside[:5], "unexpected": unexpected[:5]}
    return report


def _judge(report: DrillReport) -> None:
    checks = [
        (report.lost == 0, f"{report.lost} lines lost"),
        (report.unexpected == 0, f"{report.unexpected} unexpected lines stored"),
        (report.duplicates_outside_window == 0, f"{report.duplicates_outside_window} duplicates outside the window"),
        (
            report.delivered_distinct == report.expected_distinct,
            f"{report.expected_distinct - report.delivered_distinct} expected lines never delivered",
        ),
        (
            report.poison_quarantined == report.poison_lines,
            f"{report.poison_lines - report.poison_quarantined} poison lines not quarantined with an ERROR log",
        ),
        (not any(report.flows.get("dlq_left", {}).values()), "messages left in a DLQ"),
        (report.redirects_followed == 0, f"{report.redirects_followed} redirects followed"),
        (
            not report.database or report.duplicated == 0,
            f"{report.duplicated} duplicates although the functions could ask OGC RS's database",
        ),
        (
            report.slow_duplicated == 0,
            f"{report.slow_duplicated} duplicates while OGC RS answered after the client's read timeout",
        ),
    ]
    report.problems = [message for passed, message in checks if not passed and message]
    report.ok = not report.problems


# --------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------


def run_drill(config: DrillConfig, function_logs: TextIO | None = None) -> DrillReport:
    """Run the whole drill and return its figures (nothing is printed)."""
    config.check()
    started = time.monotonic()
    rng = random.Random(config.seed)  # noqa: S311 - reproducible inputs, not security
    inputs = generate_inputs(config, rng)
    slow = generate_slow_inputs(config, rng)
    sink = function_logs if function_logs is not None else open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        with tempfile.TemporaryDirectory() as folder:
            rs = WitnessedOgcRs(db_path=str(Path(folder) / "metering.sqlite3"), fault_seed=config.seed)
            with rs, local_aws():
                rs.poisoned_item_ids = set(inputs.poison_item_ids)
                report = _run_in_emulator(config, rs, inputs, rng, sink, slow=slow)
    finally:
        if function_logs is None:
            sink.close()
    report.seconds = round(time.monotonic() - started, 1)
    return report


def _run_in_emulator(
    config: DrillConfig, rs: WitnessedOgcRs, inputs: DrillInputs, rng: random.Random, sink: TextIO, *, slow: DrillInputs
) -> DrillReport:
    import boto3

    resources = _create_resources(boto3, rs, config)
    stats = FlowStats()
    with _function_logs(sink) as errors, _wired_handlers(config, resources, rng, rs) as wiring:
        sender = MinioSender(resources.webhook, random.Random(rng.random()), stats, config.lost_answers)  # noqa: S311
        driver = Driver(aws=boto3, resources=resources, config=config, sender=sender, stats=stats)
        rs.faults.randomize(config.fault_table(), seed=config.seed)
        token_faults = [(Fault.with_status(503), config.token_503), (Fault.redirect(307), config.token_redirect)]
        if any(probability > 0 for _, probability in token_faults):
            rs.token_faults.randomize(token_faults, seed=config.seed + 1)
        _fault_phase(driver, rs, inputs, config)
        _recovery_phase(driver, rs, wiring)
        _slow_phase(driver, rs, slow, config, wiring)
        if not rs.wait_idle(timeout_s=15.0 + config.slow_s):
            raise TimeoutError("OGC RS still has requests in progress")
        stored = rs.stored_lines()
        report = reconcile(
            expected=inputs.expected + slow.expected,
            poison=inputs.poison,
            stored=stored,
            batches=rs.stored_batches,
            received_jobs=wiring.received_jobs,
            error_texts=errors.texts,
        )
        _slow_figures(report, slow, stored, config)
        report.token_fetches = sum(client._tokens.fetches for client in wiring.clients)
        stats_flaky = {"sqs_failed_before_send": wiring.flaky_sqs.failed_before}
        stats_flaky["sqs_failed_after_send"] = wiring.flaky_sqs.failed_after
    report.faults_applied = dict(Counter(_fault_name(fault) for fault in rs.faults.applied))
    report.token_faults_applied = len(rs.token_faults.applied)
    report.redirects_followed = len(rs.redirected_requests)
    by_fault: dict[str, dict[str, int]] = {}
    for record in rs.requests_log:
        if record.path.endswith(_EXECUTION_PATH):
            entry = by_fault.setdefault(record.fault.value if record.fault else "none", {"requests": 0, "lines": 0})
            entry["requests"] += 1
            entry["lines"] += record.lines
    report.requests_by_fault = by_fault
    report.process_requests = sum(entry["requests"] for entry in by_fault.values())
    report.inputs = {
        "log_files": len(inputs.log_files),
        "records": inputs.records,
        "repeated_events": inputs.repeated_events,
        "repeated_across_files": inputs.repeated_across_files,
        "log_file_copies": sum(1 for log_file in inputs.log_files if log_file.copy_key),
        "bodies": len(inputs.bodies),
        "entries": inputs.entries,
        "repeated_entries": inputs.repeated_entries,
        "poisoned_values": inputs.poisoned_values,
    }
    flows = asdict(stats)
    flows["webhook_statuses"] = dict(stats.webhook_statuses)
    report.flows = {**flows, **stats_flaky}
    report.database = config.database
    _judge(report)
    return report


def _slow_figures(report: DrillReport, slow: DrillInputs, stored: Sequence[str], config: DrillConfig) -> None:
    """Copies per line, over all lines and over the slow phase's: a slow answer is no reason for a second copy."""
    stored_count = Counter(stored)
    report.slow_answer_s = config.slow_s
    report.slow_expected = sum(slow.expected.values())
    report.slow_copies_per_line = copies_per_line(slow.expected, stored_count)
    report.slow_duplicated = sum(max(0, stored_count[line] - want) for line, want in slow.expected.items())


def _fault_name(fault: Fault) -> str:
    return str(fault.status) if fault.kind is FaultKind.STATUS else fault.kind.value


# --------------------------------------------------------------------------------------------------
# Printing and the command line
# --------------------------------------------------------------------------------------------------


def print_report(report: DrillReport, out: TextIO) -> None:
    """The figures as a table, then the same as one JSON line."""
    flows = report.flows
    rows = [
        (
            "inputs",
            f"{report.inputs.get('log_files', 0)} log files ({report.inputs.get('records', 0)} records), "
            f"{report.inputs.get('bodies', 0)} MinIO bodies ({report.inputs.get('entries', 0)} entries)",
        ),
        ("faults applied (process)", json.dumps(report.faults_applied, sort_keys=True)),
        (
            "faults applied (token)",
            f"{report.token_faults_applied} x 503 or 307; tokens revoked {flows.get('revocations')}x",
        ),
        ("redirects followed", str(report.redirects_followed)),
        ("poisoned values", f"{report.inputs.get('poisoned_values', 0)} entries, each left out alone"),
        ("process requests", str(report.process_requests)),
        ("s3_audit", f"{flows.get('s3_invocations')} invocations, {flows.get('s3_failed_messages')} messages failed"),
        (
            "webhook",
            f"{flows.get('webhook_posts')} posts {json.dumps(flows.get('webhook_statuses', {}))}, "
            f"{flows.get('minio_resends')} re-sent by MinIO",
        ),
        ("deliver", f"{flows.get('deliver_invocations')} invocations, {flows.get('deliver_failed_messages')} failed"),
        ("redriven from DLQs", json.dumps(flows.get("redriven", {}))),
        ("expected lines", str(report.expected_lines)),
        ("stored lines", str(report.stored_lines)),
        ("delivered (distinct)", f"{report.delivered_distinct} of {report.expected_lines}"),
        ("lost", str(report.lost)),
        ("duplicated", str(report.duplicated)),
        ("unexpected", str(report.unexpected)),
        ("copies per line", json.dumps(report.copies_per_line)),
        (
            "slow OGC RS",
            f"answers {report.slow_answer_s:g} s after storing: {report.slow_expected} lines, "
            f"copies per line {json.dumps(report.slow_copies_per_line)}, duplicated {report.slow_duplicated}"
            if report.slow_answer_s > 0
            else "off",
        ),
        (
            "poison quarantined",
            f"{report.poison_quarantined} of {report.poison_lines} "
            f"(in ERROR logs {report.poison_in_error_logs}, stored {report.poison_stored})",
        ),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        out.write(f"{name:<{width}}  {value}\n")
    out.write(
        f"duplicates inside the window: {report.duplicates_inside_window} "
        f"(of {report.window_lines} lines in {report.window_requests} requests whose answer was lost: "
        f"{json.dumps(report.window_by_fault, sort_keys=True)})\n"
    )
    out.write(f"duplicates outside the window: {report.duplicates_outside_window}\n")
    verdict = "PASS" if report.ok else "FAIL: " + "; ".join(report.problems)
    out.write(f"result: {verdict} in {report.seconds} s\n")
    out.write(json.dumps(asdict(report), sort_keys=True) + "\n")


def _arguments(argv: Sequence[str] | None) -> tuple[DrillConfig, str | None]:
    defaults = DrillConfig()
    parser = argparse.ArgumentParser(
        prog="python -m testbed.fault_drill",
        description="Drive both flows through the real handlers under injected faults and reconcile the result.",
    )
    options: list[tuple[str, type, str]] = [
        ("log-files", int, "CloudTrail log files"),
        ("records-per-file", int, "records per log file"),
        ("bodies", int, "MinIO webhook bodies"),
        ("max-entries", int, "most entries per MinIO body"),
        ("poison-lines", int, "lines OGC RS refuses (400), split between the flows"),
        ("seed", int, "seed of inputs and faults"),
        ("faults", str, "process endpoint fault mix, kind=probability,..."),
        ("token-503", float, "share of token requests answered 503"),
        ("token-redirect", float, "share of token requests answered 307 (never followed)"),
        ("poisoned-values", int, "entries with a poisoned byte count or itemId, split between the flows"),
        ("revocations", int, "times all tokens are revoked mid-run"),
        ("outage-s", float, "seconds OGC RS answers only 503 mid-run (0: none)"),
        ("sqs-faults", float, "share of the webhook's SQS sends that fail"),
        ("lost-answers", float, "share of 2xx webhook answers MinIO misses"),
        ("batch-max-lines", int, "lines per OGC RS request and per delivery message"),
        ("delay-s", float, "length of an injected delay (must exceed --read-timeout-s)"),
        ("read-timeout-s", float, "client read timeout"),
        ("retries", int, "client retries per request"),
        ("rounds", int, "rounds in which inputs arrive"),
        ("slow-s", float, "slow phase: OGC RS answers this long after storing (0: no slow phase)"),
        ("slow-log-files", int, "log files delivered in the slow phase"),
        ("slow-bodies", int, "MinIO bodies delivered in the slow phase"),
        ("grace-s", float, "with --no-database: seconds an uncertain request waits before it is sent once more"),
    ]
    for name, kind, text in options:
        attribute = name.replace("-", "_")
        parser.add_argument(
            f"--{name}", type=kind, default=getattr(defaults, attribute), help=f"{text} (default %(default)s)"
        )
    parser.add_argument("--function-logs", help="write the functions' JSON logs to this file (default: discarded)")
    parser.add_argument(
        "--no-database",
        dest="database",
        action="store_false",
        help="the functions cannot read OGC RS's database: uncertain requests wait --grace-s, then are sent once more",
    )
    args = parser.parse_args(argv)
    values = {name.replace("-", "_"): getattr(args, name.replace("-", "_")) for name, _, _ in options}
    values["database"] = args.database
    config = replace(defaults, **values)
    config.check()
    return config, args.function_logs


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    """Run the drill, print its figures; 0 when the guarantees held."""
    config, path = _arguments(argv)
    with open(path, "w", encoding="utf-8") if path else contextlib.nullcontext() as logs:
        report = run_drill(config, function_logs=logs)
    print_report(report, out)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
