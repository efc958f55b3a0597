"""One typed settings object per process, resolved once from ``VIDPULSE_*`` variables.

Every process (tracker, worker, API, or all three in ``vidpulse up``) builds one
``Settings``; nothing reads the environment anywhere else.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SALT = "vidpulse-development-salt-change-me"


class Settings(BaseSettings):
    """Configuration of every vidpulse process."""

    model_config = SettingsConfigDict(env_prefix="VIDPULSE_", frozen=True, extra="ignore")

    kafka_bootstrap: str = Field("", description="host:port[,host:port]; empty starts the local broker (up only)")
    clickhouse_url: str = Field("chdb://./data/clickhouse",
                                description="chdb://<dir> (in-process engine) or http(s)://user:pass@host:port (a server)")
    clickhouse_database: str = "vidpulse"
    http_host: str = "127.0.0.1"
    http_port: int = Field(8080, ge=0, le=65535)
    topic_prefix: str = Field("vidpulse.", pattern=r"^[A-Za-z0-9._-]*$")
    topic_partitions: int = Field(3, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1, le=16, description="replicas of each new topic's partitions: 3 on a "
                                   "three-broker cluster whose min.insync.replicas is 2")
    session_timeout_s: int = Field(60, ge=1, le=3600)
    fingerprint_salt: SecretStr = SecretStr(DEFAULT_SALT)
    fingerprint_salt_rotation: bool = Field(False, description="rotate the salt daily: no multi-day uniques")
    trusted_proxies: str = Field("", description="comma-separated IPs or CIDRs whose X-Forwarded-For is believed")
    geoip_city_db: Path | None = Field(None, description="a MaxMind-format city database (.mmdb) for subdivisions")
    lateness_s: int = Field(7 * 24 * 3600, ge=60)
    max_body_bytes: int = Field(64 * 1024, ge=1024)
    max_events_per_batch: int = Field(500, ge=1)
    spool_after_s: float = Field(2.0, gt=0, description="without Kafka's ack by then, a request goes to the disk spool")
    spool_dir: Path | None = Field(None, description="default <data dir>/spool; one folder per tracker process")
    spool_max_bytes: int = Field(1 << 30, ge=1024, description="beyond it the tracker answers 503")
    rate_limit_ip: str = Field("100/second", description="requests per client IP, in the limits library's notation")
    rate_limit_account: str = Field("5000/second", description="requests per account")
    allowed_origins: str | None = Field(None, description="removed: origins are per account in the store now")
    rate_limit_key: str = Field("50/second", description="query requests per API key, unless the key sets its own")
    accounts_refresh_s: float = Field(5.0, gt=0, description="how soon trackers and the API see account and key changes")
    dev_account: str = Field("1234", pattern=r"^([A-Za-z0-9_-]{1,64})?$",
                             description="the account `up` creates, with keys, on a database without accounts; "
                                         "empty: none")
    flush_interval_s: float = Field(1.0, gt=0, description="a worker inserts at most once per table per partition per interval")
    commit_interval_s: float = Field(1.0, gt=0, description="how often the worker commits acknowledged offsets")
    consumer_fetch_bytes: int = Field(8 << 20, ge=1 << 20, description="the most a worker fetches of one partition "
                                      "per request; above the largest message (the tracker's are under 1 MiB)")
    consumer_session_timeout_s: float = Field(10.0, ge=6, description="how soon a dead worker's partitions move")
    dimension_cap_per_day: int = Field(10_000, ge=1, description="distinct video/player/domain values per account per "
                                       "UTC day before new ones fold into (other)")
    flush_max_events: int = Field(60_000, ge=1, description="a partition's batch is written at this many events "
                                  "even before the interval: only a backlog fills one (bench/README.md)")
    session_close_grace_s: int = Field(10, ge=0, description="close a silent session this long past the timeout, "
                                                             "by event time and by its last batch's arrival")
    query_max_execution_s: int = Field(30, ge=1, description="a query running longer is stopped: 422")
    query_max_rows_to_read: int = Field(2_000_000_000, ge=1000, description="a query reading more rows: 422")
    query_max_memory_bytes: int = Field(4 << 30, ge=1 << 20, description="a query needing more memory: 422")
    mcp_api_url: str = Field("http://127.0.0.1:8080", description="`vidpulse mcp`: the vidpulse API its tools ask")
    mcp_key: SecretStr = Field(SecretStr(""), description="`vidpulse mcp`: the API key its tools ask with")
    data_dir: Path = Path("./data")
    up_processes: str = Field("split", description="`up` on a chdb:// URL: split (a ClickHouse server on the chdb "
                              "folder, and tracker, worker and API as processes) or one (all in this process)")
    up_tracker_port: int | None = Field(None, ge=1, le=65535, description="`up` split: the tracker's port; "
                                        "default VIDPULSE_HTTP_PORT + 1")
    up_worker_port: int | None = Field(None, ge=1, le=65535, description="`up` split: the worker's metrics port; "
                                       "default VIDPULSE_HTTP_PORT + 2")
    up_clickhouse_http_port: int = Field(0, ge=0, le=65535, description="`up` split: its ClickHouse server's HTTP "
                                         "port; 0: a free one")
    up_clickhouse_tcp_port: int = Field(0, ge=0, le=65535, description="`up` split: its native port; 0: a free one")
    worker_group: str = Field("", description="Faust app id and consumer group; default <topic prefix>worker")

    @field_validator("clickhouse_url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if not url.startswith(("chdb://", "http://", "https://")):
            raise ValueError("VIDPULSE_CLICKHOUSE_URL must start with chdb://, http:// or https://")
        return url

    @field_validator("up_processes")
    @classmethod
    def _known_form(cls, value: str) -> str:
        if value not in ("split", "one"):
            raise ValueError(f"VIDPULSE_UP_PROCESSES must be split (the default: tracker, worker and API as separate "
                             f"processes on a ClickHouse server) or one (all in one process on chdb), not {value!r}")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _removed(cls, value: str | None) -> None:
        if value is not None:
            raise ValueError("VIDPULSE_ALLOWED_ORIGINS is gone: an account's origins are kept with the account now; "
                             "set them with `vidpulse accounts update ID --origin ...` and unset the variable")
        return None

    @field_validator("rate_limit_ip", "rate_limit_account", "rate_limit_key")
    @classmethod
    def _valid_rate(cls, value: str) -> str:
        from ingest.ratelimit import parse_rate

        parse_rate(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: str) -> str:
        for item in _split(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError as exc:
                raise ValueError(f"VIDPULSE_TRUSTED_PROXIES: {item!r} is not an IP or CIDR") from exc
        return value

    @cached_property
    def trusted_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(item, strict=False) for item in _split(self.trusted_proxies))

    @property
    def query_limits(self) -> dict[str, int]:
        """ClickHouse settings applied to every query the API runs."""
        return {"max_execution_time": self.query_max_execution_s, "max_rows_to_read": self.query_max_rows_to_read,
                "max_memory_usage": self.query_max_memory_bytes}

    @property
    def chdb_folder(self) -> Path | None:
        """The folder of a ``chdb://`` URL (None for a server URL or an in-memory chdb)."""
        if not self.clickhouse_url.startswith("chdb://"):
            return None
        path = self.clickhouse_url[len("chdb://"):].split("?", 1)[0]
        return Path(path) if path else None

    @property
    def accounts_snapshot(self) -> Path:
        return self.data_dir / "accounts.json"

    @property
    def spool_folder(self) -> Path:
        return self.spool_dir or self.data_dir / "spool"

    @property
    def consumer_group(self) -> str:
        return self.worker_group or f"{self.topic_prefix}worker"

    @property
    def events_topic(self) -> str:
        return f"{self.topic_prefix}events"

    @property
    def dead_letter_topic(self) -> str:
        return f"{self.topic_prefix}dead-letter"


def _split(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]
