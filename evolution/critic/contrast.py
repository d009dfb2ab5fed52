"""The BubbleUp contrast: every attribute value's share of a step's failing attempts beside
its share of its ok ones, so a value far more common among failures (one replica, one
node version, one label) points at the cause.

Attributes: `node_version`, `replica`, `error_class` (failures only: ok attempts have
none), `item` (the `for_each` index: 0–9 as they are, larger ones in decades, "10-99",
"100-999", …, so a large fan-out does not give a row per item), `label.<key>` and
`context.<key>` for every key, and `metric.<name>` for every reported metric in quartiles
("q4 120.5–980" is the slowest quarter). One query: each attempt becomes its (attribute,
value) pairs with ARRAY JOIN, grouped once; the totals come from the `node_version` rows
(every attempt has exactly one).

Scoped like every detector to the live version's attempts. The costliest query of a scan
(it reads every map column of the step's attempts), so a scan computes at most
`max_contrasts` of them (`attach`): later findings carry a figure saying it was skipped.

Rows sort by |share_failing − share_ok|, largest first, except that attributes that only
failures carry (the error class, the error context) come after the others: they describe
the failure rather than explain it.
"""

from __future__ import annotations

from evolution.critic.window import CALLED, FAILED, Window
from evolution.proposals.model import ContrastRow, Finding, Query

DESCRIBES_FAILURE = "attribute = 'error_class' OR startsWith(attribute, 'context.')"

CONTRAST_SQL = """
SELECT attribute, value, share_failing, share_ok
FROM (
    SELECT attribute, value,
           countIf(failing) AS failing_n,
           countIf(NOT failing) AS ok_n,
           failing_n / greatest(sum(if(attribute = 'node_version', failing_n, 0)) OVER (), 1)
               AS share_failing,
           ok_n / greatest(sum(if(attribute = 'node_version', ok_n, 0)) OVER (), 1) AS share_ok
    FROM (
        SELECT failing, pair.1 AS attribute, pair.2 AS value
        FROM (
            SELECT status IN {failed} AS failing,
                   arrayConcat(
                       [('node_version', toString(node_version)), ('replica', toString(replica)),
                        ('item', multiIf(item < 0, 'none', item < 10, toString(item),
                                         concat(toString(toInt64(exp10(floor(log10(item))))), '-',
                                                toString(toInt64(exp10(floor(log10(item)) + 1))
                                                         - 1))))],
                       arrayFilter(p -> p.2 != '', [('error_class', ifNull(error_class, ''))]),
                       arrayMap(k -> (concat('label.', k), labels[k]), mapKeys(labels)),
                       arrayMap(k -> (concat('context.', k), context[k]), mapKeys(context))
                   ) AS pairs
            FROM traces
            WHERE {where} AND status IN {called}
        )
        ARRAY JOIN pairs AS pair
        UNION ALL
        SELECT failing, attribute,
               concat('q', toString(quartile), ' ',
                      toString(round(min(num) OVER (PARTITION BY attribute, quartile), 3)), '-',
                      toString(round(max(num) OVER (PARTITION BY attribute, quartile), 3))) AS value
        FROM (
            SELECT failing, attribute, num,
                   ntile(4) OVER (PARTITION BY attribute ORDER BY num) AS quartile
            FROM (
                SELECT status IN {failed} AS failing, concat('metric.', name) AS attribute, num
                FROM traces
                ARRAY JOIN mapKeys(metrics) AS name, mapValues(metrics) AS num
                WHERE {where} AND status IN {called}
            )
        )
    )
    GROUP BY attribute, value
)
ORDER BY ({describes}) ASC, abs(share_failing - share_ok) DESC, attribute, value
LIMIT {{rows:UInt32}}
"""


async def contrast(
    window: Window, workflow_id: str, step_id: str
) -> tuple[list[ContrastRow], Query]:
    """The contrast of failing (`error`, `timeout`) against ok attempts of one step in the
    window, the top `settings.contrast_rows` rows; no rows when no attempt failed (there is
    nothing to contrast), and the query as evidence quotes it."""
    live = window.live(workflow_id, step_id)
    sql = CONTRAST_SQL.format(
        where=live.where, failed=FAILED, called=CALLED, describes=DESCRIBES_FAILURE
    )
    params = {**live.params, "rows": window.settings.contrast_rows}
    records, query = await window.run(sql, params)
    rows = [
        ContrastRow(
            attribute=r["attribute"],
            value=r["value"],
            share_failing=round(float(r["share_failing"]), 4),
            share_ok=round(float(r["share_ok"]), 4),
        )
        for r in records
    ]
    if not any(row.share_failing for row in rows):
        return [], query
    return rows, query


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
