"""Run the Lambda handlers on one machine as they run in AWS: the stacks' resources and IAM policies in an emulator.

``local_aws()`` starts a moto server on loopback that enforces IAM. ``create_flow_resources`` reads the app's
synthesized templates (``stack_template``) and creates in it what they declare: secrets, queues with their dead-letter
queues and redrive policies, the delivery ledger tables, the buckets and the log bucket's notification, and one IAM
role per function holding exactly the policies its template gives it. Each function then runs with the credentials
of its own role (``LocalFunction.running``), so a call its policy does not allow fails here with AccessDenied.

``pump_queue`` is Lambda's SQS event source: it polls with the function's role, as Lambda does, using the
template's batch size and batching window; messages the handler reports in ``batchItemFailures`` stay in the queue
and the others are deleted. A failed message becomes visible again at once: the pump stands for the clock
advancing past the template's visibility timeout (minutes long), so local runs stay fast while the queue's real
redrive policy still moves a message to its DLQ after maxReceiveCount receives.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

from aws_lambda_powertools.utilities.typing import LambdaContext

from metering import env_names
from testbed import caller_kms, stack_template
from testbed.stack_template import ACCOUNT, REGION, Physical, StackResolver, Template, short_name

if TYPE_CHECKING:
    from testbed.reference_rs import ReferenceOgcRs

LambdaHandler = Callable[[dict[str, Any], Any], Any]

# The harness itself (writing log files as CloudTrail would, reading queue depths, redriving) acts as an
# administrator of the emulated account; only the functions run under their template roles.
_HARNESS_USER = "local-harness"
_EMULATOR_ENV = {"AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION}
# API calls that IAM authorizes under another action's name (SQS API reference, "batch actions").
_IAM_ACTION_OF_API = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}
# Settings for local runs only (metering.settings): they would bypass the secrets the template points at.
_LOCAL_ONLY_SETTINGS = (env_names.CLIENT_ID, env_names.CLIENT_SECRET, env_names.WEBHOOK_TOKEN, env_names.LEDGER_PATH)


def lambda_context(function_name: str, memory_mb: int = 1024) -> LambdaContext:
    """A Lambda context object with the attributes Powertools reads."""
    context = LambdaContext()
    context._function_name = function_name
    context._memory_limit_in_mb = memory_mb
    context._invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}"
    context._aws_request_id = str(uuid.uuid4())
    return context


@contextmanager
def environment(values: Mapping[str, str], *, remove: tuple[str, ...] = ()) -> Iterator[None]:
    """Set environment variables (and unset ``remove``) for the block; restore the previous ones after."""
    names = {*values, *remove}
    previous = {name: os.environ.get(name) for name in names}
    for name in remove:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _moto_api(url: str, path: str, body: bytes = b"") -> bytes:
    # text/plain: moto reads reset-auth's count from the raw body, which a form content type would swallow.
    request = urllib.request.Request(  # noqa: S310 - loopback emulator
        f"{url}/moto-api/{path}", data=body, method="POST", headers={"Content-Type": "text/plain"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - loopback emulator
        return bytes(response.read())


def _teach_moto_resource_arns() -> None:
    """Make the in-process moto's IAM check read requests as AWS does.

    moto passes the requested resource's ARN to its IAM check only for S3, SQS, IAM and STS; for other services it
    checks against ``*``, which a statement naming a table, secret or key never matches (every call would be
    denied). Three methods give the check the table's, the secret's and the KMS key's ARN. moto names the action
    after the API call, while IAM authorizes SQS's batch calls with the single-message action (SendMessageBatch
    needs sqs:SendMessage). And once a call is allowed, the check asks for the kms actions the service needs on
    the resource's customer managed key, which AWS checks against the caller and moto never does
    (``caller_kms``): a role without them fails here with AccessDenied naming the kms action.
    """
    from moto.core.responses import BaseResponse
    from moto.dynamodb.responses import DynamoHandler
    from moto.iam.access_control import IAMRequestBase
    from moto.kms.responses import KmsResponse
    from moto.secretsmanager.responses import SecretsManagerResponse

    def table_arns(self: Any) -> list[str]:
        params = getattr(self, "params", None) or json.loads(self.body or "{}")
        names = [params["TableName"]] if params.get("TableName") else list(params.get("RequestItems") or {})
        return [f"arn:aws:dynamodb:{self.region}:{self.current_account}:table/{name}" for name in names] or ["*"]

    def table_arn(self: Any) -> str:
        return table_arns(self)[0]

    def authorize_every_table(self: Any, resource: str) -> None:
        # A batch over several tables needs the action on each of them, as in AWS: check them all, not the first.
        for arn in table_arns(self):
            BaseResponse._authenticate_and_authorize_normal_action(self, arn)

    def named_by(parameter: str, describe: Callable[[Any, str], Any]) -> Callable[[Any], str]:
        """The ARN of the resource a request names by ``parameter`` (an id, a name or an ARN)."""

        def resource_arn(self: Any) -> str:
            resource_id = self._get_param(parameter)
            try:
                return str(describe(self, resource_id).arn) if resource_id else "*"
            except Exception:  # an unknown secret or key: AWS answers AccessDenied too
                return "*"

        return resource_arn

    DynamoHandler._determine_resource = table_arn  # type: ignore[attr-defined]
    DynamoHandler._authenticate_and_authorize_normal_action = authorize_every_table  # type: ignore[assignment]
    SecretsManagerResponse._determine_resource = named_by(  # type: ignore[attr-defined]
        "SecretId", lambda response, secret_id: response.backend.describe_secret(secret_id)
    )
    KmsResponse._determine_resource = named_by(  # type: ignore[attr-defined]
        "KeyId", lambda response, key_id: response.kms_backend.describe_key(key_id)
    )
    if not getattr(IAMRequestBase.check_action_permitted, "_iam_action_names", False):
        checked = IAMRequestBase.check_action_permitted

        def check_action_permitted(self: Any, resource: str) -> None:
            self._action = _IAM_ACTION_OF_API.get(self._action, self._action)
            checked(self, resource)
            caller_kms.check_key_use(self, resource)

        check_action_permitted._iam_action_names = True  # type: ignore[attr-defined]
        IAMRequestBase.check_action_permitted = check_action_permitted  # type: ignore[method-assign]


@contextmanager
def local_aws(*, enforce_iam: bool = True) -> Iterator[str]:
    """A moto server on 127.0.0.1 with boto3 pointed at it (AWS_ENDPOINT_URL); yields its URL.

    With ``enforce_iam`` every call is checked against the caller's IAM policies: boto3's default credentials are
    those of an administrator of the emulated account (the harness), and functions run as their own roles.
    """
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    previous_auth = b"inf"
    try:
        _moto_api(url, "reset")  # moto keeps its state per process, not per server: start from nothing
        _teach_moto_resource_arns()
        credentials = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        if enforce_iam:
            # Set-up calls are not checked until enforcement is switched on below.
            iam = boto3.client("iam", endpoint_url=url, region_name=REGION, **_static_keys("testing", "testing"))
            iam.create_user(UserName=_HARNESS_USER)
            admin = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            iam.put_user_policy(UserName=_HARNESS_USER, PolicyName="administrator", PolicyDocument=json.dumps(admin))
            key = iam.create_access_key(UserName=_HARNESS_USER)["AccessKey"]
            credentials = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
            previous_auth = json.loads(_moto_api(url, "reset-auth", b"0"))["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]
            previous_auth = str(previous_auth).encode()
        emulator = {**_EMULATOR_ENV, **credentials, "AWS_ENDPOINT_URL": url}
        with environment(emulator, remove=("AWS_PROFILE", "AWS_SESSION_TOKEN")):
            boto3.DEFAULT_SESSION = None  # built from the previous credentials, if any
            yield url
    finally:
        if enforce_iam:  # the setting is per process: in-process mocks of later tests must not inherit it
            _moto_api(url, "reset-auth", previous_auth)
        boto3.DEFAULT_SESSION = None
        server.stop()


def _static_keys(key_id: str, secret: str, token: str | None = None) -> dict[str, Any]:
    return {"aws_access_key_id": key_id, "aws_secret_access_key": secret, "aws_session_token": token}


def sqs_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS event source builds from received messages."""
    return {
        "Records": [
            {
                "messageId": message["MessageId"],
                "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"],
                "attributes": {
                    "ApproximateReceiveCount": message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
                },
                "messageAttributes": {},
                "md5OfBody": message.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for message in messages
        ]
    }


