"""`reflux proposals show`'s report, from a proposal's JSON: the contrast table, and the line
that says when its labels, context and metrics were estimated from a sample."""

from __future__ import annotations

from typing import Any

from evolution import proposal_report


def proposal(sample: dict[str, int]) -> dict[str, Any]:
    return {
        "id": "prop-1", "kind": "retry", "status": "open", "source": "critic",
        "title": "Retry fetch", "workflow_id": "orders", "workflow_version": 2,
        "step_id": "fetch",
        "evidence": {
            "figures": {"contrast_sample": sample},
            "contrast": [{"attribute": "label.region", "value": "eu", "share_failing": 0.9,
                          "share_ok": 0.4}],
        },
    }  # fmt: skip


def test_a_sampled_contrast_says_how_many_attempts_it_was_read_from():
    sample = {"failing_attempts": 4505, "failing_kept": 1770, "ok_attempts": 72815,
              "ok_kept": 2128}  # fmt: skip
    report = proposal_report(proposal(sample))
    assert "label.region" in report and "90 %" in report
    assert (
        "labels, context and metrics estimated from 1,770 of 4,505 failing and 2,128 of"
        " 72,815 ok attempts"
    ) in report


def test_an_exact_contrast_has_no_such_line():
    sample = {"failing_attempts": 12, "failing_kept": 12, "ok_attempts": 30, "ok_kept": 30}
    assert "estimated from" not in proposal_report(proposal(sample))
