"""What a Critic scan looks at: a time window of live traces and the live version of every
workflow that has traces in it, the profile every detector reads, and the `Detector`
protocol each detector module follows.

Every detector reads the traces only through `Window.ask` (`reflection.query` bound to the
settings, or a test's warehouse), never chdb itself: the embedded engine belongs to the
trace sink's process. What they read is the rollup (`reflection.rollup`, `trace_minutes`:
attempts by the minute, kept by ClickHouse as traces arrive), not the raw `traces`: the raw
table is ordered by run, so a window or a step prunes nothing and every column a query
names is read for every row; the rollup holds a few thousand rows an hour of traffic. What
it cannot answer (retry's recovery times, a call's attempts side by side) reads
`trace_retries`, the failures and retries alone; the same filter applies to both.

`Window.live()` is the one filter they all use, so "which traces count" is decided once:
only live traffic (runs labelled `shadow=true` or carrying an `experiment` label are
replays and variants, not what users saw: the rollup's `live`), only the window's
workflows, only runs of each workflow's *live version* (`workflow_version =
WorkflowContext.version`: a detector judges that version's traces against that version's
policy, never an older version's failures against a newer retry policy), and the window's
minutes: from the minute `start` falls in up to `end` (`traces=True`: `start` within
[start, end) to the millisecond). Every value is bound as a parameter, and as the text
`reflux sql --param name=value` would pass, so the SQL and params a finding quotes re-run
as they are.

A scan asks as few questions as it can: `Window.profile()` is one aggregate per scan
(`PROFILE_SQL`: per workflow, step, version, attempt number, status, error class and
retryable flag, with ok-latency quantiles (t-digest), timeouts and, for the steps a cache
could serve only, their repeats: calls, distinct inputs (HyperLogLog), span, example runs)
that retry, timeout, cache and the coverage all read; a detector then asks at most one
narrow query over its few candidate steps (`Window.of_steps`), and contrasts are capped per
scan (`take_contrast`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orchestrator
from evolution.proposals.model import Finding, Query
from infra import CriticSettings, RefluxError
from reflection import rollup

log = logging.getLogger("reflux.critic")

SHADOW = ("shadow", "true")
EXPERIMENT = "experiment"
"""Labels of runs that are not live traffic: shadow replays, and variant runs of a
validation (`experiment=<proposal>`)."""
ROLLUP = rollup.TABLE
"""What every detector reads (`reflection.rollup`: attempts by the minute)."""
FAILED = "('error', 'timeout')"
CALLED = "('ok', 'error', 'timeout')"
"""Statuses of attempts that failed, and of attempts that reached the node (skips and
cancellations say nothing about it)."""
PIN_RUN = "critic"
"""The run id the live version's pins are resolved for (a rollout may pin other runs
otherwise; the Critic judges the version most runs get)."""


class Answer(Protocol):
    """What `Ask` returns: `reflection`'s `QueryResult` (rows of a read-only query)."""

    columns: list[str]
    rows: list[list[Any]]

    def records(self) -> list[dict[str, Any]]: ...


Ask = Callable[[str, Mapping[str, Any]], Awaitable[Answer]]
"""Runs one read-only query with bound parameters: `reflection.query` bound to settings,
or a test's warehouse."""


class Retry(Protocol):
    """A step's retry policy as its plan has it (`orchestrator`'s `RetryPolicy`)."""

    max_attempts: int
    initial_interval: float
    backoff: float
    max_interval: float
    non_retryable: list[str]


@dataclass(frozen=True)
class StepContext:
    """One step of a workflow's live version, as its plan runs it."""

    step_id: str
    node: str
    version: str
    """The node version pinned for the live version's runs."""
    retry: Retry
    timeout: float
    """Seconds, the effective limit (the step's, else its node's, else the default)."""
    cache_ttl: float | None
    effects: str
    writes: bool
    """Whether any call of it could write (`orchestrator.may_write`): never cached."""
    uses_secrets: bool = False
    """Its templates read `secret(...)`: a cache would not apply without `allow_secrets`."""

    @property
    def node_ref(self) -> str:
        return f"{self.node}@{self.version}"


@dataclass(frozen=True)
class WorkflowContext:
    workflow_id: str
    namespace: str
    version: int | None
    """The live version."""
    steps: dict[str, StepContext]


