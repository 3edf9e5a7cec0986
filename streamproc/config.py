"""One typed, frozen settings object, read once from the environment (and an optional ``.env``).

Every variable is ``STREAMPROC_<FIELD>`` (``STREAMPROC_PARTITIONS=12``). ``REDIS_URL`` is accepted
as an alias of ``STREAMPROC_REDIS_URL``. A file named after a variable in the secrets directory
(``secrets_dir``) sets it too, for passwords mounted as Docker secrets. Only the CLI
(``cli/common.py``) calls :func:`load_settings`; everything else receives a :class:`Settings`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streamproc.connection import SASL_PROTOCOLS, TLS_PROTOCOLS
from streamproc.errors import ConfigError
from streamproc.events.models import Family
from streamproc.times import parse_duration_seconds

ENV_PREFIX = "STREAMPROC_"


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """All settings of streamproc. Field descriptions are the table of ``docs/settings.md``
    (``streamproc settings --markdown`` writes it)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        frozen=True,
        validate_default=True,
    )

    # --- connections -----------------------------------------------------------------------
    bootstrap_servers: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (`host:port,...`). Unset: the running "
        "`streamproc dev` broker, else `127.0.0.1:9092`.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How to talk to Kafka: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` or "
        "`SASL_SSL` (user and password over TLS: managed Kafka). Used by every command.",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        description="SASL mechanism (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`); required with "
        "`SASL_PLAINTEXT` and `SASL_SSL`.",
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="SASL user name; required with `SASL_*` protocols."
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="SASL password; required with `SASL_*` protocols. A secret: never printed "
        "or logged.",
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None,
        description="CA certificate(s), PEM, that signed the brokers' certificates (`SSL`, "
        "`SASL_SSL`). Unset: the system's CAs.",
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None,
        description="Client certificate, PEM, for brokers that authenticate clients by TLS "
        "(mutual TLS); may hold the key too.",
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None,
        description="Private key, PEM, of the client certificate, when not in its file.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("STREAMPROC_REDIS_URL", "REDIS_URL"),
        description="Redis URL (`REDIS_URL` is accepted too): "
        "`redis://[[user]:password@]host:port/db`, or `rediss://...` for TLS. Unset: the "
        "running `streamproc dev` Redis, else `redis://127.0.0.1:6379/0`.",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Redis password (AUTH; with the URL's user for an ACL user), used when "
        "the URL has none. A secret: never printed or logged.",
    )
    redis_ssl_cafile: FilePath | None = Field(
        default=None,
        description="CA certificate(s), PEM, that signed the Redis server's certificate, for "
        "`rediss://` URLs. Unset: the system's CAs.",
    )
    namespace: str = Field(
        default="streamproc",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Prefix of every Redis key and of the Kafka consumer group; give each "
        "deployment, replay and backfill its own.",
    )

    # --- topics ----------------------------------------------------------------------------
    topic_clickstream: str = Field(default="shop.clickstream", description="Clickstream topic.")
    topic_cart: str = Field(default="shop.cart", description="Cart and checkout topic.")
    topic_orders: str = Field(default="shop.orders", description="Order lifecycle topic.")
    topic_tickets: str = Field(default="shop.tickets", description="Support tickets topic.")
    topic_dlq: str = Field(default="shop.dlq", description="Dead-letter topic for rejected input.")
    partitions: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="Partitions of each input topic (all four must match) when streamproc "
        "creates them.",
    )
    replication_factor: int = Field(
        default=1, ge=1, le=16, description="Replication factor of topics streamproc creates."
    )

    # --- event contract --------------------------------------------------------------------
    max_message_bytes: int = Field(
        default=65536, ge=1024, description="Larger messages are rejected (`too_large`)."
    )
    dead_letter_max_bytes: int = Field(
        default=524288,
        ge=4096,
        le=16 * 1024 * 1024,
        description="A dead letter's original key and value are kept up to this many bytes; a "
        "larger one is cut to it, with headers giving its size and SHA-256. Keep it below the "
        "broker's `message.max.bytes` (1 MiB by default).",
    )
    max_future_seconds: int = Field(
        default=300,
        ge=0,
        description="Events further than this in the future are rejected (`future_time`).",
    )
    reporting_currency: str = Field(
        default="USD",
        pattern=r"^[A-Z]{3}$",
        description="ISO 4217 code all money KPIs are reported in.",
    )
    fx_rates: Annotated[dict[str, Decimal], NoDecode] = Field(
        default_factory=dict,
        description="Conversion rates into the reporting currency, `EUR=1.08,GBP=1.27` (1 EUR = "
        "1.08 USD). A currency without a rate is rejected (`unknown_currency`).",
    )

    # --- windows and state -----------------------------------------------------------------
    windows: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["1m", "5m", "15m", "1h", "1d"],
        description="Reported window sizes, comma-separated, whole multiples of 1m.",
    )
    allowed_lateness_seconds: int = Field(
        default=120,
        ge=0,
        description="The watermark trails the highest event time of a partition by this much.",
    )
    max_lateness_seconds: int = Field(
        default=3600,
        ge=0,
        description="A late event still amends its closed window up to this far behind the "
        "watermark; later ones go to the dead-letter topic (`too_late`).",
    )
    idle_timeout_seconds: int = Field(
        default=60,
        ge=1,
        description="After this long without events a partition's watermark advances with the "
        "wall clock, so windows, sessions and carts close when traffic stops. Only once the "
        "worker's consumer has had a fetch response for each of the partition's topics: a worker "
        "that has not fetched yet does not know its backlog.",
    )
    session_timeout_seconds: int = Field(
        default=1800, ge=60, description="Inactivity (event time) that ends a session."
    )
    abandonment_timeout_seconds: int = Field(
        default=1800,
        ge=60,
        description="A cart with no order this long after its last event is abandoned.",
    )
    order_retention_seconds: int = Field(
        default=7 * 86400,
        ge=3600,
        description="How long an order is kept so a later cancellation can subtract its total.",
    )
    ticket_retention_seconds: int = Field(
        default=14 * 86400,
        ge=3600,
        description="A ticket with no event for this long leaves state (and `open_tickets`).",
    )
    redis_retention_seconds: int = Field(
        default=8 * 86400,
        ge=3600,
        description="How long published partials and visitor sketches stay in Redis.",
    )
    visitors_exact_per_minute: int = Field(
        default=512,
        ge=0,
        le=100_000,
        description="Visitors of one minute, store and dimension are also kept as an exact set "
        "up to this many (then only the HyperLogLog), so small counts are exact.",
    )
    visitors_exact_union: int = Field(
        default=20_000,
        ge=0,
        description="A window's visitors are counted exactly when its minutes' exact sets hold "
        "at most this many members in all; else from the HyperLogLog (about 0.8 % error).",
    )
    max_stores: int = Field(
        default=50,
        ge=1,
        description="Distinct `store_id` label values; further stores fold into `other`.",
    )

    # --- worker ----------------------------------------------------------------------------
    batch_max_events: int = Field(
        default=2000,
        ge=1,
        le=100_000,
        description="Most events a worker fetches at once. A worker judges what it fetched a "
        "minute of event time of one topic partition at a time, the partition's topics in step "
        "(`docs/semantics.md`), and absorbs a partition's consecutive fetched slices together "
        "(`STREAMPROC_RUN_MAX_EVENTS`).",
    )
    # bench/throughput.py, 300 k events, 8 partitions: runs of one slice 11.1 k events/s, of up
    # to 20,000 records 16.4 k (x1.48; CPU per event x0.66; changelog messages per event 0.49 ->
    # 0.25); up to 50,000 measured the same as 20,000 (runs end where a fetch does).
    run_max_events: int = Field(
        default=20_000,
        ge=1,
        le=1_000_000,
        description="Most fetched events a worker absorbs and stores at once: a run of one "
        "partition's consecutive slices, judged one after the other. A record several slices "
        "touch is re-evaluated, published to Redis and written to the changelog once per run "
        "(x1.5 events/s against runs of one slice, measured with `bench/throughput.py`); "
        "smaller runs publish sooner while a backlog is read.",
    )
    batch_max_wait_ms: int = Field(
        default=200,
        ge=1,
        le=10_000,
        description="Longest a worker's fetch waits for input when there is none.",
    )
    # bench/throughput.py, 600 k events, alternating: 50,000 -> 29.7 us of CPU an event (4 runs),
    # 250,000 -> 26.3 (2 runs), 1,000,000 -> 25.8, 2,000,000 -> 25.3; peak RSS +3 to +14 MiB.
    # At 50,000 the young generation was collected every ~6 k events, 13 ms each: nearly every
    # young object survives to it (the fetched records, the run's work), so fewer collections
    # traverse fewer of them.
    gc_gen0_threshold: int = Field(
        default=250_000,
        ge=100,
        le=10_000_000,
        description="A worker's Python garbage collector runs after this many new container "
        "objects. At Python's default (700), collecting took about a fifth of a worker's CPU, "
        "at 50,000 a tenth; its state is plain objects freed by reference counting. Higher "
        "trades a little memory for CPU.",
    )
    # bench/throughput.py, 600 k events, three alternating pairs against asyncio's loop: +2 to +5 %
    # events/s, 3-5 % less CPU an event (2026-12-06; README, Performance).
    event_loop: Literal["uvloop", "asyncio"] = Field(
        default="uvloop",
        description="The event loop a worker runs on: `uvloop` (libuv; less CPU per event in "
        "the loop's own work: sockets, callbacks, timers) or Python's own `asyncio` loop. "
        "Where uvloop is not installed (Windows), a worker uses `asyncio` and says so.",
    )
    max_event_failures: int = Field(
        default=3,
        ge=1,
        le=100,
        description="An event whose processing raises an error this many times in a row is "
        "dead-lettered (`processing_error`) and the partition moves on.",
    )
    redis_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="A Redis call without an answer this long counts as an outage: workers "
        "hold and retry, the exporter keeps its last snapshot.",
    )
    group_session_timeout_seconds: int = Field(
        default=10,
        ge=3,
        description="Kafka consumer-group session timeout: how fast a dead worker's partitions "
        "move to the others. A worker writes state only while a heartbeat accepted within this "
        "(or the rebalance timeout, if smaller; less a margin of up to 3 s) says it is still a "
        "member: one that stalled longer waits for the next, and drops the batch in hand, "
        "unacked, once the group has moved on without it.",
    )
    group_heartbeat_interval_seconds: int = Field(
        default=1,
        ge=1,
        description="Consumer-group heartbeat interval; less than half of the session and "
        "rebalance timeouts.",
    )
    group_rebalance_timeout_seconds: int = Field(
        default=10, ge=1, description="How long a rebalance waits for members to rejoin."
    )
    group_instance_id: str | None = Field(
        default=None,
        min_length=1,
        description="Static group membership (Kafka's `group.instance.id`): a worker restarted "
        "with the same id gets its partitions back as soon as it joins, instead of after the "
        "dead member's session timeout and a rebalance. Give each worker its own stable id (a "
        "StatefulSet pod name, one compose service per worker); two live workers must never "
        "share one. Unset: dynamic membership.",
    )

    # --- processes -------------------------------------------------------------------------
    bind: str = Field(
        default="127.0.0.1", description="Address the worker and exporter HTTP servers bind to."
    )
    worker_port: int = Field(
        default=6066, ge=0, le=65535, description="Worker `/metrics` port (0: any free port)."
    )
    exporter_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Exporter `/metrics` and `/api/kpis` port (0: any free port).",
    )
    exporter_refresh_seconds: int = Field(
        default=5,
        ge=1,
        le=3600,
        description="How often the exporter re-reads Redis and recomputes the KPIs; scrapes in "
        "between get the last result.",
    )
    exporter_stale_seconds: int = Field(
        default=60,
        ge=1,
        description="`/readyz` answers 503 once the exporter's last successful refresh is older "
        "than this.",
    )
    state_dir: Path = Field(
        default=Path(".streamproc"),
        description="Where `streamproc dev` keeps pids, ports and logs, and workers their state.",
    )
    dev_broker_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the embedded broker started by `streamproc dev up` (0: the port "
        "it had last time, else a free one).",
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info", description="Log level: debug, info, warning or error."
    )

    @field_validator("windows", mode="before")
    @classmethod
    def _windows_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("windows")
    @classmethod
    def _windows_valid(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one window size is required")
        for text in value:
            seconds = parse_duration_seconds(text)
            if seconds < 60 or seconds % 60:
                raise ValueError(f"window {text!r} is not a whole number of minutes")
        return value

    @field_validator("fx_rates", mode="before")
    @classmethod
    def _fx_rates_csv(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        rates: dict[str, str] = {}
        for part in _split_csv(value):
            code, sep, rate = part.partition("=")
            if not sep:
                raise ValueError(f"expected CODE=RATE, got {part!r}")
            rates[code.strip().upper()] = rate.strip()
        return rates

    @field_validator("fx_rates")
    @classmethod
    def _fx_rates_valid(cls, value: dict[str, Decimal]) -> dict[str, Decimal]:
        for code, rate in value.items():
            if not re.fullmatch(r"[A-Z]{3}", code):
                raise ValueError(f"not an ISO 4217 code: {code!r}")
            if not rate.is_finite() or rate <= 0:
                raise ValueError(f"rate for {code} must be a positive number, got {rate}")
        return value

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        protocol = f"STREAMPROC_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
        sasl = {
            "kafka_sasl_mechanism": self.kafka_sasl_mechanism,
            "kafka_sasl_username": self.kafka_sasl_username,
            "kafka_sasl_password": self.kafka_sasl_password,
        }
        tls = {
            "kafka_ssl_cafile": self.kafka_ssl_cafile,
            "kafka_ssl_certfile": self.kafka_ssl_certfile,
            "kafka_ssl_keyfile": self.kafka_ssl_keyfile,
        }
        if self.kafka_security_protocol in SASL_PROTOCOLS:
            missing = [env_name(name) for name, value in sasl.items() if not value]
            if missing:
                raise ValueError(f"{protocol} needs {', '.join(missing)}")
        elif unused := [env_name(name) for name, value in sasl.items() if value]:
            raise ValueError(f"{', '.join(unused)} set, but {protocol} does not use SASL")
        unused = [env_name(name) for name, value in tls.items() if value]
        if unused and self.kafka_security_protocol not in TLS_PROTOCOLS:
            raise ValueError(f"{', '.join(unused)} set, but {protocol} does not use TLS")
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("STREAMPROC_KAFKA_SSL_KEYFILE needs STREAMPROC_KAFKA_SSL_CERTFILE")
        return self

    @model_validator(mode="after")
    def _heartbeats_fit(self) -> Settings:
        """A worker writes state only while a heartbeat accepted within the smaller group
        timeout says it is still a member (``worker/membership.py``): two must fit in it."""
        heartbeat = self.group_heartbeat_interval_seconds
        session, rebalance = (
            self.group_session_timeout_seconds,
            self.group_rebalance_timeout_seconds,
        )
        if 2 * heartbeat >= min(session, rebalance):
            raise ValueError(
                f"{env_name('group_heartbeat_interval_seconds')}={heartbeat} must be less than "
                f"half of {env_name('group_session_timeout_seconds')} ({session}) and of "
                f"{env_name('group_rebalance_timeout_seconds')} ({rebalance}): a worker writes "
                "its state only while a recent heartbeat shows it still owns its partitions"
            )
        return self

    def env(self, *fields: str) -> dict[str, str]:
        """These settings as the environment variables that give a child process (a worker of a
        replay, a backfill or the demo) the same values; unset ones are left out."""
        return {
            env_name(name): _env_value(value)
            for name in fields
            if (value := getattr(self, name)) is not None
        }

    def with_namespace(self, namespace: str, *, topics: bool) -> Settings:
        """A copy under its own namespace and dead-letter topic (``namespace.dlq``), and with
        ``topics`` input topics named after it too (``namespace.clickstream``, ...)."""
        update = {"namespace": namespace, "topic_dlq": f"{namespace}.dlq"}
        if topics:
            update |= {f"topic_{family.value}": f"{namespace}.{family.value}" for family in Family}
        return self.model_copy(update=update)

    @property
    def input_topics(self) -> tuple[str, str, str, str]:
        return (self.topic_clickstream, self.topic_cart, self.topic_orders, self.topic_tickets)

    @property
    def topics_by_family(self) -> dict[Family, str]:
        return {
            Family.CLICKSTREAM: self.topic_clickstream,
            Family.CART: self.topic_cart,
            Family.ORDERS: self.topic_orders,
            Family.TICKETS: self.topic_tickets,
        }

    @property
    def window_seconds(self) -> tuple[int, ...]:
        return tuple(parse_duration_seconds(text) for text in self.windows)


# The settings that say which topics and keys a pipeline uses: what a replay or a backfill gives
# its workers of its own.
TOPIC_FIELDS = (
    "namespace",
    "topic_clickstream",
    "topic_cart",
    "topic_orders",
    "topic_tickets",
    "topic_dlq",
)


def _env_value(value: Any) -> str:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    if isinstance(value, dict):
        return ",".join(f"{key}={item}" for key, item in value.items())
    return str(value)


def env_name(field: str) -> str:
    """The environment variable that sets ``field``."""
    return f"{ENV_PREFIX}{field.upper()}"


# Settings that no longer exist, and why: still set, each is named in a warning at start-up
# instead of being ignored without a word.
RETIRED = {
    f"{ENV_PREFIX}DEDUP_HORIZON_SECONDS": "duplicates are dropped by the state of the session "
    "(order, ticket) they belong to, for as long as any of its events can count "
    "(docs/semantics.md)",
}


def retired_settings(environ: Mapping[str, str], env_file: str | Path | None = ".env") -> list[str]:
    """A warning for each retired setting set in ``environ`` or ``env_file``."""
    named = set(environ)
    if env_file is not None and Path(env_file).is_file():
        named |= {name for name in dotenv_values(env_file) if name}
    return [
        f"{name} is set but no longer used: {why}" for name, why in RETIRED.items() if name in named
    ]


SECRETS_DIR = Path("/run/secrets")  # where Docker and Compose mount secrets


def secrets_dir() -> Path | None:
    """Where settings may come from files named after their variables (docs/settings.md,
    "Secrets in files"): ``STREAMPROC_SECRETS_DIR``, else ``/run/secrets`` when it exists."""
    named = os.environ.get(f"{ENV_PREFIX}SECRETS_DIR")
    if named:
        if not Path(named).is_dir():
            raise ConfigError(f"{ENV_PREFIX}SECRETS_DIR: {named} is not a directory")
        return Path(named)
    return SECRETS_DIR if SECRETS_DIR.is_dir() else None


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the environment, ``env_file`` and the secrets directory (``secrets_dir``); on error
    raise ConfigError naming the variable. The environment wins over the file, the file over
    the secrets directory."""
    try:
        return Settings(_env_file=env_file, _secrets_dir=secrets_dir(), **overrides)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            if not error["loc"]:  # a check across settings: its message names them
                problems.append(error["msg"].removeprefix("Value error, "))
                continue
            field = ".".join(str(part) for part in error["loc"])
            name = env_name(field.split(".")[0])
            problems.append(f"{name}: {error['msg']} (got {_shown(field, error.get('input'))})")
        raise ConfigError("invalid settings:\n  " + "\n  ".join(problems)) from exc


def _shown(field: str, value: Any) -> str:
    """A rejected value as an error message may show it: never a secret's."""
    secret = Settings.model_fields.get(field.split(".")[0])
    if secret is not None and secret.annotation in (SecretStr, SecretStr | None):
        return "a value (hidden)"
    return repr(value)


def secret_of(secret: SecretStr | None) -> str | None:
    """A secret setting in clear, for the connection that sends it (None: unset or empty)."""
    return (secret.get_secret_value() if secret is not None else None) or None


def redis_password_of(settings: Settings) -> str | None:
    """The Redis password in clear, for the connection that sends it (None: unset or empty)."""
    return secret_of(settings.redis_password)


def describe_settings() -> list[tuple[str, str, str]]:
    """(variable, default, description) for every setting, in declaration order."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if isinstance(default, list):
            shown = ",".join(str(item) for item in default)
        elif isinstance(default, dict):
            shown = ",".join(f"{key}={val}" for key, val in default.items())
        elif default is None:
            shown = "(unset)"
        else:
            shown = str(default)
        rows.append((env_name(name), shown or "(empty)", info.description or ""))
    return rows


def settings_markdown() -> str:
    """The settings as the Markdown table of ``docs/settings.md``."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{default}` | {text} |" for name, default, text in describe_settings()]
    return "\n".join(lines)
