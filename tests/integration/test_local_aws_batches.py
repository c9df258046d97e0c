"""The local IAM emulation checks a DynamoDB batch against every table it names, as AWS does, not its first one."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.exceptions import ClientError

from testbed.local_aws import local_aws
from tests.helpers import create_ledger_table


def item(key: str) -> dict[str, dict[str, dict[str, dict[str, str]]]]:
    return {"PutRequest": {"Item": {"id": {"S": key}}}}


def test_a_batch_write_over_two_tables_needs_the_action_on_both() -> None:
    with local_aws(enforce_iam=True):
        dynamodb = boto3.client("dynamodb")
        for name in ("granted", "other"):
            create_ledger_table(dynamodb, name)
        granted_arn = dynamodb.describe_table(TableName="granted")["Table"]["TableArn"]
        iam = boto3.client("iam")
        iam.create_user(UserName="one-table")
        policy = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "dynamodb:BatchWriteItem", "Resource": granted_arn}],
        }
        iam.put_user_policy(UserName="one-table", PolicyName="one", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="one-table")["AccessKey"]
        restricted = boto3.client(
            "dynamodb", aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"]
        )

        restricted.batch_write_item(RequestItems={"granted": [item("a")]})
        for tables in ({"granted": [item("b")], "other": [item("c")]}, {"other": [item("d")], "granted": [item("e")]}):
            with pytest.raises(ClientError) as refused:
                restricted.batch_write_item(RequestItems=tables)
            assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert dynamodb.scan(TableName="other")["Count"] == 0
