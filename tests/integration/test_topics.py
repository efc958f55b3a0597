"""vidpulse creates its topics with the partitions and replicas the settings ask for, or says why it cannot."""

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from ingest.topics import TopicError, ensure_topics

pytestmark = [pytest.mark.kafka]


async def described(bootstrap: str, name: str) -> dict:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return {topic["topic"]: topic for topic in await admin.describe_topics([name])}.get(name, {})
    finally:
        await admin.close()


def test_topics_get_the_asked_partitions_and_replicas(kafka, run_id):
    name = f"test-{run_id}.events"
    asyncio.run(ensure_topics(kafka, [name], 4, 1))
    asyncio.run(ensure_topics(kafka, [name], 4, 1))  # idempotent
    partitions = asyncio.run(described(kafka, name))["partitions"]
    assert len(partitions) == 4 and all(len(p["replicas"]) == 1 for p in partitions)


def test_more_replicas_than_brokers_is_refused_with_the_setting_to_change(kafka, run_id):
    """Kafka answers the refusal inside a successful response: before, the process went on as if the topic
    existed. The local broker is a single node."""
    name = f"test-{run_id}.events"
    with pytest.raises(TopicError, match="VIDPULSE_TOPIC_REPLICATION is 3") as refused:
        asyncio.run(ensure_topics(kafka, [name], 2, 3))
    assert "cannot be reached because only 1 broker" in str(refused.value)
    assert not asyncio.run(described(kafka, name)).get("partitions")