@dataclass(frozen=True)
class Window:
    """The traces a scan reads and the workflows it covers."""

    ask: Ask
    start: datetime
    end: datetime
    """The scan window (UTC), start included, end not."""
    workflows: dict[str, WorkflowContext]
    settings: CriticSettings = field(default_factory=CriticSettings)
    _memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """What a scan computes once and every detector reads (`once`), and contrasts spent."""

    def step(self, workflow_id: str, step_id: str) -> StepContext | None:
        workflow = self.workflows.get(workflow_id)
        return workflow.steps.get(step_id) if workflow else None

    def live(
        self,
        workflow_id: str | None = None,
        step_id: str | None = None,
        *,
        all_versions: bool = False,
        traces: bool = False,
    ) -> Filter:
        """The WHERE clause (and its params) of live attempts in the window, over the
        rollup (`ROLLUP`), or over the raw `traces` when `traces`: every workflow the window
        covers, or one workflow (and one step); only runs of each workflow's live version
        unless `all_versions` (a workflow whose live version is unknown: all)."""
        where, params = _base(self.start, self.end, traces)
        if workflow_id is not None:
            workflow = self.workflows[workflow_id]
            where += ["workflow_id = {workflow:String}", "namespace = {namespace:String}"]
            params |= {"workflow": workflow_id, "namespace": workflow.namespace}
            if not all_versions and workflow.version is not None:
                where.append("workflow_version = {version:Int64}")
                params["version"] = str(workflow.version)
        else:  # ids and namespaces are [a-z0-9._-]: a comma never occurs in one
            where += [
                "has(splitByChar(',', {workflows:String}), workflow_id)",
                "has(splitByChar(',', {namespaces:String}), namespace)",
            ]
            params["workflows"] = ",".join(sorted(self.workflows))
            namespaces = {w.namespace for w in self.workflows.values()}
            params["namespaces"] = ",".join(sorted(namespaces))
            known = sorted(f"{w.workflow_id}@{w.version}" for w in self.workflows.values()
                           if w.version is not None)  # fmt: skip
            if not all_versions and known:
                versioned = (
                    "has(splitByChar(',', {live:String}), "
                    "concat(workflow_id, '@', toString(ifNull(workflow_version, -1))))"
                )
                unknown = sorted(w for w, c in self.workflows.items() if c.version is None)
                if unknown:
                    anyone = "has(splitByChar(',', {any:String}), workflow_id)"
                    versioned = f"({versioned} OR {anyone})"
                    params["any"] = ",".join(unknown)
                where.append(versioned)
                params["live"] = ",".join(known)
        if step_id is not None:
            where.append("step_id = {step:String}")
            params["step"] = step_id
        return Filter(" AND ".join(where), params)

    def of_steps(self, keys: Iterable[tuple[str, str]]) -> Filter:
        """`live()` narrowed to some steps (workflow_id, step_id): a detector's second
        query over its candidates only. The cheap test on the step id comes first, so the
        pair is only built for the rows that pass it."""
        live = self.live()
        chosen = sorted(set(keys))
        where = (
            f"{live.where} AND has(splitByChar(',', {{step_ids:String}}), step_id)"
            " AND has(splitByChar(',', {steps:String}), concat(workflow_id, '/', step_id))"
        )
        params = live.params | {
            "step_ids": ",".join(sorted({s for _, s in chosen})),
            "steps": ",".join(f"{w}/{s}" for w, s in chosen),
        }
        return Filter(where, params)

    async def run(self, sql: str, params: Mapping[str, Any]) -> tuple[list[dict[str, Any]], Query]:
        """The records of one query, and the query as evidence quotes it."""
        query = quote(sql, params)
        result = await self.ask(query.sql, query.params)
        return result.records(), query

    async def once(self, name: str, compute: Callable[[], Awaitable[Any]]) -> Any:
        """What `compute()` gives, computed on first use and shared by every detector of
        the scan (the profile, the contrasts of every step)."""
        if name not in self._memo:
            lock = self._memo.setdefault(f"lock:{name}", asyncio.Lock())
            async with lock:
                if name not in self._memo:
                    self._memo[name] = await compute()
        return self._memo[name]

    async def profile(self) -> Profile:
        """Every covered step's attempts in the window, from one aggregate query
        (`PROFILE_SQL`), once a scan."""
        return await self.once("profile", lambda: _read_profile(self))

    def take_contrast(self) -> bool:
        """Whether one more contrast fits in this scan's `max_contrasts`; counts it."""
        spent = self._memo.get("contrasts spent", 0)
        if spent >= self.settings.max_contrasts:
            return False
        self._memo["contrasts spent"] = spent + 1
        return True


@dataclass(frozen=True)
class Filter:
    where: str
    params: dict[str, str]


