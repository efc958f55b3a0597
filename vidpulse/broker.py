"""Finds the Kafka broker: the configured one, or the local single-node broker from deploy/kafka."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)
KAFKA_SCRIPT = Path(__file__).resolve().parent.parent / "deploy" / "kafka" / "kafka.sh"


class BrokerError(Exception):
    pass


def local_broker() -> str:
    """Starts (or reuses) the local KRaft broker and returns its bootstrap address."""
    if not KAFKA_SCRIPT.exists():
        raise BrokerError(f"VIDPULSE_KAFKA_BOOTSTRAP is empty and {KAFKA_SCRIPT} is missing: set the variable "
                          "to a running broker's host:port")
    log.info("VIDPULSE_KAFKA_BOOTSTRAP is empty: starting the local broker (%s start)", KAFKA_SCRIPT)
    result = subprocess.run(["bash", str(KAFKA_SCRIPT), "start"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BrokerError(f"the local Kafka broker did not start:\n{result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1]
