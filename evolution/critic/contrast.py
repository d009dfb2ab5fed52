"""The BubbleUp contrast: every attribute value's share of a step's failing attempts beside
its share of its ok ones, so a value far more common among failures (one replica, one
node version, one label) points at the cause.

Attributes: `node_version`, `replica`, `error_class` (failures only: ok attempts have
none), `item` (the `for_each` index: 0–9 as they are, larger ones in decades, "10-99",
"100-999", …, so a large fan-out does not give a row per item), `label.<key>` and
`context.<key>` for every key, and `metric.<name>` for every reported metric in decades
("1000-9999"; "0-1" is zero and fractions, "below 0" the negatives).

It reads the rollup (`reflection.rollup`, attempts by the minute), never `traces`: every
attribute is one of its key columns or one of its `label_pairs`, `context_pairs` and
`metric_bands` counts (`key=value` → attempts), so a step's hour is a few hundred rows
instead of every attempt's maps (~15 ms where the raw query took ~350 ms at 1,000,000
attempts; most of it is planning the query, not reading). The price is the metrics:
quartiles need the raw values and the rollup keeps only decades, so a metric is contrasted
by decade (one whose values all fall in one decade tells nothing). One query: the step's
rows summed once per side (failing, ok) into an `attribute=value` → attempts map, ARRAY
JOINed and grouped; a share is a count over its side's attempts.

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

DESCRIBES_FAILURE = "attribute = 'error_class' OR startsWith(attribute, 'context.')"

CONTRAST_SQL = """
SELECT workflow_id, step_id,
       substring(pair, 1, position(pair, '=') - 1) AS attribute,
       substring(pair, position(pair, '=') + 1) AS value,
       sumIf(n, failing) / greatest(maxIf(total, failing), 1) AS share_failing,
       sumIf(n, NOT failing) / greatest(maxIf(total, NOT failing), 1) AS share_ok
FROM (
    SELECT workflow_id, step_id, status IN {failed} AS failing, sum(attempts) AS total,
           sumMap(
               arrayConcat(
                   [concat('node_version=', node_version), concat('replica=', replica),
                    concat('item=', item_band), concat('error_class=', error_class)],
                   arrayMap(k -> concat('label.', k), label_pairs.1),
                   arrayMap(k -> concat('context.', k), context_pairs.1),
                   arrayMap(k -> concat('metric.', k), metric_bands.1)),
               arrayConcat([attempts, attempts, attempts, if(error_class = '', 0, attempts)],
                           label_pairs.2, context_pairs.2, metric_bands.2)
           ) AS counts
    FROM {rollup}
    WHERE {where} AND status IN {called}
    GROUP BY workflow_id, step_id, failing
)
ARRAY JOIN counts.1 AS pair, counts.2 AS n
GROUP BY workflow_id, step_id, attribute, value
ORDER BY workflow_id, step_id, ({describes}) ASC, abs(share_failing - share_ok) DESC,
         attribute, value
LIMIT {{rows:UInt32}} BY workflow_id, step_id
"""
"""Each side's rows (failing, ok) summed into one `attribute=value` → attempts map: the key
columns count each row's attempts (no error class counts 0, and sumMap drops a 0), the
`key=value` counts get their prefix. A pair splits at its first `=` (values may hold one)."""


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
        rollup=ROLLUP,
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
