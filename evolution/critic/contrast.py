"""The BubbleUp contrast: every attribute value's share of a step's failing attempts beside
its share of its ok ones, so a value far more common among failures (one replica, one
node version, one label) points at the cause.

Attributes: `node_version`, `replica`, `error_class` (failures only: ok attempts have
none), `item` (the `for_each` index: 0–9 as they are, larger ones in decades, "10-99",
"100-999", …, so a large fan-out does not give a row per item), `label.<key>` and
`context.<key>` for every key, and `metric.<name>` for every reported metric in decades
("1000-9999"; "0-1" is zero and fractions, "below 0" the negatives).

It reads the rollup (`reflection.rollup`, attempts by the minute), never `traces`: every
attribute is one of its key columns, counted exactly, or read from the attempts its rows
keep (`attributes`: a reservoir of `rollup.ATTRIBUTES` attempts' labels, context and metric
bands per row), so a step's hour is a few hundred rows instead of every attempt's maps
(~45 ms for every failing step at once where the raw query took ~350 ms at 1,000,000
attempts).
Labels, context and metrics are thus estimated, as BubbleUp does from a sample: each kept
attempt stands for `attempts / kept` of its row's, which is exact where a row kept all its
attempts and otherwise unbiased, with every side's rows keeping about as many attempts as
they hold rows times `rollup.ATTRIBUTES` (the evidence says how many:
`figures.contrast_sample`). Exact counts would grow a row with every distinct value a label
takes (a request id), a sample does not. The price of the rollup for metrics: quartiles
need the raw values and it keeps only decades, so a metric is contrasted by decade (one
whose values all fall in one decade tells nothing). One query: the step's rows summed once
per side (failing, ok) into an `attribute=value` → attempts map, ARRAY JOINed and grouped; a
share is a count over its side's attempts.

Scoped like every detector to the live version's attempts. One query per scan answers every
step with a failure in the window at once (`LIMIT … BY` step; the shared profile says which
fail, and a step without failures has nothing to contrast): the first contrast a scan asks
for reads them all, and every later one is in hand (a query costs its planning and its
states more than its rows, so one for all steps costs about what one for a step did).
Each finding quotes the same query narrowed to its own step, which gives its rows alone.
A scan still attaches at most `max_contrasts` (`attach`), so a finding's evidence stays
short: later ones carry a figure saying it was skipped.

Rows sort by how far apart the two shares are beyond their noise, largest first:
|share_failing − share_ok| less two standard errors (binomial, over the attempts each
share was read from: for an estimated attribute the kept ones' effective number, total² /
Σ attempts²/kept over the rows, as kept attempts of busier rows weigh more; all attempts
for a key column), then by the difference itself.
So a label that merely wobbles in a sample of a few hundred attempts never ranks above one
that tells failures apart. Attributes that only failures carry (the error class, the error
context) come after the others: they describe the failure rather than explain it.
"""

from __future__ import annotations

from evolution.critic.window import CALLED, FAILED, ROLLUP, Filter, Window, quote
from evolution.proposals.model import ContrastRow, Finding, Query
from reflection import rollup

DESCRIBES_FAILURE = "attribute = 'error_class' OR startsWith(attribute, 'context.')"
SAMPLED = "position(attribute, '.') > 0"
"""Attributes read from the attempts rows keep (`label.`, `context.`, `metric.`); the key
columns have no dot in their name."""

