"""A Critic scan: every detector over one window, and which steps the window says enough
about that finding nothing means there is nothing (so an open proposal for one may be
superseded).

Detectors run one after another (they share one query door; an embedded engine answers
one query at a time anyway). A detector that raises is reported in `Scan.errors` by its
one-line error and the others still run: one broken question never hides the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from evolution.critic.cache import CacheDetector
from evolution.critic.retry import RetryDetector
from evolution.critic.timeout import TimeoutDetector
from evolution.critic.window import CALLED, Detector, Window
from evolution.proposals.model import Finding
from infra import RefluxError

log = logging.getLogger("reflux.critic")

DETECTORS: dict[str, Detector] = {
    detector.kind: detector for detector in (RetryDetector(), TimeoutDetector(), CacheDetector())
}
"""Every detector by kind, in the order a scan runs them."""

COVERED_SQL = """
SELECT workflow_id, step_id, count() AS attempts
FROM traces
WHERE {where} AND status IN {called}
GROUP BY workflow_id, step_id
HAVING attempts >= {{min_attempts:UInt32}}
"""


@dataclass
class Scan:
    findings: list[Finding]
    covered: set[tuple[str, str]]
    """(workflow_id, step_id) of the window's live versions with at least `min_attempts`
    attempts in it: no finding for one means no problem."""
    window: tuple[datetime, datetime]
    errors: list[str] = field(default_factory=list)
    """One line per detector (or the coverage query) that raised: `kind: error`."""


async def scan(window: Window, detectors: Sequence[Detector] | None = None) -> Scan:
    """Run `detectors` (default: all of `DETECTORS`) over `window`."""
    chosen = list(DETECTORS.values()) if detectors is None else list(detectors)
    result = Scan([], set(), (window.start, window.end))
    if not window.workflows:
        return result
    for detector in chosen:
        try:
            result.findings.extend(await detector.scan(window))
        except Exception as exc:  # any detector's failure, reported, never fatal to the scan
            log.warning("critic: detector %s failed", detector.kind, exc_info=True)
            result.errors.append(f"{detector.kind}: {_one_line(exc)}")
    try:
        result.covered = await covered(window)
    except Exception as exc:  # without coverage nothing is superseded: safe
        result.errors.append(f"covered: {_one_line(exc)}")
    return result


async def covered(window: Window) -> set[tuple[str, str]]:
    live = window.live()
    sql = COVERED_SQL.format(where=live.where, called=CALLED)
    params = {**live.params, "min_attempts": window.settings.min_attempts}
    records, _ = await window.run(sql, params)
    return {
        (r["workflow_id"], r["step_id"])
        for r in records
        if window.step(r["workflow_id"], r["step_id"]) is not None
    }


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, RefluxError) else f"{type(exc).__name__}: {text}"