class Detector(Protocol):
    """One kind of problem the Critic finds. `scan` reads the window's shared profile
    (`window.profile()`) or, for what it does not hold, one aggregate query over all its
    steps (GROUP BY workflow_id, step_id …, never a query per step), then at most one
    narrow query over its candidates (`window.of_steps`) and a capped contrast per finding,
    and returns what it found. It judges the live version only (`window.live()`). A step
    with fewer than `settings.min_attempts` attempts in the window gets no finding."""

    kind: str

    async def scan(self, window: Window) -> list[Finding]: ...


PROFILE_SQL = """
SELECT workflow_id, step_id, version,
       groupArray((attempt, status, error_class, retryable, http_status, n, retry_after_s, runs))
           AS groups,
       sum(ok_n) AS ok,
       sum(ok_sum) AS ok_sum_ms,
       max(ok_max) AS ok_max_ms,
       quantilesTDigestMerge(0.5, 0.99, 0.999)(ok_q) AS ok_q,
       sum(timeout_sum) / greatest(sum(timeout_n), 1) AS timeout_mean_ms,
       argMaxMerge(slowest) AS slowest_run,
       uniqHLL12Merge(inputs) AS inputs,
       sum(repeats_n) AS repeats,
       dateDiff('millisecond', minIf(repeats_first, repeats_n > 0),
                maxIf(repeats_last, repeats_n > 0)) / 1000 AS repeats_span_s
FROM (
    SELECT workflow_id, step_id, workflow_version AS version, attempt, status, error_class,
           retryable, http_status,
           sum(attempts) AS n,
           maxIf(retry_after_s, status != 'ok') AS retry_after_s,
           arraySlice(groupUniqArrayMergeIf({examples_kept})(
                          runs, status IN {failed} OR ({repeats})),
                      1, {{examples:UInt32}}) AS runs,
           sumIf(attempts, {fresh}) AS ok_n,
           sumIf(latency_sum, {fresh}) AS ok_sum,
           maxIf(latency_max, {fresh}) AS ok_max,
           quantilesTDigestMergeStateIf(0.5)(latency, {fresh}) AS ok_q,
           sumIf(latency_sum, status = 'timeout') AS timeout_sum,
           sumIf(attempts, status = 'timeout') AS timeout_n,
           argMaxMergeStateIf(slowest, {fresh}) AS slowest,
           {inputs} AS inputs,
           sumIf(attempts, {repeats}) AS repeats_n,
           minIf(first_start, {repeats}) AS repeats_first,
           maxIf(last_start, {repeats}) AS repeats_last
    FROM {rollup}
    WHERE {where} AND status IN {called}
    GROUP BY workflow_id, step_id, version, attempt, status, error_class, retryable, http_status
)
GROUP BY workflow_id, step_id, version
ORDER BY workflow_id, step_id, version
"""
FRESH = "status = 'ok' AND NOT cache_hit"
"""An ok attempt the node answered (a cache hit says nothing of the node's latency)."""
REPEATS = f"{FRESH} AND hashed AND has(splitByChar(',', {{cacheable:String}}), step_id)"
"""The ok attempts of a step a cache could serve (their ids are a parameter) that carry an
inputs hash: what the cache detector reads, distinct inputs counted only for them."""
NO_REPEATS = "false"


@dataclass(frozen=True)
class AttemptGroup:
    """A step's attempts of one number, status and error (of the live version)."""

    attempt: int
    status: str
    error_class: str
    retryable: str
    """The node's `context.retryable` ("true", "false", or "" when it said nothing)."""
    http_status: str
    count: int
    retry_after_s: float
    runs: list[str]
    """Example runs: of failures, and of the ok attempts a cache could serve (`REPEATS`)."""


@dataclass(frozen=True)
class StepProfile:
    """One step of a workflow's live version over the window."""

    workflow_id: str
    step_id: str
    groups: list[AttemptGroup]
    ok: int
    """Ok attempts the node answered (no cache hits), the latency figures' sample."""
    ok_mean_ms: float
    ok_max_ms: float
    ok_p50_ms: float
    ok_p99_ms: float
    ok_p999_ms: float
    timeout_mean_ms: float | None
    """Of the attempts that timed out (they all end near the limit: a mean says it)."""
    slowest_run: str
    inputs: int
    """Distinct inputs of the `repeats` (HyperLogLog, within ~2 %); 0 unless cacheable."""
    repeats: int
    """Ok attempts a cache could have served (`REPEATS`): answered by the node, with an
    inputs hash; 0 unless cacheable."""
    repeats_span_s: float
    """From the first of them to the last."""

    @property
    def attempts(self) -> int:
        return sum(g.count for g in self.groups)

    @property
    def timeouts(self) -> int:
        return sum(g.count for g in self.groups if g.status == "timeout")

    @property
    def failures(self) -> int:
        return sum(g.count for g in self.groups if g.status != "ok")

    def runs(self, status: str | None = None) -> list[str]:
        """Example runs of one status (default: of every failure), in the order the groups
        have them."""
        found: list[str] = []
        for group in self.groups:
            if group.status == status or (status is None and group.status != "ok"):
                found += [r for r in group.runs if r not in found]
        return found