# --------------------------------------------------------------------------------------------------
# Functions as the templates declare them
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventSource:
    """A function's SQS event-source mapping (``AWS::Lambda::EventSourceMapping``) as the pump applies it."""

    queue_url: str
    queue_arn: str
    batch_size: int = 10
    batching_window_s: int = 0
    max_concurrency: int | None = None
    report_batch_item_failures: bool = False


@dataclass
class LocalFunction:
    """One function of the templates: its handler, environment, and the credentials of its own role."""

    name: str
    handler_path: str
    environment: dict[str, str]
    role_name: str
    policies: dict[str, Any]
    """The role's policy documents as created in the emulator (resolved), by policy name."""
    credentials: dict[str, str] = field(repr=False)
    event_sources: tuple[EventSource, ...] = ()
    """Every SQS event-source mapping of the function in the template (s3_audit: log files, and events)."""
    # What this function's execution environment keeps across invocations and cold starts alike: one boto3
    # Session (loading the service models costs ~0.2 s a client), and Powertools' secrets provider.
    _session: Any = field(default=None, init=False, repr=False)
    _secrets_provider: Any = field(default=None, init=False, repr=False)
    _poller: Any = field(default=None, init=False, repr=False)

    def session(self) -> Any:
        """The boto3 Session with this function's role credentials."""
        import boto3

        if self._session is None:
            self._session = boto3.Session(**_static_keys(*self._keys()), region_name=REGION)
        return self._session

    def event_source(self, queue_url: str | None = None) -> EventSource:
        """The mapping that polls ``queue_url``; without one, the function's only mapping."""
        matching = [source for source in self.event_sources if queue_url in (None, source.queue_url)]
        if queue_url is None and len(matching) > 1:
            raise ValueError(f"{self.name} has {len(matching)} SQS event sources: name the queue to poll")
        if not matching:
            raise ValueError(f"{self.name} has no SQS event source on {queue_url or 'any queue'} in the template")
        return matching[0]

    def _keys(self) -> tuple[str, str, str]:
        return self.credentials["AccessKeyId"], self.credentials["SecretAccessKey"], self.credentials["SessionToken"]

    def sqs_poller(self) -> Any:
        """The SQS client Lambda's event source polls this function's queue with (the function's role)."""
        if self._poller is None:
            self._poller = self.session().client("sqs")
        return self._poller

    @property
    def handler(self) -> LambdaHandler:
        """The entry point the template names (``Handler``: ``package.module.function``)."""
        module, _, attribute = self.handler_path.rpartition(".")
        handler: LambdaHandler = getattr(importlib.import_module(module), attribute)
        return handler

    @contextmanager
    def running(self) -> Iterator[None]:
        """The process as this function's execution environment: its environment variables, its credentials.

        Switching from another function is a cold start: what the previous one built and cached (boto3 clients,
        the OGC RS client, the secrets cache) was made with that function's credentials and is dropped.
        """
        key_id, secret, token = self._keys()
        values = {
            **self.environment,
            **_EMULATOR_ENV,
            "AWS_LAMBDA_FUNCTION_NAME": self.name,
            "AWS_ACCESS_KEY_ID": key_id,
            "AWS_SECRET_ACCESS_KEY": secret,
            "AWS_SESSION_TOKEN": token,
        }
        others = tuple(name for name in _ALL_FUNCTION_VARIABLES if name not in values)
        import boto3
        from aws_lambda_powertools.utilities.parameters import base as powertools_parameters

        global _ACTIVE_FUNCTION  # noqa: PLW0603 - the one execution environment this process stands for
        with environment(values, remove=(*others, *_LOCAL_ONLY_SETTINGS)):
            if self.name != _ACTIVE_FUNCTION:
                _forget_execution_environment()
                _ACTIVE_FUNCTION = self.name
            providers = powertools_parameters.DEFAULT_PROVIDERS
            providers.pop("secrets", None)
            if self._secrets_provider is not None:
                providers["secrets"] = self._secrets_provider
            boto3.DEFAULT_SESSION = self.session()  # boto3.client() inside: this role's credentials
            try:
                yield
            finally:
                self._secrets_provider = providers.pop("secrets", None)
                boto3.DEFAULT_SESSION = None

    def invoke(self, event: dict[str, Any], handler: LambdaHandler | None = None) -> Any:
        """Invoke ``handler`` (default: the template's) with ``event`` as this function."""
        with self.running():
            return (handler or self.handler)(event, lambda_context(self.name))


