"""The Kubernetes manifests: every file is listed in the kustomization, parses, and runs a
command the `reflux` CLI accepts, with the settings it needs."""

from __future__ import annotations

from pathlib import Path

import yaml

from reflux.cli import build_parser

BASE = Path(__file__).resolve().parents[2] / "k8s" / "base"


def documents() -> dict[str, dict]:
    return {path.name: yaml.safe_load(path.read_text()) for path in sorted(BASE.glob("*.yaml"))}


def containers(doc: dict) -> list[dict]:
    spec = doc.get("spec", {})
    template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return (template or {}).get("spec", {}).get("containers", [])


def test_every_manifest_is_listed_and_every_listed_one_exists():
    docs = documents()
    listed = docs.pop("kustomization.yaml")["resources"]
    assert sorted(listed) == sorted(docs)


def test_every_container_runs_a_valid_reflux_command():
    parser = build_parser()
    commands = {}
    for name, doc in documents().items():
        for container in containers(doc):
            args = container["args"]
            parsed = parser.parse_args(args)  # exits (fails the test) on an unknown command
            assert callable(parsed.func), name
            commands[name] = args
    assert commands["sink.yaml"] == ["reflection", "sink"]
    assert commands["worker.yaml"] == ["worker"]
    assert commands["evolution.yaml"] == ["evolution", "worker"]


def test_the_sink_is_given_a_clickhouse_server():
    [sink] = containers(documents()["sink.yaml"])
    env = {e["name"]: e for e in sink["env"]}
    assert env["REFLUX_CLICKHOUSE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "reflux-clickhouse"
