"""`darkroom check` against real parts: PostgreSQL, RabbitMQ, moto's S3 over HTTP and an
SMTP server. Each part set up as a deployment needs it is ok; each one left undone fails
with the step that sets it up, and the check itself sets up nothing."""

from __future__ import annotations

from typing import Any

import pytest
from aiobotocore.session import get_session
from pydantic import SecretStr

from services.check import Verdict, check, run
from services.dev_mail import smtp_catcher
from shared.broker import open_broker
from shared.db import open_database
from shared.embedded import provision_bucket_with_sqs
from shared.migrations import status
from shared.settings import Settings
from shared.storage import client_kwargs, open_storage
from shared.topology import Topology
from tests.conftest import delete_topology
from tests.harness import free_port
from tests.seaweedfs import ACCESS_KEY, SECRET_KEY


def deployment(settings: Settings, amqp_url: str, postgres_url: str, **more: Any) -> Settings:
    return settings.model_copy(
        update={"broker_url": amqp_url, "database_url": postgres_url, **more}
    )


def verdicts(findings: list[Any]) -> dict[str, tuple[Verdict, str]]:
    return {f.part: (f.verdict, f.detail) for f in findings}


async def test_a_deployment_set_up_as_the_docs_say_checks_out(
    settings: Settings, amqp_url: str, postgres_url: str, redis_url: str, unique: str
) -> None:
    async with smtp_catcher() as (catcher, port):
        ready = deployment(
            settings,
            amqp_url,
            postgres_url,
            smtp_url=SecretStr(f"smtp://127.0.0.1:{port}"),
            redis_url=redis_url,
        )
        try:
            async with open_database(ready), open_broker(ready):
                pass  # migrated and declared: the deploy steps
            queue_url = await provision_bucket_with_sqs(ready, f"check-{unique}")
            ready = ready.model_copy(update={"sqs_queue_url": queue_url})
            found = verdicts(await check(ready))
        finally:
            await delete_topology(amqp_url, Topology.from_settings(ready))
    assert {part: verdict for part, (verdict, _) in found.items()} == dict.fromkeys(
        ("database", "broker", "storage", "notify", "mail", "limits"), Verdict.OK
    ), found
    assert "signed links are honoured" in found["storage"][1]
    assert found["notify"][1].endswith(
        f"announced to arn:aws:sqs:us-east-1:123456789012:check-{unique}"
    )
    assert list(catcher.caught) == [], "a check sends no mail"


async def test_each_part_left_undone_fails_with_the_step_that_does_it(
    settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    undone = deployment(
        settings,
        amqp_url,
        postgres_url,
        smtp_url=SecretStr(f"smtp://127.0.0.1:{free_port()}"),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
    )
    found = verdicts(await check(undone))
    assert all(verdict is Verdict.FAIL for verdict, _ in found.values()), found
    assert "run darkroom migrate" in found["database"][1]
    assert "run darkroom broker declare" in found["broker"][1]
    assert "does not exist: create it" in found["storage"][1]
    # Nothing was set up by looking.
    assert "run darkroom broker declare" in verdicts(await check(undone))["broker"][1]
    async with open_database(undone, migrate=False) as db:
        assert (await status(db.engine)).current is None


async def test_a_signed_link_this_host_cannot_reach_is_a_warning(
    settings: Settings, amqp_url: str, postgres_url: str
) -> None:
    """The public endpoint is the clients' (a browser's localhost:9000, say)."""
    elsewhere = deployment(
        settings, amqp_url, postgres_url, s3_public_endpoint_url=f"http://127.0.0.1:{free_port()}"
    )
    async with open_storage(elsewhere) as storage:
        await storage.ensure_bucket()
    verdict, detail = verdicts(await check(elsewhere))["storage"]
    assert verdict is Verdict.WARN and "cannot be fetched from here" in detail


async def test_storage_that_enforces_signatures_names_the_wrong_secret(
    settings: Settings, seaweedfs: str
) -> None:
    strict = settings.model_copy(
        update={
            "s3_endpoint_url": seaweedfs,
            "sqs_endpoint_url": "",
            "s3_access_key_id": ACCESS_KEY,
        }
    )
    right = strict.model_copy(update={"s3_secret_access_key": SecretStr(SECRET_KEY)})
    async with open_storage(right) as storage:
        await storage.ensure_bucket()
    assert verdicts(await check(right))["storage"][0] is Verdict.OK
    wrong = strict.model_copy(update={"s3_secret_access_key": SecretStr("not-the-secret")})
    verdict, detail = verdicts(await check(wrong))["storage"]
    assert verdict is Verdict.FAIL and "check DARKROOM_S3_SECRET_ACCESS_KEY" in detail


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([], "announces no new object under originals/"),
        ([{"Events": ["s3:ObjectRemoved:*"]}], "announces no new object"),
        ([{"Events": ["s3:ObjectCreated:*"], "prefix": "renditions/"}], "announces no new object"),
        ([{"Events": ["s3:ObjectCreated:Put"], "suffix": ".jpg"}], "announces no new object"),
        ([{"Events": ["s3:ObjectCreated:*"], "queue": "elsewhere"}], "not to the queue"),
    ],
    ids=["nothing", "removals only", "other prefix", "jpg only", "another queue"],
)
async def test_a_bucket_that_does_not_announce_every_upload_fails(
    settings: Settings, unique: str, rules: list[dict[str, Any]], problem: str
) -> None:
    queue_url = await provision_bucket_with_sqs(settings, f"check-{unique}")
    configured = settings.model_copy(update={"sqs_queue_url": queue_url})
    async with get_session().create_client(
        "s3", **client_kwargs(settings, settings.s3_endpoint_url)
    ) as s3:
        await s3.put_bucket_notification_configuration(
            Bucket=settings.s3_bucket,
            NotificationConfiguration={"QueueConfigurations": [rule_of(r, unique) for r in rules]},
        )
    verdict, detail = verdicts(await check(configured))["notify"]
    assert verdict is Verdict.FAIL and problem in detail, detail


def rule_of(rule: dict[str, Any], unique: str) -> dict[str, Any]:
    queue = rule.get("queue", f"check-{unique}")
    names = [n for n in ("prefix", "suffix") if n in rule]
    config: dict[str, Any] = {
        "QueueArn": f"arn:aws:sqs:us-east-1:123456789012:{queue}",
        "Events": rule["Events"],
    }
    if names:
        rules = [{"Name": n, "Value": rule[n]} for n in names]
        config["Filter"] = {"Key": {"FilterRules": rules}}
    return config


def test_the_command_prints_a_line_a_part_and_exits_1_when_one_fails(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(settings) == 1  # the embedded defaults: no deployment runs on them
    lines = capsys.readouterr().out.splitlines()
    parts = [line.split()[1] for line in lines]
    assert parts == ["database", "broker", "storage", "notify", "mail", "limits"]
    assert lines[0].startswith("FAIL") and "DARKROOM_DATABASE_URL" in lines[0]
    assert lines[1].startswith("FAIL") and "DARKROOM_BROKER_URL" in lines[1]