# The loggers of the functions' packages: Powertools JSON logs of the handlers, plain logs of the shared code.
FUNCTION_LOGGER_FAMILIES = ("s3_audit", "minio_relay", "metering")


@contextmanager
def function_logs(sink: TextIO) -> Iterator[None]:
    """Send the functions' JSON logs and EMF metric documents to ``sink`` for the block, instead of stdout."""
    # The handler modules create their Powertools loggers (and stdout handlers) on import: import them first.
    import minio_relay.handler  # noqa: F401
    import s3_audit.handler  # noqa: F401

    swapped: dict[int, tuple[logging.StreamHandler[Any], Any]] = {}
    for name in [*FUNCTION_LOGGER_FAMILIES, *list(logging.root.manager.loggerDict)]:
        if not name.startswith(FUNCTION_LOGGER_FAMILIES):
            continue
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and id(handler) not in swapped:
                swapped[id(handler)] = (handler, handler.setStream(sink))
    try:
        # Powertools metrics print their EMF documents to stdout: they go with the logs.
        with contextlib.redirect_stdout(sink):
            yield
    finally:
        for handler, stream in swapped.values():
            handler.setStream(stream)


_ACTIVE_FUNCTION: str | None = None
_ALL_FUNCTION_VARIABLES: set[str] = set()


