"""Every sizing and naming choice of the infrastructure, in one place."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs

from metering.metric_names import DEFAULT_NAMESPACE

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_DIR = REPO_ROOT / "functions"
PYPROJECT = REPO_ROOT / "pyproject.toml"

# Stack names: the CLI and the README refer to them.
S3_AUDIT_STACK_NAME = "OgcAuditS3"
MINIO_RELAY_STACK_NAME = "OgcAuditMinioRelay"
CREDENTIALS_STACK_NAME = "OgcAuditCredentials"

# Lambda runtime. The bundler installs wheels for exactly this interpreter and CPU.
LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_14
LAMBDA_PYTHON_VERSION = "3.14"
LAMBDA_ARCHITECTURE = lambda_.Architecture.ARM_64
LAMBDA_PIP_PLATFORM = "manylinux2014_aarch64"
# The Lambda runtime ships these; bundling them would only add megabytes.
RUNTIME_PROVIDED_DEPENDENCIES = frozenset({"boto3", "botocore"})
# Shared package copied into every bundle beside the function's own package.
SHARED_PACKAGE = "metering"
FUNCTION_LOG_RETENTION = logs.RetentionDays.THREE_MONTHS
# The functions publish their metrics here and the alarms read them from here (one definition for both sides).
POWERTOOLS_METRICS_NAMESPACE = DEFAULT_NAMESPACE
POWERTOOLS_LOG_LEVEL = "INFO"

# s3_audit: one CloudTrail log file can hold 100 MB of JSON; one file per invocation keeps memory bounded.
S3_AUDIT_MEMORY_MB = 1024
S3_AUDIT_TIMEOUT = Duration.seconds(300)
S3_AUDIT_BATCH_SIZE = 1
# OGC RS must not be flooded: at most this many log files are processed at once.
S3_AUDIT_MAX_CONCURRENCY = 2

# eventBridge=true: the event queue hands s3_audit up to this many events at once, after at most this wait, so a
# burst of downloads becomes one OGC RS request per batchMaxLines lines, not one per download.
EVENT_BATCH_SIZE = 100
EVENT_MAX_BATCHING_WINDOW = Duration.seconds(2)
EVENT_MAX_CONCURRENCY = 2

# Queues: SQS redelivers a failed message this many times before parking it in the DLQ.
MAX_RECEIVE_COUNT = 5
# AWS guidance for Lambda event sources: visibility timeout >= 6x the function timeout.
VISIBILITY_TIMEOUT_FACTOR = 6
QUEUE_RETENTION = Duration.days(14)
DEAD_LETTER_RETENTION = Duration.days(14)

# CloudTrail writes log files under this prefix; digests (CloudTrail-Digest/) share prefix and suffix.
CLOUDTRAIL_LOG_PREFIX = "AWSLogs/"
CLOUDTRAIL_LOG_SUFFIX = ".json.gz"
# Incomplete multipart uploads never become log files; clean them up.
ABORT_INCOMPLETE_UPLOAD_AFTER = Duration.days(7)
ACCESS_LOG_RETENTION = Duration.days(90)
# awsSource access-logs/both: the asset buckets' server access logs land under this prefix of their own bucket,
# partitioned by date (<account>/<region>/<bucket>/YYYY/mm/DD/...), and notify the log-file queue.
ASSET_ACCESS_LOG_PREFIX = "access-logs/"
# Access logs arrive only with traffic and "within a few hours" (AWS): silence means trouble only after a day.
ACCESS_LOG_SILENCE = Duration.hours(24)

# MinIO relay.
# Lambda's CPU share grows with memory (one vCPU at 1,769 MB). A 4 MiB body of bad entries costs up to ~3.2 CPU-s
# (bench/bounded_work.py webhook): at 512 MB (~0.29 vCPU) that is past the 10 s timeout, at 1024 MB about 5.5 s.
WEBHOOK_MEMORY_MB = 1024
# MinIO gives up after 3-5 s; the webhook only parses and enqueues.
WEBHOOK_TIMEOUT = Duration.seconds(10)
# API Gateway caps bodies at 10 MB, but Lambda refuses events over 6 MB and the body grows when escaped into
# the event's JSON (every quote of an audit entry doubles): the webhook answers 413 above 4 MiB.
WEBHOOK_MAX_BODY_BYTES = 4 * 1024 * 1024
DELIVER_MEMORY_MB = 512
DELIVER_TIMEOUT = Duration.seconds(120)
DELIVER_BATCH_SIZE = 10
DELIVER_MAX_BATCHING_WINDOW = Duration.seconds(5)
DELIVER_MAX_CONCURRENCY = 2
API_THROTTLE_RATE_LIMIT = 50
API_THROTTLE_BURST_LIMIT = 100
API_STAGE_NAME = "prod"
# webhookWaf=true: requests one address may send in WAF's 5-minute window before it is blocked (10 a second on
# average, a fifth of the stage's rate): one address alone cannot use up the throttle MinIO needs.
WEBHOOK_WAF_RATE_LIMIT = 3000
WEBHOOK_WAF_RATE_WINDOW_SECONDS = 300
WEBHOOK_TOKEN_LENGTH = 48
MINIO_WEBHOOK_TARGET = "ogc"

# Monitoring (infra/monitoring.py; docs/operations.md explains each alarm). Alarms evaluate 5-minute periods.
ALARM_PERIOD = Duration.minutes(5)
# A log file waits 30 min between tries (6 x 300 s visibility): older than 1 h means it failed at least twice.
LOG_FILE_QUEUE_MAX_AGE = Duration.hours(1)
# Events are consumed within seconds; one older than 10 min failed or waits behind a failing function (the log
# file, ~5 min after the download, will have overtaken it: it delivers the line, the event finds it delivered).
EVENT_QUEUE_MAX_AGE = Duration.minutes(10)
# A delivery message waits 12 min between tries: older than 15 min means OGC RS refused it at least once.
DELIVERY_QUEUE_MAX_AGE = Duration.minutes(15)
# Delivery failures page when they last this many consecutive periods (a short OGC RS restart does not).
DELIVERY_FAILURE_PERIODS = 3
# A misconfigured MinIO retries every 3 s (~100 refused requests per 5 min per node); a stray scan stays below.
AUTH_FAILURE_BURST = 10
# API Gateway 5xx (the webhook answered 503 or failed) in this many consecutive periods.
API_SERVER_ERROR_PERIODS = 3
# CloudTrail writes a digest file per region every hour, downloads or not: no log-file message for this long
# means the trail or the bucket notification stopped delivering.
TRAIL_SILENCE = Duration.hours(2)
# Quarantined entries (malformed input, lines OGC RS refused) are reviewed at most this late.
QUARANTINE_PERIOD = Duration.hours(1)
ALARM_TOPIC_KEY_PENDING_WINDOW = Duration.days(7)

# Customer managed key (context kmsKey; infra/encryption.py). Its own stack, so every other stack can import it.
KEY_STACK_NAME = "OgcAuditKey"
# The key policy must name the trail before the trail exists (another stack): with a key the trail has this name.
DOWNLOAD_TRAIL_NAME = f"{S3_AUDIT_STACK_NAME}-downloads"
# KMS's longest waiting period: a key deleted by mistake can be restored for 30 days.
APP_KEY_PENDING_WINDOW = Duration.days(30)
