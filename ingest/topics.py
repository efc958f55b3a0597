"""Creates vidpulse's Kafka topics with the partition count the settings ask for."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import InvalidReplicationFactorError, TopicAlreadyExistsError

log = logging.getLogger(__name__)


async def ensure_topics(bootstrap: str, names: list[str], partitions: int, replication: int = 1) -> None:
    """Idempotent: existing topics are left as they are (their partition count and replicas included)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await _warn_on_other_partition_counts(admin, [name for name in names if name in existing], partitions)
        missing = [NewTopic(name, partitions, replication) for name in names if name not in existing]
        if missing:
            try:
                response = await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                return
            _raise_refusals(response.topic_errors, replication)
            log.info("created topics %s", [topic.name for topic in missing])
    finally:
        await admin.close()


class TopicError(RuntimeError):
    """Kafka refused to create a topic; the message is Kafka's reason and the setting to look at."""


def _raise_refusals(topic_errors: list[tuple[Any, ...]], replication: int) -> None:
    """The admin client reports a refused topic in the response, not as an exception: without this check a
    process would start and then wait forever on a topic that does not exist."""
    refused = [(error[0], error[1], error[2] if len(error) > 2 else "") for error in topic_errors
               if error[1] not in (0, TopicAlreadyExistsError.errno)]
    if refused:
        name, code, message = refused[0]
        hint = (f" (VIDPULSE_TOPIC_REPLICATION is {replication}: at most the number of brokers)"
                if code == InvalidReplicationFactorError.errno else "")
        raise TopicError(f"Kafka refused to create topic {name}: {message or f'error {code}'}{hint}")


async def _warn_on_other_partition_counts(admin: AIOKafkaAdminClient, names: list[str], partitions: int) -> None:
    """VIDPULSE_TOPIC_PARTITIONS applies only to new topics; say so when an old one differs."""
    if not names:
        return
    for topic in await admin.describe_topics(names):
        count = len(topic.get("partitions", []))
        if count != partitions:
            log.warning("topic %s has %d partitions, not VIDPULSE_TOPIC_PARTITIONS=%d: the setting applies only "
                        "to new topics (add partitions with Kafka's tools)", topic.get("topic"), count, partitions)


async def broker_reachable(bootstrap: str, timeout_s: float = 3.0) -> bool:
    """For /readyz of processes without a producer: can we list the broker's topics right now?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000))
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            await admin.list_topics()
    except Exception:  # noqa: BLE001 - readiness is a yes/no question
        return False
    finally:
        await admin.close()
    return True
