"""Typed configuration, read from ``MEETNET_*`` environment variables.

One ``Settings`` object describes where the engines are (PostgreSQL/TimescaleDB, MQTT, Kafka)
and the limits the platform enforces. The same code runs against the local engines that
``meetnet up`` starts and against external clusters: only these values change.

Build it with :func:`get_settings` (cached) in a ``main()``; never at import time.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEETNET_", extra="ignore", frozen=True)

    # --- engines -------------------------------------------------------------------------
    database_url: SecretStr = Field(
        SecretStr("postgresql://meetnet:meetnet@127.0.0.1:5432/meetnet"),
        description="libpq URL of the PostgreSQL+TimescaleDB database.",
    )
    mqtt_url: str = Field(
        "mqtt://127.0.0.1:18830",
        description="MQTT broker (mqtt://host:port). The local one listens on its own port, "
        "not on the distribution's 1883.",
    )
    kafka_bootstrap: str = Field(
        "127.0.0.1:19092", description="Comma-separated Kafka bootstrap servers."
    )
    manage_local_services: bool = Field(
        True,
        description="`meetnet up` starts a local Mosquitto and Kafka-protocol broker (and "
        "starts the local PostgreSQL cluster if it is down). Set false to use external engines.",
    )
    state_dir: Path = Field(
        PROJECT_ROOT / ".meetnet",
        description="Where local brokers keep their config, data and logs.",
    )

    # --- topics --------------------------------------------------------------------------
    mqtt_topic_prefix: str = "meetnet/v1"
    mqtt_share_group: str = Field(
        "meetnet-gateways",
        description="MQTT shared-subscription group: gateways in one group split the messages.",
    )
    kafka_readings_topic: str = "meetnet.readings.v1"
    kafka_deadletter_topic: str = "meetnet.deadletter.v1"
    kafka_alerts_topic: str = Field(
        "meetnet.alerts.v1",
        description="Kafka topic of anomaly alerts: one JSON record per flag opened or resolved.",
    )
    kafka_partitions: int = Field(6, ge=1, description="Partitions of topics meetnet creates.")
    kafka_replication: int = Field(1, ge=1, description="Replication factor of created topics.")
    processor_group: str = "meetnet-processor"

    # --- device identity (MQTT authentication and the registry caches) ----------------------
    mqtt_auth: bool = Field(
        True,
        description="meetnet's own Mosquitto requires a username and password and applies "
        "per-device ACLs rendered from the registry (`meetnet broker-auth`). false: anonymous "
        "and no ACL, for trusted networks and benchmarks only.",
    )
    mqtt_username: str = Field(
        "meetnet.ingest",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="MQTT username of meetnet's ingest gateway (the service account that "
        "reads every device topic). The default contains a '.', so no device id can take it.",
    )
    mqtt_password: SecretStr = Field(
        SecretStr(""),
        description="Password of `mqtt_username`. Empty: with `mqtt_auth`, a password generated "
        "once for local runs and kept in <state_dir>/secrets/ (mode 0600).",
    )
    mqtt_auth_dir: str = Field(
        "",
        description="Where `meetnet broker-auth` writes Mosquitto's password and ACL files; "
        "empty: <state_dir>/mosquitto.",
    )
    mqtt_broker_pid_file: str = Field(
        "",
        description="Mosquitto's pid file, for the SIGHUP that reloads the files; empty: "
        "<state_dir>/mosquitto/mosquitto.pid.",
    )
    registry_poll_s: float = Field(
        5.0,
        gt=0,
        description="Registry caches (gateway, processor, broker-auth) compare "
        "registry_state.version this often, in case a NOTIFY was missed.",
    )

    # --- limits (each enforced with a clear error) -----------------------------------------
    max_payload_bytes: int = Field(256 * 1024, ge=64, description="Largest MQTT payload accepted.")
    max_readings_per_message: int = Field(10_000, ge=1)
    max_reading_age_s: int = Field(
        90 * 86400, ge=60, description="Readings older than this (event time) are dead-lettered."
    )
    max_clock_skew_s: int = Field(
        600, ge=0, description="Readings further than this in the future are dead-lettered."
    )
    api_max_limit: int = Field(10_000, ge=1, description="Most rows one JSON request returns.")
    api_default_limit: int = Field(1_000, ge=1)
    api_statement_timeout_ms: int = Field(10_000, ge=100)
    api_registry_default_limit: int = Field(100, ge=1, description="Registry items per page.")
    api_registry_max_limit: int = Field(
        1_000, ge=1, description="Most registry items (sensors, gateways, ...) one page returns."
    )
    api_max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body, except bulk uploads."
    )
    api_bulk_max_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest bulk sensor upload (JSON or CSV)."
    )
    api_bulk_max_rows: int = Field(10_000, ge=1, description="Most sensors in one bulk upload.")

    # --- SensorThings API and linked data --------------------------------------------------
    api_public_url: str = Field(
        "",
        description="The API's public base URL (https://sensors.example.be), used in "
        "@iot.selfLink, @iot.nextLink and JSON-LD ids; empty: taken from each request.",
    )
    sta_default_top: int = Field(100, ge=1, description="Entities per SensorThings page.")
    sta_max_top: int = Field(
        10_000, ge=1, description="Largest $top a SensorThings request may ask for."
    )
    sta_max_skip: int = Field(
        10_000,
        ge=0,
        description="Largest $skip on Observations (their pages continue by keyset, through "
        "@iot.nextLink).",
    )
    sta_max_expand_depth: int = Field(3, ge=1, le=10, description="Deepest $expand nesting.")
    sta_max_entities: int = Field(
        20_000, ge=1, description="Most entities (all levels of $expand) in one response."
    )
    sta_max_merge_datastreams: int = Field(
        200,
        ge=1,
        description="Most Datastreams an Observations request ordered by phenomenonTime may "
        "span (their series are merged by time).",
    )

    # --- access control ------------------------------------------------------------------
    api_anonymous_read: bool = Field(
        True,
        description="Requests without an API key read public data as role `reader` (open "
        "data). false: every /v1 request needs a key.",
    )
    api_key_cache_s: float = Field(
        5.0,
        ge=0,
        le=30,
        description="How long a worker trusts a key it looked up: a revoked key stops working "
        "within this many seconds (at once in the worker that revoked it). 0: no cache.",
    )

    # --- tuning --------------------------------------------------------------------------
    gateway_max_batch: int = Field(5_000, ge=1, description="MQTT messages per Kafka flush.")
    gateway_client_id: str = Field(
        "",
        description="MQTT client id of the gateway; default meetnet-gw-<hostname>. Must be stable "
        "across restarts (the broker re-delivers un-acked messages to the same id) and unique "
        "per gateway: give each of several gateways on one host its own.",
    )
    processor_max_records: int = Field(20_000, ge=1, description="Kafka records per poll batch.")
    processor_poll_ms: int = Field(200, ge=1)
    processor_linger_ms: int = Field(
        100,
        ge=0,
        description="Start a batch at most this often: at low rates every batch would hold a "
        "few readings and cost its fixed overhead (a transaction, a dozen Polars calls); at high "
        "rates batches take longer than this anyway. Adds at most this much latency.",
    )
    processor_gap_wait_ms: int = Field(
        5_000,
        ge=0,
        description="A poll batch that skips offsets of a partition (the local broker can answer "
        "a fetch without a batch still being written) is re-read from the gap for up to this "
        "long before the gap is accepted as genuine (compaction, transaction markers: never on "
        "meetnet's readings topic). 0: accept gaps at once.",
    )
    processor_fetch_max_bytes: int = Field(
        16 * 1024 * 1024,
        ge=1024 * 1024,
        description="Most record bytes one Kafka fetch (and so one poll batch) holds; with the "
        "two batches in flight it bounds the processor's memory, whatever the records hold.",
    )
    processor_max_poll_interval_ms: int = Field(
        300_000,
        ge=1000,
        description="Kafka max.poll.interval.ms. The processor keeps polling (with its "
        "partitions paused) while its database sink is behind, so a slow database does not "
        "exceed it.",
    )
    processor_session_timeout_ms: int = Field(
        10_000, ge=1000, description="Kafka session.timeout.ms of the processors' group."
    )
    rollup_late_horizon_s: float = Field(
        86_400,
        ge=0,
        description="Rollup buckets holding a reading older than this (event time, against the "
        "processor's clock) are recomputed from the raw readings by the repair instead of "
        "merged on the hot path.",
    )
    rollup_repair_interval_s: float = Field(
        2.0, gt=0, description="How often a processor recomputes queued (late) rollup buckets."
    )
    health_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="Gateway and processor serve GET /live and /ready on this port for "
        "Kubernetes probes (meetnet/health.py); 0 = off.",
    )
    health_host: str = Field(
        "127.0.0.1", description="Address of the workers' health endpoint (0.0.0.0 in a pod)."
    )
    log_level: str = "INFO"
    log_format: str = Field("text", pattern="^(text|json)$")

    @field_validator("mqtt_url")
    @classmethod
    def _check_mqtt_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise ValueError("mqtt_url must look like mqtt://host:port")
        return v

    @field_validator("mqtt_topic_prefix")
    @classmethod
    def _check_prefix(cls, v: str) -> str:
        # The prefix goes into topic filters and into Mosquitto's ACL file: no wildcards, no
        # whitespace or control characters (a newline would start a new ACL line), no empty
        # levels and no leading '$' (reserved for broker topics).
        bad = any(c in "+#" or c.isspace() or not c.isprintable() for c in v)
        if not v or bad or v.startswith("$") or "" in v.split("/"):
            raise ValueError(
                "mqtt_topic_prefix must be topic levels like meetnet/v1: no '+', '#', "
                "whitespace, empty level or leading '$'"
            )
        return v

    @field_validator("api_public_url")
    @classmethod
    def _check_public_url(cls, v: str) -> str:
        if v and urlsplit(v).scheme not in ("http", "https"):
            raise ValueError(
                "api_public_url must be an http(s):// URL, e.g. https://sensors.example.be"
            )
        return v.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _check_db_url(cls, v: SecretStr) -> SecretStr:
        if urlsplit(v.get_secret_value()).scheme not in ("postgresql", "postgres"):
            raise ValueError("database_url must be a postgresql:// URL")
        return v

    @property
    def mqtt_host(self) -> str:
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        return urlsplit(self.mqtt_url).port or 1883

    @property
    def dsn(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def auth_dir(self) -> Path:
        return Path(self.mqtt_auth_dir) if self.mqtt_auth_dir else self.state_dir / "mosquitto"

    @property
    def broker_pid_file(self) -> Path:
        if self.mqtt_broker_pid_file:
            return Path(self.mqtt_broker_pid_file)
        return self.state_dir / "mosquitto" / "mosquitto.pid"

    def env(self) -> dict[str, str]:
        """``MEETNET_*`` variables that make a child process see exactly these settings."""
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, bool):
                value = "true" if value else "false"
            out[f"MEETNET_{name.upper()}"] = str(value)
        return out


@functools.cache
def get_settings() -> Settings:
    # MEETNET_SECRETS_DIR: a directory of files named like the variables (lower case, e.g.
    # meetnet_database_url), such as a mounted Kubernetes Secret; environment variables win.
    secrets_dir = os.environ.get("MEETNET_SECRETS_DIR") or None
    return Settings(_secrets_dir=secrets_dir)
