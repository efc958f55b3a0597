"""deploy/kafka/kafka.sh --cluster: three KRaft brokers from the same jars; vidpulse's topics get replication
factor 3 (VIDPULSE_TOPIC_REPLICATION=3), and with one broker SIGKILLed what is produced with acks=all is still
consumed, nothing lost."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from ingest.topics import ensure_topics
from tests.kafka_cluster import KafkaCluster

pytestmark = pytest.mark.kafka
PARTITIONS = 6


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


async def described(bootstrap: str, topic: str) -> list[dict]:
    """The topic's partitions once the metadata of all of them has reached the broker asked."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            partitions = (await admin.describe_topics([topic]))[0]["partitions"]
            if len(partitions) == PARTITIONS or time.monotonic() > deadline:
                return sorted(partitions, key=lambda p: p["partition"])
            await asyncio.sleep(0.5)
    finally:
        await admin.close()


async def broker_setting(bootstrap: str, name: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        answer = await admin.describe_configs([ConfigResource(ConfigResourceType.BROKER, "1", configs={name: None})])
        return answer[0].to_object()["resources"][0]["config_entries"][0]["config_value"]
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                request_timeout_ms=30_000)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, key=value)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False, group_id=None)
    await consumer.start()
    got: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                got += [record.value for record in records]
    finally:
        await consumer.stop()
    return got


def test_the_cluster_runs_three_brokers_beside_the_single_one(cluster):
    assert cluster.running()
    assert len(set(cluster.ports)) == 3 and 19092 not in cluster.ports
    assert asyncio.run(broker_setting(cluster.bootstrap, "min.insync.replicas")) == "2"
    assert asyncio.run(broker_setting(cluster.bootstrap, "default.replication.factor")) == "3"


def test_vidpulse_topics_get_three_replicas_and_survive_a_killed_broker(cluster, run_id):
    topic = f"cluster-{run_id}.events"
    asyncio.run(ensure_topics(cluster.bootstrap, [topic], PARTITIONS, replication=3))  # VIDPULSE_TOPIC_REPLICATION=3
    partitions = asyncio.run(described(cluster.bootstrap, topic))
    assert len(partitions) == PARTITIONS
    assert all(sorted(p["replicas"]) == [1, 2, 3] for p in partitions), partitions

    before = [f"before-{n}".encode() for n in range(200)]
    asyncio.run(produce(cluster.bootstrap, topic, before))
    victim = partitions[0]["leader"]
    cluster.kill_node(victim)
    assert not cluster.running()
    after = [f"after-{n}".encode() for n in range(200)]
    asyncio.run(produce(cluster.bootstrap, topic, after))  # acks=all: two in-sync replicas are enough
    got = asyncio.run(consume_all(cluster.bootstrap, topic, len(before) + len(after)))
    assert sorted(got) == sorted(before + after)  # each exactly once
    assert all(p["leader"] != victim for p in asyncio.run(described(cluster.bootstrap, topic)))

    cluster.start_node(victim)
    assert cluster.running()
    got = asyncio.run(consume_all(cluster.bootstrap, topic, len(before) + len(after)))
    assert sorted(got) == sorted(before + after)