@dataclass(frozen=True)
class Profile:
    steps: dict[tuple[str, str], StepProfile]
    """(workflow_id, step_id) of steps the live versions have, with attempts in the window."""
    query: Query


def cacheable(step: StepContext) -> bool:
    """A step a cache could serve: it cannot write, has none, and reads no secret."""
    return not step.writes and step.cache_ttl is None and not step.uses_secrets


async def _read_profile(window: Window) -> Profile:
    if not window.workflows:
        return Profile({}, Query(sql=""))
    live = window.live(all_versions=True)  # versions split in the query, the live one kept
    steps = sorted({s.step_id for w in window.workflows.values() for s in w.steps.values()
                    if cacheable(s)})  # fmt: skip
    repeats = REPEATS if steps else NO_REPEATS
    sql = PROFILE_SQL.format(
        where=live.where,
        failed=FAILED,
        called=CALLED,
        fresh=FRESH,
        inputs=f"uniqHLL12MergeStateIf(inputs, {repeats})",
        repeats=repeats,
        rollup=ROLLUP,
        examples_kept=rollup.EXAMPLES,
    )
    params = {**live.params, "examples": window.settings.example_runs}
    if steps:
        params["cacheable"] = ",".join(steps)
    records, query = await window.run(sql, params)
    chosen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        workflow = window.workflows.get(r["workflow_id"])
        if workflow is None or r["step_id"] not in workflow.steps:
            continue  # a step the live version no longer has
        key = (r["workflow_id"], r["step_id"])
        if workflow.version is not None:
            if int(r["version"]) == workflow.version:
                chosen[key] = r
        elif key not in chosen or sum(g[5] for g in r["groups"]) > sum(
            g[5] for g in chosen[key]["groups"]
        ):  # no live version known: the version with the most attempts
            chosen[key] = r
    return Profile({key: _step_profile(r) for key, r in chosen.items()}, query)


def _step_profile(r: dict[str, Any]) -> StepProfile:
    ok = int(r["ok"])
    p50, p99, p999 = (_number(v) if ok else 0.0 for v in r["ok_q"])
    groups = [
        AttemptGroup(int(a), s, e, rt, hs, int(n), _number(ra), list(runs))
        for a, s, e, rt, hs, n, ra, runs in sorted(r["groups"], key=lambda g: (g[0], g[1], g[2]))
    ]
    timed_out = any(g.status == "timeout" for g in groups)
    return StepProfile(
        workflow_id=r["workflow_id"],
        step_id=r["step_id"],
        groups=groups,
        ok=ok,
        ok_mean_ms=_number(r["ok_sum_ms"]) / ok if ok else 0.0,
        ok_max_ms=_number(r["ok_max_ms"]) if ok else 0.0,
        ok_p50_ms=p50,
        ok_p99_ms=p99,
        ok_p999_ms=p999,
        timeout_mean_ms=_number(r["timeout_mean_ms"]) if timed_out else None,
        slowest_run=r["slowest_run"] if ok else "",
        inputs=int(r["inputs"]),
        repeats=int(r["repeats"]),
        repeats_span_s=_number(r["repeats_span_s"]),  # 0 without repeats: epoch to epoch
    )


def _number(value: Any) -> float:
    number = float(value or 0)
    return number if math.isfinite(number) else 0.0