CONTRAST_SQL = """
SELECT workflow_id, step_id,
       substring(pair, 1, position(pair, '=') - 1) AS attribute,
       substring(pair, position(pair, '=') + 1) AS value,
       sumIf(n, failing) / greatest(any(f_attempts), 1) AS share_failing,
       sumIf(n, NOT failing) / greatest(any(o_attempts), 1) AS share_ok,
       any(f_attempts) AS failing_attempts, any(f_kept) AS failing_kept,
       any(o_attempts) AS ok_attempts, any(o_kept) AS ok_kept,
       any(f_effective) AS failing_effective, any(o_effective) AS ok_effective
FROM (
    SELECT workflow_id, step_id, status IN {failed} AS failing, sum(attempts) AS total,
           sum(length(kept)) AS kept_n,
           total * total / sum({spread}) AS effective,
           sumMap(
               arrayConcat(
                   [concat('node_version=', node_version), concat('replica=', replica),
                    concat('item=', item_band), concat('error_class=', error_class)],
                   arrayFlatten(kept)),
               arrayConcat(
                   arrayMap(n -> toFloat64(n),
                            [attempts, attempts, attempts, if(error_class = '', 0, attempts)]),
                   {weights})
           ) AS counts,
           max(if(failing, total, 0)) OVER step AS f_attempts,
           max(if(failing, kept_n, 0)) OVER step AS f_kept,
           max(if(failing, effective, 0)) OVER step AS f_effective,
           max(if(failing, 0, total)) OVER step AS o_attempts,
           max(if(failing, 0, kept_n)) OVER step AS o_kept,
           max(if(failing, 0, effective)) OVER step AS o_effective
    FROM (SELECT *, {kept} AS kept FROM {rollup}
          WHERE {where} AND status IN {called})
    GROUP BY workflow_id, step_id, failing
    WINDOW step AS (PARTITION BY workflow_id, step_id)
)
ARRAY JOIN counts.1 AS pair, counts.2 AS n
GROUP BY workflow_id, step_id, attribute, value
ORDER BY workflow_id, step_id, ({describes}) ASC,
         greatest(abs(share_failing - share_ok) - 2 * sqrt(
             share_failing * (1 - share_failing)
                 / greatest(if({sampled}, failing_effective, toFloat64(failing_attempts)), 1)
             + share_ok * (1 - share_ok)
                 / greatest(if({sampled}, ok_effective, toFloat64(ok_attempts)), 1)),
             0) DESC,
         abs(share_failing - share_ok) DESC, attribute, value
LIMIT {{rows:UInt32}} BY workflow_id, step_id
"""
"""Each side's rows (failing, ok) summed into one `attribute=value` → attempts map: the key
columns count each row's attempts exactly (no error class counts 0, and sumMap drops a 0);
a row's kept attempts (`rollup.ATTRIBUTES`) count its labels, context and metric bands, each
kept attempt for `attempts / kept` of the row's, so a share is an unbiased estimate from
`*_kept` attempts (exact where no row had more attempts than it keeps). A pair splits at its
first `=` (values may hold one)."""


async def contrast(
    window: Window, workflow_id: str, step_id: str
) -> tuple[list[ContrastRow], dict[str, int], Query]:
    """The contrast of failing (`error`, `timeout`) against ok attempts of one step in the
    window, the top `settings.contrast_rows` rows (none when no attempt failed: there is
    nothing to contrast); how many attempts each side has and how many of them its labels,
    context and metrics were read from (`failing_attempts`, `failing_kept`, `ok_attempts`,
    `ok_kept`); and the query narrowed to the step, as evidence quotes it. Read from the
    scan's one query over every failing step (`_every_step`)."""
    every = await window.once("contrasts", lambda: _every_step(window))
    rows, sample = every.get((workflow_id, step_id), ([], {}))
    if not any(row.share_failing for row in rows):
        rows = []
    return rows, sample, _query(window, window.live(workflow_id, step_id))


async def _every_step(
    window: Window,
) -> dict[tuple[str, str], tuple[list[ContrastRow], dict[str, int]]]:
    profile = await window.profile()
    failing = [key for key, step in profile.steps.items() if step.failures]
    if not failing:
        return {}
    query = _query(window, window.of_steps(failing))
    result = await window.ask(query.sql, query.params)
    found: dict[tuple[str, str], tuple[list[ContrastRow], dict[str, int]]] = {}
    for r in result.records():
        rows, sample = found.setdefault((r["workflow_id"], r["step_id"]), ([], {}))
        rows.append(
            ContrastRow(
                attribute=r["attribute"],
                value=r["value"],
                share_failing=round(float(r["share_failing"]), 4),
                share_ok=round(float(r["share_ok"]), 4),
            )
        )
        sample.update({name: int(r[name]) for name in SAMPLE_COLUMNS})
    return found


SAMPLE_COLUMNS = ("failing_attempts", "failing_kept", "ok_attempts", "ok_kept")


def _query(window: Window, live: Filter) -> Query:
    sql = CONTRAST_SQL.format(
        where=live.where, failed=FAILED, called=CALLED, describes=DESCRIBES_FAILURE,
        sampled=SAMPLED, rollup=ROLLUP, kept=rollup.KEPT, weights=rollup.KEPT_WEIGHTS,
        spread=rollup.KEPT_SPREAD,
    )  # fmt: skip
    return quote(sql, {**live.params, "rows": window.settings.contrast_rows})


async def attach(window: Window, finding: Finding) -> None:
    """Put the contrast of `finding`'s step in its evidence (rows, the sample they were
    read from in `figures["contrast_sample"]`, and the query last), if the scan's contrast
    budget has room; else say in its figures that it was skipped."""
    assert finding.step_id is not None
    if not window.take_contrast():
        finding.evidence.figures["contrast"] = (
            f"skipped: a scan computes at most {window.settings.max_contrasts} contrasts"
        )
        return
    rows, sample, query = await contrast(window, finding.workflow_id, finding.step_id)
    finding.evidence.contrast = rows
    if rows:
        finding.evidence.figures["contrast_sample"] = sample
    finding.evidence.queries.append(query)
