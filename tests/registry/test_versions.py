"""The version rules without a database: pin resolution, the lifecycle, rollout shares."""

from __future__ import annotations

import uuid

import pytest

from infra.errors import LifecycleError, NotFoundError, PinError
from registry.versions import (
    Catalog,
    Rollout,
    Semver,
    VersionInfo,
    check_transition,
    matches,
    rollout_bucket,
)

CATALOG = Catalog(
    {
        "http.request": [
            VersionInfo("1.0.0", "deprecated"),
            VersionInfo("1.1.0", "production"),
            VersionInfo("1.2.0", "production"),
            VersionInfo("1.2.5", "production"),
            VersionInfo("1.10.0", "staging"),
            VersionInfo("2.0.0", "production"),
            VersionInfo("3.0.0", "draft"),
        ],
        "old.node": [VersionInfo("1.0.0", "deprecated"), VersionInfo("2.0.0", "production")],
        "gone.node": [VersionInfo("1.0.0", "deprecated")],
    }
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("1", "1.2.5"),  # newest production 1.x; 1.10.0 is only staging
        ("1.2", "1.2.5"),  # newest production 1.2.x
        ("1.1", "1.1.0"),
        ("1.2.0", "1.2.0"),  # exact
        ("1.10.0", "1.10.0"),  # staging: by exact pin only
        ("3.0.0", "3.0.0"),  # draft: by exact pin only
        (None, "2.0.0"),  # newest production of any major
        ("2", "2.0.0"),
    ],
)
def test_pin_resolution(spec, expected):
    assert CATALOG.resolve("http.request", spec) == expected


@pytest.mark.parametrize(
    ("name", "spec", "error", "fragment"),
    [
        ("http.request", "1.0.0", PinError, "1.0.0 is deprecated; use http.request@2.0.0"),
        ("http.request", "3", PinError, "3.0.0 is draft: pin it exactly as http.request@3.0.0"),
        ("http.request", "1.10", PinError, "no production version (1.10.0 is staging"),
        ("http.request", "4", PinError, "no version of http.request matches 'http.request@4'"),
        ("http.request", "1.2.4", NotFoundError, "has no version 1.2.4"),
        ("http.request", "1.2.4", NotFoundError, "did you mean '1.2.5'?"),
        ("old.node", "1", PinError, "matching 'old.node@1' is deprecated; use old.node@2.0.0"),
        ("gone.node", None, PinError, "gone.node has no production version left"),
        ("htp.request", "1", NotFoundError, "unknown node 'htp.request'; did you mean 'http."),
    ],
)  # fmt: skip
def test_pin_refusals_say_why(name, spec, error, fragment):
    with pytest.raises(error) as info:
        CATALOG.resolve(name, spec)
    assert fragment in str(info.value)


def test_malformed_spec_is_refused():
    with pytest.raises(PinError, match="not a version spec"):
        CATALOG.resolve("http.request", "1.x")


def test_rollout_share_is_within_five_points_over_1000_runs():
    catalog = Catalog(CATALOG.versions, {"http.request": Rollout("1.10.0", 10)})
    picks = [catalog.resolve("http.request", "1", uuid.uuid4().hex) for _ in range(1000)]
    share = picks.count("1.10.0") / len(picks) * 100
    assert 5 <= share <= 15, share
    assert set(picks) == {"1.10.0", "1.2.5"}


@pytest.mark.parametrize("percent", [0, 30, 50, 100])
def test_rollout_shares_at_several_percents(percent):
    catalog = Catalog(
        CATALOG.versions, {"http.request": Rollout("1.10.0", percent)} if percent else {}
    )
    picks = [catalog.resolve("http.request", "1", f"run-{i}") for i in range(1000)]
    share = picks.count("1.10.0") / 10
    assert abs(share - percent) <= 5, share


def test_rollout_is_deterministic_per_run_and_only_for_matching_specs():
    catalog = Catalog(CATALOG.versions, {"http.request": Rollout("1.10.0", 50)})
    for run_id in ("a", "b", "c", "d"):
        first = catalog.resolve("http.request", "1", run_id)
        assert all(catalog.resolve("http.request", "1", run_id) == first for _ in range(5))
        assert catalog.resolve("http.request", "1.2", run_id) == "1.2.5"  # 1.10.0 is not 1.2.x
        assert catalog.resolve("http.request", "1.2.0", run_id) == "1.2.0"  # exact pins hold
        assert catalog.resolve("http.request", "2", run_id) == "2.0.0"
    assert catalog.resolve("http.request", "1") == "1.2.5"  # no run id (validation): no rollout


def test_rollout_buckets_are_independent_between_nodes():
    ids = [f"run-{i}" for i in range(1000)]
    both = sum(rollout_bucket(i, "a.x") < 10 and rollout_bucket(i, "b.y") < 10 for i in ids)
    assert both < 30  # ~1% expected if independent, 10% if the same bucket


@pytest.mark.parametrize(
    ("current", "target", "force"),
    [
        ("draft", "staging", False),
        ("staging", "production", False),
        ("production", "deprecated", False),
        ("staging", "deprecated", False),
        ("draft", "deprecated", False),
        ("deprecated", "production", True),
        ("production", "production", False),  # no change
    ],
)
def test_allowed_transitions(current, target, force):
    check_transition(current, target, force=force)


@pytest.mark.parametrize(
    ("current", "target", "fragment"),
    [
        ("draft", "production", "promote it to staging first"),
        ("production", "staging", "never move back to staging"),
        ("staging", "draft", "never move back to draft"),
        ("deprecated", "production", "with --force"),
        ("deprecated", "staging", "never move back to staging"),
    ],
)
def test_refused_transitions(current, target, fragment):
    with pytest.raises(LifecycleError, match=fragment):
        check_transition(current, target)


def test_semver_parsing_and_matching():
    assert Semver.parse("1.10.2") > Semver.parse("1.9.9")
    assert str(Semver.parse("0.1.0")) == "0.1.0"
    with pytest.raises(ValueError):
        Semver.parse("1.2")
    assert matches("1", "1.4.0") and matches("1.4", "1.4.2") and not matches("1.4", "1.40.0")
    assert matches(None, "9.9.9")