async def build_window(
    pool: Any,
    ask: Ask,
    *,
    since: timedelta,
    workflow: str | None = None,
    namespace: str | None = None,
    settings: CriticSettings | None = None,
    end: datetime | None = None,
) -> Window:
    """The window of the last `since` (to `end`, default now): the workflows with live
    traces in it (one query), only `workflow` / `namespace` when given, each with its live
    version from the registry (`pool`). A workflow that no longer loads (deleted, or a
    node it names gone) is left out and logged: one broken workflow never stops a scan."""
    end = end or datetime.now(UTC)
    start = end - since
    probe = Window(ask, start, end, {}, settings or CriticSettings())
    where, params = _base(start, end)
    if workflow is not None:
        where.append("workflow_id = {workflow:String}")
        params["workflow"] = workflow
    if namespace is not None:
        where.append("namespace = {namespace:String}")
        params["namespace"] = namespace
    records, _ = await probe.run(
        f"SELECT DISTINCT workflow_id FROM {ROLLUP} WHERE {' AND '.join(where)} "
        "ORDER BY workflow_id",
        params,
    )
    workflows = {}
    for record in records:
        workflow_id = record["workflow_id"]
        if not workflow_id:
            continue
        try:
            context = await load_context(pool, workflow_id)
        except RefluxError as exc:
            log.warning("critic: workflow %s left out: %s", workflow_id, exc)
            continue
        if namespace is not None and context.namespace != namespace:
            continue
        workflows[workflow_id] = context
    return Window(ask, start, end, workflows, probe.settings)


async def load_context(pool: Any, workflow_id: str) -> WorkflowContext:
    """A workflow's live version as its plan runs it. NotFoundError or SpecError when it
    no longer loads."""
    loaded = await orchestrator.load_version(pool, workflow_id)
    return context_of(loaded.spec, loaded.catalog, loaded.stored.version)


def context_of(spec: orchestrator.Spec, catalog: Any, version: int | None) -> WorkflowContext:
    """The context of a validated spec, its steps planned against `catalog` (pins, limits
    and effects as a run of it gets them)."""
    pins = orchestrator.resolve_pins(spec, catalog, PIN_RUN)
    plan = orchestrator.build_plan(spec, pins, version, catalog)
    steps = {
        step.id: StepContext(
            step_id=step.id,
            node=step.node,
            version=step.version,
            retry=step.retry,
            timeout=step.timeout,
            cache_ttl=step.cache_ttl,
            effects=step.effects,
            writes=orchestrator.may_write(step),
            uses_secrets=bool(step.secrets),
        )
        for step in plan.steps
        if step.meta is None  # delay and switch are the engine's, not node calls
    }
    return WorkflowContext(spec.id, spec.namespace, version, steps)


def readable_duration(seconds: float, at_least: float = 1.0) -> str:
    """`seconds` rounded up to a duration people read at a glance: whole seconds up to a
    minute ("12s"), whole minutes up to an hour ("5m"), else whole hours ("2h")."""
    seconds = max(seconds, at_least)
    if seconds <= 60:
        return f"{math.ceil(seconds - 1e-9)}s"
    if seconds <= 3600:
        return f"{math.ceil(seconds / 60 - 1e-9)}m"
    return f"{math.ceil(seconds / 3600 - 1e-9)}h"


def percent(share: float) -> str:
    """A share as people write it: "48 %", "0.6 %"."""
    value = share * 100
    if value == 0 or value >= 10:
        return f"{value:.0f} %"
    return f"{value:.1f} %" if value >= 0.1 else f"{value:.2f} %"


def _base(start: datetime, end: datetime, traces: bool = False) -> tuple[list[str], dict[str, str]]:
    """Live attempts that started in [start, end): in the rollup, the minutes from the one
    `start` falls in up to `end`; in `traces`, to the millisecond."""
    params = {"start": _text_time(start), "end": _text_time(end)}
    if not traces:
        return [
            "minute >= toStartOfMinute({start:DateTime64(3, 'UTC')})",
            "minute < {end:DateTime64(3, 'UTC')}",
            "live",
        ], params
    where = [
        "start >= {start:DateTime64(3, 'UTC')}",
        "start < {end:DateTime64(3, 'UTC')}",
        "labels[{shadow_key:String}] != {shadow_value:String}",
        "NOT mapContains(labels, {experiment_key:String})",
    ]
    params |= {"shadow_key": SHADOW[0], "shadow_value": SHADOW[1], "experiment_key": EXPERIMENT}
    return where, params


def _text_time(moment: datetime) -> str:
    """As a `DateTime64(3, 'UTC')` parameter reads it (UTC, no offset: ClickHouse refuses one)."""
    utc = moment.astimezone(UTC) if moment.tzinfo else moment
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def quote(sql: str, params: Mapping[str, Any]) -> Query:
    """A query as evidence quotes it: dedented, every param as the text `reflux sql --param`
    passes."""
    return Query(sql=_dedent(sql), params={k: str(v) for k, v in params.items()})


def _dedent(sql: str) -> str:
    lines = [line.rstrip() for line in sql.strip("\n").splitlines()]
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(line[indent:] for line in lines).strip()
