"""The Kubernetes manifests, offline: every overlay renders with Debian's kubectl, validates
against the Kubernetes and operator schemas, keeps meetnet's invariants and passes checkov's
security policies; bad overlay parameters fail with a message that names the fix."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import pytest
import yaml

from meetnet import k8s
from meetnet.k8s.render import K8S_DIR, kubectl, run_checkov

OVERLAYS = {p.name: p for p in k8s.overlays()}
DEV, PROD = K8S_DIR / "overlays" / "dev", K8S_DIR / "overlays" / "prod"
DOCKERFILES = [K8S_DIR.parent / "Dockerfile", K8S_DIR / "images/postgres-timescaledb/Dockerfile"]


@pytest.fixture(scope="session")
def results() -> dict[str, k8s.Result]:
    """Each overlay rendered and checked once per test session."""
    return {name: k8s.check(path) for name, path in OVERLAYS.items()}


def _kinds(result: k8s.Result) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for d in result.docs:
        out.setdefault(d["kind"], set()).add(d["metadata"]["name"])
    return out


def _overlay(tmp_path: Path, base: Path, kustomization: str, files: dict[str, str]) -> Path:
    """A throw-away overlay on top of ``base`` (kustomize v2.0.3 wants relative base paths)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(base, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(f"bases:\n  - {rel}\n" + dedent(kustomization))
    for name, text in files.items():
        (tmp_path / name).write_text(dedent(text))
    return tmp_path


def _problems(result: k8s.Result) -> str:
    return "\n".join(str(p) for p in result.problems)


# --- the overlays as they are -----------------------------------------------------------------
def test_the_checks_render_with_debians_kubectl_1_20() -> None:
    out = subprocess.run([kubectl(), "version", "--client"], capture_output=True, text=True)
    assert 'GitVersion:"v1.20.' in out.stdout, out.stdout + out.stderr


def test_both_overlays_exist() -> None:
    assert set(OVERLAYS) == {"dev", "prod"}


@pytest.mark.parametrize("name", ["dev", "prod"])
def test_overlay_renders_validates_and_keeps_the_invariants(
    results: dict[str, k8s.Result], name: str
) -> None:
    result = results[name]
    assert result.ok, _problems(result)
    kinds = _kinds(result)
    # Everything meetnet runs, and the engines it relies on through their operators.
    assert {"meetnet-api", "meetnet-processor"} <= kinds["Deployment"]
    assert {"meetnet-gateway", "meetnet-mosquitto"} <= kinds["StatefulSet"]
    assert {"meetnet-retention", "meetnet-rollups-rebuild"} <= kinds["CronJob"]
    assert "meetnet-migrate" in kinds["Job"]
    assert kinds["Kafka"] == {"meetnet-kafka"}
    assert {"meetnet-readings-v1", "meetnet-deadletter-v1", "meetnet-alerts-v1"} <= kinds[
        "KafkaTopic"
    ]
    assert kinds["Cluster"] == {"meetnet-db"}
    assert kinds["ScaledObject"] == {"meetnet-processor", "meetnet-gateway"}
    assert kinds["HorizontalPodAutoscaler"] == {"meetnet-api"}
    assert {"meetnet-api", "meetnet-gateway", "meetnet-processor"} <= kinds["PodDisruptionBudget"]
    assert "meetnet-default-deny" in kinds["NetworkPolicy"]
    assert "Secret" not in kinds


def test_dev_runs_the_simulator_and_prod_has_replicas_backups_and_tls(
    results: dict[str, k8s.Result],
) -> None:
    dev, prod = _kinds(results["dev"]), _kinds(results["prod"])
    assert "meetnet-simulator" in dev["Job"] and "meetnet-simulator" not in prod["Job"]
    assert "ScheduledBackup" in prod and "ScheduledBackup" not in dev

    def spec(result: k8s.Result, kind: str, name: str) -> dict:
        return next(d for d in result.docs if d["kind"] == kind and d["metadata"]["name"] == name)[
            "spec"
        ]

    db = spec(results["prod"], "Cluster", "meetnet-db")
    assert db["instances"] == 3 and db["postgresql"]["synchronous"] == {
        "method": "any",
        "number": 1,
    }
    topic = spec(results["prod"], "KafkaTopic", "meetnet-readings-v1")
    assert (topic["partitions"], topic["replicas"]) == (12, 3)
    assert spec(results["prod"], "ScaledObject", "meetnet-processor")["maxReplicaCount"] == 12
    assert spec(results["dev"], "ScaledObject", "meetnet-processor")["maxReplicaCount"] == 6


def test_the_secrets_to_create_are_the_documented_ones(results: dict[str, k8s.Result]) -> None:
    # k8s/README.md, "Secrets", lists exactly these (meetnet-db-app is CloudNativePG's own).
    assert results["dev"].secrets == {
        "meetnet-db-app",
        "meetnet-mqtt-gateway",
    }
    assert results["prod"].secrets == {
        "meetnet-db-app",
        "meetnet-mqtt-gateway",
        "meetnet-mqtt-tls",
        "meetnet-api-tls",
        "meetnet-backup-s3",
    }
    readme = (K8S_DIR / "README.md").read_text()
    for name in results["dev"].secrets | results["prod"].secrets:
        assert name in readme


# --- the security scan ------------------------------------------------------------------------
INSECURE = """\
apiVersion: v1
kind: Pod
metadata: {name: insecure, namespace: scratch}
spec:
  containers:
    - name: root
      image: busybox
      securityContext: {privileged: true}
"""


def test_checkov_passes_on_every_overlay_and_the_dockerfiles(
    results: dict[str, k8s.Result], tmp_path: Path
) -> None:
    files = []
    for name, result in results.items():
        (tmp_path / f"{name}.yaml").write_text(result.manifests)
        files.append(tmp_path / f"{name}.yaml")
    # A manifest checkov must fail, scanned in the same run: the scan is not a no-op.
    (tmp_path / "insecure.yaml").write_text(INSECURE)
    out = run_checkov(
        [*files, tmp_path / "insecure.yaml", *DOCKERFILES],
        ["--framework", "kubernetes", "dockerfile"],
        output="json",
    )
    reports = json.loads(out.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}, out.stderr[-2000:]
    failed = [c for r in reports for c in r["results"]["failed_checks"]]
    passed = sum(r["summary"]["passed"] for r in reports)
    ours = [f"{c['check_id']} {c['resource']}" for c in failed if "insecure" not in c["file_path"]]
    assert not ours, ours
    assert passed > 1000
    assert "CKV_K8S_16" in {c["check_id"] for c in failed}  # privileged, in insecure.yaml


def test_every_checkov_exception_is_justified_where_it_is_made(
    results: dict[str, k8s.Result],
) -> None:
    skips = []
    for result in results.values():
        for d in result.docs:
            for key, value in d["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    skips.append(value)
    for path in DOCKERFILES:
        skips += re.findall(r"#\s*checkov:skip=(\S.*)", path.read_text())
    assert skips, "expected the documented exceptions (image digests, image HEALTHCHECK)"
    for skip in skips:
        check, _, reason = skip.partition("=" if "=" in skip.split(":")[0] else ":")
        assert re.fullmatch(r"CKV2?_[A-Z0-9]+_\d+", check.strip()), skip
        assert len(reason.split()) >= 5, f"an exception needs its reason: {skip!r}"


# --- bad parameters fail with a clear message -------------------------------------------------
def test_more_processors_than_partitions_fails_naming_the_ceiling(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        DEV,
        """\
        patchesStrategicMerge:
          - scale.yaml
        """,
        {
            "scale.yaml": """\
            apiVersion: keda.sh/v1alpha1
            kind: ScaledObject
            metadata: {name: meetnet-processor, namespace: meetnet-dev}
            spec: {maxReplicaCount: 12}
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: meetnet-processor, namespace: meetnet-dev}
            spec: {replicas: 8}
            """
        },
    )
    problems = _problems(k8s.check(overlay))
    assert (
        "ScaledObject/meetnet-processor: maxReplicaCount 12 exceeds the 6 partitions of "
        "meetnet.readings.v1 (KafkaTopic/meetnet-readings-v1)"
    ) in problems
    assert "Deployment/meetnet-processor: replicas 8 exceed the 6 partitions" in problems
    # ... and raising the partitions with them is fine.
    (overlay / "topic.yaml").write_text(
        "apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaTopic\n"
        "metadata: {name: meetnet-readings-v1, namespace: meetnet-dev}\nspec: {partitions: 12}\n"
    )
    (overlay / "kustomization.yaml").write_text(
        (overlay / "kustomization.yaml").read_text() + "  - topic.yaml\n"
    )
    result = k8s.check(overlay)
    assert result.ok, _problems(result)


def test_a_patch_of_something_that_does_not_exist_fails_rendering(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        PROD,
        """\
        patchesStrategicMerge:
          - typo.yaml
        """,
        {
            "typo.yaml": """\
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: meetnet-procesor, namespace: meetnet}
            spec: {replicas: 2}
            """
        },
    )
    result = k8s.check(overlay)
    assert len(result.problems) == 1
    assert "kubectl kustomize failed" in str(result.problems[0])
    assert "meetnet-procesor" in str(result.problems[0])


def test_missing_misspelt_and_invalid_settings_are_named(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        DEV,
        """\
        configMapGenerator:
          - name: meetnet-config
            behavior: replace
            literals:
              - MEETNET_MQTT_URL=mqtt://meetnet-mosquitto:1883
              - MEETNET_KAFKA_BOOTSTRAPS=meetnet-kafka-kafka-bootstrap:9092
              - MEETNET_HEALTH_PORT=health
              - MEETNET_HEALTH_HOST=127.0.0.1
              - MEETNET_SECRETS_DIR=/var/run/secrets/meetnet
        """,
        {},
    )
    problems = _problems(k8s.check(overlay))
    assert "MEETNET_KAFKA_BOOTSTRAPS is not a meetnet setting (a typo?)" in problems
    assert "MEETNET_KAFKA_BOOTSTRAP is required and not set" in problems
    assert "MEETNET_HEALTH_PORT='health': Input should be a valid integer" in problems
    assert "MEETNET_HEALTH_HOST='127.0.0.1': the kubelet probes the pod's IP" in problems


def test_schema_errors_in_core_and_operator_objects_are_named(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        DEV,
        """\
        patchesStrategicMerge:
          - typos.yaml
        """,
        {
            "typos.yaml": """\
            apiVersion: kafka.strimzi.io/v1beta2
            kind: KafkaTopic
            metadata: {name: meetnet-alerts-v1, namespace: meetnet-dev}
            spec: {partitons: 3}
            ---
            apiVersion: postgresql.cnpg.io/v1
            kind: Cluster
            metadata: {name: meetnet-db, namespace: meetnet-dev}
            spec:
              postgresql:
                parameters: {max_connections: 300}
            ---
            apiVersion: apps/v1
            kind: Deployment
            metadata: {name: meetnet-api, namespace: meetnet-dev}
            spec:
              template:
                spec:
                  containers:
                    - name: api
                      resurces: {}
            """
        },
    )
    problems = _problems(k8s.check(overlay))
    assert "KafkaTopic/meetnet-alerts-v1: spec: Additional properties are not allowed " in problems
    assert "'partitons' was unexpected" in problems
    assert (
        "Cluster/meetnet-db: spec.postgresql.parameters.max_connections: 300 is not of type "
        "'string'" in problems
    )
    assert (
        "Deployment/meetnet-api: spec.template.spec.containers.0: Additional properties" in problems
    )
    assert "'resurces' was unexpected" in problems


def test_replication_beyond_the_brokers_and_a_secret_in_the_overlay_are_refused(
    tmp_path: Path,
) -> None:
    overlay = _overlay(
        tmp_path,
        DEV,
        """\
        resources:
          - secret.yaml
        patchesStrategicMerge:
          - topic.yaml
        """,
        {
            "secret.yaml": """\
            apiVersion: v1
            kind: Secret
            metadata: {name: meetnet-mqtt-gateway}
            stringData: {username: gw, password: hunter2}
            """,
            "topic.yaml": """\
            apiVersion: kafka.strimzi.io/v1beta2
            kind: KafkaTopic
            metadata: {name: meetnet-readings-v1, namespace: meetnet-dev}
            spec:
              replicas: 3
              config: {min.insync.replicas: 1}
            """,
        },
    )
    problems = _problems(k8s.check(overlay))
    assert (
        "KafkaTopic/meetnet-readings-v1: replicas 3 exceed the 1 brokers of meetnet-kafka"
        in problems
    )
    assert (
        "replicas 3 with min.insync.replicas 1: an acknowledged write may live on one broker"
        in (problems)
    )
    assert "Secret/meetnet-mqtt-gateway: Secrets are never part of the repository" in problems


def test_gateways_must_keep_stable_client_ids_and_never_scale_in_with_mosquitto(
    tmp_path: Path,
) -> None:
    overlay = _overlay(
        tmp_path,
        DEV,
        """\
        patchesJson6902:
          - target: {group: apps, version: v1, kind: StatefulSet, name: meetnet-gateway}
            path: client-id.yaml
          - target: {group: keda.sh, version: v1alpha1, kind: ScaledObject, name: meetnet-gateway}
            path: scale-in.yaml
        """,
        {
            "client-id.yaml": """\
            - op: replace
              path: /spec/template/spec/containers/0/env/0
              value: {name: MEETNET_GATEWAY_CLIENT_ID, value: meetnet-gw}
            """,
            "scale-in.yaml": """\
            - op: remove
              path: /spec/advanced/horizontalPodAutoscalerConfig/behavior/scaleDown/selectPolicy
            """,
        },
    )
    problems = _problems(k8s.check(overlay))
    assert "MEETNET_GATEWAY_CLIENT_ID must come from the pod name" in problems
    assert "ScaledObject/meetnet-gateway: scaling gateways in strands" in problems


def test_keda_must_reach_kafka_by_its_full_name(tmp_path: Path) -> None:
    overlay = _overlay(
        tmp_path,
        PROD,
        """\
        patchesJson6902:
          - target: {group: keda.sh, version: v1alpha1, kind: ScaledObject, name: meetnet-processor}
            path: short.yaml
        """,
        {
            "short.yaml": """\
            - op: replace
              path: /spec/triggers/0/metadata/bootstrapServers
              value: meetnet-kafka-kafka-bootstrap:9092
            """
        },
    )
    problems = _problems(k8s.check(overlay))
    assert "must be 'meetnet-kafka-kafka-bootstrap.meetnet.svc:9092'" in problems


def test_the_cli_exits_1_and_names_every_problem(tmp_path: Path) -> None:
    bad = _overlay(
        tmp_path / "bad",
        DEV,
        "patchesStrategicMerge:\n  - p.yaml\n",
        {
            "p.yaml": "apiVersion: keda.sh/v1alpha1\nkind: ScaledObject\n"
            "metadata: {name: meetnet-processor, namespace: meetnet-dev}\n"
            "spec: {maxReplicaCount: 7}\n"
        },
    )
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "meetnet",
            "k8s",
            "check",
            str(DEV),
            str(bad),
            "--output",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 1
    assert f"{DEV}: ok" in out.stdout
    assert "maxReplicaCount 7 exceeds the 6 partitions" in out.stderr
    rendered = [d for d in yaml.safe_load_all((tmp_path / "out" / "dev.yaml").read_text()) if d]
    assert len(rendered) > 30