def _forget_execution_environment() -> None:
    """Drop the module-level caches one function's invocations filled (clients, settings, the OGC RS client)."""
    from metering import runtime
    from minio_relay import handler as minio_handler
    from s3_audit import handler as s3_handler

    for cached in (
        s3_handler.dependencies,
        s3_handler._sqs_client,
        minio_handler._sqs_client,
        minio_handler._webhook,
        runtime._cached_ledger,
        runtime._cached_client,
        runtime._cached_resolver,
    ):
        getattr(cached, "cache_clear", lambda: None)()  # a harness may have replaced one (the fault drill does)


# --------------------------------------------------------------------------------------------------
# Creating the templates' resources
# --------------------------------------------------------------------------------------------------

_S3_AUDIT = "s3_audit.handler.handler"
_WEBHOOK = "minio_relay.handler.webhook"
_DELIVER = "minio_relay.handler.deliver"


@dataclass(frozen=True)
class FlowResources:
    """What the templates declare, created in the emulator: the functions and the resources the harness drives."""

    functions: Mapping[str, LocalFunction]
    """By handler path, e.g. ``s3_audit.handler.handler``."""
    queue_urls: Mapping[str, str]
    """Every queue by the queue's logical id without CDK's hash (``LogFilesQueue``, ``DeliveryDeadLetterQueue``)."""
    buckets: Mapping[str, str]
    dead_letter_urls: Mapping[str, str]
    """The DLQ of each queue that has a redrive policy, by the queue's URL."""
    secret_arns: Mapping[str, str]
    writer_encryption: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """By bucket name, the ``put_object`` encryption of the service writing into it (CloudTrail: its trail's key)."""

    def put_log_file(self, s3: Any, key: str, body: bytes) -> None:
        """Write a file into the log bucket as CloudTrail does: SSE-KMS under the trail's key when it names one."""
        s3.put_object(Bucket=self.log_bucket, Key=key, Body=body, **self.writer_encryption.get(self.log_bucket, {}))

    @property
    def s3_audit(self) -> LocalFunction:
        """The s3_audit function."""
        return self.functions[_S3_AUDIT]

    @property
    def webhook(self) -> LocalFunction:
        """The MinIO webhook function."""
        return self.functions[_WEBHOOK]

    @property
    def deliver(self) -> LocalFunction:
        """The MinIO deliver function."""
        return self.functions[_DELIVER]

    @property
    def log_file_queue_url(self) -> str:
        """The queue of log-file notifications s3_audit consumes."""
        return self.s3_audit.event_source(self.queue_urls["LogFilesQueue"]).queue_url

    @property
    def event_queue_url(self) -> str:
        """The queue EventBridge fills with download events (``eventBridge=true``), which s3_audit consumes."""
        return self.s3_audit.event_source(self.queue_urls["DownloadEventsQueue"]).queue_url

    @property
    def log_file_dead_letter_url(self) -> str:
        """The log-file queue's DLQ."""
        return self.dead_letter_urls[self.log_file_queue_url]

    @property
    def delivery_queue_url(self) -> str:
        """The queue deliver consumes (the webhook sends to it)."""
        return self.deliver.event_source().queue_url

    @property
    def delivery_dead_letter_url(self) -> str:
        """The delivery queue's DLQ."""
        return self.dead_letter_urls[self.delivery_queue_url]

    @property
    def log_bucket(self) -> str:
        """The bucket CloudTrail writes to, whose notification feeds the log-file queue."""
        return self.buckets["LogBucket"]

    @property
    def access_log_bucket(self) -> str:
        """The bucket the asset buckets' server access logs go to (``awsSource`` access-logs or both)."""
        return self.buckets["AssetAccessLogBucket"]


