"""Settings, one class per area with its own `REFLUX_…` prefix, composed into `Settings`.

Read once at the edge (CLI, worker, node service) and passed down; tests build their own
`Settings(...)` instead of mutating the environment.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _seconds(value: object) -> object:
    """A duration setting as plain seconds (`60`, `0.5`) or Reflux's form (`1m`, `30s`);
    a timedelta or an ISO 8601 one (`PT60S`) as pydantic reads it."""
    if isinstance(value, int | float) or (isinstance(value, str) and not value.startswith("P")):
        from infra.durations import parse_duration

        return timedelta(seconds=parse_duration(value))  # type: ignore[arg-type]
    return value


Duration = Annotated[timedelta, BeforeValidator(_seconds)]
"""A duration setting: `REFLUX_…=60`, `=1m30s`, `=PT90S`."""

T = TypeVar("T")
CommaSeparated = Annotated[list[T], NoDecode, BeforeValidator(_split_commas)]
"""A list setting written in the environment as `a,b,c`."""


class TemporalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_TEMPORAL_")

    address: str | None = None
    """An existing Temporal frontend (host:port). Unset: `reflux up` starts the dev server."""
    port: int = 7233
    http_port: int | None = None
    """Dev server HTTP API port. Unset: the dev server picks a free one (stacks never clash)."""
    metrics_port: int | None = None
    """Dev server /metrics port. Unset: the dev server picks a free one."""
    namespace: str = "default"
    task_queue: str = "reflux"
    max_concurrent_activities: int = 200
    graceful_shutdown: Duration = timedelta(seconds=20)
    """How long a stopping worker lets running activities finish."""
    local_step_timeout: float = 10.0
    """Steps with a timeout of at most this many seconds (their own, else their node's)
    run as local activities unless they say `local: false`; 0 turns that off."""
    reconcile_every: Duration = timedelta(seconds=60)
    """How often a worker closes ledger rows whose Temporal execution has ended."""


class NatsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_NATS_")

    url: str | None = None
    """An existing NATS server (nats://host:port). Unset: `reflux up` starts nats-server."""
    port: int = 4222
    monitor_port: int = 8222


class DatabaseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_DATABASE_")

    url: str | None = None
    """An existing PostgreSQL with pgvector (postgresql://…). Unset: `reflux up` starts one."""
    port: int = 5433


class HttpSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_HTTP_")

    allow_networks: CommaSeparated[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list
    )
    """CIDRs that http.request may reach even though they are private or reserved."""
    max_response_bytes: int = 10 * 1024 * 1024
    default_timeout: float = 30.0


class NodesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_NODES_")

    filter: CommaSeparated[str] = Field(default_factory=list)
    """Node groups a `reflux nodes serve` without --groups serves (empty: all built-in)."""
    max_concurrency: int = 64
    """Requests one node service process handles at once."""


class ObjectStoreSettings(BaseSettings):
    """Where artifacts and large step values live: S3 (or any S3-compatible store) when a
    bucket is set, else a local directory under `REFLUX_HOME`. Credentials and region come
    from the usual AWS settings (`AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, `AWS_REGION`, …)."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_S3_")

    bucket: str | None = None
    """Set: objects go to this S3 bucket (it must exist). Unset: `REFLUX_HOME/objects`."""
    endpoint: str | None = None
    """An S3-compatible endpoint URL (MinIO, Ceph, …). Unset: AWS S3."""
    prefix: str = "reflux/"
    """Key prefix inside the bucket."""


class ClickHouseSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_CLICKHOUSE_")

    url: str | None = None
    """A ClickHouse server over HTTP (http://user:pass@host:8123/db). Unset: the embedded
    chdb engine under `REFLUX_HOME/clickhouse`, owned by the trace sink."""


class TracesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_TRACES_")

    buffer: int = 100_000
    """Events a process keeps in memory while NATS is unreachable; beyond, they are dropped
    (and counted)."""
    batch: int = 5_000
    """Messages the sink takes per insert (a message holds one event, or up to 500 when a
    publisher is busy)..."""
    batch_bytes: int = 8 * 1024 * 1024
    """...and at most about this many bytes of them."""
    max_age: Duration = timedelta(days=7)
    """How long the JetStream stream keeps events the sink has not taken yet."""


class SandboxSettings(BaseSettings):
    """Where untrusted code (code.* nodes, `reflux sandbox run`, the Forge's tests) runs."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_SANDBOX_")

    backend: Literal["process", "docker"] = "process"
    """process: namespaces via bubblewrap (needs root); docker: a container per run."""
    packages: CommaSeparated[str] = Field(default_factory=lambda: ["yaml"])
    """Import names, besides the standard library, that sandboxed Python may import; each
    must be installed where the sandbox runs (its dependencies listed too)."""
    concurrency: int = 4
    """Runs one process executes at once; more wait their turn."""
    allow_networks: CommaSeparated[ipaddress.IPv4Network | ipaddress.IPv6Network] = Field(
        default_factory=list
    )
    """CIDRs that code with `network: limited` may reach although they are not public."""
    allow_full_network: bool = False
    """Let code.* steps ask for `network: full` (the host's network, its loopback services
    included: NATS, PostgreSQL). Off: such a step fails; only for platforms whose authors
    are all trusted."""
    launcher: Literal["auto", "bwrap", "unshare"] = "auto"
    """How the process backend makes namespaces: bubblewrap when installed (auto), or
    util-linux unshare with Reflux's own setup (slower to start)."""
    docker_image: str = "python:3.11-slim"
    """Image with a Python of the same minor version as the host (allowed packages are
    mounted from the host)."""
    docker_runtime: str | None = None
    """Container runtime; unset: runsc (gVisor) when the engine offers it, else its default."""


class SecretsSettings(BaseSettings):
    """The secret store: values encrypted (AES-GCM) in PostgreSQL under a key that is never
    in the database."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_SECRETS_")

    key: str | None = None
    """The 32-byte key, base64. Unset: read from `key_file`."""
    key_file: Path | None = None
    """A file holding the key (base64). Unset: `REFLUX_HOME/secrets.key`, made (mode 0600)
    by `reflux up` or the first `reflux secrets set` when missing."""
    cache_ttl: float = 5.0
    """Seconds a node service keeps a secret it read (a change reaches calls after this)."""


class LimitsSettings(BaseSettings):
    """Bounds on what one workflow, input or expression may make the platform do."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_")

    expression_max_bytes: int = 1024 * 1024
    """The most one rendered template value (and any string or list an expression builds
    on the way) may hold."""
    expression_max_iterations: int = 100_000
    """Loop and comprehension iterations one rendering may make, nested ones multiplied."""
    input_max_depth: int = 64
    """How deeply a run's inputs (CLI, API, webhook, event) may nest."""
    input_max_bytes: int = 1024 * 1024
    """The largest run inputs (serialized JSON) accepted at any boundary."""
    source_max_bytes: int = 512 * 1024
    """The largest workflow source `validate`, `push` and `POST /workflows` accept."""
    fanout_max_items: int = 100_000
    """The most items one `for_each` may have; more fails the step at once."""
    fanout_shard_items: int = 1_000
    """Items one child workflow of a large fan-out holds."""


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_API_")

    url: str | None = None
    """Set: the CLI works through this platform's API (workflows, run, stats, traces)
    instead of reaching Temporal, NATS and PostgreSQL itself."""
    token: str | None = Field(default=None, validation_alias="REFLUX_TOKEN")
    """The bearer token the CLI sends to `url`."""
    host: str = "127.0.0.1"
    port: int = 8080
    rate_limit: float = 20.0
    """Requests a second per token (and per client address without a valid one)..."""
    burst: int = 40
    """...with bursts of this many."""
    max_body_bytes: int = 2 * 1024 * 1024
    pool_size: int = 10


class EvolutionSettings(BaseSettings):
    """The review loop: how proposals are validated, applied and watched."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_EVOLUTION_")

    task_queue: str = "reflux-evolution"
    samples: int = Field(default=40, ge=1)
    """Runs per arm a validation collects (`--runs`); fewer than `min_samples` per arm is
    inconclusive."""
    max_runs: int = Field(default=1000, ge=1)
    """The most runs per arm a validation may ask for (each shadow run calls the steps
    that read)."""
    min_samples: int = Field(default=30, ge=1)
    latency_floor_ms: float = Field(default=10.0, ge=0)
    """A step's latency changed by less than this (ms, medians) is the same, whatever the
    ratio: on a 5 ms call a machine's load moves more than that."""
    watch_runs: int = Field(default=50, ge=1)
    """Live runs after an apply that the watch judges against as many before it."""
    canary_percent: int = Field(default=20, ge=1, le=100)
    """The share of new live runs a canary sends to the candidate."""
    poll: Duration = timedelta(seconds=10)
    """How often a validation or watch looks at its runs (a durable timer)."""
    shadow_wait: Duration = timedelta(minutes=30)
    """How long a shadow validation waits for its runs before judging what ended."""
    canary_wait: Duration = timedelta(hours=24)
    watch_wait: Duration = timedelta(days=7)
    """How long the watch waits for its runs; then it ends, judging what it has."""


class CriticSettings(BaseSettings):
    """The Critic: when it scans, and what its detectors count as a problem."""

    model_config = SettingsConfigDict(env_prefix="REFLUX_CRITIC_")

    every: Duration = timedelta(minutes=15)
    """How often the Critic scans (a Temporal Schedule that `reflux up` creates; 0: never)."""
    window: Duration = timedelta(hours=1)
    """How far back a scan reads the traces."""
    cooldown: Duration = timedelta(days=7)
    """How long the Critic does not file again what people rejected."""

    # the detectors' targets and minimum counts

    target_failure_rate: float = 0.01
    """retry: the share of a step's calls that may still fail after retries."""
    max_attempts_cap: int = 10
    """retry: never propose more attempts than this."""
    recovery_calls: int = Field(default=2000, ge=1)
    """retry: about how many recovered calls of a step its recovery time is measured over;
    when every candidate step has more, one run in so many is read (by a hash of its id)."""
    min_attempts: int = 20
    """A step with fewer attempts in the window gets no finding and is not covered."""
    example_runs: int = 5
    """Run ids a finding quotes as examples."""
    contrast_rows: int = 10
    """Attribute rows a finding's contrast keeps (the largest differences)."""
    timeout_share: float = 0.02
    """timeout: attempts that time out must be at least this share to propose a longer limit."""
    timeout_min: int = 3
    """timeout: and at least this many."""
    timeout_near: float = 0.8
    """timeout: ... while the p99 of ok latencies is above this fraction of the limit."""
    timeout_headroom: float = 1.5
    """timeout: a longer limit is p99.9 of ok latencies times this (rounded up)."""
    timeout_floor_s: float = 10.0
    """timeout: never propose a limit below this many seconds (a tighter limit saves little
    and turns a slow day into failures)."""
    timeout_tight: float = 10.0
    """timeout: a tighter limit is the slowest ok attempt times this, rounded up to a readable
    duration, at least `timeout_floor_s` ..."""
    timeout_loose: float = 5.0
    """... proposed only when the current limit, with no timeout in the window, is at least
    this many times that proposal."""
    cache_min_hit_rate: float = 0.2
    """cache: propose a cache only when at least this share of calls would be answered."""
    cache_hit_ms: float = 1.0
    """cache: what answering from the cache costs, in milliseconds."""
    cache_min_saving_ms: float = 5.0
    """cache: the expected saving per call, hit rate × (mean ok latency − `cache_hit_ms`),
    must be at least this many milliseconds ..."""
    cache_min_saving_share: float = 0.2
    """... and at least this share of the mean ok latency."""
    max_contrasts: int = 5
    """Contrasts a scan computes (one query each, the costliest a scan runs): the first
    findings get one, the rest say where to look instead."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="REFLUX_")

    home: Path = Path(".reflux")
    """State dir of the embedded stack: data, logs, PID files."""
    temporal: TemporalSettings = Field(default_factory=TemporalSettings)
    nats: NatsSettings = Field(default_factory=NatsSettings)
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    nodes: NodesSettings = Field(default_factory=NodesSettings)
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    clickhouse: ClickHouseSettings = Field(default_factory=ClickHouseSettings)
    traces: TracesSettings = Field(default_factory=TracesSettings)
    sandbox: SandboxSettings = Field(default_factory=SandboxSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    secrets: SecretsSettings = Field(default_factory=SecretsSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    evolution: EvolutionSettings = Field(default_factory=EvolutionSettings)
    critic: CriticSettings = Field(default_factory=CriticSettings)
    inline_limit: int = 256 * 1024
    """Values this size or larger (bytes, serialized) go to the object store and travel by
    reference, in Temporal history and in node messages alike."""
    user: str = Field(default_factory=lambda: _login_name())
    """Who registry changes are recorded as (`REFLUX_USER`; default: the login name)."""


def _login_name() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no passwd entry (some containers)
        return "unknown"
