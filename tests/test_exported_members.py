"""The public face of each package: what other packages and users may import.

`FACES` is the snapshot of every package's `__all__`: a change to a face shows up here, in
review. Other packages import only faces, never a submodule (tests may import anything)."""

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["reflux", "bench", "evolution", "orchestrator", "reflection", "nodes", "registry",
          "sandbox", "infra"]  # fmt: skip

FACES = {
    "infra": """
        CodeRunError ConfigError CriticSettings DEFAULT_NAMESPACE DatabaseSettings
        EvolutionSettings ExpressionError HttpConnectError HttpSettings HttpStatusError
        InputShapeError LifecycleError LimitsSettings MIN_SECRET ManifestConflictError
        Masker NatsSettings NoRespondersError NodeError NodeTimeoutError NodesSettings
        NotFoundError ObjectStoreError ObjectStoreSettings PinError ProcessSpec RefluxError
        RegistryError ResponseTooLargeError RunError SandboxError SandboxSettings
        SecretError SecretKind SecretsKey ServiceError Settings SpecError SsrfError Stack
        TemporalService TemporalSettings ValidationError addresses check_applied check_text
        check_value connect create_pool database_url environment_secret environment_variable
        free_port free_ports lazy load_migrations loads migrate parse_duration pool_for
        redact redact_url schema_status secrets_key spawn ssrf stack_home stop wait_ready
    """.split(),
    "sandbox": """
        Backend CodeRunRequest CodeRunResult Limits ProcessBackend host_interpreter
        open_backend
    """.split(),
    "registry": """
        Catalog Definition LocalObjectStore MIN_VALUE MIN_VALUE_WHY NodeRegistry ObjectStore
        Promotion Role Rollout RunRecord S3ObjectStore SecretStore Token TokenStore
        VersionInfo Workflow WorkflowEvent WorkflowRegistry WorkflowRollout WorkflowVersion
        audit check_name check_namespace check_transition fetch get_run moved_message
        object_store offload parse_ref runs
    """.split(),
    "nodes": """
        CallIdentity EFFECTS Effect EffectRule Identified NodeCatalog NodeContext
        NodeDefinition NodeGroup NodeReply NodeRequest NodeService READ_ONLY ServedNode
        SwitchParams builtin_catalog call_effect canonical_placeholders discover
        exact_subject idempotency_key major_subject pick_branch placeholder versions_by_name
    """.split(),
    "reflection": """
        IN_FLIGHT QueryResult StepCache TraceEvent TracePublisher TraceStatus encode
        inputs_hash message_id open_warehouse publisher_stats query rollup run_sink sink_backlog
        stats
    """.split(),
    "orchestrator": """
        ENGINE_LABELS Launched Mutation Plan PlannedStep Problem RetryPolicy Revision
        RunRequest RunResult SKIP_REASON Spec StepError StepResult StepSpec WebhookTrigger
        announce_change apply_mutations apply_overrides background_processes build_plan
        check_labels connect_temporal cron_ids describe_mutations diff_sources
        dump_mutations edit_source effect_of follow launch live_state load_version may_write
        new_run_id original_request parse_mutations parse_pairs parse_pin parse_set
        parse_spec payload_sizes progress_line redrive_of replay_of resolve_pins revise
        run_handle run_json run_table run_worker source_too_large start_run submit
        sync_schedules table validate_file validate_text wait_run
    """.split(),
    "evolution": """
        DEFAULT_SAMPLES Finding Harm JudgeConfig Judgement KINDS Proposal ProposalStore
        Request STATUSES Series ask create critic interim judge proposal_report
        proposals_table required_samples run_critic run_evolution_worker start_lifecycle
        wait_for
    """.split(),
    "bench": """
        add_arguments run_bench
    """.split(),
}


@pytest.mark.parametrize("name", sorted(FACES))
def test_each_face_is_its_snapshot_sorted_and_importable(name):
    module = importlib.import_module(name)
    assert module.__all__ == FACES[name], f"{name}.__all__ changed: update FACES"
    assert module.__all__ == sorted(module.__all__)
    for member in module.__all__:
        assert getattr(module, member) is not None, f"{name}.{member}"


def test_packages_import_each_other_only_through_faces():
    deep = []
    for package in LAYERS:
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                names = []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                elif isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                for name in names:
                    top = name.split(".")[0]
                    if top in LAYERS and top != package and name != top:
                        deep.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert not deep, "import the package's face instead:\n" + "\n".join(deep)


def test_error_tree_has_one_root():
    import infra

    errors = [getattr(infra, n) for n in infra.__all__ if n.endswith("Error")]
    assert all(issubclass(e, infra.RefluxError) for e in errors)
    assert issubclass(infra.SsrfError, infra.NodeError) and not infra.SsrfError.retryable
    assert infra.NodeTimeoutError.retryable and infra.NoRespondersError.retryable
    assert issubclass(infra.CodeRunError, infra.NodeError) and not infra.CodeRunError.retryable