def create_flow_resources(
    aws: Any,
    *,
    prefix: str,
    ogc_rs: ReferenceOgcRs,
    webhook_token: str,
    local_settings: Mapping[str, str] | None = None,
    templates: Mapping[str, Template] | None = None,
) -> FlowResources:
    """Create in the emulator what the synthesized templates declare, and one role per function with its policies.

    ``aws`` is the boto3 module (or a Session) with the harness's credentials; ``templates`` defaults to the app
    synthesized with cdk.json's context. The secret *values* come from the caller (the templates hold none): the
    reference OGC RS's client credentials and ``webhook_token``. The functions' environment is the templates',
    except that the OGC RS endpoints are the reference OGC RS on loopback (the templates point at cdk.json's
    example host), and ``local_settings`` replace any other template value.
    """
    templates = templates or stack_template.synthesized_templates()
    global _ACTIVE_FUNCTION  # noqa: PLW0603 - a new deployment: the next invocation of any function is a cold start
    _ACTIVE_FUNCTION = None
    builder = _FlowBuilder(aws, prefix)
    # A stack after those whose outputs it imports (Fn::ImportValue): key, credentials, then the flows.
    pending = dict(templates)
    while pending:
        ready = [name for name, template in pending.items() if stack_template.imports(template) <= set(builder.exports)]
        if not ready:
            raise stack_template.TemplateError(f"{sorted(pending)} import outputs no other stack exports")
        for stack_name in ready:
            builder.create_stack(stack_name, pending.pop(stack_name))
    credentials = {"clientId": ogc_rs.client_id, "clientSecret": ogc_rs.client_secret}
    secret_values = {
        env_names.CLIENT_CREDENTIALS_SECRET_ARN: json.dumps(credentials),
        env_names.WEBHOOK_TOKEN_SECRET_ARN: webhook_token,
    }
    builder.fill_secrets(secret_values)
    endpoints = {
        env_names.PROCESS_API_URL: ogc_rs.process_url,
        env_names.AUTH_URL: ogc_rs.token_url,
        env_names.AUTH_ITEM_ID: ogc_rs.rs_host,
    }
    for function in builder.functions.values():
        # Only where the template sets them: the webhook, for one, never talks to OGC RS.
        function.environment.update({name: value for name, value in endpoints.items() if name in function.environment})
        if env_names.PROCESS_API_URL in function.environment and ogc_rs.process_url.startswith("http:"):
            # The functions refuse http OGC RS URLs unless told otherwise; the reference OGC RS speaks http on loopback.
            function.environment[env_names.OGC_AUDIT_ALLOW_HTTP] = "1"
        function.environment.update(local_settings or {})
        _ALL_FUNCTION_VARIABLES.update(function.environment)
    return FlowResources(
        functions=dict(builder.functions),
        queue_urls=dict(builder.queue_urls),
        buckets=dict(builder.buckets),
        dead_letter_urls=dict(builder.dead_letters),
        secret_arns=dict(builder.secret_arns),
        writer_encryption=dict(builder.writer_encryption),
    )


def _table_encryption(specification: Mapping[str, Any]) -> dict[str, Any]:
    """A template's ``SSESpecification`` as CreateTable takes it (CloudFormation's SSEEnabled is its Enabled)."""
    if not specification.get("SSEEnabled"):
        return {}
    sse = {"Enabled": True, "SSEType": specification.get("SSEType", "KMS")}
    if "KMSMasterKeyId" in specification:
        sse["KMSMasterKeyId"] = specification["KMSMasterKeyId"]
    return {"SSESpecification": sse}


