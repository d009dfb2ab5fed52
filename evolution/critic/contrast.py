"""The BubbleUp contrast: every attribute value's share of a step's failing attempts beside
its share of its ok ones, so a value far more common among failures (one replica, one
node version, one label) points at the cause.

Attributes: `node_version`, `replica`, `error_class` (failures only: ok attempts have
none), `item` (the `for_each` index: 0–9 as they are, larger ones in decades, "10-99",
"100-999", …, so a large fan-out does not give a row per item), `label.<key>` and
`context.<key>` for every key, and `metric.<name>` for every reported metric in decades
("1000-9999"; "0-1" is zero and fractions, "below 0" the negatives).

It reads the rollups (`reflection.rollup`, attempts by the minute), never `traces`: every
attribute is a key column or a `metric_bands` count of `trace_minutes`, or one of the
`label_pairs` and `context_pairs` of `trace_labels` (`key=value` → attempts), so a step's
hour is a few hundred rows instead of every attempt's maps (~30 ms where the raw query
took ~350 ms at 1,000,000 attempts). The price: a metric is contrasted by decade
(quartiles need the raw values; one whose values all fall in one decade tells nothing),
and only the `rollup.PAIRS` most frequent label and context pairs of a row are in it (a
value on fewer attempts is left out, as a BubbleUp chart leaves out its long tail). One
query: each side's (failing, ok) rows of both tables summed into `attribute=value` →
attempts, ARRAY JOINed and grouped; a share is a count over its side's attempts.

Scoped like every detector to the live version's attempts. One query per scan answers every
step at once (`LIMIT … BY` step): the first contrast a scan asks for reads them all, and
every later one is in hand (a query costs its planning more than its rows, so one for all
steps costs about what one for a step did). Each finding quotes the same query narrowed to
its own step, which gives its rows alone. A scan still attaches at most `max_contrasts`
(`attach`), so a finding's evidence stays short: later ones carry a figure saying it was
skipped.

Rows sort by |share_failing − share_ok|, largest first, except that attributes that only
failures carry (the error class, the error context) come after the others: they describe
the failure rather than explain it.
"""

from __future__ import annotations

from evolution.critic.window import CALLED, FAILED, ROLLUP, Filter, Window, quote
from evolution.proposals.model import ContrastRow, Finding, Query
from reflection import rollup

DESCRIBES_FAILURE = "attribute = 'error_class' OR startsWith(attribute, 'context.')"

CONTRAST_SQL = """
SELECT workflow_id, step_id,
       substring(pair, 1, position(pair, '=') - 1) AS attribute,
       substring(pair, position(pair, '=') + 1) AS value,
       sumIf(n, failing) / greatest(maxIf(total, failing), 1) AS share_failing,
       sumIf(n, NOT failing) / greatest(maxIf(total, NOT failing), 1) AS share_ok
FROM (
    SELECT workflow_id, step_id, status IN {failed} AS failing, sum(attempts) AS total,
           arrayZip((sumMap(
               arrayConcat(
                   [concat('node_version=', node_version), concat('replica=', replica),
                    concat('item=', item_band), concat('error_class=', error_class)],
                   arrayMap(k -> concat('metric.', k), metric_bands.1)),
               arrayConcat([attempts, attempts, attempts, if(error_class = '', 0, attempts)],
                           metric_bands.2)
           ) AS keyed).1, keyed.2) AS counts
    FROM {rollup}
    WHERE {where} AND status IN {called}
    GROUP BY workflow_id, step_id, failing
    UNION ALL
    SELECT workflow_id, step_id, status IN {failed} AS failing, sum(attempts) AS total,
           arrayConcat(
               arrayMap(t -> (concat('label.', t.1), toUInt64(t.2 - t.3)), {top}(label_pairs)),
               arrayMap(t -> (concat('context.', t.1), toUInt64(t.2 - t.3)), {top}(context_pairs))
           ) AS counts
    FROM {labels}
    WHERE {where} AND status IN {called}
    GROUP BY workflow_id, step_id, failing
)
ARRAY JOIN counts.1 AS pair, counts.2 AS n
GROUP BY workflow_id, step_id, attribute, value
ORDER BY workflow_id, step_id, ({describes}) ASC, abs(share_failing - share_ok) DESC,
         attribute, value
LIMIT {{rows:UInt32}} BY workflow_id, step_id
"""
"""Each side's attempts (failing, ok) as `attribute=value` → attempts, from two tables: in
`trace_minutes` the key columns count each row's attempts (no error class counts 0, and
sumMap drops a 0) and the metric bands theirs; in `trace_labels` the most frequent label
and context pairs (`rollup.PAIRS`) count at their lower bound. A side's total is the same in
both (the same attempts, rolled up twice). A pair splits at its first `=` (values may hold
one)."""


async def contrast(
    window: Window, workflow_id: str, step_id: str
) -> tuple[list[ContrastRow], Query]:
    """The contrast of failing (`error`, `timeout`) against ok attempts of one step in the
    window, the top `settings.contrast_rows` rows; no rows when no attempt failed (there is
    nothing to contrast), and the query narrowed to the step, as evidence quotes it. Read
    from the scan's one query over every step (`_every_step`)."""
    every = await window.once("contrasts", lambda: _every_step(window))
    rows = every.get((workflow_id, step_id), [])
    if not any(row.share_failing for row in rows):
        rows = []
    return rows, _query(window, window.live(workflow_id, step_id))


async def _every_step(window: Window) -> dict[tuple[str, str], list[ContrastRow]]:
    query = _query(window, window.live())
    result = await window.ask(query.sql, query.params)
    found: dict[tuple[str, str], list[ContrastRow]] = {}
    for r in result.records():
        found.setdefault((r["workflow_id"], r["step_id"]), []).append(
            ContrastRow(
                attribute=r["attribute"],
                value=r["value"],
                share_failing=round(float(r["share_failing"]), 4),
                share_ok=round(float(r["share_ok"]), 4),
            )
        )
    return found


def _query(window: Window, live: Filter) -> Query:
    sql = CONTRAST_SQL.format(
        where=live.where, failed=FAILED, called=CALLED, describes=DESCRIBES_FAILURE,
        rollup=ROLLUP, labels=rollup.LABELS, top=rollup.TOP_PAIRS,
    )  # fmt: skip
    return quote(sql, {**live.params, "rows": window.settings.contrast_rows})


async def budgeted(
    window: Window, workflow_id: str, step_id: str
) -> tuple[list[ContrastRow], Query | None]:
    """The contrast of a step, if the scan's contrast budget has room; else no rows."""
    if not window.take_contrast():
        return [], None
    return await contrast(window, workflow_id, step_id)


async def attach(window: Window, finding: Finding) -> None:
    """Put the contrast of `finding`'s step in its evidence (rows, and the query last), if
    the scan's contrast budget has room; else say in its figures that it was skipped."""
    assert finding.step_id is not None
    if not window.take_contrast():
        finding.evidence.figures["contrast"] = (
            f"skipped: a scan computes at most {window.settings.max_contrasts} contrasts"
        )
        return
    rows, query = await contrast(window, finding.workflow_id, finding.step_id)
    finding.evidence.contrast = rows
    finding.evidence.queries.append(query)
