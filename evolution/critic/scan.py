"""A Critic scan: every detector over one window, and which steps the window says enough
about that finding nothing means there is nothing (so an open proposal for one may be
superseded).

The shared profile (`Window.profile`) is read once, first: retry, timeout, cache and the
coverage all read it; timeout and cache need nothing else, retry one narrow second query
over its candidates.
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
from evolution.critic.drift import DriftDetector
from evolution.critic.node_version import NodeVersionDetector
from evolution.critic.retry import RetryDetector
from evolution.critic.timeout import TimeoutDetector
from evolution.critic.window import Detector, Window
from evolution.proposals.model import Finding
from infra import RefluxError

log = logging.getLogger("reflux.critic")

DETECTORS: dict[str, Detector] = {
    detector.kind: detector
    for detector in (
        RetryDetector(), TimeoutDetector(), CacheDetector(), NodeVersionDetector(),
        DriftDetector(),
    )
}  # fmt: skip
"""Every detector by kind, in the order a scan runs them."""


@dataclass
class Scan:
    findings: list[Finding]
    covered: set[tuple[str, str]]
    """(workflow_id, step_id) of the window's live versions with at least `min_attempts`
    attempts in it: no finding for one means no problem."""
    window: tuple[datetime, datetime]
    errors: list[str] = field(default_factory=list)
    """One line per detector (or the shared profile) that raised: `kind: error`."""
    kinds: set[str] = field(default_factory=set)
    """Kinds of the detectors that ran to the end: only their open proposals may be
    superseded by this scan."""


async def scan(window: Window, detectors: Sequence[Detector] | None = None) -> Scan:
    """Run `detectors` (default: all of `DETECTORS`) over `window`: the shared profile first
    (one aggregate query every detector and the coverage read), then each detector."""
    chosen = list(DETECTORS.values()) if detectors is None else list(detectors)
    result = Scan([], set(), (window.start, window.end))
    if not window.workflows:
        return result
    try:
        result.covered = await covered(window)
    except Exception as exc:  # without coverage nothing is superseded: safe
        log.warning("critic: the profile query failed", exc_info=True)
        result.errors.append(f"profile: {_one_line(exc)}")
    for detector in chosen:
        try:
            result.findings.extend(await detector.scan(window))
        except Exception as exc:  # any detector's failure, reported, never fatal to the scan
            log.warning("critic: detector %s failed", detector.kind, exc_info=True)
            result.errors.append(f"{detector.kind}: {_one_line(exc)}")
        else:
            result.kinds.add(detector.kind)
    return result


async def covered(window: Window) -> set[tuple[str, str]]:
    """Steps of the live versions with at least `min_attempts` attempts in the window."""
    profile = await window.profile()
    minimum = window.settings.min_attempts
    return {key for key, step in profile.steps.items() if step.attempts >= minimum}


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, RefluxError) else f"{type(exc).__name__}: {text}"