class _FlowBuilder:
    """Creates one stack after another; the resources each type needs are created before those that use them."""

    def __init__(self, aws: Any, prefix: str) -> None:
        self.aws, self.prefix = aws, prefix
        self.exports: dict[str, str] = {}
        self.functions: dict[str, LocalFunction] = {}
        self.queue_urls: dict[str, str] = {}
        self.buckets: dict[str, str] = {}
        self.dead_letters: dict[str, str] = {}
        self.secret_arns: dict[str, str] = {}
        self.writer_encryption: dict[str, dict[str, str]] = {}
        self._secret_users: dict[str, str] = {}
        self._harness_arn = aws.client("sts").get_caller_identity()["Arn"]

    def create_stack(self, stack_name: str, template: Template) -> None:
        """Create the resources of one stack that the functions and the harness use."""
        stack = stack_name.removeprefix("OgcAudit").lower() or stack_name.lower()
        resolver = StackResolver(template, self.exports, lambda logical: self._elsewhere(stack, template, logical))
        self._keys(template, resolver)
        self._secrets(stack, template, resolver)
        self._queues(stack, template, resolver)
        self._tables(stack, template, resolver)
        self._buckets(stack, template, resolver)
        self._trails(template, resolver)
        self._functions(stack, template, resolver)
        self._notifications(template, resolver)
        self.exports.update(resolver.exports())

    def _name(self, stack: str, logical_id: str) -> str:
        return f"{self.prefix}-{stack}-{short_name(logical_id)}"

    def _elsewhere(self, stack: str, template: Template, logical_id: str) -> Physical:
        """A resource the local runs do not create (log group, key, topic, ...): names and ARNs that no call uses."""
        resource_type = template["Resources"][logical_id]["Type"]
        name = self._name(stack, logical_id)
        service = resource_type.split("::")[1].lower()
        arns = {
            "AWS::Logs::LogGroup": f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*",
            "AWS::Lambda::Function": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}",
        }
        return Physical(name, {"Arn": arns.get(resource_type, f"arn:aws:{service}:{REGION}:{ACCOUNT}:{name}")})

    def _keys(self, template: Template, resolver: StackResolver) -> None:
        """The customer managed keys (``kmsKey=create``): the stacks that import a key get its emulator ARN."""
        client = self.aws.client("kms")
        for logical_id, properties in stack_template.resources_of_type(template, "AWS::KMS::Key"):
            # The key policy is not passed: moto evaluates none (see caller_kms), and the policy's conditions
            # name service principals moto's policy validation does not know.
            key = client.create_key(Description=properties.get("Description", logical_id))["KeyMetadata"]
            if properties.get("EnableKeyRotation"):
                client.enable_key_rotation(KeyId=key["KeyId"])
            resolver.physical[logical_id] = Physical(key["KeyId"], {"Arn": key["Arn"], "KeyId": key["KeyId"]})

    def _secrets(self, stack: str, template: Template, resolver: StackResolver) -> None:
        client = self.aws.client("secretsmanager")
        for logical_id, properties in stack_template.resources_of_type(template, "AWS::SecretsManager::Secret"):
            name = f"{self.prefix}/{stack}/{short_name(logical_id)}"
            key = {"KmsKeyId": resolver.resolve(properties["KmsKeyId"])} if "KmsKeyId" in properties else {}
            arn = client.create_secret(Name=name, **key)["ARN"]  # the value comes from the caller (fill_secrets)
            resolver.physical[logical_id] = Physical(arn, {"Id": arn})
            self.secret_arns[short_name(logical_id)] = arn

    def _queues(self, stack: str, template: Template, resolver: StackResolver) -> None:
        client = self.aws.client("sqs")
        queues = list(stack_template.resources_of_type(template, "AWS::SQS::Queue"))
        # Dead-letter queues first: a redrive policy names its DLQ's ARN.
        for logical_id, properties in sorted(queues, key=lambda queue: "RedrivePolicy" in queue[1]):
            attributes = {
                name: str(resolver.resolve(properties[name]))
                for name in (
                    "VisibilityTimeout",
                    "MessageRetentionPeriod",
                    "DelaySeconds",
                    "MaximumMessageSize",
                    "KmsMasterKeyId",
                    "KmsDataKeyReusePeriodSeconds",
                )
                if name in properties
            }
            if "RedrivePolicy" in properties:
                attributes["RedrivePolicy"] = json.dumps(resolver.resolve(properties["RedrivePolicy"]))
            name = self._name(stack, logical_id)
            url = client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            resolver.physical[logical_id] = Physical(url, {"Arn": arn, "QueueName": name, "QueueUrl": url})
            self.queue_urls[short_name(logical_id)] = url
            if "RedrivePolicy" in properties:
                target = json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"]
                self.dead_letters[url] = next(
                    physical.ref for physical in resolver.physical.values() if physical.attributes.get("Arn") == target
                )

    def _tables(self, stack: str, template: Template, resolver: StackResolver) -> None:
        client = self.aws.client("dynamodb")
        for logical_id, properties in stack_template.resources_of_type(template, "AWS::DynamoDB::Table"):
            name = self._name(stack, logical_id)
            client.create_table(
                TableName=name,
                KeySchema=properties["KeySchema"],
                AttributeDefinitions=properties["AttributeDefinitions"],
                BillingMode=properties.get("BillingMode", "PROVISIONED"),
                **(
                    {"ProvisionedThroughput": properties["ProvisionedThroughput"]}
                    if "ProvisionedThroughput" in properties
                    else {}
                ),
                **_table_encryption(resolver.resolve(properties.get("SSESpecification", {}))),
            )
            ttl = properties.get("TimeToLiveSpecification")
            if ttl:
                client.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
            arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{name}"
            resolver.physical[logical_id] = Physical(name, {"Arn": arn})

    def _buckets(self, stack: str, template: Template, resolver: StackResolver) -> None:
        client = self.aws.client("s3")
        for logical_id, properties in stack_template.resources_of_type(template, "AWS::S3::Bucket"):
            name = self._name(stack, logical_id).lower()
            client.create_bucket(Bucket=name)
            if "BucketEncryption" in properties:
                # The default encryption of new objects (CloudFormation's rule names it without "Apply").
                rules = [
                    {"ApplyServerSideEncryptionByDefault": rule["ServerSideEncryptionByDefault"]}
                    | ({"BucketKeyEnabled": rule["BucketKeyEnabled"]} if "BucketKeyEnabled" in rule else {})
                    for rule in resolver.resolve(properties["BucketEncryption"]["ServerSideEncryptionConfiguration"])
                ]
                client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": rules})
            arn = f"arn:aws:s3:::{name}"
            resolver.physical[logical_id] = Physical(
                name, {"Arn": arn, "DomainName": f"{name}.s3.amazonaws.com", "RegionalDomainName": name}
            )
            self.buckets[short_name(logical_id)] = name

    def _trails(self, template: Template, resolver: StackResolver) -> None:
        """The trails' log files: with a key, CloudTrail writes them SSE-KMS under it (else the bucket's default)."""
        for _, properties in stack_template.resources_of_type(template, "AWS::CloudTrail::Trail"):
            if "KMSKeyId" in properties:
                self.writer_encryption[resolver.resolve(properties["S3BucketName"])] = {
                    "ServerSideEncryption": "aws:kms",
                    "SSEKMSKeyId": resolver.resolve(properties["KMSKeyId"]),
                }

    def _notifications(self, template: Template, resolver: StackResolver) -> None:
        """The bucket notifications CDK writes through its Custom::S3BucketNotifications resource."""
        client = self.aws.client("s3")
        for _, properties in stack_template.resources_of_type(template, "Custom::S3BucketNotifications"):
            configuration = resolver.resolve(properties["NotificationConfiguration"])
            client.put_bucket_notification_configuration(
                Bucket=resolver.resolve(properties["BucketName"]), NotificationConfiguration=configuration
            )

    def _functions(self, stack: str, template: Template, resolver: StackResolver) -> None:
        for logical_id, properties in stack_template.resources_of_type(template, "AWS::Lambda::Function"):
            if "ZipFile" in properties.get("Code", {}):
                continue  # CDK's own deployment-time handlers (bucket notifications): not run locally
            name = self._name(stack, logical_id)
            role_id = properties["Role"]["Fn::GetAtt"][0]
            role_name, policies, credentials = self._role(stack, template, resolver, role_id)
            resolver.physical[logical_id] = Physical(
                name, {"Arn": f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"}
            )
            variables = resolver.resolve(properties.get("Environment", {}).get("Variables", {}))
            self.functions[properties["Handler"]] = LocalFunction(
                name=name,
                handler_path=properties["Handler"],
                environment={key: str(value) for key, value in variables.items()},
                role_name=role_name,
                policies=policies,
                credentials=credentials,
                event_sources=self._event_sources(template, resolver, logical_id),
            )

    def _role(
        self, stack: str, template: Template, resolver: StackResolver, role_id: str
    ) -> tuple[str, dict[str, Any], dict[str, str]]:
        """The function's role with every policy the template attaches to it; assumed by the harness."""
        iam = self.aws.client("iam")
        name = self._name(stack, role_id)[:64]
        # Lambda assumes the role in AWS; here the harness does, on the function's behalf.
        trust = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"AWS": self._harness_arn}, "Action": "sts:AssumeRole"}],
        }
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
        resolver.physical[role_id] = Physical(name, {"Arn": arn, "RoleId": name})
        policies: dict[str, Any] = {}
        for policy_name, document in stack_template.role_policy_documents(template, role_id):
            policies[policy_name] = resolver.resolve(document)
            iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(policies[policy_name]))
        role = template["Resources"][role_id]["Properties"]
        for managed in resolver.resolve(role.get("ManagedPolicyArns", [])):
            iam.attach_role_policy(RoleName=name, PolicyArn=managed)
            policies[managed] = managed
        credentials = self.aws.client("sts").assume_role(RoleArn=arn, RoleSessionName=name[:64])["Credentials"]
        return name, policies, {key: str(value) for key, value in credentials.items()}

    def _event_sources(self, template: Template, resolver: StackResolver, function_id: str) -> tuple[EventSource, ...]:
        return tuple(
            EventSource(
                queue_url=resolver.resolve({"Ref": mapping["EventSourceArn"]["Fn::GetAtt"][0]}),
                queue_arn=resolver.resolve(mapping["EventSourceArn"]),
                batch_size=int(mapping.get("BatchSize", 10)),
                batching_window_s=int(mapping.get("MaximumBatchingWindowInSeconds", 0)),
                max_concurrency=mapping.get("ScalingConfig", {}).get("MaximumConcurrency"),
                report_batch_item_failures="ReportBatchItemFailures" in mapping.get("FunctionResponseTypes", []),
            )
            for _, mapping in stack_template.resources_of_type(template, "AWS::Lambda::EventSourceMapping")
            if mapping["FunctionName"] == {"Ref": function_id}
        )

    def fill_secrets(self, values_by_variable: Mapping[str, str]) -> None:
        """Write each secret's value, found by the environment variable through which a function reads it."""
        client = self.aws.client("secretsmanager")
        written: set[str] = set()
        for function in self.functions.values():
            for variable, value in values_by_variable.items():
                arn = function.environment.get(variable)
                if arn and arn not in written:
                    client.put_secret_value(SecretId=arn, SecretString=value)
                    written.add(arn)


