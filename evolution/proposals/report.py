"""Proposals as people read them: a table of many, a report of one (the evidence's figures,
the contrast table, the SQL to re-run, the validation's metrics, the history). Both take
the contract JSON, so the CLI prints the same whether it asked the API or the database."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator import describe_mutations, parse_mutations, table

Json = Mapping[str, Any]


def proposals_table(proposals: Sequence[Json]) -> str:
    if not proposals:
        return "no proposals"
    rows = [("ID", "KIND", "STATUS", "WORKFLOW", "STEP", "TITLE")]
    for p in proposals:
        ref = f"{p['workflow_id']}@{p.get('workflow_version') or '?'}"
        step = p.get("step_id") or "-"
        rows.append((p["id"], p["kind"], p["status"], ref, step, _cut(p["title"], 70)))
    return table(rows)


def proposal_report(p: Json) -> str:
    lines = [f"{p['id']}  {p['kind']}  {p['status']}  (from {p['source']})", p["title"], ""]
    where = f"workflow {p['workflow_id']}@{p.get('workflow_version') or '?'}"
    if p.get("step_id"):
        where += f", step {p['step_id']}"
    if p.get("node"):
        where += f" ({p['node']})"
    lines.append(where)
    if p.get("diagnosis"):
        lines += ["", p["diagnosis"]]
    expected = p.get("expected")
    if expected:
        lines += ["", f"expected: {expected['metric']} {_number(expected.get('current'))} ->"
                  f" {_number(expected.get('expected'))}"]  # fmt: skip
        if expected.get("basis"):
            lines.append(f"  based on {expected['basis']}")
    if p.get("mutation"):
        lines += ["", "change:"]
        lines += [f"  {line}" for line in _describe(p["mutation"]).splitlines()]
    lines += _evidence(p.get("evidence") or {})
    lines += _validation(p.get("validation"))
    applied = p.get("applied")
    if applied:
        lines += ["", "applied:"]
        if applied.get("workflow_version"):
            was = applied.get("previous_version")
            lines.append(f"  live version {applied['workflow_version']} (was {was})")
        if applied.get("node"):
            lines.append(f"  node {applied['node']}")
        watch = applied.get("watch") or {}
        if watch.get("result"):
            lines.append(f"  watch: {watch['result']}: {watch.get('reason', '')}")
        elif watch and not watch.get("done"):
            got = (watch.get("samples") or {}).get("candidate", 0)
            lines.append(f"  watch: {got} of {watch.get('runs')} live runs so far")
    history = p.get("history") or []
    if history:
        lines += ["", "history:"]
        for t in history:
            note = f": {t['note']}" if t.get("note") else ""
            lines.append(f"  {str(t['at'])[:19]}  {t['status']:<17} {t['actor']}{note}")
    return "\n".join(lines)


def _evidence(evidence: Json) -> list[str]:
    lines: list[str] = []
    figures = evidence.get("figures") or {}
    if figures:
        lines += ["", "figures:"]
        for name, value in figures.items():
            shown = value if isinstance(value, str | int | float) else json.dumps(value)
            lines.append(f"  {name}: {_cut(str(_number(shown)), 200)}")
    contrast = evidence.get("contrast") or []
    if contrast:
        rows = [("ATTRIBUTE", "VALUE", "FAILING", "OK")]
        rows += [(c["attribute"], _cut(str(c["value"]), 40), _share(c["share_failing"]),
                  _share(c["share_ok"])) for c in contrast]  # fmt: skip
        lines += ["", "contrast (share of failing attempts vs ok ones):"]
        lines += [f"  {line}" for line in table(rows).splitlines()]
        sample = figures.get("contrast_sample") or {}
        if any(sample.get(f"{side}_kept", 0) < sample.get(f"{side}_attempts", 0)
               for side in ("failing", "ok")):  # fmt: skip
            lines.append(
                f"  labels, context and metrics estimated from {sample['failing_kept']:,} of"
                f" {sample['failing_attempts']:,} failing and {sample['ok_kept']:,} of"
                f" {sample['ok_attempts']:,} ok attempts"
            )
    if evidence.get("runs"):
        lines += ["", "example runs: " + ", ".join(evidence["runs"])]
    for i, q in enumerate(evidence.get("queries") or [], 1):
        params = " ".join(f"--param {k}={v}" for k, v in (q.get("params") or {}).items())
        lines += ["", f'query {i} (reflux sql "…" {params}):'.replace("  ", " ")]
        lines += [f"  {line}" for line in q["sql"].strip().splitlines()]
    for h in evidence.get("history") or []:
        lines.append(
            f"  similar past fix {h['pattern_id']} ({h['similarity']:.2f}): {h['outcome']}"
        )
    return lines


def _validation(v: Json | None) -> list[str]:
    if not v:
        return []
    samples = v.get("samples") or {}
    head = f"validation: {v['mode']}, {v.get('result') or 'running'}"
    head += f" ({samples.get('baseline', 0)} baseline / {samples.get('candidate', 0)} candidate"
    head += f" of {v.get('target')} each)"
    lines = ["", head]
    if v.get("reason"):
        lines.append(f"  {v['reason']}")
    metrics = v.get("metrics") or []
    if metrics:
        rows = [("METRIC", "BASELINE", "CANDIDATE", "EFFECT", "P", "VERDICT")]
        rows += [(m["name"], _number(m.get("baseline")), _number(m.get("candidate")),
                  _number(m.get("effect")), _p(m.get("p_value")), m["verdict"])
                 for m in metrics]  # fmt: skip
        lines += [f"  {line}" for line in table(rows).splitlines()]
    return lines


def _describe(mutation: list[dict[str, Any]]) -> str:
    graph = [op for op in mutation if op.get("op") not in ("rollout", "deprecate", "promote")]
    lines = []
    if graph:
        try:
            lines.append(describe_mutations(parse_mutations(graph)))
        except Exception:  # noqa: BLE001 - shown as stored when it no longer parses
            lines.append(json.dumps(graph))
    for op in mutation:
        if op.get("op") == "rollout":
            lines.append(f"roll {op['node']}@{op['version']} out to {op['percent']} % of runs")
        elif op.get("op") == "deprecate":
            lines.append(f"deprecate {op['node']}@{op['version']}")
        elif op.get("op") == "promote":
            lines.append(f"make {op['workflow']}@{op['version']} live again")
    return "\n".join(lines)


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _share(value: float) -> str:
    return f"{value * 100:.0f} %"


def _p(value: float | None) -> str:
    return "-" if value is None else f"{value:.2g}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