# --------------------------------------------------------------------------------------------------
# Lambda's SQS event source
# --------------------------------------------------------------------------------------------------


@dataclass
class PumpResult:
    """What draining a queue did."""

    invocations: int = 0
    succeeded: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    """The errors the handler raised (Lambda then returns the whole batch to the queue)."""


def _receive_batch(sqs: Any, source: EventSource) -> list[dict[str, Any]]:
    """One batch as Lambda's poller gathers it: up to BatchSize messages; with a batching window, several receives.

    An empty receive ends the window early: nothing more arrives in a local run while the pump waits.
    """
    messages: list[dict[str, Any]] = []
    while len(messages) < source.batch_size:
        received = sqs.receive_message(
            QueueUrl=source.queue_url,
            MaxNumberOfMessages=min(10, source.batch_size - len(messages)),
            AttributeNames=["ApproximateReceiveCount"],
        ).get("Messages", [])
        messages.extend(received)
        if not received or source.batching_window_s == 0:
            break
    return messages


def pump_queue(
    function: LocalFunction,
    handler: LambdaHandler | None = None,
    *,
    queue_url: str | None = None,
    max_rounds: int = 1000,
    idle_rounds: int = 1,
) -> PumpResult:
    """Invoke ``function`` on batches of its queue, polling with its own role, until the queue is empty.

    One invocation at a time (within the template's maximum concurrency). ``handler`` replaces the template's
    entry point (a wrapper around it); ``queue_url`` picks the mapping of a function with several.
    """
    source = function.event_source(queue_url)
    sqs = function.sqs_poller()
    result, idle = PumpResult(), 0
    for _ in range(max_rounds):
        messages = _receive_batch(sqs, source)
        if not messages:
            idle += 1
            if idle >= idle_rounds:
                break
            continue
        idle = 0
        failed = _invoke_with_batch(function, handler, messages, source, result)
        result.invocations += 1
        result.failed += len(failed)
        done = [m for m in messages if m["MessageId"] not in failed]
        result.succeeded += len(done)
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=source.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        for message in messages:
            if message["MessageId"] in failed:
                # The clock advancing past the visibility timeout: the message is due for its next receive.
                sqs.change_message_visibility(
                    QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
                )
    return result


def _invoke_with_batch(
    function: LocalFunction,
    handler: LambdaHandler | None,
    messages: list[dict[str, Any]],
    source: EventSource,
    result: PumpResult,
) -> set[str]:
    """The message ids that failed: those reported, or all of them when the invocation raised."""
    try:
        response = function.invoke(sqs_event(messages, source.queue_arn), handler) or {}
    except Exception as error:  # a function error: Lambda retries the whole batch
        result.errors.append(f"{type(error).__name__}: {error}")
        return {message["MessageId"] for message in messages}
    if not source.report_batch_item_failures:
        return set()
    return {failure["itemIdentifier"] for failure in response.get("batchItemFailures", [])}
